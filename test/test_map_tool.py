"""dmn_map: build from a bag, merge, publish latched and save from the topic, refuse bad files."""

from dmn_localization.core.checkpoint import save_checkpoint
from dmn_localization.core.geometry import compose_poses, invert_poses
from dmn_localization.core.maps import ViewEmbeddingMap
from dmn_localization.core.models import build_model, config_for
from dmn_localization.data.sim_bag import main as sim_bag_main
from dmn_localization.tools.map_tool import main as map_main
import numpy as np
import pytest
import torch


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    """Build a map file from a short simulated bag with a random-weight model."""
    root = tmp_path_factory.mktemp('maptool')
    assert sim_bag_main(['--duration', '1', '--contexts', '4', '--out', str(root / 'bag')]) == 0
    torch.manual_seed(0)
    save_checkpoint(root / 'dmn.pt', build_model(config_for('dmn-pf')), [0, 0, 8, 8])
    assert map_main(['build', '--bag', str(root / 'bag'), '--model', str(root / 'dmn.pt'),
                     '--out', str(root / 'a.map')]) == 0
    return root


def test_build_and_merge(built):
    the_map = ViewEmbeddingMap.load(built / 'a.map')
    assert the_map.num_views == 4
    assert map_main(['merge', str(built / 'a.map'), str(built / 'a.map'), '--out',
                     str(built / 'b.map')]) == 0
    merged = ViewEmbeddingMap.load(built / 'b.map')
    assert merged.num_views == 8 and torch.equal(merged.embeddings[4:], the_map.embeddings)


