"""
Turn posed camera images of any recorded ROS 2 bag into a dataset.

Poses come from a ground-truth, SLAM or mocap topic (``geometry_msgs/PoseStamped``,
``geometry_msgs/PoseWithCovarianceStamped`` or ``nav_msgs/Odometry``) and are
interpolated at each image's stamp (linear in x, y, shortest-arc in yaw); images
outside the pose topic's time span are skipped. Optionally a view is kept only after
the camera moved ``every_metres`` or turned ``every_degrees`` since the last kept one.
Bags are read with ``rosbags`` (sqlite3 or MCAP).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple

from dmn_localization.data.dataset import DatasetError, write_manifest, write_shard
from dmn_localization.data.worlds import bounding_world
from dmn_localization.messages.conversions import pose_to_xyyaw
from dmn_localization.messages.image_conversion import ImageConversionError, imgmsg_to_rgb8
import numpy as np

POSE_TYPES = ('geometry_msgs/msg/PoseStamped', 'geometry_msgs/msg/PoseWithCovarianceStamped',
              'nav_msgs/msg/Odometry')


class BagTopicError(DatasetError):
    """A bag that lacks a requested topic, or holds it with an unusable type."""


def _stamp_ns(msg: Any) -> int:
    return int(msg.header.stamp.sec) * 10**9 + int(msg.header.stamp.nanosec)


def pose_of_message(msg: Any) -> Tuple[float, float, float]:
    """Return ``(x, y, yaw)`` of a PoseStamped, PoseWithCovarianceStamped or Odometry."""
    return pose_to_xyyaw(msg.pose.pose if hasattr(msg.pose, 'pose') else msg.pose)


def read_topics(bag: Path, image_topic: str,
                pose_topic: str) -> Tuple[List[Tuple[int, Any]], np.ndarray, np.ndarray]:
    """Return ``[(stamp, image msg)]``, pose stamps ``(P,)`` and poses ``(P, 3)`` of a bag."""
    from rosbags.highlevel import AnyReader

    bag = Path(bag)
    if not bag.exists():
        raise FileNotFoundError(f'{bag}: no such bag')
    images, stamps, poses = [], [], []
    with AnyReader([bag]) as reader:
        topics = {c.topic: c.msgtype for c in reader.connections}
        for topic, wanted in ((image_topic, ('sensor_msgs/msg/Image',)), (pose_topic, POSE_TYPES)):
            if topic not in topics:
                raise BagTopicError(
                    f'{bag}: no topic {topic}; it has: {", ".join(sorted(topics))}')
            if topics[topic] not in wanted:
                raise BagTopicError(f'{bag}: {topic} is {topics[topic]}, expected '
                                    f'{" or ".join(wanted)}')
        conns = [c for c in reader.connections if c.topic in (image_topic, pose_topic)]
        for conn, _, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            if conn.topic == image_topic:
                images.append((_stamp_ns(msg), msg))
            else:
                stamps.append(_stamp_ns(msg))
                poses.append(pose_of_message(msg))
    if not poses:
        raise BagTopicError(f'{bag}: no messages on {pose_topic}')
    order = np.argsort(stamps, kind='stable')
    return images, np.asarray(stamps)[order], np.asarray(poses)[order]


def interpolate_poses(stamps: np.ndarray, poses: np.ndarray,
                      query: np.ndarray) -> np.ndarray:
    """Interpolate poses ``(P, 3)`` at ``query`` stamps; NaN rows outside the time span."""
    yaw = np.unwrap(poses[:, 2])
    out = np.column_stack([np.interp(query, stamps, poses[:, 0]),
                           np.interp(query, stamps, poses[:, 1]),
                           np.interp(query, stamps, yaw)])
    out[:, 2] = np.remainder(out[:, 2] + np.pi, 2 * np.pi) - np.pi
    out[(query < stamps[0]) | (query > stamps[-1])] = np.nan
    return out


def select_views(poses: np.ndarray, every_metres: Optional[float],
                 every_degrees: Optional[float]) -> List[int]:
    """Return indices of poses ``(N, 3)`` kept after moving/turning enough (all if unset)."""
    if every_metres is None and every_degrees is None:
        return list(range(len(poses)))
    kept = [0]
    for i in range(1, len(poses)):
        last = poses[kept[-1]]
        moved = math.hypot(poses[i, 0] - last[0], poses[i, 1] - last[1])
        turned = abs(math.degrees(math.remainder(poses[i, 2] - last[2], 2 * math.pi)))
        if (every_metres is not None and moved >= every_metres) or (
                every_degrees is not None and turned >= every_degrees):
            kept.append(i)
    return kept


def posed_images(bag: Path, image_topic: str, pose_topic: str,
                 every_metres: Optional[float] = None,
                 every_degrees: Optional[float] = None) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """Yield ``(rgb image (H, W, 3), pose (3,))`` of the selected posed images of a bag."""
    images, stamps, poses = read_topics(bag, image_topic, pose_topic)
    at = interpolate_poses(stamps, poses, np.asarray([s for s, _ in images], dtype=float))
    valid = [i for i in range(len(images)) if not np.isnan(at[i, 0])]
    for k in select_views(at[valid], every_metres, every_degrees):
        index = valid[k]
        try:
            yield imgmsg_to_rgb8(images[index][1]), at[index]
        except ImageConversionError as exc:
            raise DatasetError(f'{bag}: image {index} on {image_topic}: {exc}') from exc


def dataset_from_bag(bag: Path, out: Path, image_topic: str, pose_topic: str,
                     every_metres: Optional[float] = None, every_degrees: Optional[float] = None,
                     image_size: Tuple[int, int] = (32, 32),
                     views_per_env: Optional[int] = None) -> Path:
    """
    Write the posed images of ``bag`` as a dataset at ``out``; return the manifest path.

    All views form one environment, or consecutive environments of ``views_per_env``
    views (a remainder shorter than that is dropped).
    """
    import cv2

    pixels, poses = [], []
    for image, pose in posed_images(bag, image_topic, pose_topic, every_metres, every_degrees):
        if image.shape[:2] != tuple(image_size):
            image = cv2.resize(image, (image_size[1], image_size[0]), interpolation=cv2.INTER_AREA)
        pixels.append(image)
        poses.append(pose)
    if not pixels:
        raise DatasetError(f'{bag}: no image of {image_topic} lies within the span of '
                           f'{pose_topic}')
    per_env = views_per_env or len(pixels)
    envs = len(pixels) // per_env
    if envs == 0:
        raise DatasetError(f'{bag}: {len(pixels)} views, fewer than --views-per-env {per_env}')
    images = np.stack(pixels[:envs * per_env]).reshape(envs, per_env, *pixels[0].shape)
    pose_arr = np.stack(poses[:envs * per_env]).reshape(envs, per_env, 3)
    worlds = [bounding_world('robot', e, pose_arr[e]).to_dict() for e in range(envs)]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sums = write_shard(out, 0, images, pose_arr, worlds)
    parameters = {'domain': 'robot', 'split': 'train', 'envs': envs, 'views_per_env': per_env,
                  'seed': None, 'image_size': list(image_size), 'shard_size': envs,
                  'generator_version': None, 'source': 'rosbag', 'bag': Path(bag).name,
                  'image_topic': image_topic, 'pose_topic': pose_topic,
                  'every_metres': every_metres, 'every_degrees': every_degrees}
    return write_manifest(out, parameters, [{'index': 0, 'first_env': 0, 'envs': envs,
                                             'sha256': sums}], image_size, per_env)
