"""
``dmn_map``: save, build, merge and serve view-embedding map files (like nav2's map tools).

    dmn_map save --topic /robot1/view_embedding_map --out office.map
    dmn_map build --bag run.mcap [--image-topic T --pose-topic P] [--model M] --out office.map
    dmn_map merge a.map b.map --out both.map
    dmn_map publish office.map [--topic view_embedding_map] [--dtype float16]

``build`` reads the bag's posed views as ``dmn_dataset from-bag`` does: poses at stamps
of their own are interpolated at the image stamps, and views may be thinned.

Files are :meth:`ViewEmbeddingMap.save` files: a format name and version, a SHA-256
checksum of the tensors, the encoder fingerprint; a corrupted, truncated or foreign
file is refused with a clear error (exit status 2).
"""

from __future__ import annotations

import argparse
from pathlib import Path
import sys
from typing import List, Optional

from dmn_localization.core.checkpoint import load_checkpoint
from dmn_localization.core.maps import MapError, ViewEmbeddingMap
from dmn_localization.data.dataset import DatasetError
from dmn_localization.data.from_bag import add_posed_view_arguments
from dmn_localization.replay.offline import BagTopics, mapping_views
from dmn_localization.runtime.default_model import default_model
from dmn_localization.runtime.localizer import Localizer

LATCHED_DEPTH = 1


def _latched_qos():
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=LATCHED_DEPTH, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def save_from_topic(topic: str, out: Path, timeout: float) -> ViewEmbeddingMap:
    """Wait for one map on ``topic`` (latched), save it to ``out``, return it."""
    import rclpy

    from dmn_localization.ros.map_conversion import msg_to_map
    from dmn_localization_interfaces.msg import ViewEmbeddingMap as MapMsg

    rclpy.init()
    node = rclpy.create_node('dmn_map_saver')
    received: List[object] = []
    node.create_subscription(MapMsg, topic, received.append, _latched_qos())
    try:
        import time

        deadline = time.monotonic() + timeout
        while not received and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    if not received:
        raise MapError(f'no map arrived on {topic} within {timeout:.0f} s')
    the_map = msg_to_map(received[0])
    the_map.save(out)
    return the_map


def publish(path: Path, topic: str, dtype: str) -> None:
    """Publish the map file latched on ``topic`` until interrupted."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from dmn_localization.ros.map_conversion import map_to_msg
    from dmn_localization.ros.spin import spin_until_shutdown
    from dmn_localization_interfaces.msg import ViewEmbeddingMap as MapMsg
    from geometry_msgs.msg import Pose

    the_map = ViewEmbeddingMap.load(path)
    rclpy.init()
    node = rclpy.create_node('dmn_map_server')
    pub = node.create_publisher(MapMsg, topic, _latched_qos())
    msg = map_to_msg(the_map, dtype, MapMsg, Pose)
    msg.header.stamp = node.get_clock().now().to_msg()
    pub.publish(msg)
    node.get_logger().info(f'publishing {path} ({the_map.num_views} views, fingerprint '
                           f'{the_map.fingerprint}) on {pub.topic_name}')
    executor = SingleThreadedExecutor()
    try:
        executor.add_node(node)
        spin_until_shutdown(executor)
    except KeyboardInterrupt:
        pass  # Ctrl-C before the executor spins
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()


def main(argv: Optional[List[str]] = None) -> int:
    """Command line entry point of ``dmn_map``."""
    p = argparse.ArgumentParser(prog='dmn_map', description=__doc__.split('\n\n')[0])
    sub = p.add_subparsers(dest='command', required=True)
    s = sub.add_parser('save', help='save the map published on a topic')
    s.add_argument('--topic', default='view_embedding_map')
    s.add_argument('--timeout', type=float, default=30.0)
    s.add_argument('--out', type=Path, required=True)
    b = sub.add_parser('build', help="build a map from a bag's mapping part")
    b.add_argument('--bag', type=Path, required=True)
    add_posed_view_arguments(b, BagTopics.mapping_image, BagTopics.mapping_pose)
    b.add_argument('--model', type=Path, default=None, help='default: the shipped model')
    b.add_argument('--extent', type=float, nargs=4, default=None)
    b.add_argument('--out', type=Path, required=True)
    m = sub.add_parser('merge', help='merge maps of the same encoder and frame')
    m.add_argument('maps', type=Path, nargs='+')
    m.add_argument('--out', type=Path, required=True)
    pub = sub.add_parser('publish', help='publish a map file latched')
    pub.add_argument('map', type=Path)
    pub.add_argument('--topic', default='view_embedding_map')
    pub.add_argument('--dtype', choices=('float32', 'float16'), default='float32')
    a = p.parse_args(argv)
    try:
        if a.command == 'save':
            the_map = save_from_topic(a.topic, a.out, a.timeout)
        elif a.command == 'build':
            model = a.model or default_model()
            if model is None:
                raise MapError('no --model given and no shipped default model')
            topics = BagTopics(mapping_image=a.image_topic, mapping_pose=a.pose_topic)
            images, poses = mapping_views(a.bag, topics, a.every_metres, a.every_degrees,
                                          a.max_pose_gap, a.map_frame, a.base_frame)
            the_map = Localizer(load_checkpoint(model)).build_map(images, poses, a.extent)
            the_map.save(a.out)
        elif a.command == 'merge':
            the_map = ViewEmbeddingMap.load(a.maps[0])
            for path in a.maps[1:]:
                the_map = the_map.merge(ViewEmbeddingMap.load(path))
            the_map.save(a.out)
        else:
            publish(a.map, a.topic, a.dtype)
            return 0
    except (MapError, DatasetError, FileNotFoundError, ValueError) as exc:
        print(f'dmn_map {a.command}: error: {exc}', file=sys.stderr)
        return 2
    print(f'{a.out}: {the_map.num_views} views, {the_map.model_name}, fingerprint '
          f'{the_map.fingerprint}, frame {the_map.frame_id}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
