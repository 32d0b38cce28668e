"""The ROS-free runtime: odometry interpolation, map building, frames, belief resets."""

import math

from dmn_localization.core.checkpoint import load_checkpoint, save_checkpoint
from dmn_localization.core.maps import MapFingerprintError, ViewEmbeddingMap
from dmn_localization.core.models import build_model, config_for
from dmn_localization.runtime.localizer import (Localizer, LocalizerError, LocalizerSettings,
                                                OdometryBuffer)
import numpy as np
import pytest
import torch

EXTENT = [0.0, 0.0, 8.0, 8.0]


@pytest.fixture(scope='module')
def loaded(tmp_path_factory):
    """Return a DMN checkpoint with random weights, loaded as the node would."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp('model') / 'dmn.pt'
    save_checkpoint(path, build_model(config_for('dmn-pf')), EXTENT)
    return load_checkpoint(path)


def images(count, seed=0, size=(96, 128)):
    """Return random camera images of another size than the model's."""
    return list(np.random.default_rng(seed).integers(0, 256, (count, *size, 3), dtype=np.uint8))


def test_odometry_interpolation_and_time_jumps():
    buf = OdometryBuffer(horizon_s=10.0)
    buf.add(0.0, (0.0, 0.0, math.pi - 0.1))
    buf.add(1.0, (1.0, 2.0, -math.pi + 0.1))
    mid = buf.pose_at(0.5, max_gap=0.5)
    np.testing.assert_allclose(mid[:2], [0.5, 1.0])
    assert abs(abs(mid[2]) - math.pi) < 1e-9  # across +-pi, the short way
    assert buf.pose_at(2.0, max_gap=0.5) is None and buf.pose_at(1.3, max_gap=0.5) is not None
    assert buf.add(0.5, (5.0, 5.0, 0.0)) is False  # time went backwards: reset
    np.testing.assert_allclose(buf.pose_at(0.5, 0.1), [5.0, 5.0, 0.0])


def test_no_map_and_foreign_maps_are_refused(loaded):
    loc = Localizer(loaded, settings=LocalizerSettings(num_particles=64))
    with pytest.raises(LocalizerError, match='no map'):
        loc.process_frame(0.0, images(1)[0])
    torch.manual_seed(1)
    other = build_model(config_for('dmn-pf'))
    foreign = ViewEmbeddingMap.build(other, np.stack(images(2, size=(32, 32))),
                                     np.zeros((2, 3)), EXTENT)
    with pytest.raises(MapFingerprintError):
        loc.set_map(foreign)


def test_frames_give_poses_covariances_and_particles(loaded):
    loc = Localizer(loaded, settings=LocalizerSettings(num_particles=256))
    poses = np.array([[1.0, 1.0, 0.0], [6.0, 2.0, 1.5], [4.0, 6.0, -2.0]])
    the_map = loc.build_map(images(3), poses)
    assert the_map.num_views == 3 and the_map.fingerprint == loc.fingerprint
    result = loc.process_frame(10.0, images(1, seed=5)[0])
    assert result.pose.shape == (3,) and result.particles.shape == (256, 3)
    assert np.all(result.particles[:, :2] >= -1e-5) and np.all(result.particles[:, :2] <= 8.0)
    np.testing.assert_allclose(result.covariance, result.covariance.T, atol=1e-6)
    assert np.all(np.linalg.eigvalsh(result.covariance) > -1e-6)
    assert result.covariance[0, 0] > 1.0  # a global belief is wide
    assert not result.moved_by_odometry  # no odometry yet
    assert abs(result.weights.sum() - 1.0) < 1e-4


