"""
Benchmark of map sharing: message sizes, and time from a map message to the first pose.

    python -m dmn_localization.bench.map_sharing_bench [--out runs/bench/map_sharing.json]

Sizes are of the serialized (CDR) messages as they go over DDS: a ViewEmbeddingMap of Nc
views (float32 and float16) against the BuildMap request with the Nc 128x128 rgb8 camera
images it replaces. The latency starts a receiving ``dmn_localization_node``
(``map_source: topic``) in its own process, publishes a map to it while camera frames
arrive at 20 Hz, and measures from the map's publication to the first pose the node
publishes; repeated, the median is reported. All numbers come from the same run.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import platform
import statistics
import sys
import tempfile
import time
from typing import Any, Dict, List

from dmn_localization.tools.node_process import isolate_dds, NodeProcess
import numpy as np

CAMERA = (128, 128)


def message_sizes(model: Any, counts: List[int]) -> List[Dict[str, Any]]:
    """Return the serialized sizes of maps and of the BuildMap requests they replace."""
    from rclpy.serialization import serialize_message

    from dmn_localization.core.maps import ViewEmbeddingMap
    from dmn_localization.messages.conversions import build_map_request
    from dmn_localization.ros.map_conversion import map_to_msg
    from dmn_localization_interfaces.msg import ViewEmbeddingMap as MapMsg
    from geometry_msgs.msg import Pose

    rng = np.random.default_rng(0)
    rows = []
    for count in counts:
        images = rng.integers(0, 256, (count, *CAMERA, 3), dtype=np.uint8)
        poses = np.column_stack([rng.uniform(0, 8, count), rng.uniform(0, 8, count),
                                 rng.uniform(-3, 3, count)])
        image_bytes = len(serialize_message(build_map_request(images, poses)))
        the_map = ViewEmbeddingMap.build(model, images, poses, [0.0, 0.0, 8.0, 8.0])
        row: Dict[str, Any] = {'views': count, 'images_bytes': image_bytes}
        for dtype in ('float32', 'float16'):
            size = len(serialize_message(map_to_msg(the_map, dtype, MapMsg, Pose)))
            row[f'map_{dtype}_bytes'] = size
            row[f'map_{dtype}_vs_images'] = size / image_bytes
        rows.append(row)
    return rows


def first_pose_latency(checkpoint: Path, repeats: int, views: int) -> List[float]:
    """Seconds from publishing a map to a receiving node to its first pose, per repeat."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, qos_profile_sensor_data, QoSProfile, ReliabilityPolicy

    from dmn_localization.core.checkpoint import load_checkpoint
    from dmn_localization.core.maps import ViewEmbeddingMap
    from dmn_localization.messages.image_conversion import array_to_imgmsg
    from dmn_localization.ros.map_conversion import map_to_msg
    from dmn_localization_interfaces.msg import ViewEmbeddingMap as MapMsg
    from geometry_msgs.msg import Pose, PoseWithCovarianceStamped
    from sensor_msgs.msg import Image

    isolate_dds()
    node_proc = NodeProcess(['-p', f'model_path:={checkpoint}', '-p', 'map_source:=topic',
                             '-p', 'publish_pose_when:=always',
                             '-p', 'num_particles:=2048'])
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('map_latency_bench', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
    map_pub = node.create_publisher(MapMsg, 'view_embedding_map', latched)
    image_pub = node.create_publisher(Image, 'image', qos_profile_sensor_data)
    poses: List[float] = []
    node.create_subscription(PoseWithCovarianceStamped, 'pose',
                             lambda _: poses.append(time.monotonic()), 10)
    rng = np.random.default_rng(1)
    model = load_checkpoint(checkpoint).model
    images = rng.integers(0, 256, (views, *CAMERA, 3), dtype=np.uint8)
    view_poses = np.column_stack([rng.uniform(0, 8, views), rng.uniform(0, 8, views),
                                  rng.uniform(-3, 3, views)])
    msg = map_to_msg(ViewEmbeddingMap.build(model, images, view_poses, [0.0, 0.0, 8.0, 8.0]),
                     'float32', MapMsg, Pose)
    frame = array_to_imgmsg(rng.integers(0, 256, (*CAMERA, 3), dtype=np.uint8), 'rgb8')
    results: List[float] = []
    try:
        deadline = time.monotonic() + 120.0
        while (map_pub.get_subscription_count() == 0 or image_pub.get_subscription_count() == 0
               ) and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        if map_pub.get_subscription_count() == 0:
            raise RuntimeError(f'the node did not subscribe; its log: {node_proc.log.name}')
        stamp = 0.0
        for _ in range(repeats):
            poses.clear()
            sent = time.monotonic()
            map_pub.publish(msg)
            next_frame = sent
            while not poses and time.monotonic() - sent < 30.0:
                if time.monotonic() >= next_frame:
                    stamp += 0.05
                    frame.header.stamp.sec = int(stamp)
                    frame.header.stamp.nanosec = int((stamp % 1) * 1e9)
                    image_pub.publish(frame)
                    next_frame += 0.05
                executor.spin_once(timeout_sec=0.005)
            if not poses:
                raise RuntimeError('no pose within 30 s of the map; node log: '
                                   f'{node_proc.log.name}')
            results.append(poses[0] - sent)
            time.sleep(0.5)  # let the last frames drain before the next map
            executor.spin_once(timeout_sec=0.01)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
        node_proc.stop()
    return results


def main(argv: List[str] = None) -> int:
    """Run the benchmark, print the tables, write JSON."""
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--out', type=Path, default=Path('runs/bench/map_sharing.json'))
    p.add_argument('--repeats', type=int, default=5)
    a = p.parse_args(argv)

    import torch

    from dmn_localization.core.checkpoint import save_checkpoint
    from dmn_localization.core.models import build_model, config_for

    torch.manual_seed(0)
    model = build_model(config_for('dmn-pf')).eval()
    sizes = message_sizes(model, [4, 64])
    print(f'map message vs the BuildMap request it replaces ({CAMERA[0]}x{CAMERA[1]} rgb8 '
          'images, CDR bytes):')
    print(f'{"views":>6} {"images":>12} {"map f32":>12} {"ratio":>8} {"map f16":>12} '
          f'{"ratio":>8}')
    for r in sizes:
        print(f'{r["views"]:>6} {r["images_bytes"]:>12,} {r["map_float32_bytes"]:>12,} '
              f'{r["map_float32_vs_images"]:>8.3f} {r["map_float16_bytes"]:>12,} '
              f'{r["map_float16_vs_images"]:>8.3f}')
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / 'dmn.pt'
        save_checkpoint(checkpoint, model, [0.0, 0.0, 8.0, 8.0])
        latency = first_pose_latency(checkpoint, a.repeats, views=8)
    print(f'first map message -> first pose (8 views, K=2048, frames at 20 Hz): median '
          f'{statistics.median(latency) * 1000:.0f} ms over {len(latency)} '
          f'(min {min(latency) * 1000:.0f}, max {max(latency) * 1000:.0f})')
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({
        'machine': {'platform': platform.platform(), 'cpus': os.cpu_count(),
                    'torch': torch.__version__},
        'sizes': sizes, 'first_pose_latency_s': latency}, indent=1) + '\n')
    print(f'wrote {a.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
