"""Pose geometry: known answers, wrap-around at +-pi, SE(2) identities, normalization."""

import math

from dmn_localization.core import geometry as g
import pytest
import torch

PI = math.pi


def t(*values):
    """Return a float64 tensor."""
    return torch.tensor(values, dtype=torch.float64)


def test_wrap_angle_known_answers():
    angles = t(0.0, PI, -PI, 3 * PI, -3 * PI, PI + 0.1, -PI - 0.1, 2 * PI, 7.0)
    expected = t(0.0, -PI, -PI, -PI, -PI, -PI + 0.1, PI - 0.1, 0.0, 7.0 - 2 * PI)
    torch.testing.assert_close(g.wrap_angle(angles), expected)


def test_compose_known_answer():
    a = t(1.0, 2.0, PI / 2)
    b = t(1.0, 0.0, PI / 2)
    torch.testing.assert_close(g.compose(a, b), t(1.0, 3.0, -PI))  # yaw pi wraps to -pi


def test_relative_known_answer_and_wrap():
    a = t(0.0, 0.0, PI - 0.1)
    b = t(-1.0, 0.0, -PI + 0.1)  # just across +-pi: a small left turn of 0.2 rad
    rel = g.relative(a, b)
    torch.testing.assert_close(rel[2], t(0.2)[0])
    torch.testing.assert_close(rel[0], t(math.cos(0.1))[0])


def test_se2_identities_on_random_poses():
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(100, 3, generator=gen, dtype=torch.float64) * 6 - 3
    b = torch.rand(100, 3, generator=gen, dtype=torch.float64) * 6 - 3
    a[:, 2], b[:, 2] = g.wrap_angle(a[:, 2]), g.wrap_angle(b[:, 2])
    identity = g.compose(a, g.inverse(a))
    torch.testing.assert_close(identity[:, :2], torch.zeros(100, 2, dtype=torch.float64))
    assert torch.all(g.wrap_angle(identity[:, 2]).abs() < 1e-9)
    back = g.compose(a, g.relative(a, b))
    torch.testing.assert_close(back[:, :2], b[:, :2])
    assert torch.all(g.wrap_angle(back[:, 2] - b[:, 2]).abs() < 1e-9)


def test_egocentric_coordinates():
    particles = t(1.0, 1.0, PI / 2).reshape(1, 1, 3)
    views = torch.stack([t(1.0, 3.0, PI / 2), t(0.0, 1.0, PI)]).reshape(1, 2, 3)
    ego = g.egocentric(particles, views)
    assert ego.shape == (1, 1, 2, 4)
    # facing +y, left is -x: the first view is 2 m straight ahead with the same heading,
    # the second 1 m to the left, turned a quarter turn counter-clockwise
    torch.testing.assert_close(ego[0, 0, 0], t(2.0, 0.0, 1.0, 0.0))
    torch.testing.assert_close(ego[0, 0, 1], t(0.0, 1.0, 0.0, 1.0))


def test_normalization_round_trip_and_known_answers():
    extent = [0.0, 0.0, 10.0, 10.0]
    poses = t(0.0, 0.0, 0.3, 10.0, 5.0, -1.0).reshape(2, 3)
    norm = g.normalize_poses(poses, extent)
    torch.testing.assert_close(norm, t(-1.0, -1.0, 0.3, 1.0, 0.0, -1.0).reshape(2, 3))
    torch.testing.assert_close(g.denormalize_poses(norm, extent), poses)
    # a non-square extent uses one scale, so shapes and angles are kept
    wide = g.normalize_poses(t(20.0, 5.0, 0.0), [0.0, 0.0, 20.0, 10.0])
    torch.testing.assert_close(wide, t(1.0, 0.0, 0.0))
    motion = g.normalize_motion(t(1.0, 0.0, 0.5), extent)
    torch.testing.assert_close(motion, t(0.2, 0.0, 0.5))


def test_bad_extent_is_refused():
    with pytest.raises(ValueError, match='x_min < x_max'):
        g.normalize_poses(t(0.0, 0.0, 0.0), [1.0, 0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match='extent must be'):
        g.normalize_poses(t(0.0, 0.0, 0.0), [0.0, 1.0])
