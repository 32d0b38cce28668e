"""Worlds, the ROS pose convention in rendered images, trajectories and odometry."""

import math

from dmn_localization.core.geometry import compose_motions, relative_motions
from dmn_localization.data.render import WorldRenderer
from dmn_localization.data.trajectories import drive, noisy_odometry, OdometryNoise
from dmn_localization.data.worlds import (generate_world, miniworld_to_ros, Rect, ros_to_miniworld,
                                          SceneObject, World)
import numpy as np
import pytest


@pytest.fixture(scope='module')
def renderer():
    """Return one renderer for the module (a GL context is costly)."""
    r = WorldRenderer((48, 48))
    yield r
    r.close()


def red_box_world():
    """Return a plain 10 m room with a red box at (7, 5)."""
    room = Rect(0.0, 0.0, 10.0, 10.0, 'white', 'concrete', 'white')
    return World('rooms', 0, [room], [], [SceneObject('box', 'red', 7.0, 5.0, 0.0, 1.0)])


def redness(images):
    """Return a mask of strongly red pixels ``(N, H, W)``."""
    img = images.astype(int)
    red, green, blue = img[..., 0], img[..., 1], img[..., 2]
    return (red > 120) & (red > green + 60) & (red > blue + 60)


def test_conversion_to_miniworld_and_back():
    assert ros_to_miniworld(1.0, 2.0, 0.5) == (1.0, -2.0, 0.5)
    assert miniworld_to_ros(*ros_to_miniworld(1.0, 2.0, 0.5)) == (1.0, 2.0, 0.5)


def red_columns(image):
    """Return the mean column of the red pixels of one image, or None when none is red."""
    cols = np.nonzero(redness(image[None])[0].any(axis=0))[0]
    return float(cols.mean()) if len(cols) else None


def test_facing_an_object_puts_it_in_the_image_centre(renderer):
    renderer.load(red_box_world())
    # at (3, 5) facing +x (yaw 0) the box is straight ahead; facing away it is not seen
    ahead, away = renderer.render(np.array([[3.0, 5.0, 0.0], [3.0, 5.0, math.pi]]))
    assert abs(red_columns(ahead) - 23.5) < 2.0, 'the box should be in the image centre'
    assert redness(ahead[None]).sum() > 50
    assert red_columns(away) is None
    # from (7, 1), yaw +90 degrees faces +y, where the box is: straight ahead again
    north = renderer.render(np.array([[7.0, 1.0, math.pi / 2]]))[0]
    assert abs(red_columns(north) - 23.5) < 2.0


def test_y_is_left_and_yaw_is_counter_clockwise(renderer):
    renderer.load(red_box_world())
    # from (3, 3) facing +x the box at y=5 is 2 m to the LEFT (ROS: y left)
    left = renderer.render(np.array([[3.0, 3.0, 0.0]]))[0]
    assert red_columns(left) < 18, 'the box must appear in the left part of the image'
    # turning counter-clockwise (positive yaw) towards it brings it to the centre
    turned = renderer.render(np.array([[3.0, 3.0, math.atan2(2.0, 4.0)]]))[0]
    assert abs(red_columns(turned) - 23.5) < 2.0


@pytest.mark.parametrize('domain', ['rooms', 'mazes'])
def test_worlds_are_reproducible_and_views_are_free(domain):
    a, b = generate_world(domain, 11), generate_world(domain, 11)
    assert a.to_dict() == b.to_dict()
    assert a.to_dict() != generate_world(domain, 12).to_dict()
    assert World.from_dict(a.to_dict()).to_dict() == a.to_dict()
    poses = a.sample_free_poses(200, np.random.default_rng(0))
    assert a.is_free(poses[:, 0], poses[:, 1]).all()
    x_min, y_min, x_max, y_max = a.extent
    assert np.all((poses[:, 0] > x_min) & (poses[:, 0] < x_max))
    assert np.all((poses[:, 1] > y_min) & (poses[:, 1] < y_max))


