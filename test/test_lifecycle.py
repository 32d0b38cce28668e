"""The managed node over DDS: lifecycle transitions, and a restart at the saved pose."""

import time

from dmn_localization.core.checkpoint import save_checkpoint
from dmn_localization.core.models import build_model, config_for
from dmn_localization.messages.image_conversion import array_to_imgmsg
from dmn_localization_interfaces.srv import BuildMap
from geometry_msgs.msg import PoseWithCovarianceStamped
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
import numpy as np
import pytest
import rclpy
from test_build_map_service import pose
from test_node_localization import Robot, STAMP0, stamp_of
import torch


@pytest.fixture
def robot(ros_domain):
    """Return a :class:`Robot` in its own rclpy context, with lifecycle clients."""
    context = rclpy.Context()
    rclpy.init(context=context)
    r = Robot(context)
    r.change_state = r.node.create_client(ChangeState, '/dmn_localization/change_state')
    r.get_state = r.node.create_client(GetState, '/dmn_localization/get_state')
    r.diagnostics = []
    from diagnostic_msgs.msg import DiagnosticArray

    r.node.create_subscription(DiagnosticArray, '/diagnostics', r.diagnostics.append, 10)
    yield r
    r.executor.shutdown()
    r.node.destroy_node()
    rclpy.shutdown(context=context)


def frames_until(robot, predicate, seconds, odom_xyyaw, timeout=30.0):
    """
    Send a frame every half second until ``predicate()``; return its value.

    Camera frames are best effort, and a subscription the node has just created may not
    have matched the test's publisher yet: one frame can be lost, the next one is not.
    """
    deadline = time.monotonic() + timeout
    k = 0
    while not predicate() and time.monotonic() < deadline:
        robot.send_frame(seconds + 0.01 * k, IMAGE, odom_xyyaw)
        robot.spin_until(predicate, timeout=0.5)
        k += 1
    return predicate()


@pytest.fixture
def checkpoint(tmp_path):
    """Return a random-weight DMN checkpoint."""
    torch.manual_seed(0)
    path = tmp_path / 'dmn.pt'
    save_checkpoint(path, build_model(config_for('dmn-pf')), [0.0, 0.0, 8.0, 8.0])
    return path


def map_request(seed=2):
    """Return a BuildMap request of two random views."""
    rng = np.random.default_rng(seed)
    request = BuildMap.Request()
    request.header.frame_id = 'map'
    request.images = [array_to_imgmsg(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
                                      'rgb8') for _ in range(2)]
    request.poses = [pose(1.0, 1.0, 0.0), pose(6.0, 6.0, 1.5)]
    return request


IMAGE = np.random.default_rng(5).integers(0, 256, (48, 48, 3), dtype=np.uint8)


def transition(robot, transition_id):
    """Ask the node for a lifecycle transition; return whether it succeeded."""
    request = ChangeState.Request()
    request.transition.id = transition_id
    return robot.call(robot.change_state, request).success


def state_of(robot):
    """Return the node's lifecycle state id."""
    return robot.call(robot.get_state, GetState.Request()).current_state.id


