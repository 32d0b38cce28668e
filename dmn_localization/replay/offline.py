"""
Offline replay of a ROS 2 bag through the localization runtime, as fast as it goes.

The bag is read with ``rosbags`` (sqlite3 or MCAP). The map comes from the bag's mapping
part (image and pose topics with equal stamps), from another bag's, or from frames of a
posed run picked every N metres or degrees. Then odometry and camera frames are fed to
:class:`~dmn_localization.runtime.localizer.Localizer` in stamp order, the same code the node
runs; the run is deterministic for a seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from dmn_localization.data.from_bag import (bag_camera, BagTopicError,
                                            DEFAULT_MAX_POSE_GAP_S, pose_of_message,
                                            POSE_TYPES, posed_images)
from dmn_localization.messages.conversions import stamp_seconds
from dmn_localization.messages.image_conversion import imgmsg_to_rgb8
from dmn_localization.runtime.localizer import FrameResult, Localizer
import numpy as np


@dataclass
class BagTopics:
    """Topic names of a bag (defaults: those ``dmn_sim_bag`` writes)."""

    image: str = '/camera/image_raw'
    odom: str = '/odom'
    truth: str = '/ground_truth/pose'
    mapping_image: str = '/mapping/image'
    mapping_pose: str = '/mapping/pose'
    #: the camera's intrinsics (sensor_msgs/CameraInfo): when the bag has the topic, its
    #: first message crops every image to the model's view, as the node does
    camera_info: str = '/camera/camera_info'


@dataclass
class ReplayResult:
    """Estimates of a replay, the ground truth, the map's views and particle snapshots."""

    stamps: List[float] = field(default_factory=list)
    estimates: List[np.ndarray] = field(default_factory=list)
    #: the localizer's status at each frame (offline replay; empty when unknown)
    states: List[str] = field(default_factory=list)
    #: ``(frame stamp, state)`` at each change of state (live replay, from /diagnostics)
    state_changes: List[Tuple[float, str]] = field(default_factory=list)
    truth_stamps: List[float] = field(default_factory=list)
    truth: List[Tuple[float, float, float]] = field(default_factory=list)
    map_poses: Optional[np.ndarray] = None
    extent: Optional[List[float]] = None
    snapshots: Dict[float, FrameResult] = field(default_factory=dict)
    #: how the images reached the model: the camera they were cropped from, or None
    camera: Optional[str] = None

    def frame_states(self) -> Optional[List[Optional[str]]]:
        """Return the state at each estimate (recorded, or read from the changes), or None."""
        if self.states:
            return list(self.states)
        if self.state_changes:
            return [state_at(self.state_changes, stamp) for stamp in self.stamps]
        return None


def state_at(changes: Sequence[Tuple[float, str]], stamp: float) -> Optional[str]:
    """Return the state reported for the frame at ``stamp`` (None before the first report)."""
    state = None
    for when, name in changes:
        if when > stamp + 1e-9:
            break
        state = name
    return state


def mapping_views(bag: Path, topics: BagTopics, every_metres: Optional[float] = None,
                  every_degrees: Optional[float] = None,
                  max_pose_gap_s: Optional[float] = DEFAULT_MAX_POSE_GAP_S,
                  map_frame: str = 'map', base_frame: Optional[str] = None,
                  ) -> Tuple[List[np.ndarray], np.ndarray]:
    """
    Return the mapping part of a bag: images and their poses ``(N, 3)``.

    The poses (PoseStamped, PoseWithCovarianceStamped or Odometry in the map frame, or
    transforms on /tf) are read as :func:`~dmn_localization.data.from_bag.posed_images`
    reads them, so a pose source with stamps of its own (SLAM, motion capture) works; the
    views may be thinned by distance and angle.
    """
    picked = list(posed_images(bag, topics.mapping_image, topics.mapping_pose, every_metres,
                               every_degrees, max_pose_gap_s, map_frame, base_frame))
    if not picked:
        gap = '' if max_pose_gap_s is None else (
            f' (at most {max_pose_gap_s:g} s between two poses)')
        raise BagTopicError(f'{bag}: no image on {topics.mapping_image} lies within the poses '
                            f'of {topics.mapping_pose}{gap}')
    return [p[0] for p in picked], np.array([p[1] for p in picked])


