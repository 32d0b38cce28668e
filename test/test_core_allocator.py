"""keep_freed_memory: batched filter steps stop page-faulting and compute the same."""

import json
import platform
import subprocess
import sys

from dmn_localization.core.allocator import keep_freed_memory
import pytest

GLIBC = platform.libc_ver()[0] == 'glibc'

# Run in a child: the setting lasts for the whole process. Prints the minor page faults
# of three batched filter steps (EVAL_CHUNK frames, K=2048: dmn_evaluate's batch) and their
# weights, before and after keep_freed_memory().
CHILD = r"""
import json, resource, sys
import torch
from dmn_localization.core import particle_filter as pf
from dmn_localization.core.allocator import keep_freed_memory
from dmn_localization.core.inference import filter_step, FilterSettings
from dmn_localization.core.models import build_model, config_for
from dmn_localization.learning.evaluation import EVAL_CHUNK

torch.set_num_threads(1)
torch.manual_seed(0)
model = build_model(config_for('dmn-pf')).eval()
batch, k = EVAL_CHUNK, 2048
gen = torch.Generator().manual_seed(0)
images = torch.randn(batch, 4, 3, 32, 32, generator=gen)
poses = torch.rand(batch, 4, 3, generator=gen) * 2 - 1
query = torch.randn(batch, 3, 32, 32, generator=gen)
bounds = torch.tensor([[-1.0, -1.0, 1.0, 1.0]]).repeat(batch, 1)
settings = FilterSettings(num_particles=k)


def steps():
    step_gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        map_ctx = model.prepare_map(model.embed_views(images, poses), poses)
        belief = pf.uniform_belief(bounds, k, step_gen)
        filter_step(model, map_ctx, model.prepare_query(query), belief,
                    torch.zeros(batch, 3), settings, step_gen)  # warm-up
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(3):
            belief = filter_step(model, map_ctx, model.prepare_query(query), belief,
                                 torch.zeros(batch, 3), settings, step_gen)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    return faults, belief.log_weights


faults_default, weights_default = steps()
applied = keep_freed_memory()
faults_kept, weights_kept = steps()
print(json.dumps({'applied': applied, 'faults_default': faults_default,
                  'faults_kept': faults_kept,
                  'same': bool(torch.equal(weights_default, weights_kept))}))
"""


@pytest.mark.skipif(not GLIBC, reason='glibc malloc only')
def test_batched_steps_reuse_memory_and_compute_the_same():
    out = subprocess.run([sys.executable, '-c', CHILD], capture_output=True, text=True,
                         check=True, timeout=300)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result['applied']
    assert result['same']
    # freed blocks are reused instead of being mapped and zero-filled again every step
    assert result['faults_default'] > 1000
    assert result['faults_kept'] < result['faults_default'] / 4


@pytest.mark.parametrize('kwargs', [{'mmap_threshold': 0}, {'trim_threshold': -5},
                                    {'mmap_threshold': 2 ** 31}])
def test_thresholds_out_of_range_are_refused(kwargs):
    with pytest.raises(ValueError, match='threshold must be in'):
        keep_freed_memory(**kwargs)