def test_maze_is_connected():
    world = generate_world('mazes', 5)
    assert len(world.connectors) == len(world.rooms) - 1  # a spanning tree of the cells
    reached, frontier = {0}, [0]
    while frontier:
        cell = frontier.pop()
        for con in world.connectors:
            if cell in con.cells:
                other = con.cells[1] if con.cells[0] == cell else con.cells[0]
                if other not in reached:
                    reached.add(other)
                    frontier.append(other)
    assert reached == set(range(len(world.rooms)))


@pytest.mark.parametrize('domain', ['rooms', 'mazes'])
def test_noise_free_odometry_composes_to_the_ground_truth(domain):
    world = generate_world(domain, 2)
    rng = np.random.default_rng(2)
    truth = drive(world, 400, rng)
    assert world.is_free(truth[:, 0], truth[:, 1]).all()
    assert np.hypot(*np.diff(truth[:, :2], axis=0).T).sum() > 10.0  # it really drives
    odometry = noisy_odometry(truth, OdometryNoise.none(), rng)
    np.testing.assert_allclose(odometry, relative_motions(truth), atol=1e-12)
    integrated = compose_motions(truth[0], odometry)
    np.testing.assert_allclose(integrated[:, :2], truth[:, :2], atol=1e-9)
    np.testing.assert_allclose(np.remainder(integrated[:, 2] - truth[:, 2] + np.pi, 2 * np.pi)
                               - np.pi, 0.0, atol=1e-9)
    drifted = compose_motions(truth[0], noisy_odometry(truth, OdometryNoise(), rng))
    assert np.hypot(*(drifted[-1, :2] - truth[-1, :2])) > 0.01  # noisy odometry drifts


def test_trajectory_episodes_follow_the_path(renderer):
    from dmn_localization.data.trajectories import TrajectorySampler

    world = generate_world('mazes', 4)
    rng = np.random.default_rng(4)
    sampler = TrajectorySampler(renderer, num_contexts=6, steps=10, frame_every=5,
                                noise=OdometryNoise.none())
    batch = sampler.episode(world, rng)
    assert batch.context_images.shape == (1, 6, 48, 48, 3)
    assert batch.query_images.shape == (1, 10, 48, 48, 3) and batch.motions.shape == (1, 10, 3)
    # perfect odometry: the motions between frames compose back to the frame poses
    integrated = compose_motions(batch.query_poses[0, 0], batch.motions[0])
    np.testing.assert_allclose(integrated[:, :2], batch.query_poses[0, :, :2], atol=1e-4)
    assert np.array_equal(renderer.render(batch.query_poses[0, 3:4])[0], batch.query_images[0, 3])


def test_each_wall_of_a_room_has_a_panel_of_its_own_colour(renderer):
    world = generate_world('rooms', 5)
    panels = [o for o in world.objects if o.kind == 'panel']
    assert len(panels) == 4 and len({p.color for p in panels}) == 4
    side = world.extent[2]
    # one panel against each wall: south, east, north, west
    walls = {('y', 0.0): 0, ('x', 1.0): 0, ('y', 1.0): 0, ('x', 0.0): 0}
    for p in panels:
        if min(p.y, side - p.y) < 0.1:
            walls[('y', round(p.y / side))] += 1
        else:
            walls[('x', round(p.x / side))] += 1
    assert list(walls.values()) == [1, 1, 1, 1]
    # the red one, looked at from the room centre, fills the middle of the image
    room = Rect(0.0, 0.0, 6.0, 6.0, 'white', 'concrete', 'white')
    red = SceneObject('panel', 'red', 3.0, 5.95, 0.0, 2.0)
    renderer.load(World('rooms', 0, [room], [], [red]))
    facing, away = renderer.render(np.array([[3.0, 3.0, math.pi / 2], [3.0, 3.0, -math.pi / 2]]))
    assert abs(red_columns(facing) - 23.5) < 2.0 and redness(facing[None]).sum() > 100
    assert red_columns(away) is None