@pytest.mark.ros
def test_lifecycle_transitions_and_an_inactive_node_publishes_nothing(
        start_process, robot, checkpoint):
    node = start_process('dmn_localization_node', '--ros-args', '-p', 'autostart:=false',
                         '-p', f'model_path:={checkpoint}', '-p', 'num_particles:=128',
                         '-p', 'publish_pose_when:=always')
    assert robot.get_state.wait_for_service(timeout_sec=60.0), node.log()
    assert state_of(robot) == State.PRIMARY_STATE_UNCONFIGURED
    assert not robot.build_map.wait_for_service(timeout_sec=1.0)  # made at configure
    assert transition(robot, Transition.TRANSITION_CONFIGURE), node.log()
    assert state_of(robot) == State.PRIMARY_STATE_INACTIVE
    assert robot.build_map.wait_for_service(timeout_sec=30.0)
    assert robot.call(robot.build_map, map_request()).success  # an inactive node takes a map
    for k in range(3):  # inactive: frames are ignored, nothing is published
        robot.send_frame(STAMP0 + 0.2 * k, IMAGE, (0.1 * k, 0.0, 0.0))
    robot.spin_until(lambda: False, timeout=2.0)
    assert robot.clouds == [] and robot.poses == [] and robot.diagnostics == []

    assert transition(robot, Transition.TRANSITION_ACTIVATE), node.log()
    assert state_of(robot) == State.PRIMARY_STATE_ACTIVE
    assert robot.spin_until(lambda: robot.diagnostics, timeout=10.0)
    assert frames_until(robot, lambda: robot.clouds, STAMP0 + 1.0, (0.2, 0.0, 0.0)), node.log()

    assert transition(robot, Transition.TRANSITION_DEACTIVATE), node.log()
    robot.spin_until(lambda: False, timeout=0.5)
    clouds, diagnostics = len(robot.clouds), len(robot.diagnostics)
    for k in range(3):
        robot.send_frame(STAMP0 + 2.0 + 0.2 * k, IMAGE, (0.3 + 0.1 * k, 0.0, 0.0))
    robot.spin_until(lambda: False, timeout=2.0)
    assert (len(robot.clouds), len(robot.diagnostics)) == (clouds, diagnostics)

    # activated again: the map was kept (no new build_map needed)
    assert transition(robot, Transition.TRANSITION_ACTIVATE), node.log()
    assert frames_until(robot, lambda: len(robot.clouds) > clouds, STAMP0 + 3.0,
                        (0.7, 0.0, 0.0)), node.log()
    assert 'no map yet' not in node.log()

    assert transition(robot, Transition.TRANSITION_DEACTIVATE)
    assert transition(robot, Transition.TRANSITION_CLEANUP), node.log()
    assert state_of(robot) == State.PRIMARY_STATE_UNCONFIGURED
    assert 'model, map and belief freed' in node.log()
    # configured again from scratch: the map is gone until build_map is called
    assert transition(robot, Transition.TRANSITION_CONFIGURE), node.log()
    assert transition(robot, Transition.TRANSITION_ACTIVATE), node.log()
    assert frames_until(robot, lambda: 'no map yet' in node.log(), STAMP0 + 4.0,
                        (0.8, 0.0, 0.0)), node.log()
    assert node.alive() and node.stop() == 0, node.log()


@pytest.mark.ros
def test_configure_refuses_bad_thresholds_and_the_node_stays_managed(
        start_process, robot, checkpoint):
    node = start_process('dmn_localization_node', '--ros-args', '-p', 'autostart:=false',
                         '-p', f'model_path:={checkpoint}', '-p', 'converged_xy_std:=2.0',
                         '-p', 'lost_xy_std:=1.0')
    assert robot.get_state.wait_for_service(timeout_sec=60.0), node.log()
    assert not transition(robot, Transition.TRANSITION_CONFIGURE)
    assert state_of(robot) == State.PRIMARY_STATE_UNCONFIGURED
    assert 'lost_xy_std (1.0) must exceed converged_xy_std (2.0)' in node.log()
    assert node.alive()


def converge_at(robot, node, x, y, first_stamp):
    """Send a narrow initial pose at (x, y, 0) and drive until the node reports converged."""
    initial = stamp_of(first_stamp, PoseWithCovarianceStamped())
    initial.header.frame_id = 'map'
    initial.pose.pose = pose(x, y, 0.0)
    c = np.zeros(36)
    c[[0, 7, 35]] = 1e-4
    initial.pose.covariance = c.tolist()
    robot.init_pub.publish(initial)
    assert robot.spin_until(lambda: 're-initialized around' in node.log(), timeout=10.0)
    for k in range(6):
        count = len(robot.clouds)
        robot.send_frame(first_stamp + 1.0 + 0.2 * k, IMAGE, (0.1 * k, 0.0, 0.0))
        robot.spin_until(lambda: len(robot.clouds) > count, timeout=30.0)
    assert robot.spin_until(lambda: 'state: converged' in node.log(), timeout=10.0), node.log()


def first_cloud_after_map(robot, node, stamp):
    """Build the map, send one frame; return the particles' mean x-y and largest std."""
    assert robot.build_map.wait_for_service(timeout_sec=60.0), node.log()
    assert robot.call(robot.build_map, map_request()).success
    count = len(robot.clouds)
    robot.send_frame(stamp, IMAGE, (0.0, 0.0, 0.0))
    assert robot.spin_until(lambda: len(robot.clouds) > count, timeout=30.0), node.log()
    xy = np.array([[p.position.x, p.position.y] for p in robot.clouds[-1].poses])
    return xy.mean(0), xy.std(0).max()