def map_views(bag: Path, topics: BagTopics, map_source: str = 'bag',
              map_bag: Optional[Path] = None, every_metres: Optional[float] = None,
              every_degrees: Optional[float] = None) -> Tuple[List[np.ndarray], np.ndarray]:
    """
    Return the context images and poses ``(N, 3)`` to build the map from.

    ``map_source``: ``bag`` (this bag's mapping part), ``other`` (``map_bag``'s mapping
    part) or ``run`` (frames of this bag's run with ground-truth poses, every
    ``every_metres``/``every_degrees``).
    """
    bag = Path(bag)
    if not bag.exists():
        raise FileNotFoundError(f'{bag}: no such bag')
    if map_source == 'bag':
        return mapping_views(bag, topics)
    if map_source == 'other':
        if map_bag is None or not Path(map_bag).exists():
            raise FileNotFoundError(f'{map_bag}: no such map bag')
        return mapping_views(Path(map_bag), topics)
    if map_source == 'run':
        picked = list(posed_images(bag, topics.image, topics.truth, every_metres or 1.0,
                                   every_degrees))
        return [p[0] for p in picked], np.array([p[1] for p in picked])
    raise ValueError(f'map source must be bag, other or run, got {map_source!r}')


def run_connections(reader: Any, bag: Path, topics: BagTopics) -> List[Any]:
    """Return the reader's connections of the run (image, odometry, truth), checked."""
    types = {c.topic: c.msgtype for c in reader.connections}
    for topic, wanted in ((topics.image, ('sensor_msgs/msg/Image',)),
                          (topics.odom, ('nav_msgs/msg/Odometry',)),
                          (topics.truth, POSE_TYPES)):
        if topic not in types:
            raise BagTopicError(f'{bag}: no topic {topic}; it has: {", ".join(sorted(types))}')
        if types[topic] not in wanted:
            raise BagTopicError(f'{bag}: {topic} is {types[topic]}, expected '
                                f'{" or ".join(wanted)}')
    return [c for c in reader.connections if c.topic in (topics.image, topics.odom, topics.truth)]


def replay(bag: Path, localizer: Localizer, topics: BagTopics,
           map_source: str = 'bag', map_bag: Optional[Path] = None,
           every_metres: Optional[float] = None, every_degrees: Optional[float] = None,
           extent: Optional[Sequence[float]] = None,
           snapshot_times: Sequence[float] = (), progress: bool = True) -> ReplayResult:
    """
    Build the map (see :func:`map_views`), then replay ``bag``'s odometry and frames.

    ``snapshot_times`` (seconds from the first frame) keep the particles of the frame
    nearest to each.
    """
    from rosbags.highlevel import AnyReader

    bag = Path(bag)
    images, poses = map_views(bag, topics, map_source, map_bag, every_metres, every_degrees)
    camera = bag_camera(bag, topics.camera_info)
    problems = localizer.set_camera(camera)
    the_map = localizer.build_map(images, poses, extent)
    result = ReplayResult(map_poses=poses, extent=[float(v) for v in the_map.extent])
    if camera is not None:
        result.camera = (f'{camera.describe()} ({topics.camera_info}): '
                         + ('; '.join(problems) or "cropped to the model's view"))
    with AnyReader([bag]) as reader:
        conns = run_connections(reader, bag, topics)
        total = sum(c.msgcount for c in conns if c.topic == topics.image)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=total, unit='frame', desc=bag.name, mininterval=1.0)
        pending = sorted(snapshot_times)
        start: Optional[float] = None
        for conn, _, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            if conn.topic == topics.odom:
                localizer.add_odometry(stamp_seconds(msg.header.stamp), pose_of_message(msg))
            elif conn.topic == topics.truth:
                result.truth_stamps.append(stamp_seconds(msg.header.stamp))
                result.truth.append(pose_of_message(msg))
            else:
                stamp = stamp_seconds(msg.header.stamp)
                frame = localizer.process_frame(stamp, imgmsg_to_rgb8(msg))
                start = stamp if start is None else start
                result.stamps.append(stamp)
                result.estimates.append(frame.pose)
                result.states.append(frame.state)
                while pending and stamp - start >= pending[0]:
                    result.snapshots[pending.pop(0)] = frame
                if bar is not None:
                    bar.update()
        if bar is not None:
            bar.close()
    if not result.stamps:
        raise BagTopicError(f'{bag}: no messages on {topics.image}')
    return result
