"""A kidnapped robot over DDS: the node goes lost, searches and converges again."""

from pathlib import Path

from dmn_localization.bench.kidnap_scan import tells_the_kidnap_story
from dmn_localization.data.sim_bag import main as sim_bag_main
from dmn_localization.replay.live import live_replay, LiveTarget
from dmn_localization.replay.metrics import kidnap_stamps
from dmn_localization.replay.offline import BagTopics, state_at
import numpy as np
import pytest

MODEL = Path(__file__).resolve().parents[1] / 'models' / 'dmn-pf-rooms.pt'
#: A run on which the shipped model tells the whole story offline under four filter seeds;
#: another model may need another seed, found with
#: ``python -m dmn_localization.bench.kidnap_scan --model models/dmn-pf-rooms.pt``.
SEED, DURATION, KIDNAP_AT = 8, 40.0, 20.0


@pytest.mark.ros
def test_a_kidnapped_node_goes_lost_searches_and_converges_again(start_process, tmp_path):
    bag = tmp_path / 'kidnap'
    assert sim_bag_main(['--domain', 'rooms', '--seed', str(SEED), '--duration',
                         str(DURATION), '--kidnap-at', str(KIDNAP_AT), '--out',
                         str(bag)]) == 0
    # every parameter at its default (recovery on, no pose unless converged) but the model
    node = start_process('dmn_localization_node', '--ros-args', '-p', f'model_path:={MODEL}')
    result = live_replay(bag, BagTopics(), LiveTarget(rate=0.5), progress=False)
    assert node.alive(), node.log()
    kidnap = float(kidnap_stamps(result.truth_stamps, np.array(result.truth))[0])
    assert tells_the_kidnap_story(result.state_changes, kidnap), result.state_changes
    # under the default publish_pose_when, every published pose is of a converged frame
    assert result.stamps, 'no pose published'
    assert all(state_at(result.state_changes, t) == 'converged' for t in result.stamps)
