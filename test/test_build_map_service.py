"""The node in its own process serves ~/build_map over Fast DDS on loopback."""

import copy

from dmn_localization.messages.image_conversion import array_to_imgmsg
from dmn_localization_interfaces.srv import BuildMap
from geometry_msgs.msg import Pose
import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor

SERVICE = '/dmn_localization/build_map'


def pose(x, y, yaw):
    """Return a geometry_msgs/Pose at (x, y) with heading ``yaw``."""
    msg = Pose()
    msg.position.x, msg.position.y = float(x), float(y)
    msg.orientation.z, msg.orientation.w = float(np.sin(yaw / 2)), float(np.cos(yaw / 2))
    return msg


@pytest.fixture
def client(ros_domain):
    """Call the node's BuildMap service from an rclpy client in its own context."""
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('build_map_test_client', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    cli = node.create_client(BuildMap, SERVICE)

    def call(request, timeout=30.0):
        from conftest import call_service

        response = call_service(executor, cli, request, timeout)
        assert response is not None, f'no response from {SERVICE} within {timeout} s'
        return response

    call.client = cli
    yield call
    executor.shutdown()
    node.destroy_node()
    rclpy.shutdown(context=context)


@pytest.mark.ros
def test_build_map_round_trip_over_dds(start_process, client, tmp_path):
    # a model_path that does not exist: the node runs without a model and says so
    node = start_process('dmn_localization_node', '--ros-args', '-p',
                         f'model_path:={tmp_path / "missing.pt"}', '-p', 'max_map_views:=3')
    ready = client.client.wait_for_service(timeout_sec=60.0)
    assert ready, f'{SERVICE} never appeared; node output:\n{node.log()}'

    rng = np.random.default_rng(3)
    request = BuildMap.Request()
    request.header.frame_id = 'map'
    request.images = [
        array_to_imgmsg(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), 'rgb8'),
        array_to_imgmsg(rng.integers(0, 256, (32, 32), dtype=np.uint8), 'mono8'),
    ]
    request.poses = [pose(1.0, 2.0, 0.5), pose(-1.0, 0.5, -2.0)]
    response = client(request)
    assert not response.success
    assert 'no model is loaded' in response.message
    assert '2 view(s) (rgb8 64x48, mono8 32x32)' in response.message, response.message
    assert response.num_views == 0 and response.fingerprint == ''

    bad = BuildMap.Request()
    bad.images = [copy.deepcopy(request.images[0])]
    bad.images[0].encoding = 'yuv422'
    bad.poses = [pose(0, 0, 0)]
    response = client(bad)
    assert not response.success and "unsupported image encoding 'yuv422'" in response.message

    mismatched = BuildMap.Request()
    mismatched.images = list(request.images)
    mismatched.poses = [pose(0, 0, 0)]
    response = client(mismatched)
    assert not response.success and '2 images but 1 poses' in response.message

    def refused(changed, expected):
        bad = copy.deepcopy(request)
        changed(bad)
        response = client(bad)
        assert not response.success and expected in response.message, response.message
        assert response.num_views == 0 and response.fingerprint == ''

    def nan_position(req):
        req.poses[1].position.y = float('nan')

    def long_quaternion(req):
        req.poses[0].orientation.z, req.poses[0].orientation.w = 0.0, 2.0

    def too_many_views(req):
        req.images = [req.images[0]] * 4
        req.poses = [pose(0, 0, 0)] * 4

    def other_frame(req):
        req.header.frame_id = 'odom'

    def short_data(req):
        req.images[0].data = req.images[0].data[:-1]

    def zero_width(req):
        req.images[0].width, req.images[0].step, req.images[0].data = 0, 0, b''

    def inverted_extent(req):
        req.extent = [4.0, 0.0, 0.0, 4.0]

    def nothing(req):
        req.images, req.poses = [], []

    refused(nan_position, 'pose 1: non-finite value')
    refused(long_quaternion, 'pose 0: quaternion norm is 2, not 1')
    refused(too_many_views, '4 views exceed max_map_views = 3')
    refused(other_frame, "poses are in frame 'odom', the map frame is 'map'")
    refused(short_data, 'image 0: rgb8 image 64x48 with step 192: expected height x step = '
                        '9216 data bytes, received 9215')
    refused(zero_width, 'image 0: rgb8 image 0x48 has no pixels')
    refused(inverted_extent, 'extent must be empty or [x_min, y_min, x_max, y_max]')
    refused(nothing, 'no context images in the request')

    response = client(request)  # the node still answers a valid request
    assert '2 view(s)' in response.message
    assert node.alive(), node.log()
    assert node.stop() == 0, f'node did not exit cleanly:\n{node.log()}'


def test_request_summary_names_each_kind_of_image_once():
    from dmn_localization.messages.conversions import parse_build_map_request

    request = BuildMap.Request()
    request.header.frame_id = 'map'
    rgb = array_to_imgmsg(np.zeros((48, 64, 3), np.uint8), 'rgb8')
    request.images = [rgb] * 60
    request.poses = [pose(0.1 * i, 0, 0) for i in range(60)]
    assert parse_build_map_request(request, 100).summary() == '60 view(s) (rgb8 64x48)'
    request.images = [rgb, rgb, array_to_imgmsg(np.zeros((32, 32), np.uint8), 'mono8')]
    request.poses = request.poses[:3]
    assert parse_build_map_request(request, 100).summary() == (
        '3 view(s) (2 x rgb8 64x48, mono8 32x32)')
