"""dmn_demo end to end: bag, node over DDS, live replay, metrics; loud when not converged."""

import json
import os
import random
import subprocess
import sys

from dmn_localization.core.checkpoint import save_checkpoint
from dmn_localization.core.models import build_model, config_for
import pytest
import torch


def own_domain():
    """Return the environment with a DDS domain of the demo's own (none left by others)."""
    return dict(os.environ, ROS_DOMAIN_ID=str(random.SystemRandom().randint(101, 232)))


@pytest.mark.ros
def test_demo_runs_the_node_live_and_fails_loudly_when_it_never_converges(tmp_path, ros_domain):
    torch.manual_seed(0)
    model = tmp_path / 'untrained.pt'  # random weights: the node cannot converge
    save_checkpoint(model, build_model(config_for('dmn-pf')), [0.0, 0.0, 8.0, 8.0])
    out = tmp_path / 'demo'
    demo = os.path.join(os.path.dirname(sys.executable), 'dmn_demo')
    run = subprocess.run([demo, '--out', str(out), '--duration', '6', '--model', str(model),
                          '--particles', '256'], capture_output=True, text=True, timeout=300,
                         env=own_domain())
    assert run.returncode == 1, run.stdout + run.stderr
    assert 'never converged' in run.stderr
    metrics = json.loads((out / 'metrics.json').read_text())
    # 30 frames in 6 s, sent best effort as cameras send them: DDS may lose some on a
    # loaded machine (a third was seen), so this only checks that the node answered
    assert metrics['mode'] == 'live' and metrics['metrics']['frames'] >= 10
    assert metrics['metrics']['time_to_converge_s'] is None
    assert (out / 'replay.png').stat().st_size > 0
    node_log = (out / 'node.log').read_text()
    assert 'dmn-pf' in node_log  # the node loaded the model it was given


@pytest.mark.ros
def test_the_shipped_model_localizes_the_demo_run_over_dds(tmp_path, ros_domain):
    out = tmp_path / 'demo'
    demo = os.path.join(os.path.dirname(sys.executable), 'dmn_demo')
    # lockstep: the node answers every frame before the next is played, so the metrics
    # measure localization, not how busy the (CI) machine is; at bag timing a loaded
    # machine once dropped enough frames to leave only 29 % of them within 1 m
    run = subprocess.run([demo, '--out', str(out), '--lockstep'], capture_output=True,
                         text=True, timeout=300, env=own_domain())
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads((out / 'metrics.json').read_text())
    assert report['lockstep'] is True
    metrics = report['metrics']
    # measured on three runs: converged after 5.8 to 12.8 s, 86 % of frames within 1 m in
    # the one printed in the README; the tolerance leaves room for frames DDS drops
    assert metrics['frames'] >= 190, metrics  # 40 s at 5 Hz: none dropped for being busy
    assert metrics['time_to_converge_s'] is not None and metrics['time_to_converge_s'] < 30.0
    assert metrics['share_within_1_m'] > 0.5, metrics
