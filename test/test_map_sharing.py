"""Map sharing: message round trips, float16, and robots that take the map from a topic."""

import math

from conftest import call_service
from dmn_localization.core.checkpoint import load_checkpoint, save_checkpoint
from dmn_localization.core.maps import ViewEmbeddingMap
from dmn_localization.core.models import build_model, config_for
from dmn_localization.messages.image_conversion import array_to_imgmsg
from dmn_localization.ros.map_conversion import map_to_msg, MapMessageError, msg_to_map
from dmn_localization.runtime.localizer import Localizer, LocalizerSettings
from dmn_localization_interfaces.msg import ViewEmbeddingMap as MapMsg
from dmn_localization_interfaces.srv import BuildMap
from geometry_msgs.msg import Pose, PoseWithCovarianceStamped
import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from test_build_map_service import pose
from test_node_localization import stamp_of
import torch

EXTENT = [0.0, 0.0, 8.0, 8.0]


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    """Return two checkpoints of different random weights (different fingerprints)."""
    root = tmp_path_factory.mktemp('models')
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        path = root / f'dmn{seed}.pt'
        save_checkpoint(path, build_model(config_for('dmn-pf')), EXTENT)
        paths.append(path)
    return paths


def a_map(checkpoint, views=5):
    """Return a map of random views built by the checkpoint's model."""
    model = load_checkpoint(checkpoint).model
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (views, 32, 32, 3), dtype=np.uint8)
    poses = np.column_stack([rng.uniform(0, 8, views), rng.uniform(0, 8, views),
                             rng.uniform(-3, 3, views)])
    return ViewEmbeddingMap.build(model, images, poses, EXTENT, 'map')


def test_float32_round_trip_is_exact_and_float16_is_close(checkpoints):
    the_map = a_map(checkpoints[0])
    exact = msg_to_map(map_to_msg(the_map, 'float32', MapMsg, Pose))
    assert torch.equal(exact.embeddings, the_map.embeddings)
    torch.testing.assert_close(exact.poses, the_map.poses, atol=1e-5, rtol=0)
    assert (exact.fingerprint, exact.model_name) == (the_map.fingerprint, 'dmn-pf')
    half_msg = map_to_msg(the_map, 'float16', MapMsg, Pose)
    assert len(half_msg.data) * 2 == len(map_to_msg(the_map, 'float32', MapMsg, Pose).data)
    half = msg_to_map(half_msg)
    torch.testing.assert_close(half.embeddings, the_map.embeddings, atol=2e-3, rtol=2e-3)


def test_float16_map_localizes_like_float32(checkpoints):
    """Stated tolerance: estimates within 5 cm and 1 degree over ten frames."""
    the_map = a_map(checkpoints[0])
    results = []
    for dtype in ('float32', 'float16'):
        loc = Localizer(load_checkpoint(checkpoints[0]),
                        settings=LocalizerSettings(num_particles=512, seed=3))
        loc.set_map(msg_to_map(map_to_msg(the_map, dtype, MapMsg, Pose)))
        loc.initialize_gaussian((4.0, 4.0, 0.5), np.diag([0.5, 0.5, 0.3]))
        rng = np.random.default_rng(9)
        poses = []
        for k in range(10):
            loc.add_odometry(float(k), (0.1 * k, 0.0, 0.0))
            frame = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            poses.append(loc.process_frame(float(k), frame).pose)
        results.append(np.array(poses))
    np.testing.assert_allclose(results[0][:, :2], results[1][:, :2], atol=0.05)
    assert np.all(np.abs(np.remainder(results[0][:, 2] - results[1][:, 2] + np.pi, 2 * np.pi)
                         - np.pi) < math.radians(1.0))


def test_inconsistent_messages_are_refused(checkpoints):
    msg = map_to_msg(a_map(checkpoints[0]), 'float32', MapMsg, Pose)
    msg.data = bytes(msg.data)[:-4]
    with pytest.raises(MapMessageError, match='bytes'):
        msg_to_map(msg)
    msg = map_to_msg(a_map(checkpoints[0]), 'float32', MapMsg, Pose)
    msg.view_poses = msg.view_poses[:-1]
    with pytest.raises(MapMessageError, match='view poses'):
        msg_to_map(msg)


