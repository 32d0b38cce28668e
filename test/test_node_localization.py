"""The node localizes over DDS: map from the service, poses and particles from frames."""

import math
import time

from dmn_localization.core.checkpoint import save_checkpoint
from dmn_localization.core.models import build_model, config_for, encoder_fingerprint
from dmn_localization.messages.image_conversion import array_to_imgmsg
from dmn_localization_interfaces.srv import BuildMap
from geometry_msgs.msg import PoseArray, PoseWithCovarianceStamped
from nav_msgs.msg import Odometry
import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_srvs.srv import Empty
from test_build_map_service import pose

STAMP0 = 1000.0


def stamp_of(seconds, msg):
    """Set ``msg.header.stamp`` to ``seconds``; return the message."""
    msg.header.stamp.sec = int(seconds)
    msg.header.stamp.nanosec = int(round((seconds - int(seconds)) * 1e9))
    return msg


class Robot:
    """A test-side node: service clients, publishers of sensors, recorders of outputs."""

    def __init__(self, context):
        self.node = rclpy.create_node('fake_robot', context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.build_map = self.node.create_client(BuildMap, '/dmn_localization/build_map')
        self.global_loc = self.node.create_client(Empty, '/dmn_localization/global_localization')
        self.image_pub = self.node.create_publisher(Image, 'image', qos_profile_sensor_data)
        self.odom_pub = self.node.create_publisher(Odometry, 'odom', 100)
        self.init_pub = self.node.create_publisher(PoseWithCovarianceStamped, 'initialpose', 1)
        self.poses, self.clouds = [], []
        self.node.create_subscription(PoseWithCovarianceStamped, 'pose', self.poses.append, 10)
        self.node.create_subscription(PoseArray, 'particle_cloud', self.clouds.append,
                                      qos_profile_sensor_data)

    def call(self, client, request, timeout=60.0):
        """Call a service and wait for the answer."""
        from conftest import call_service

        response = call_service(self.executor, client, request, timeout)
        assert response is not None, 'no service response'
        return response

    def spin_until(self, predicate, timeout):
        """Spin until ``predicate()`` or timeout; return its value."""
        deadline = time.monotonic() + timeout
        while not predicate() and time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.05)
        return predicate()

    def send_frame(self, seconds, image, odom_xyyaw):
        """Publish odometry and a camera frame at ``seconds``."""
        odom = stamp_of(seconds, Odometry())
        odom.header.frame_id, odom.child_frame_id = 'odom', 'base_link'
        odom.pose.pose = pose(*odom_xyyaw)
        self.odom_pub.publish(odom)
        self.image_pub.publish(stamp_of(seconds, array_to_imgmsg(image, 'rgb8')))


@pytest.fixture
def robot(ros_domain):
    """Return a :class:`Robot` in its own rclpy context."""
    context = rclpy.Context()
    rclpy.init(context=context)
    r = Robot(context)
    yield r
    r.executor.shutdown()
    r.node.destroy_node()
    rclpy.shutdown(context=context)


