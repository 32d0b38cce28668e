"""The saved pose: atomic round trip, refusal of bad files, where a localizer starts."""

import json
import math

from dmn_localization.core.checkpoint import LoadedModel
from dmn_localization.core.maps import ViewEmbeddingMap
from dmn_localization.core.models import build_model, config_for, encoder_fingerprint
from dmn_localization.ros.map_conversion import map_to_msg, msg_to_map
from dmn_localization.runtime.localizer import Localizer, LocalizerSettings
from dmn_localization.runtime.saved_pose import (default_path, load_pose, save_pose,
                                                 saved_pose_of, SavedPose, SavedPoseError,
                                                 start_belief, StartPolicy)
import numpy as np
import pytest
import torch

EXTENT = [0.0, 0.0, 8.0, 8.0]


@pytest.fixture(scope='module')
def localizer():
    """Return a localizer of a random-weight DMN with a map of four random views."""
    torch.manual_seed(0)
    model = build_model(config_for('dmn-pf')).eval()
    loaded = LoadedModel(model, EXTENT, encoder_fingerprint(model), {})
    # random weights explain no frame better at one place than elsewhere: without the
    # relative evidence a narrow belief converges on its spread alone
    loc = Localizer(loaded, settings=LocalizerSettings(num_particles=512, seed=1,
                                                       reference_poses=0))
    rng = np.random.default_rng(0)
    loc.build_map(list(rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)),
                  np.array([[1, 1, 0], [6, 2, 1], [4, 6, -2], [2, 5, 3]], float), EXTENT)
    return loc


def a_pose(map_id, x=2.0):
    """Return a saved pose at ``(x, 3, 0.5)`` for ``map_id``."""
    return SavedPose(np.array([x, 3.0, 0.5]), np.diag([0.01, 0.02, 0.03]), map_id, 'map', 1.0)


def test_round_trip_is_exact_and_leaves_no_temporary_file(tmp_path):
    path = save_pose(tmp_path / 'deep' / 'pose.json', a_pose('abc'))
    loaded = load_pose(path, 'abc')
    np.testing.assert_array_equal(loaded.pose, [2.0, 3.0, 0.5])
    np.testing.assert_array_equal(loaded.covariance, np.diag([0.01, 0.02, 0.03]))
    save_pose(path, a_pose('abc', x=4.0))  # replaced atomically
    assert load_pose(path, 'abc').pose[0] == 4.0
    assert [p.name for p in path.parent.iterdir()] == ['pose.json']


@pytest.mark.parametrize('damage, match', [
    (lambda text: text[:len(text) // 2], 'truncated or corrupt'),
    (lambda text: text.replace('"x"', '"x"').replace('2.0', '2.5', 1), 'checksum'),
    (lambda text: json.dumps({'format': 'something else'}), 'not a dmn_localization'),
    (lambda text: '\x00\x01binary', 'truncated or corrupt'),
])
def test_damaged_files_are_refused(tmp_path, damage, match):
    path = save_pose(tmp_path / 'pose.json', a_pose('abc'))
    path.write_text(damage(path.read_text()))
    with pytest.raises(SavedPoseError, match=match):
        load_pose(path, 'abc')


def test_a_pose_of_another_map_or_no_file_is_refused(tmp_path):
    path = save_pose(tmp_path / 'pose.json', a_pose('abc'))
    with pytest.raises(SavedPoseError, match='another map'):
        load_pose(path, 'def')
    with pytest.raises(SavedPoseError, match='no saved pose'):
        load_pose(tmp_path / 'missing.json', 'abc')


def test_map_identity_survives_float16_and_changes_with_the_views(localizer):
    the_map = localizer.map
    from dmn_localization_interfaces.msg import ViewEmbeddingMap as MapMsg
    from geometry_msgs.msg import Pose

    half = msg_to_map(map_to_msg(the_map, 'float16', MapMsg, Pose))
    assert half.identity == the_map.identity
    moved = ViewEmbeddingMap(the_map.embeddings, the_map.poses + 0.01, the_map.extent,
                             the_map.model_name, the_map.fingerprint, the_map.frame_id)
    assert moved.identity != the_map.identity
    other_encoder = ViewEmbeddingMap(the_map.embeddings, the_map.poses, the_map.extent,
                                     the_map.model_name, 'ffffffffffffffff', the_map.frame_id)
    assert other_encoder.identity != the_map.identity


def spread(loc):
    """Return the mean (x, y) and the larger x/y std of the belief, metres."""
    particles = loc.belief.particles[0]
    from dmn_localization.core import geometry

    metric = geometry.denormalize_poses(particles, loc.map.extent).numpy()
    return metric[:, :2].mean(0), metric[:, :2].std(0).max()


def test_start_prefers_the_saved_pose_then_the_initial_pose(localizer, tmp_path):
    path = str(tmp_path / 'pose.json')
    save_pose(path, a_pose(localizer.map.identity, x=5.0))
    message = start_belief(localizer, StartPolicy(True, (1.0, 1.0, 0.0), True, path))
    mean, std = spread(localizer)
    assert 'saved pose' in message and np.allclose(mean, [5.0, 3.0], atol=0.05) and std < 0.3
    # a pose of another map is not used: the initial pose is, and the reason is given
    save_pose(path, a_pose('0123456789abcdef'))
    message = start_belief(localizer, StartPolicy(True, (1.0, 6.0, 0.0), True, path))
    mean, std = spread(localizer)
    assert 'another map' in message and 'initial_pose' in message
    assert np.allclose(mean, [1.0, 6.0], atol=0.1) and 0.4 < std < 0.6  # AMCL's 0.5 m
    # neither: the belief stays as it is (uniform after a new map), and nothing is said
    localizer.initialize_global()
    assert start_belief(localizer, StartPolicy()) == ''
    assert spread(localizer)[1] > 1.5


def test_only_a_converged_pose_is_saved(localizer):
    frame = np.zeros((32, 32, 3), dtype=np.uint8)
    localizer.initialize_gaussian((4.0, 4.0, 0.0), np.diag([1e-4, 1e-4, 1e-4]))
    results = [localizer.process_frame(float(k), frame) for k in range(5)]
    assert localizer.state == 'converged'
    saved = saved_pose_of(localizer, results[-1])
    assert saved.map_id == localizer.map.identity and math.hypot(*(saved.pose[:2] - 4.0)) < 0.1
    localizer.initialize_global()
    result = localizer.process_frame(10.0, frame)
    assert localizer.state != 'converged' and saved_pose_of(localizer, result) is None


def test_default_path_is_under_ros_home_and_names_the_node(monkeypatch, tmp_path):
    monkeypatch.setenv('ROS_HOME', str(tmp_path))
    assert default_path('/robot1/dmn_localization') == (
        tmp_path / 'dmn_localization' / 'robot1__dmn_localization.pose.json')
    monkeypatch.delenv('ROS_HOME')
    assert '.ros' in str(default_path('/dmn_localization'))