def test_odometry_moves_a_narrow_belief(loaded):
    settings = LocalizerSettings(num_particles=128, motion_noise_xy=0.0, motion_noise_yaw=0.0)
    loc = Localizer(loaded, settings=settings)
    loc.build_map(images(2), np.array([[1.0, 1.0, 0.0], [5.0, 5.0, 1.0]]))
    loc.initialize_gaussian((2.0, 3.0, math.pi / 2), np.diag([1e-6, 1e-6, 1e-6]))
    loc.add_odometry(0.0, (10.0, 10.0, 0.0))
    loc.add_odometry(1.0, (11.0, 10.0, 0.0))  # 1 m forward in the odometry frame
    first = loc.process_frame(0.0, images(1, seed=1)[0])
    np.testing.assert_allclose(first.pose, [2.0, 3.0, math.pi / 2], atol=0.01)
    second = loc.process_frame(1.0, images(1, seed=2)[0])
    assert second.moved_by_odometry
    # facing +y in the map, 1 m forward lands at (2, 4)
    np.testing.assert_allclose(second.pose, [2.0, 4.0, math.pi / 2], atol=0.01)
    assert second.covariance[0, 0] < 1e-3


def test_bad_initial_poses(loaded):
    loc = Localizer(loaded, settings=LocalizerSettings(num_particles=16))
    loc.build_map(images(1), np.array([[1.0, 1.0, 0.0]]))
    with pytest.raises(LocalizerError, match='finite'):
        loc.initialize_gaussian((np.nan, 0.0, 0.0), np.eye(3))
    with pytest.raises(LocalizerError, match='covariance'):
        loc.initialize_gaussian((1.0, 1.0, 0.0), -np.eye(3))


def test_map_to_odom_closes_the_tf_tree():
    from dmn_localization.runtime.localizer import map_to_odom

    rng = np.random.default_rng(3)
    for _ in range(20):
        map_pose = rng.uniform(-5, 5, 3)
        odom_pose = rng.uniform(-5, 5, 3)
        tx, ty, tyaw = map_to_odom(map_pose, odom_pose)
        # map_T_odom * odom_T_base must equal map_T_base
        x = tx + math.cos(tyaw) * odom_pose[0] - math.sin(tyaw) * odom_pose[1]
        y = ty + math.sin(tyaw) * odom_pose[0] + math.cos(tyaw) * odom_pose[1]
        yaw = math.remainder(tyaw + odom_pose[2], 2 * math.pi)
        np.testing.assert_allclose([x, y], map_pose[:2], atol=1e-9)
        assert abs(math.remainder(yaw - map_pose[2], 2 * math.pi)) < 1e-9
    # odometry that agrees with the map: identity transform
    np.testing.assert_allclose(map_to_odom((1.0, 2.0, 0.5), (1.0, 2.0, 0.5)), 0.0, atol=1e-12)


def test_a_merged_map_keeps_the_belief_where_it_was_in_metres(loaded):
    settings = LocalizerSettings(num_particles=64, motion_noise_xy=0.0, motion_noise_yaw=0.0)
    loc = Localizer(loaded, settings=settings)
    first = loc.build_map(images(2), np.array([[1.0, 1.0, 0.0], [5.0, 5.0, 1.0]]), EXTENT)
    loc.initialize_gaussian((2.0, 3.0, 0.5), np.diag([1e-6, 1e-6, 1e-6]))
    before = loc.process_frame(0.0, images(1, seed=1)[0])
    other = ViewEmbeddingMap.build(loaded.model, images(2, seed=3),
                                   np.array([[9.0, 2.0, 0.0], [12.0, 9.0, 2.0]]),
                                   [6.0, 0.0, 14.0, 10.0])
    loc.set_map(first.merge(other), keep_belief=True)
    assert loc.map.num_views == 4 and loc.map.extent.tolist() == [0.0, 0.0, 14.0, 10.0]
    after = loc.process_frame(0.0, images(1, seed=1)[0])
    np.testing.assert_allclose(after.pose, before.pose, atol=0.01)
    assert after.covariance[0, 0] < 1e-3
    loc.set_map(first)  # without keep_belief: global again
    assert loc.process_frame(0.0, images(1, seed=1)[0]).covariance[0, 0] > 0.5