@pytest.mark.ros
def test_node_builds_the_map_and_publishes_poses_and_particles(start_process, robot, tmp_path):
    import torch

    torch.manual_seed(0)
    model = build_model(config_for('dmn-pf'))
    checkpoint = tmp_path / 'dmn.pt'
    save_checkpoint(checkpoint, model, [0.0, 0.0, 8.0, 8.0])
    node = start_process('dmn_localization_node', '--ros-args',
                         '-p', f'model_path:={checkpoint}', '-p', 'num_particles:=256',
                         '-p', 'publish_pose_when:=always',
                         '-p', 'max_published_particles:=50')
    assert robot.build_map.wait_for_service(timeout_sec=60.0), node.log()
    rng = np.random.default_rng(0)
    request = BuildMap.Request()
    request.header.frame_id = 'map'
    request.images = [array_to_imgmsg(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
                                      'rgb8') for _ in range(3)]
    request.poses = [pose(1.0, 1.0, 0.0), pose(6.0, 2.0, 1.5), pose(4.0, 6.0, -2.0)]
    response = robot.call(robot.build_map, request)
    assert response.success, response.message
    assert response.num_views == 3 and response.fingerprint == encoder_fingerprint(model)
    # the start is logged with what an operator needs to know
    assert (f'model dmn-pf (fingerprint {encoder_fingerprint(model)}) from {checkpoint} on '
            'cpu, 256 particles') in node.log(), node.log()

    frames = [rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(3)]
    for k, frame in enumerate(frames):
        robot.send_frame(STAMP0 + k, frame, (0.1 * k, 0.0, 0.0))
        robot.spin_until(lambda: len(robot.poses) > k, timeout=30.0)
    assert len(robot.poses) >= 2, node.log()
    first = robot.poses[0]
    assert first.header.frame_id == 'map'
    assert abs(first.header.stamp.sec + first.header.stamp.nanosec * 1e-9 - STAMP0) < 3.0
    cov = np.asarray(first.pose.covariance).reshape(6, 6)
    assert cov[0, 0] > 0.5 and cov[1, 1] > 0.5  # a global belief is wide
    assert robot.spin_until(lambda: len(robot.clouds) > 0, timeout=10.0)
    assert 0 < len(robot.clouds[-1].poses) <= 50

    # RViz's "2D Pose Estimate": a narrow belief around (2, 3)
    initial = stamp_of(STAMP0 + 10, PoseWithCovarianceStamped())
    initial.header.frame_id = 'map'
    initial.pose.pose = pose(2.0, 3.0, math.pi / 2)
    c = np.zeros(36)
    c[[0, 7, 35]] = [1e-4, 1e-4, 1e-4]
    initial.pose.covariance = c.tolist()
    robot.init_pub.publish(initial)
    robot.spin_until(lambda: False, timeout=1.0)
    count = len(robot.poses)
    robot.send_frame(STAMP0 + 11, frames[0], (0.3, 0.0, 0.0))
    assert robot.spin_until(lambda: len(robot.poses) > count, timeout=30.0), node.log()
    narrow = robot.poses[-1].pose
    assert abs(narrow.pose.position.x - 2.0) < 0.2 and abs(narrow.pose.position.y - 3.0) < 0.2
    assert narrow.covariance[0] < 0.05

    robot.call(robot.global_loc, Empty.Request())
    count = len(robot.poses)
    robot.send_frame(STAMP0 + 12, frames[1], (0.3, 0.0, 0.0))
    assert robot.spin_until(lambda: len(robot.poses) > count, timeout=30.0)
    assert robot.poses[-1].pose.covariance[0] > 0.5  # wide again

    bad = BuildMap.Request()
    assert not robot.call(robot.build_map, bad).success
    assert robot.call(robot.build_map, request).success  # still serving
    assert node.alive() and node.stop() == 0, node.log()


