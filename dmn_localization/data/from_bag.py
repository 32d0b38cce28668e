"""
Turn posed camera images of any recorded ROS 2 bag into a dataset.

Poses come from a ground-truth, SLAM or mocap topic (``geometry_msgs/PoseStamped``,
``geometry_msgs/PoseWithCovarianceStamped`` or ``nav_msgs/Odometry``) and are
interpolated at each image's stamp (linear in x, y, shortest-arc in yaw); images
outside the pose topic's time span, or between two poses more than ``max_pose_gap_s``
apart, are skipped. The same reading makes datasets (``dmn_dataset from-bag``) and maps
(``dmn_map build``, the mapping part of ``dmn_evaluate_bag``). Optionally a view is kept only after
the camera moved ``every_metres`` or turned ``every_degrees`` since the last kept one.
Bags are read with ``rosbags`` (sqlite3 or MCAP).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from dmn_localization.core.camera import CameraSpec, Intrinsics
from dmn_localization.core.geometry import compose_poses, invert_poses
from dmn_localization.data.dataset import DatasetError, write_manifest, write_shard
from dmn_localization.data.worlds import bounding_world
from dmn_localization.messages.conversions import pose_to_xyyaw, quaternion_yaw
from dmn_localization.messages.image_conversion import ImageConversionError, imgmsg_to_rgb8
import numpy as np

POSE_TYPES = ('geometry_msgs/msg/PoseStamped', 'geometry_msgs/msg/PoseWithCovarianceStamped',
              'nav_msgs/msg/Odometry')
#: A pose topic of this type is read as transforms (``/tf``; ``/tf_static`` joins it).
TF_TYPE = 'tf2_msgs/msg/TFMessage'
#: Longest time between the two poses an image's pose is interpolated from, seconds (an
#: image stamped exactly at a pose always takes it).
DEFAULT_MAX_POSE_GAP_S = 0.5


class BagTopicError(DatasetError):
    """A bag that lacks a requested topic, or holds it with an unusable type."""


def _stamp_ns(msg: Any) -> int:
    return int(msg.header.stamp.sec) * 10**9 + int(msg.header.stamp.nanosec)


def bag_camera(bag: Path, topic: str) -> Optional[Intrinsics]:
    """Return the intrinsics of the first ``CameraInfo`` on ``topic``; None without one."""
    from rosbags.highlevel import AnyReader

    with AnyReader([Path(bag)]) as reader:
        conns = [c for c in reader.connections if c.topic == topic]
        if not conns:  # (no connections would read every topic)
            return None
        for conn, _, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            return Intrinsics.from_camera_info(msg)
    return None


def pose_of_message(msg: Any) -> Tuple[float, float, float]:
    """Return ``(x, y, yaw)`` of a PoseStamped, PoseWithCovarianceStamped or Odometry."""
    return pose_to_xyyaw(msg.pose.pose if hasattr(msg.pose, 'pose') else msg.pose)


class TransformTree:
    """
    The planar transforms of a bag's ``/tf`` and ``/tf_static``, looked up along chains.

    Each edge ``parent -> child`` holds the child's pose in the parent's frame over time
    (a static edge holds one); :meth:`lookup` composes the edges between two frames at
    given stamps, each interpolated as :func:`interpolate_poses` does.
    """

    def __init__(self) -> None:
        self.series: Dict[Tuple[str, str], List[Tuple[int, Tuple[float, float, float]]]] = {}
        self.static: Dict[Tuple[str, str], Tuple[float, float, float]] = {}

    def add(self, message: Any, static: bool) -> None:
        """Add the transforms of a ``tf2_msgs/TFMessage``."""
        for stamped in message.transforms:
            t, q = stamped.transform.translation, stamped.transform.rotation
            yaw = quaternion_yaw(q)
            key = (stamped.header.frame_id.lstrip('/'), stamped.child_frame_id.lstrip('/'))
            if static:
                self.static[key] = (float(t.x), float(t.y), yaw)
            else:
                self.series.setdefault(key, []).append((_stamp_ns(stamped), (t.x, t.y, yaw)))

    def _path(self, target: str, source: str) -> List[Tuple[Tuple[str, str], bool]]:
        """Return the edges from ``target`` to ``source``, each with True when walked forward."""
        neighbours: Dict[str, List[Tuple[str, Tuple[str, str], bool]]] = {}
        for parent, child in set(self.series) | set(self.static):
            neighbours.setdefault(parent, []).append((child, (parent, child), True))
            neighbours.setdefault(child, []).append((parent, (parent, child), False))
        previous: Dict[str, Tuple[str, Tuple[str, str], bool]] = {}
        queue, seen = [target], {target}
        while queue:
            frame = queue.pop(0)
            for other, edge, forward in neighbours.get(frame, []):
                if other not in seen:
                    seen.add(other)
                    previous[other] = (frame, edge, forward)
                    queue.append(other)
        if source not in seen:
            frames = sorted({f for edge in set(self.series) | set(self.static) for f in edge})
            raise BagTopicError(f'no chain of transforms from {target!r} to {source!r}; '
                                f'frames in the bag: {", ".join(frames) or "none"}')
        path = []
        while source != target:
            frame, edge, forward = previous[source]
            path.append((edge, forward))
            source = frame
        return path[::-1]

    def lookup(self, target: str, source: str, query: np.ndarray,
               max_gap: Optional[float] = None) -> np.ndarray:
        """Return the pose of frame ``source`` in ``target`` at stamps ``(Q,)``: ``(Q, 3)``."""
        out = np.zeros((len(query), 3))
        for edge, forward in self._path(target, source):
            if edge in self.static:
                step = np.broadcast_to(np.asarray(self.static[edge]), out.shape)
            else:
                series = sorted(self.series[edge])
                step = interpolate_poses(np.array([s for s, _ in series], dtype=float),
                                         np.array([p for _, p in series], dtype=float),
                                         query, max_gap)
            out = compose_poses(out, step if forward else invert_poses(step))
        return out


def read_image_poses(bag: Path, image_topic: str, pose_topic: str,
                     max_gap: Optional[float] = None, map_frame: str = 'map',
                     base_frame: Optional[str] = None,
                     ) -> Tuple[List[Tuple[int, Any]], np.ndarray]:
    """
    Return ``[(stamp ns, image msg)]`` of a bag and the pose of each ``(N, 3)`` (NaN: none).

    ``pose_topic`` holds PoseStamped, PoseWithCovarianceStamped or Odometry messages in
    the map frame, interpolated at the image stamps; or it is a ``tf2_msgs/TFMessage``
    topic (``/tf``, with ``/tf_static`` when the bag has it), and the pose is that of
    ``base_frame`` (default: each image's ``frame_id``) in ``map_frame``, composed along
    the chain of transforms between them. ``max_gap`` is in nanoseconds.
    """
    from rosbags.highlevel import AnyReader

    bag = Path(bag)
    if not bag.exists():
        raise FileNotFoundError(f'{bag}: no such bag')
    images, stamps, poses = [], [], []
    tree = TransformTree()
    with AnyReader([bag]) as reader:
        topics = {c.topic: c.msgtype for c in reader.connections}
        for topic, wanted in ((image_topic, ('sensor_msgs/msg/Image',)),
                              (pose_topic, POSE_TYPES + (TF_TYPE,))):
            if topic not in topics:
                raise BagTopicError(
                    f'{bag}: no topic {topic}; it has: {", ".join(sorted(topics))}')
            if topics[topic] not in wanted:
                raise BagTopicError(f'{bag}: {topic} is {topics[topic]}, expected '
                                    f'{" or ".join(wanted)}')
        use_tf = topics[pose_topic] == TF_TYPE
        statics = [t for t, kind in topics.items()
                   if use_tf and kind == TF_TYPE and t.endswith('tf_static')]
        wanted_topics = {image_topic, pose_topic, *statics}
        conns = [c for c in reader.connections if c.topic in wanted_topics]
        for conn, _, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            if conn.topic == image_topic:
                images.append((_stamp_ns(msg), msg))
            elif use_tf:
                tree.add(msg, static=conn.topic in statics and conn.topic != pose_topic)
            else:
                stamps.append(_stamp_ns(msg))
                poses.append(pose_of_message(msg))
    query = np.asarray([s for s, _ in images], dtype=float)
    if use_tf:
        at = np.full((len(images), 3), np.nan)
        frames = [base_frame or msg.header.frame_id.lstrip('/') for _, msg in images]
        for frame in sorted(set(frames)):
            rows = [i for i, f in enumerate(frames) if f == frame]
            at[rows] = tree.lookup(map_frame.lstrip('/'), frame, query[rows], max_gap)
        return images, at
    if not poses:
        raise BagTopicError(f'{bag}: no messages on {pose_topic}')
    order = np.argsort(stamps, kind='stable')
    return images, interpolate_poses(np.asarray(stamps)[order], np.asarray(poses)[order],
                                     query, max_gap)


def add_posed_view_arguments(parser: argparse.ArgumentParser,
                             image_topic: Optional[str] = None,
                             pose_topic: Optional[str] = None) -> None:
    """
    Add the options that choose a bag's posed views (topics, pose gap, thinning).

    A topic without a default is required. ``dmn_dataset from-bag`` and ``dmn_map build``
    share them, so a survey bag reads the same way for a dataset and for a map.
    """
    parser.add_argument('--image-topic', default=image_topic, required=image_topic is None,
                        help='camera topic (sensor_msgs/Image)'
                        + (f'; default {image_topic}' if image_topic else ''))
    pose_default = f'; default {pose_topic}' if pose_topic else ''
    parser.add_argument('--pose-topic', default=pose_topic, required=pose_topic is None,
                        help='PoseStamped, PoseWithCovarianceStamped or Odometry in the map '
                        'frame, at stamps of its own; or /tf: the camera frame in '
                        '--map-frame through the transforms' + pose_default)
    parser.add_argument('--map-frame', default='map', help='with --pose-topic /tf')
    parser.add_argument('--base-frame', default=None,
                        help='with --pose-topic /tf: the frame whose pose a view takes '
                        "(default: the image's frame_id)")
    parser.add_argument('--max-pose-gap', type=float, default=DEFAULT_MAX_POSE_GAP_S,
                        metavar='SECONDS',
                        help='skip an image whose two nearest poses are further apart than '
                        f'this (default {DEFAULT_MAX_POSE_GAP_S:g})')
    parser.add_argument('--every-metres', type=float, default=None,
                        help='keep a view after the camera moved this far')
    parser.add_argument('--every-degrees', type=float, default=None,
                        help='... or turned this much')


def interpolate_poses(stamps: np.ndarray, poses: np.ndarray, query: np.ndarray,
                      max_gap: Optional[float] = None) -> np.ndarray:
    """
    Interpolate poses ``(P, 3)`` at ``query`` stamps ``(Q,)``; return ``(Q, 3)``.

    Rows outside the time span are NaN, and so, when ``max_gap`` is given (in the unit of
    the stamps), are rows between two poses further apart than that, unless a pose has
    the row's stamp exactly.
    """
    stamps = np.asarray(stamps, dtype=float)
    query = np.asarray(query, dtype=float)
    yaw = np.unwrap(poses[:, 2])
    out = np.column_stack([np.interp(query, stamps, poses[:, 0]),
                           np.interp(query, stamps, poses[:, 1]),
                           np.interp(query, stamps, yaw)])
    out[:, 2] = np.remainder(out[:, 2] + np.pi, 2 * np.pi) - np.pi
    out[(query < stamps[0]) | (query > stamps[-1])] = np.nan
    if max_gap is not None and len(stamps) > 0:
        after = np.clip(np.searchsorted(stamps, query), 0, len(stamps) - 1)
        before = np.clip(after - 1, 0, len(stamps) - 1)
        exact = stamps[after] == query
        out[~exact & (stamps[after] - stamps[before] > max_gap)] = np.nan
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
                 every_degrees: Optional[float] = None,
                 max_pose_gap_s: Optional[float] = DEFAULT_MAX_POSE_GAP_S,
                 map_frame: str = 'map', base_frame: Optional[str] = None,
                 ) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """
    Yield ``(rgb image (H, W, 3), pose (3,))`` of the selected posed images of a bag.

    Poses come from :func:`read_image_poses` (None for ``max_pose_gap_s``: no limit on
    the gap); views are thinned by ``every_metres`` / ``every_degrees``.
    """
    max_gap = None if max_pose_gap_s is None else max_pose_gap_s * 1e9
    images, at = read_image_poses(bag, image_topic, pose_topic, max_gap, map_frame,
                                  base_frame)
    valid = [i for i in range(len(images)) if not np.isnan(at[i, 0])]
    for k in select_views(at[valid], every_metres, every_degrees):
        index = valid[k]
        try:
            yield imgmsg_to_rgb8(images[index][1]), at[index]
        except ImageConversionError as exc:
            raise DatasetError(f'{bag}: image {index} on {image_topic}: {exc}') from exc


def _bag_environments(bag: Path, image_topic: str, pose_topic: str,
                      every_metres: Optional[float], every_degrees: Optional[float],
                      image_size: Tuple[int, int], views_per_env: Optional[int],
                      max_pose_gap_s: Optional[float], map_frame: str,
                      base_frame: Optional[str]) -> Tuple[np.ndarray, np.ndarray]:
    """Read one bag's posed views as ``(images (E, V, H, W, 3), poses (E, V, 3))``."""
    import cv2

    pixels, poses = [], []
    for image, pose in posed_images(bag, image_topic, pose_topic, every_metres, every_degrees,
                                    max_pose_gap_s, map_frame, base_frame):
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
    return images, np.stack(poses[:envs * per_env]).reshape(envs, per_env, 3)


def dataset_from_bag(bags: Union[Path, Sequence[Path]], out: Path, image_topic: str,
                     pose_topic: str, every_metres: Optional[float] = None,
                     every_degrees: Optional[float] = None,
                     image_size: Tuple[int, int] = (32, 32),
                     views_per_env: Optional[int] = None,
                     max_pose_gap_s: Optional[float] = DEFAULT_MAX_POSE_GAP_S,
                     map_frame: str = 'map', base_frame: Optional[str] = None,
                     camera_info_topic: Optional[str] = '/camera/camera_info') -> Path:
    """
    Write the posed images of one or more bags as a dataset at ``out``; return its manifest.

    Each bag's views form one environment, or consecutive environments of
    ``views_per_env`` views (a remainder shorter than that is dropped); no environment
    spans two bags, whose map frames need not agree. Without ``views_per_env`` every bag
    must give the same number of views. When the bags have ``camera_info_topic``, the
    manifest records the camera's fields of view, and a model trained on the dataset
    records them as the camera it expects; bags of different cameras are refused.
    """
    bags = [Path(bags)] if isinstance(bags, (str, Path)) else [Path(b) for b in bags]
    if not bags:
        raise DatasetError('no bag given')
    images, poses, camera, camera_of = [], [], None, None
    for bag in bags:
        bag_images, bag_poses = _bag_environments(
            bag, image_topic, pose_topic, every_metres, every_degrees, image_size,
            views_per_env, max_pose_gap_s, map_frame, base_frame)
        if images and bag_images.shape[1] != images[0].shape[1]:
            raise DatasetError(f'{bag}: {bag_images.shape[1]} views, {bags[0]} '
                               f'{images[0].shape[1]}: give --views-per-env to split the bags '
                               'into environments of one size')
        intrinsics = bag_camera(bag, camera_info_topic) if camera_info_topic else None
        this = None if intrinsics is None else CameraSpec(intrinsics.fov_x_deg,
                                                          intrinsics.fov_y_deg)
        if bag is not bags[0] and this != camera:
            raise DatasetError(f'{bag}: camera {this}, but {camera_of}: {camera}; a dataset '
                               'holds the images of one camera')
        camera, camera_of = this, bag
        images.append(bag_images)
        poses.append(bag_poses)
    images, pose_arr = np.concatenate(images), np.concatenate(poses)
    envs, per_env = pose_arr.shape[:2]
    worlds = [bounding_world('robot', e, pose_arr[e]).to_dict() for e in range(envs)]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sums = write_shard(out, 0, images, pose_arr, worlds)
    parameters = {'domain': 'robot', 'split': 'train', 'envs': envs, 'views_per_env': per_env,
                  'seed': None, 'image_size': list(image_size), 'shard_size': envs,
                  'generator_version': None, 'source': 'rosbag',
                  'bag': ', '.join(b.name for b in bags),
                  'image_topic': image_topic, 'pose_topic': pose_topic,
                  'every_metres': every_metres, 'every_degrees': every_degrees}
    return write_manifest(out, parameters, [{'index': 0, 'first_env': 0, 'envs': envs,
                                             'sha256': sums}], image_size, per_env,
                          None if camera is None else camera.to_dict())