def test_frames_report_the_state_and_the_evidence(loaded):
    # random weights explain no frame better at one place than elsewhere: without the
    # relative evidence rule (tested on its own) a narrow belief converges
    settings = LocalizerSettings(num_particles=64, motion_noise_xy=0.0, motion_noise_yaw=0.0,
                                 reference_poses=0)
    loc = Localizer(loaded, settings=settings)
    assert loc.state == 'initializing'
    loc.build_map(images(2), np.array([[1.0, 1.0, 0.0], [5.0, 5.0, 1.0]]), EXTENT)
    wide = loc.process_frame(0.0, images(1, seed=1)[0])
    assert wide.state == 'global' and np.isfinite(wide.evidence)
    assert wide.spread[0] > 1.0
    loc.initialize_gaussian((2.0, 3.0, 0.5), np.diag([1e-4, 1e-4, 1e-4]))
    states = [loc.process_frame(0.1 * k, images(1, seed=1)[0]).state for k in range(1, 5)]
    assert states == ['global', 'global', 'converged', 'converged']


def test_recovery_injects_only_after_the_belief_has_converged(loaded):
    settings = LocalizerSettings(num_particles=64, motion_noise_xy=0.0, motion_noise_yaw=0.0,
                                 resample_threshold=1.0, update_min_d=0.0, update_min_a=0.0,
                                 recovery_alpha_slow=0.01, recovery_alpha_fast=0.3,
                                 reference_poses=0)
    loc = Localizer(loaded, settings=settings)
    loc.build_map(images(2), np.array([[1.0, 1.0, 0.0], [5.0, 5.0, 1.0]]), EXTENT)
    loc.recovery.update = lambda evidence: 0.5  # as if the evidence had collapsed
    frame = images(1, seed=1)[0]
    searching = [loc.process_frame(0.1 * k, frame) for k in range(3)]
    assert [r.state for r in searching] == ['global'] * 3
    assert [r.recovery_share for r in searching] == [0.0] * 3
    loc.initialize_gaussian((2.0, 3.0, 0.5), np.diag([1e-4, 1e-4, 1e-4]))
    tracked = [loc.process_frame(1.0 + 0.1 * k, frame) for k in range(5)]
    first = [r.state for r in tracked].index('converged')
    assert [r.recovery_share for r in tracked[:first]] == [0.0] * first
    assert tracked[first].recovery_share == 0.5  # armed from the first converged frame on
    loc.initialize_global()  # a new search: not armed until converged again
    assert loc.process_frame(2.0, frame).recovery_share == 0.0


@pytest.mark.parametrize('gating', [True, False])
def test_a_standing_robot_keeps_its_particles_only_with_gating(loaded, gating):
    settings = LocalizerSettings(num_particles=256, motion_noise_xy=0.0, motion_noise_yaw=0.0,
                                 update_min_d=0.05 if gating else 0.0,
                                 update_min_a=0.05 if gating else 0.0)
    import copy

    sharp = copy.deepcopy(loaded)  # random weights with large likelihood differences
    with torch.no_grad():
        sharp.model.head_mlp[-1].weight.mul_(200.0)
    loc = Localizer(sharp, settings=settings)
    loc.build_map(images(3), np.array([[1.0, 1.0, 0.0], [5.0, 5.0, 1.0], [2.0, 6.0, 3.0]]),
                  EXTENT)
    frame = images(1, seed=7)[0]
    spreads = []
    for k in range(50):  # the robot stands: the same odometry pose, the same image
        loc.add_odometry(0.1 * k, (2.0, 2.0, 0.0))
        spreads.append(loc.process_frame(0.1 * k, frame).spread[0])
    if gating:
        assert spreads[-1] == pytest.approx(spreads[0]) and loc.updates_skipped == 49
    else:
        assert spreads[-1] < 0.5 * spreads[0] and loc.updates_skipped == 0
    # moving on updates again
    loc.add_odometry(5.0, (2.5, 2.0, 0.0))
    assert loc.process_frame(5.0, frame).updated


