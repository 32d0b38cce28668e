"""dmn_demo end to end: bag, node over DDS, live replay, metrics; loud when not converged."""

import json
import os
import subprocess
import sys

from dmn_localization.core.checkpoint import save_checkpoint
from dmn_localization.core.models import build_model, config_for
import pytest
import torch


@pytest.mark.ros
def test_demo_runs_the_node_live_and_fails_loudly_when_it_never_converges(tmp_path, ros_domain):
    torch.manual_seed(0)
    model = tmp_path / 'untrained.pt'  # random weights: the node cannot converge
    save_checkpoint(model, build_model(config_for('dmn-pf')), [0.0, 0.0, 8.0, 8.0])
    out = tmp_path / 'demo'
    demo = os.path.join(os.path.dirname(sys.executable), 'dmn_demo')
    run = subprocess.run([demo, '--out', str(out), '--duration', '6', '--model', str(model),
                          '--particles', '256'], capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stdout + run.stderr
    assert 'never converged' in run.stderr
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['mode'] == 'live' and metrics['metrics']['frames'] >= 24  # 6 s at 5 Hz
    assert metrics['metrics']['time_to_converge_s'] is None
    assert (out / 'replay.png').stat().st_size > 0
    node_log = (out / 'node.log').read_text()
    assert 'dmn-pf' in node_log  # the node loaded the model it was given