@pytest.mark.ros
def test_bad_sensor_input_is_logged_and_the_node_keeps_localizing(start_process, robot,
                                                                  tmp_path):
    import torch

    torch.manual_seed(0)
    checkpoint = tmp_path / 'dmn.pt'
    save_checkpoint(checkpoint, build_model(config_for('dmn-pf')), [0.0, 0.0, 8.0, 8.0])
    node = start_process('dmn_localization_node', '--ros-args', '-p',
                         f'model_path:={checkpoint}', '-p', 'num_particles:=128',
                         '-p', 'publish_pose_when:=always',
                         '-p', 'max_odom_gap:=0.5')
    assert robot.build_map.wait_for_service(timeout_sec=60.0), node.log()
    rng = np.random.default_rng(1)
    request = BuildMap.Request()
    request.header.frame_id = 'map'
    request.images = [array_to_imgmsg(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
                                      'rgb8') for _ in range(2)]
    request.poses = [pose(1.0, 1.0, 0.0), pose(6.0, 6.0, 1.5)]
    assert robot.call(robot.build_map, request).success
    image = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)

    def frame_gets_a_pose(seconds, odom=(0.0, 0.0, 0.0), odom_frame='odom'):
        count = len(robot.poses)
        if odom is not None:
            msg = stamp_of(seconds, Odometry())
            msg.header.frame_id = odom_frame
            msg.pose.pose = pose(*odom)
            robot.odom_pub.publish(msg)
        robot.image_pub.publish(stamp_of(seconds, array_to_imgmsg(image, 'rgb8')))
        return robot.spin_until(lambda: len(robot.poses) > count, timeout=30.0)

    def logged(text):
        return robot.spin_until(lambda: text in node.log(), timeout=10.0)

    assert frame_gets_a_pose(STAMP0)
    assert frame_gets_a_pose(STAMP0 + 0.2, (0.1, 0.0, 0.0))
    # odometry in another frame than odom_frame_id: ignored, said so
    assert frame_gets_a_pose(STAMP0 + 0.4, (0.2, 0.0, 0.0), odom_frame='wheel_odom')
    assert logged("odometry ignored: it is in frame 'wheel_odom', expected odom_frame_id "
                  "'odom'"), node.log()
    # a camera frame in an encoding the node cannot read: logged, and the next frame works
    unreadable = array_to_imgmsg(image, 'rgb8')
    unreadable.encoding = 'yuv422'
    robot.image_pub.publish(stamp_of(STAMP0 + 0.45, unreadable))
    assert logged("image ignored: unsupported image encoding 'yuv422'"), node.log()
    empty = array_to_imgmsg(image, 'rgb8')
    empty.width, empty.step, empty.data = 0, 0, b''
    robot.image_pub.publish(stamp_of(STAMP0 + 0.47, empty))
    assert logged('image ignored: rgb8 image 0x'), node.log()
    # camera_info: an uncalibrated one is refused, a narrow camera is reported, a wide one
    # is cropped to the model's view, and frames keep getting poses
    from sensor_msgs.msg import CameraInfo

    info_pub = robot.node.create_publisher(CameraInfo, 'camera_info', qos_profile_sensor_data)

    def camera_says(fov, text):
        info = CameraInfo()
        info.width, info.height = 48, 48
        f = 0.0 if fov is None else 24.0 / math.tan(math.radians(fov) / 2)
        info.k = [f, 0.0, 24.0, 0.0, f, 24.0, 0.0, 0.0, 1.0]
        for _ in range(20):
            info_pub.publish(info)
            if robot.spin_until(lambda: text in node.log(), timeout=0.5):
                return True
        return False

    assert camera_says(None, 'camera ignored (camera_info): focal lengths'), node.log()
    assert camera_says(50.0, 'degrees horizontally, the model 70: the image cannot be '
                             'cropped to it'), node.log()
    assert camera_says(100.0, "cropped to the model's view"), node.log()
    assert frame_gets_a_pose(STAMP0 + 0.48)
    # an initial pose in another frame than global_frame_id is refused; the belief stays wide
    initial = stamp_of(STAMP0 + 0.5, PoseWithCovarianceStamped())
    initial.header.frame_id = 'odom'
    initial.pose.pose = pose(2.0, 3.0, 0.0)
    robot.init_pub.publish(initial)
    assert logged("initialpose refused: it is in frame 'odom'"), node.log()
    assert frame_gets_a_pose(STAMP0 + 0.6, (0.3, 0.0, 0.0))
    assert robot.poses[-1].pose.covariance[0] > 0.5
    # odometry stops: frames 3 s later get an observation-only update and a warning
    assert frame_gets_a_pose(STAMP0 + 3.6, odom=None)
    assert logged('no odometry around this frame: observation-only update'), node.log()
    # time jumps back (a bag loops): the odometry buffer is reset and poses keep coming
    assert frame_gets_a_pose(STAMP0 - 100.0, (0.0, 0.0, 0.0))
    assert logged('odometry time went backwards: buffer reset'), node.log()
    assert frame_gets_a_pose(STAMP0 - 99.8, (0.1, 0.0, 0.0))
    stamp = robot.poses[-1].header.stamp
    assert abs(stamp.sec + stamp.nanosec * 1e-9 - (STAMP0 - 99.8)) < 1e-6
    assert node.alive() and node.stop() == 0, node.log()