@pytest.mark.ros
def test_robots_share_a_map_over_a_topic(start_process, checkpoints, ros_domain):
    common = ['-p', 'num_particles:=256', '-p', 'publish_pose_when:=always']
    robot1 = start_process('dmn_localization_node', '--ros-args', '-r', '__ns:=/robot1',
                           '-p', f'model_path:={checkpoints[0]}', *common)
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('fleet_test', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        client = node.create_client(BuildMap, '/robot1/dmn_localization/build_map')
        assert client.wait_for_service(timeout_sec=60.0), robot1.log()
        rng = np.random.default_rng(0)
        request = BuildMap.Request()
        request.header.frame_id = 'map'
        request.images = [array_to_imgmsg(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8),
                                          'rgb8') for _ in range(4)]
        request.poses = [pose(1.0, 1.0, 0.0), pose(6.0, 2.0, 1.5), pose(4.0, 6.0, -2.0),
                         pose(2.0, 5.0, 3.0)]
        response = call_service(executor, client, request)
        assert response is not None and response.success, response
        # the same request again (a client whose response was lost asks again): robot1 keeps
        # its belief and does not publish the map twice, so robot2 still starts like robot1
        again = call_service(executor, client, request)
        assert again is not None and again.success and again.num_views == 4, again
        assert 'the map in use already: belief kept' in again.message, again.message
        # robot2 starts after the map was published and gets it (transient local);
        # robot3 runs another encoder and must refuse it
        robot2 = start_process('dmn_localization_node', '--ros-args', '-r', '__ns:=/robot2',
                               '-r', 'view_embedding_map:=/robot1/view_embedding_map',
                               '-p', 'map_source:=topic', '-p',
                               f'model_path:={checkpoints[0]}', *common)
        robot3 = start_process('dmn_localization_node', '--ros-args', '-r', '__ns:=/robot3',
                               '-r', 'view_embedding_map:=/robot1/view_embedding_map',
                               '-p', 'map_source:=topic', '-p',
                               f'model_path:={checkpoints[1]}', *common)
        received = {'/robot1': [], '/robot2': []}
        pubs = {}
        for ns in received:
            node.create_subscription(PoseWithCovarianceStamped, f'{ns}/pose',
                                     received[ns].append, 10)
            pubs[ns] = node.create_publisher(Image, f'{ns}/image', qos_profile_sensor_data)

        def spin_until(predicate, timeout):
            import time

            deadline = time.monotonic() + timeout
            while not predicate() and time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.05)
            return predicate()

        assert spin_until(lambda: 'received' in robot2.log(), 60.0), robot2.log()
        assert spin_until(lambda: 'refused' in robot3.log(), 60.0), robot3.log()
        # frames are best effort: one sent before both sides matched is lost for good
        assert spin_until(lambda: all(
            pubs[ns].get_subscription_count() > 0 and node.count_publishers(f'{ns}/pose') > 0
            for ns in received), 30.0), (robot1.log(), robot2.log())
        spin_until(lambda: False, 0.5)  # the far side's discovery may lag ours
        frames = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(3)]
        for k, frame in enumerate(frames):
            for ns in received:
                pubs[ns].publish(stamp_of(100.0 + k, array_to_imgmsg(frame, 'rgb8')))
            assert spin_until(lambda: all(len(r) > k for r in received.values()), 30.0), (
                robot1.log(), robot2.log())
        one = np.array([[p.pose.pose.position.x, p.pose.pose.position.y]
                        for p in received['/robot1']])
        two = np.array([[p.pose.pose.position.x, p.pose.pose.position.y]
                        for p in received['/robot2']])
        # same map, seed and frames
        np.testing.assert_allclose(one, two, atol=1e-4, err_msg=robot1.log() + robot2.log())
        assert robot2.log().count('received') == 1, robot2.log()
        assert robot3.alive()  # refusing the map did not stop it
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)


@pytest.mark.ros
def test_a_robot_with_map_update_merge_merges_a_second_map(start_process, checkpoints,
                                                           ros_domain):
    common = ['-p', 'num_particles:=128', '-p', f'model_path:={checkpoints[0]}',
              '-p', 'publish_pose_when:=always']
    robot1 = start_process('dmn_localization_node', '--ros-args', '-r', '__ns:=/robot1',
                           *common)
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('merge_test', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)

    def spin_until(predicate, timeout):
        import time

        deadline = time.monotonic() + timeout
        while not predicate() and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        return predicate()

    def build(positions):
        rng = np.random.default_rng(len(positions))
        request = BuildMap.Request()
        request.header.frame_id = 'map'
        request.images = [array_to_imgmsg(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
                                          'rgb8') for _ in positions]
        request.poses = [pose(x, y, 0.0) for x, y in positions]
        response = call_service(executor, client, request)
        assert response is not None and response.success, response

    try:
        client = node.create_client(BuildMap, '/robot1/dmn_localization/build_map')
        assert client.wait_for_service(timeout_sec=60.0), robot1.log()
        build([(1.0, 1.0), (5.0, 5.0), (2.0, 6.0), (6.0, 1.0)])
        robot2 = start_process('dmn_localization_node', '--ros-args', '-r', '__ns:=/robot2',
                               '-r', 'view_embedding_map:=/robot1/view_embedding_map',
                               '-p', 'map_source:=topic', '-p', 'map_update:=merge', *common)
        assert spin_until(lambda: 'received; belief re-initialized' in robot2.log(), 60.0), (
            robot2.log())
        build([(10.0, 2.0), (12.0, 8.0), (9.0, 9.0)])  # another part of the building
        assert spin_until(lambda: 'received and merged: 7 views' in robot2.log(), 60.0), (
            robot2.log())
        assert 'extent [0.5, 0.5, 12.5, 9.5]; belief kept' in robot2.log()
        build([(1.0, 1.0), (5.0, 5.0), (2.0, 6.0), (6.0, 1.0)])  # the first part once more
        assert spin_until(lambda: 'its views are in the map in use already' in robot2.log(),
                          60.0), robot2.log()
        assert robot2.log().count('merged: 7 views') == 1, robot2.log()
        poses = []
        node.create_subscription(PoseWithCovarianceStamped, '/robot2/pose', poses.append, 10)
        images = node.create_publisher(Image, '/robot2/image', qos_profile_sensor_data)
        frame = np.zeros((32, 32, 3), dtype=np.uint8)
        assert spin_until(lambda: images.publish(stamp_of(5.0, array_to_imgmsg(
            frame, 'rgb8'))) or poses, 30.0), robot2.log()
        assert robot2.alive()
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