def test_bad_files_are_refused(built, tmp_path, capsys):
    data = (built / 'a.map').read_bytes()
    (tmp_path / 'cut.map').write_bytes(data[:len(data) // 2])
    assert map_main(['merge', str(tmp_path / 'cut.map'), '--out', str(tmp_path / 'x')]) == 2
    assert 'not a readable map' in capsys.readouterr().err
    assert map_main(['publish', str(tmp_path / 'missing.map')]) == 2


@pytest.mark.ros
def test_publish_and_save_round_trip_exactly(built, start_process, tmp_path):
    server = start_process('dmn_map', 'publish', str(built / 'a.map'), '--topic',
                           '/shared/view_embedding_map')
    saver = start_process('dmn_map', 'save', '--topic', '/shared/view_embedding_map',
                          '--timeout', '60', '--out', str(tmp_path / 'saved.map'))
    assert saver.proc.wait(timeout=90) == 0, (saver.log(), server.log())
    original = ViewEmbeddingMap.load(built / 'a.map')
    saved = ViewEmbeddingMap.load(tmp_path / 'saved.map')
    assert torch.equal(saved.embeddings, original.embeddings)
    torch.testing.assert_close(saved.poses, original.poses, atol=1e-5, rtol=0)
    assert (saved.fingerprint, saved.frame_id) == (original.fingerprint, original.frame_id)
    assert server.alive()


MAP_TO_ODOM = np.array([1.0, -0.5, 0.3])
BASE_TO_CAMERA = np.array([0.1, 0.05, 0.0])


def write_survey_bag(source, out, pose_type='geometry_msgs/msg/PoseStamped'):
    """
    Copy the mapping part of ``source`` as a robot would record a survey.

    Images go on /survey/image one second apart; the poses on /survey/pose come 20 ms
    before and 30 ms after each image (never at its stamp), as from a SLAM or
    motion-capture source, with the camera still in between.
    """
    from rosbags.highlevel import AnyReader
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import get_typestore, Stores

    store = get_typestore(Stores.ROS2_JAZZY)
    t = store.types
    with AnyReader([source]) as reader, Writer(out, version=9) as writer:
        image_conn = writer.add_connection('/survey/image', 'sensor_msgs/msg/Image',
                                           typestore=store)
        use_tf = pose_type == 'tf2_msgs/msg/TFMessage'
        pose_conn = writer.add_connection('/tf' if use_tf else '/survey/pose', pose_type,
                                          typestore=store)
        if use_tf:  # map -> odom (SLAM), odom -> base_link (odometry), base_link -> camera
            static_conn = writer.add_connection('/tf_static', pose_type, typestore=store)
            writer.write(static_conn, 99 * 10**9, store.serialize_cdr(
                tf_message(t, 99 * 10**9, 'base_link', 'camera', BASE_TO_CAMERA), pose_type))
            for at in range(99 * 10**9, 105 * 10**9, 250_000_000):  # 4 Hz, as SLAM does
                writer.write(pose_conn, at, store.serialize_cdr(
                    tf_message(t, at, 'map', 'odom', MAP_TO_ODOM), pose_type))
        poses = {}
        for conn, _, raw in reader.messages([c for c in reader.connections
                                             if c.topic == '/mapping/pose']):
            msg = reader.deserialize(raw, conn.msgtype)
            poses[msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec] = msg.pose
        for i, (conn, _, raw) in enumerate(reader.messages(
                [c for c in reader.connections if c.topic == '/mapping/image'])):
            image = reader.deserialize(raw, conn.msgtype)
            pose = poses[image.header.stamp.sec * 10**9 + image.header.stamp.nanosec]
            ns = (100 + i) * 10**9
            image.header.stamp = t['builtin_interfaces/msg/Time'](sec=ns // 10**9, nanosec=0)
            writer.write(image_conn, ns, store.serialize_cdr(image, 'sensor_msgs/msg/Image'))
            for offset in (-20_000_000, 30_000_000):
                at = ns + offset
                header = t['std_msgs/msg/Header'](
                    stamp=t['builtin_interfaces/msg/Time'](sec=at // 10**9,
                                                           nanosec=at % 10**9),
                    frame_id='map')
                if use_tf:
                    camera = np.array([pose.position.x, pose.position.y,
                                       2 * np.arctan2(pose.orientation.z, pose.orientation.w)])
                    base = compose_poses(camera, invert_poses(BASE_TO_CAMERA))
                    odom = compose_poses(invert_poses(MAP_TO_ODOM), base)
                    msg = tf_message(t, at, 'odom', 'base_link', odom)
                elif pose_type == 'nav_msgs/msg/Odometry':
                    cov = t['geometry_msgs/msg/PoseWithCovariance'](pose=pose,
                                                                    covariance=np.zeros(36))
                    twist = t['geometry_msgs/msg/TwistWithCovariance'](
                        twist=t['geometry_msgs/msg/Twist'](
                            linear=t['geometry_msgs/msg/Vector3'](x=0.0, y=0.0, z=0.0),
                            angular=t['geometry_msgs/msg/Vector3'](x=0.0, y=0.0, z=0.0)),
                        covariance=np.zeros(36))
                    msg = t['nav_msgs/msg/Odometry'](header=header, child_frame_id='base_link',
                                                     pose=cov, twist=twist)
                else:
                    msg = t['geometry_msgs/msg/PoseStamped'](header=header, pose=pose)
                writer.write(pose_conn, at, store.serialize_cdr(msg, pose_type))


def tf_message(t, ns, parent, child, pose):
    """Return a tf2_msgs/TFMessage with the planar transform ``pose`` of child in parent."""
    header = t['std_msgs/msg/Header'](
        stamp=t['builtin_interfaces/msg/Time'](sec=ns // 10**9, nanosec=ns % 10**9),
        frame_id=parent)
    transform = t['geometry_msgs/msg/Transform'](
        translation=t['geometry_msgs/msg/Vector3'](x=float(pose[0]), y=float(pose[1]), z=0.0),
        rotation=t['geometry_msgs/msg/Quaternion'](x=0.0, y=0.0, z=float(np.sin(pose[2] / 2)),
                                                   w=float(np.cos(pose[2] / 2))))
    return t['tf2_msgs/msg/TFMessage'](transforms=[t['geometry_msgs/msg/TransformStamped'](
        header=header, child_frame_id=child, transform=transform)])


@pytest.mark.parametrize('pose_type', ['geometry_msgs/msg/PoseStamped',
                                       'nav_msgs/msg/Odometry', 'tf2_msgs/msg/TFMessage'])
def test_build_from_poses_at_other_stamps_than_the_images(built, tmp_path, capsys, pose_type):
    survey = tmp_path / 'survey'
    write_survey_bag(built / 'bag', survey, pose_type)
    assert map_main(['build', '--bag', str(survey), '--model', str(built / 'dmn.pt'),
                     '--out', str(tmp_path / 'x.map')]) == 2
    assert 'no topic /mapping/image' in capsys.readouterr().err
    pose_topic = '/tf' if pose_type == 'tf2_msgs/msg/TFMessage' else '/survey/pose'
    assert map_main(['build', '--bag', str(survey), '--image-topic', '/survey/image',
                     '--pose-topic', pose_topic, '--model', str(built / 'dmn.pt'),
                     '--out', str(tmp_path / 's.map')]) == 0
    from_survey = ViewEmbeddingMap.load(tmp_path / 's.map')
    original = ViewEmbeddingMap.load(built / 'a.map')
    assert from_survey.num_views == 4
    torch.testing.assert_close(from_survey.poses, original.poses, atol=1e-5, rtol=0)
    torch.testing.assert_close(from_survey.embeddings, original.embeddings)
    # poses 50 ms apart around each image: a tolerance below that finds no posed image
    assert map_main(['build', '--bag', str(survey), '--image-topic', '/survey/image',
                     '--pose-topic', pose_topic, '--max-pose-gap', '0.04', '--model',
                     str(built / 'dmn.pt'), '--out', str(tmp_path / 'y.map')]) == 2
    assert 'at most 0.04 s between two poses' in capsys.readouterr().err


def test_the_runtime_localizes_on_a_map_from_a_survey_bag(built, tmp_path):
    """The bag's run, replayed with the map from the survey bag, gives the same poses."""
    from dmn_localization.replay.cli import main as replay_main
    import json

    survey = tmp_path / 'survey'
    write_survey_bag(built / 'bag', survey)
    common = [str(built / 'bag'), '--model', str(built / 'dmn.pt'), '--quiet']
    assert replay_main(common + ['--out', str(tmp_path / 'own')]) == 0
    assert replay_main(common + ['--map-from', 'other', '--map-bag', str(survey),
                                 '--mapping-image-topic', '/survey/image',
                                 '--mapping-pose-topic', '/survey/pose',
                                 '--out', str(tmp_path / 'survey-map')]) == 0
    own = json.loads((tmp_path / 'own' / 'metrics.json').read_text())['metrics']
    other = json.loads((tmp_path / 'survey-map' / 'metrics.json').read_text())['metrics']
    assert other['frames'] == own['frames'] > 0
    assert other['ate_rmse_m'] == pytest.approx(own['ate_rmse_m'], abs=1e-4)


def test_transform_chains_compose_both_ways_and_name_missing_frames():
    from types import SimpleNamespace as NS

    from dmn_localization.data.from_bag import BagTopicError, TransformTree

    def message(ns, parent, child, x, y, yaw):
        return NS(transforms=[NS(
            header=NS(frame_id=parent, stamp=NS(sec=ns // 10**9, nanosec=ns % 10**9)),
            child_frame_id=child,
            transform=NS(translation=NS(x=x, y=y, z=0.0),
                         rotation=NS(x=0.0, y=0.0, z=np.sin(yaw / 2), w=np.cos(yaw / 2))))])

    tree = TransformTree()
    tree.add(message(0, 'map', 'odom', 1.0, 0.0, np.pi / 2), static=False)
    tree.add(message(10**9, 'map', 'odom', 3.0, 0.0, np.pi / 2), static=False)
    tree.add(message(0, 'odom', 'base_link', 1.0, 0.0, 0.0), static=False)
    tree.add(message(10**9, 'odom', 'base_link', 1.0, 0.0, 0.0), static=False)
    tree.add(message(0, 'base_link', 'camera', 0.0, 0.5, 0.0), static=True)
    query = np.array([0.5e9, 2e9])
    camera = tree.lookup('map', 'camera', query, max_gap=2e9)
    # at 0.5 s: map -> odom (2, 0, 90 deg); base 1 m ahead in odom: (2, 1); camera 0.5 m
    # to its left: (1.5, 1)
    np.testing.assert_allclose(camera[0], [1.5, 1.0, np.pi / 2], atol=1e-9)
    assert np.isnan(camera[1]).all()  # after the last transform
    back = tree.lookup('camera', 'map', query[:1], max_gap=2e9)
    np.testing.assert_allclose(compose_poses(camera[0], back[0]), [0, 0, 0], atol=1e-9)
    with pytest.raises(BagTopicError, match="no chain of transforms from 'map' to 'laser'"):
        tree.lookup('map', 'laser', query)