@pytest.mark.ros
def test_diagnostics_and_no_pose_until_converged(start_process, robot, tmp_path):
    import torch
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

    torch.manual_seed(0)
    checkpoint = tmp_path / 'dmn.pt'
    save_checkpoint(checkpoint, build_model(config_for('dmn-pf')), [0.0, 0.0, 8.0, 8.0])
    # random weights explain a frame no better at one place than elsewhere: without the
    # relative evidence (reference_poses 0) a narrow belief converges on its spread alone
    node = start_process('dmn_localization_node', '--ros-args', '-p',
                         f'model_path:={checkpoint}', '-p', 'num_particles:=128',
                         '-p', 'motion_noise_xy:=0.0', '-p', 'motion_noise_yaw:=0.0',
                         '-p', 'reference_poses:=0')
    diagnostics = []
    robot.node.create_subscription(DiagnosticArray, '/diagnostics', diagnostics.append, 10)
    assert robot.build_map.wait_for_service(timeout_sec=60.0), node.log()
    rng = np.random.default_rng(2)
    request = BuildMap.Request()
    request.header.frame_id = 'map'
    request.images = [array_to_imgmsg(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
                                      'rgb8') for _ in range(2)]
    request.poses = [pose(1.0, 1.0, 0.0), pose(6.0, 6.0, 1.5)]
    assert robot.call(robot.build_map, request).success
    image = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)

    def last_status():
        status = diagnostics[-1].status[0]
        return status, {kv.key: kv.value for kv in status.values}

    # a global belief: particles, no pose, state global with level WARN
    for k in range(3):
        robot.send_frame(STAMP0 + 0.2 * k, image, (0.0, 0.0, 0.0))
        assert robot.spin_until(lambda: len(robot.clouds) > k, timeout=30.0), node.log()
    assert robot.spin_until(lambda: diagnostics and last_status()[1].get(
        'frames_processed') == '3', timeout=5.0)
    status, values = last_status()
    assert robot.poses == []
    assert values['state'] == 'global' and status.level == DiagnosticStatus.WARN
    for key in ('spread_x_m', 'spread_y_m', 'spread_yaw_rad', 'effective_sample_size',
                'frames_processed', 'frames_dropped', 'updates_skipped', 'last_step_latency_ms',
                'map_fingerprint', 'device', 'evidence', 'relative_evidence'):
        assert key in values, key
    assert float(values['spread_x_m']) > 1.0
    # a narrow initial pose: converged after converged_frames frames, then poses come
    initial = stamp_of(STAMP0 + 1.0, PoseWithCovarianceStamped())
    initial.header.frame_id = 'map'
    initial.pose.pose = pose(2.0, 3.0, 0.0)
    c = np.zeros(36)
    c[[0, 7, 35]] = 1e-4
    initial.pose.covariance = c.tolist()
    robot.init_pub.publish(initial)
    assert robot.spin_until(lambda: 're-initialized around' in node.log(), timeout=10.0)
    for k in range(4):  # driving on (a standing robot's frames would be gated)
        robot.send_frame(STAMP0 + 2.0 + 0.2 * k, image, (0.1 * k, 0.0, 0.0))
        robot.spin_until(lambda: len(robot.clouds) > 3 + k, timeout=30.0)
    assert robot.spin_until(lambda: len(robot.poses) >= 2, timeout=10.0), node.log()
    assert robot.spin_until(lambda: last_status()[1]['state'] == 'converged', timeout=5.0)
    assert last_status()[0].level == DiagnosticStatus.OK
    assert node.alive() and node.stop() == 0, node.log()


@pytest.mark.ros
def test_inconsistent_state_thresholds_stop_the_node_with_the_parameter_named(start_process):
    node = start_process('dmn_localization_node', '--ros-args', '-p', 'converged_xy_std:=2.0',
                         '-p', 'lost_xy_std:=1.0')
    deadline = time.monotonic() + 60.0
    while node.alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not node.alive()
    assert 'lost_xy_std (1.0) must exceed converged_xy_std (2.0)' in node.log()