def test_the_likelihood_scale_tempers_each_update(loaded):
    poses = np.array([[1.0, 1.0, 0.0], [6.0, 2.0, 1.5], [4.0, 6.0, -2.0]])
    weights, particles = {}, {}
    for scale in (1.0, 0.25):
        loc = Localizer(loaded, settings=LocalizerSettings(num_particles=128, seed=3,
                                                           likelihood_scale=scale))
        loc.build_map(images(3), poses)
        result = loc.process_frame(10.0, images(1, seed=5)[0])  # no odometry: no motion
        weights[scale], particles[scale] = np.log(result.weights), result.particles
    np.testing.assert_array_equal(particles[0.25], particles[1.0])  # the same draws
    # from uniform weights, a quarter of the log-likelihood: a quarter of the log-weights'
    # spread about their mean
    centred = {k: v - v.mean() for k, v in weights.items()}
    np.testing.assert_allclose(centred[0.25], 0.25 * centred[1.0], rtol=1e-3, atol=1e-5)


def test_the_relative_evidence_compares_the_belief_with_poses_over_the_whole_map(loaded):
    from dmn_localization.core.preprocessing import preprocess_images

    poses = np.array([[1.0, 1.0, 0.0], [6.0, 2.0, 1.5], [4.0, 6.0, -2.0]])
    settings = LocalizerSettings(num_particles=64, seed=2, reference_poses=300,
                                 likelihood_scale=0.5)
    loc = Localizer(loaded, settings=settings)
    loc.build_map(images(3), poses, EXTENT)
    reference = loc.reference_poses
    assert reference.shape == (1, 300, 3)
    assert reference[..., :2].abs().max() <= 1.0  # within the map's extent (normalized)
    frame = images(1, seed=5)[0]
    result = loc.process_frame(1.0, frame)
    with torch.no_grad():
        query = loc.model.prepare_query(preprocess_images(frame[None], loc.model.config))
        scores = 0.5 * loc.model.observe(loc.map_context, query, reference, False)[0, :, 0]
    expected = result.evidence - (torch.logsumexp(scores, 0) - math.log(300)).item()
    assert result.relative_evidence == pytest.approx(expected, abs=1e-4)
    # the same poses for the same map and seed; none at all when turned off
    again = Localizer(loaded, settings=settings)
    again.build_map(images(3), poses, EXTENT)
    assert torch.equal(again.reference_poses, reference)
    off = Localizer(loaded, settings=LocalizerSettings(num_particles=64, reference_poses=0))
    off.build_map(images(3), poses, EXTENT)
    assert off.process_frame(1.0, frame).relative_evidence is None


def test_the_published_pose_is_the_weighted_mean_or_the_belief_s_densest_place(loaded):
    from dmn_localization.core import particle_filter as pf

    poses = np.array([[1.0, 1.0, 0.0], [6.0, 2.0, 1.5], [4.0, 6.0, -2.0]])
    results = {}
    for bandwidth in (0.0, 1.2):
        loc = Localizer(loaded, settings=LocalizerSettings(num_particles=256, seed=4,
                                                           mode_bandwidth=bandwidth))
        loc.build_map(images(3), poses, EXTENT)
        results[bandwidth] = loc.process_frame(1.0, images(1, seed=5)[0])
    mean, mode = results[0.0], results[1.2]
    np.testing.assert_array_equal(mean.particles, mode.particles)  # the same belief
    np.testing.assert_array_equal(mean.weights, mode.weights)
    belief = pf.Belief(torch.as_tensor(mean.particles)[None],
                       torch.log(torch.as_tensor(mean.weights))[None])
    np.testing.assert_allclose(mean.pose[:2], pf.estimate(belief)[0, :2].numpy(), atol=1e-4)
    # 1.2 m in a map 8 m across is 0.3 normalized units; the mode does not move with units
    expected = pf.mode_estimate(belief, 1.2)[0].numpy()
    np.testing.assert_allclose(mode.pose, expected, atol=1e-3)
    assert np.linalg.norm(mode.pose[:2] - mean.pose[:2]) > 0.05  # a global belief: they differ
