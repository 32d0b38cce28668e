"""dmn_sim_bag writes bags that rosbags reads back; from-bag turns them into datasets."""

from dmn_localization.data.cli import main as dataset_main
from dmn_localization.data.dataset import Dataset, DatasetError
from dmn_localization.data.from_bag import BagTopicError, dataset_from_bag
from dmn_localization.data.sim_bag import main as sim_bag_main, TOPICS
from dmn_localization.data.worlds import generate_world
from dmn_localization.messages.image_conversion import imgmsg_to_rgb8
import numpy as np
import pytest
from rosbags.highlevel import AnyReader

EXPECTED_TYPES = {
    '/mapping/image': 'sensor_msgs/msg/Image', '/mapping/pose': 'geometry_msgs/msg/PoseStamped',
    '/camera/image_raw': 'sensor_msgs/msg/Image', '/odom': 'nav_msgs/msg/Odometry',
    '/ground_truth/pose': 'geometry_msgs/msg/PoseStamped', '/tf': 'tf2_msgs/msg/TFMessage',
    '/tf_static': 'tf2_msgs/msg/TFMessage', '/camera/camera_info': 'sensor_msgs/msg/CameraInfo',
}


def read_bag(path):
    """Return ``{topic: [(stamp_ns, message)]}`` and the topic types of a bag."""
    out = {}
    with AnyReader([path]) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        for conn, stamp, raw in reader.messages():
            out.setdefault(conn.topic, []).append((stamp, reader.deserialize(raw, conn.msgtype)))
    return out, types


@pytest.fixture(scope='module', params=['mcap', 'sqlite3'])
def sim_bag(request, tmp_path_factory):
    """Write a 4 s bag in Rooms with seed 3 (both storage formats)."""
    out = tmp_path_factory.mktemp('bags') / f'rooms3_{request.param}'
    assert sim_bag_main(['--domain', 'rooms', '--seed', '3', '--duration', '4', '--contexts',
                         '5', '--storage', request.param, '--out', str(out)]) == 0
    return out


def test_bag_reads_back_with_types_counts_and_stamps(sim_bag):
    messages, types = read_bag(sim_bag)
    assert types == EXPECTED_TYPES
    counts = {t: len(m) for t, m in messages.items()}
    assert counts == {'/mapping/image': 5, '/mapping/pose': 5, '/camera/image_raw': 20,
                      '/odom': 80, '/ground_truth/pose': 80, '/tf': 80, '/tf_static': 1,
                      '/camera/camera_info': 20}
    for topic, items in messages.items():
        stamps = [s for s, _ in items]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps), topic
        if hasattr(items[0][1], 'header'):  # header stamps equal the bag stamps
            assert all(s == m.header.stamp.sec * 10**9 + m.header.stamp.nanosec
                       for s, m in items), topic
    last_mapping = messages['/mapping/image'][-1][0]
    assert last_mapping < messages['/camera/image_raw'][0][0]  # the mapping part comes first
    image = messages['/camera/image_raw'][0][1]
    assert (image.height, image.width, image.encoding, image.header.frame_id) == (
        128, 128, 'rgb8', 'camera')
    frames = np.stack([imgmsg_to_rgb8(m) for _, m in messages['/camera/image_raw']])
    assert frames.std() > 5  # rendered scenes, not blank frames
    assert [s for s, _ in messages['/mapping/image']] == [s for s, _ in messages['/mapping/pose']]
    odom = messages['/odom'][10][1]
    assert (odom.header.frame_id, odom.child_frame_id) == ('odom', 'base_link')
    assert odom.pose.covariance[0] > 0
    world = generate_world('rooms', 3)
    truth = np.array([[m.pose.position.x, m.pose.position.y]
                      for _, m in messages['/ground_truth/pose']])
    assert world.is_free(truth[:, 0], truth[:, 1]).all()
    static = messages['/tf_static'][0][1].transforms[0]
    assert (static.header.frame_id, static.child_frame_id) == ('base_link', 'camera')


def test_from_bag_yields_the_images_and_poses_it_holds(sim_bag, tmp_path):
    messages, _ = read_bag(sim_bag)
    rc = dataset_main(['from-bag', str(sim_bag), '--image-topic', TOPICS['image'],
                       '--pose-topic', TOPICS['ground_truth'], '--image-size', '128', '128',
                       '--out', str(tmp_path / 'ds')])
    assert rc == 0
    data = Dataset(tmp_path / 'ds', verify=True)
    env = data.environment(0)
    images = np.stack([imgmsg_to_rgb8(m) for _, m in messages['/camera/image_raw']])
    np.testing.assert_array_equal(env.images, images)
    truth = {s: m.pose for s, m in messages['/ground_truth/pose']}
    for k, (stamp, _) in enumerate(messages['/camera/image_raw']):
        pose = truth[stamp]
        np.testing.assert_allclose(env.poses[k, :2], [pose.position.x, pose.position.y],
                                   atol=1e-5)
        yaw = 2 * np.arctan2(pose.orientation.z, pose.orientation.w)
        assert abs(np.remainder(env.poses[k, 2] - yaw + np.pi, 2 * np.pi) - np.pi) < 1e-5