@pytest.mark.ros
def test_a_restarted_node_starts_at_its_saved_pose(start_process, robot, checkpoint, tmp_path):
    saved = tmp_path / 'robot' / 'pose.json'
    common = ['-p', f'model_path:={checkpoint}', '-p', 'num_particles:=128',
              '-p', 'motion_noise_xy:=0.0', '-p', 'motion_noise_yaw:=0.0',
              '-p', f'saved_pose_path:={saved}', '-p', 'max_published_particles:=128',
              '-p', 'reference_poses:=0']  # random weights: converged on the spread alone
    first = start_process('dmn_localization_node', '--ros-args', '-p', 'save_pose_rate:=10.0',
                          *common)
    first_cloud_after_map(robot, first, STAMP0)
    converge_at(robot, first, 2.0, 3.0, STAMP0 + 1.0)
    assert robot.spin_until(lambda: saved.exists(), timeout=10.0), first.log()
    assert first.stop() == 0
    second = start_process('dmn_localization_node', '--ros-args',
                           '-p', 'initialize_at_saved_pose:=true', *common)
    mean, std = first_cloud_after_map(robot, second, STAMP0 + 20.0)
    assert 'started at the saved pose' in second.log(), second.log()
    assert np.hypot(*(mean - [2.6, 3.0])) < 0.5 and std < 0.3, (mean, std)  # drove 0.5 m in x
    assert second.stop() == 0
    # a damaged file is refused with the reason, and the node starts globally
    saved.write_text(saved.read_text()[:40])
    third = start_process('dmn_localization_node', '--ros-args',
                          '-p', 'initialize_at_saved_pose:=true', *common)
    mean, std = first_cloud_after_map(robot, third, STAMP0 + 40.0)
    assert 'saved pose not used' in third.log() and 'truncated or corrupt' in third.log()
    assert std > 1.0
    assert third.alive()


@pytest.mark.ros
@pytest.mark.parametrize('gating', [True, False])
def test_a_standing_robot_keeps_its_particles_only_with_gating(start_process, robot, tmp_path,
                                                               gating):
    torch.manual_seed(0)
    model = build_model(config_for('dmn-pf'))
    with torch.no_grad():  # random weights with large likelihood differences
        model.head_mlp[-1].weight.mul_(200.0)
    path = tmp_path / 'sharp.pt'
    save_checkpoint(path, model, [0.0, 0.0, 8.0, 8.0])
    limit = '0.05' if gating else '0.0'
    node = start_process('dmn_localization_node', '--ros-args', '-p', f'model_path:={path}',
                         '-p', 'num_particles:=256', '-p', 'max_published_particles:=256',
                         '-p', 'motion_noise_xy:=0.0', '-p', 'motion_noise_yaw:=0.0',
                         '-p', f'update_min_d:={limit}', '-p', f'update_min_a:={limit}')
    assert robot.build_map.wait_for_service(timeout_sec=60.0), node.log()
    request = map_request()
    request.images.append(request.images[0])
    request.poses.append(pose(2.0, 6.0, 3.0))
    assert robot.call(robot.build_map, request).success
    spreads = []
    for k in range(50):  # the robot stands: the same odometry pose, the same image
        robot.send_frame(STAMP0 + 0.1 * k, IMAGE, (2.0, 2.0, 0.0))
        assert robot.spin_until(lambda: len(robot.clouds) > k, timeout=30.0), node.log()
        xy = np.array([[p.position.x, p.position.y] for p in robot.clouds[-1].poses])
        spreads.append(xy.std(0).max())

    def skipped():
        values = {kv.key: kv.value for kv in robot.diagnostics[-1].status[0].values}
        return values['frames_processed'] == '50' and int(values['updates_skipped'])

    assert robot.spin_until(lambda: robot.diagnostics and skipped() is not False, 10.0)
    if gating:
        assert spreads[-1] == pytest.approx(spreads[0]) and skipped() == 49, spreads
    else:
        assert spreads[-1] < 0.7 * spreads[0] and skipped() == 0, spreads