def test_from_bag_every_metres_and_split_into_environments(sim_bag, tmp_path):
    out = dataset_from_bag(sim_bag, tmp_path / 'sparse', TOPICS['image'], TOPICS['ground_truth'],
                           every_metres=0.2, image_size=(32, 32))
    poses = Dataset(out.parent).environment(0).poses
    steps = np.hypot(*np.diff(poses[:, :2], axis=0).T)
    assert len(poses) < 20 and np.all(steps >= 0.2 - 1e-6)
    split = dataset_from_bag(sim_bag, tmp_path / 'split', TOPICS['image'],
                             TOPICS['ground_truth'], views_per_env=6, image_size=(32, 32))
    assert len(Dataset(split.parent)) == 3


def test_missing_topic_and_missing_bag_are_clear_errors(sim_bag, tmp_path, capsys):
    with pytest.raises(BagTopicError, match='no topic /camera/depth'):
        dataset_from_bag(sim_bag, tmp_path / 'x', '/camera/depth', TOPICS['ground_truth'])
    with pytest.raises(BagTopicError, match='expected geometry_msgs'):
        dataset_from_bag(sim_bag, tmp_path / 'x', TOPICS['image'], TOPICS['image'])
    rc = dataset_main(['from-bag', str(tmp_path / 'no_bag'), '--image-topic', 'a',
                       '--pose-topic', 'b', '--out', str(tmp_path / 'x')])
    assert rc == 2 and 'no such bag' in capsys.readouterr().err


def test_sim_bag_refuses_to_overwrite(sim_bag, capsys):
    assert sim_bag_main(['--duration', '1', '--out', str(sim_bag)]) == 2
    assert 'exists' in capsys.readouterr().err


def test_a_kidnap_moves_the_truth_and_not_the_odometry(tmp_path, capsys):
    out = tmp_path / 'kidnap'
    assert sim_bag_main(['--domain', 'rooms', '--seed', '3', '--duration', '4', '--contexts',
                         '2', '--kidnap-at', '2.0', '--out', str(out)]) == 0
    assert 'kidnapped at 2.00 s' in capsys.readouterr().out
    messages, _ = read_bag(out)
    truth = np.array([[m.pose.position.x, m.pose.position.y]
                      for _, m in messages['/ground_truth/pose']])
    odom = np.array([[m.pose.pose.position.x, m.pose.pose.position.y]
                     for _, m in messages['/odom']])
    stamps = np.array([s for s, _ in messages['/ground_truth/pose']], float) * 1e-9
    truth_steps = np.hypot(*np.diff(truth, axis=0).T)
    jump = int(np.argmax(truth_steps))
    assert truth_steps[jump] >= 2.0  # carried at least KIDNAP_MIN_DISTANCE_M
    assert stamps[jump + 1] - stamps[0] == pytest.approx(2.0)
    assert np.delete(truth_steps, jump).max() < 0.05  # driving elsewhere: 0.5 m/s at 20 Hz
    assert np.hypot(*np.diff(odom, axis=0).T).max() < 0.05  # odometry never jumps
    world = generate_world('rooms', 3)
    assert world.is_free(truth[:, 0], truth[:, 1]).all()
    assert sim_bag_main(['--duration', '4', '--kidnap-at', '5', '--out',
                         str(tmp_path / 'late')]) == 2
    assert '--kidnap-at' in capsys.readouterr().err


def test_from_bag_joins_several_bags_of_one_camera_and_refuses_two_cameras(sim_bag, tmp_path):
    other = tmp_path / 'rooms4'
    assert sim_bag_main(['--domain', 'rooms', '--seed', '4', '--duration', '4', '--contexts',
                         '5', '--out', str(other)]) == 0
    out = dataset_from_bag([sim_bag, other], tmp_path / 'both', TOPICS['image'],
                           TOPICS['ground_truth'], views_per_env=6, image_size=(32, 32))
    data = Dataset(out.parent, verify=True)
    alone = Dataset(dataset_from_bag(other, tmp_path / 'one', TOPICS['image'],
                                     TOPICS['ground_truth'], views_per_env=6,
                                     image_size=(32, 32)).parent)
    assert len(data) == 6  # three environments of six views from each bag
    np.testing.assert_array_equal(data.environment(3).images, alone.environment(0).images)
    np.testing.assert_array_equal(data.environment(5).poses, alone.environment(2).poses)
    assert data.camera['fov_y_deg'] == pytest.approx(70.0)
    narrow = tmp_path / 'narrow'
    assert sim_bag_main(['--seed', '5', '--duration', '3', '--contexts', '5',
                         '--camera-fov-y', '60', '--out', str(narrow)]) == 0
    with pytest.raises(DatasetError, match='one camera'):
        dataset_from_bag([sim_bag, narrow], tmp_path / 'mixed', TOPICS['image'],
                         TOPICS['ground_truth'], views_per_env=5)
    with pytest.raises(DatasetError, match='--views-per-env'):  # 20 views against 15
        dataset_from_bag([sim_bag, narrow], tmp_path / 'mixed', TOPICS['image'],
                         TOPICS['ground_truth'], camera_info_topic=None)
