"""
Live replay: play a bag over DDS to a running ``dmn_localization_node`` and record it.

The node is measured as deployed: this player calls its ``~/build_map`` service with
the map's context views (see :func:`~dmn_localization.replay.offline.map_views`), then
publishes the bag's camera frames and odometry on the node's input topics (the ones the
running node subscribes to, read from the ROS graph, so its namespace and remappings
apply; or given) at the bag's
timing (scaled by ``rate``), and records the poses and particle clouds the node
publishes. Messages go out exactly as recorded: the bag's CDR bytes are deserialized
into rclpy messages, so stamps and frame ids are the bag's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from dmn_localization.core.camera import Intrinsics
from dmn_localization.data.from_bag import pose_of_message
from dmn_localization.messages.conversions import build_map_request, pose_to_xyyaw, stamp_seconds
from dmn_localization.replay.offline import (BagTopics, map_views, ReplayResult,
                                             run_connections)
from dmn_localization.ros.service_call import call_idempotent
from dmn_localization.runtime.localizer import default_extent, LocalizerSettings
import numpy as np


#: The node's topic names before remapping, used when the graph does not show one in time.
DEFAULT_TOPICS = {'image_topic': 'image', 'odom_topic': 'odom', 'pose_topic': 'pose',
                  'cloud_topic': 'particle_cloud', 'camera_info_topic': 'camera_info'}


class LiveReplayError(RuntimeError):
    """The node could not be reached, refused the map, or published nothing."""


@dataclass
class LiveTarget:
    """
    The running node: its fully qualified name and its topics.

    A topic left None is read from the ROS graph: the node's one subscription of
    ``sensor_msgs/Image`` (camera) and of ``nav_msgs/Odometry``, its publication of
    ``PoseWithCovarianceStamped`` (pose) and of ``PoseArray`` (particles), with the
    node's namespace and remappings. A topic given is used as it is.
    """

    node: str = '/dmn_localization'
    image_topic: Optional[str] = None
    odom_topic: Optional[str] = None
    pose_topic: Optional[str] = None
    cloud_topic: Optional[str] = None
    camera_info_topic: Optional[str] = None
    #: bag seconds per wall-clock second (2.0 plays twice as fast)
    rate: float = 1.0
    #: seconds to wait for the node's service and its subscriptions
    connect_timeout: float = 60.0
    #: seconds to wait after the last frame for the node's last poses (and, in lockstep,
    #: after each frame for the node's answer)
    settle: float = 5.0
    #: wait for the node's answer to each frame (its pose or particle cloud) before
    #: playing on: every frame is
    #: processed however slow the machine, and the run takes longer than the bag
    #: (accuracy measured apart from keeping up; ``bench/node_bench.py`` measures that)
    lockstep: bool = False


@dataclass
class CloudSnapshot:
    """A published particle cloud: particles ``(K, 3)``, equal ``weights`` ``(K,)``."""

    particles: np.ndarray
    weights: np.ndarray


def _cloud_array(msg: Any) -> np.ndarray:
    return np.array([pose_to_xyyaw(p) for p in msg.poses]).reshape(-1, 3)


class _Player:
    """The player's node: service client, publishers, recorders, spun in a thread."""

    def __init__(self, target: LiveTarget) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        from dmn_localization_interfaces.srv import BuildMap

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node('dmn_bag_player', context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.build_map = self.node.create_client(BuildMap, f'{target.node}/build_map')
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()

    def start(self, target: LiveTarget) -> None:
        """Publish to and record the topics of ``target`` (resolved), and start spinning."""
        from rclpy.qos import qos_profile_sensor_data, QoSProfile

        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseArray, PoseWithCovarianceStamped
        from nav_msgs.msg import Odometry
        from sensor_msgs.msg import CameraInfo, Image

        self.image_pub = self.node.create_publisher(Image, target.image_topic,
                                                    qos_profile_sensor_data)
        self.camera_info_pub = self.node.create_publisher(CameraInfo, target.camera_info_topic,
                                                          qos_profile_sensor_data)
        #: the node's /diagnostics ``camera``: how its images reach the model
        self.camera_note: Optional[str] = None
        self.odom_pub = self.node.create_publisher(Odometry, target.odom_topic,
                                                   QoSProfile(depth=100))
        self.poses: List[Tuple[float, Tuple[float, float, float]]] = []
        #: stamp of the newest frame the node has answered (pose or particle cloud; the
        #: node publishes its cloud for every frame it processes)
        self.processed = -np.inf
        self.clouds: List[Tuple[float, np.ndarray]] = []
        self.node.create_subscription(PoseWithCovarianceStamped, target.pose_topic,
                                      self._on_pose, QoSProfile(depth=100))
        self.node.create_subscription(PoseArray, target.cloud_topic, self._on_cloud,
                                      qos_profile_sensor_data)
        self.states: List[Tuple[float, str]] = []
        self._status_name = f'{target.node}: localization'
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics,
                                      QoSProfile(depth=100))
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def resolve(self, target: LiveTarget) -> LiveTarget:
        """Return ``target`` with every topic left None read from the node's graph entry."""
        wanted = {'image_topic': ('sub', 'sensor_msgs/msg/Image'),
                  'odom_topic': ('sub', 'nav_msgs/msg/Odometry'),
                  'pose_topic': ('pub', 'geometry_msgs/msg/PoseWithCovarianceStamped'),
                  'cloud_topic': ('pub', 'geometry_msgs/msg/PoseArray'),
                  'camera_info_topic': ('sub', 'sensor_msgs/msg/CameraInfo')}
        missing = [field for field in wanted if getattr(target, field) is None]
        if not missing:
            return target
        namespace, _, name = target.node.rpartition('/')
        found: Dict[str, List[str]] = {}
        deadline = time.monotonic() + target.connect_timeout
        while True:
            try:
                graph = {
                    'sub': self.node.get_subscriber_names_and_types_by_node(
                        name, namespace or '/'),
                    'pub': self.node.get_publisher_names_and_types_by_node(
                        name, namespace or '/')}
            except Exception:  # noqa: B902 - rclpy's NodeNameNonExistentError: not seen yet
                graph = {'sub': [], 'pub': []}
            found = {field: sorted(topic for topic, types in graph[kind] if kind_type in types)
                     for field, (kind, kind_type) in wanted.items()}
            if all(found[field] for field in missing) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        for field in missing:
            kind, kind_type = wanted[field]
            if not found[field]:  # not seen in the graph (yet): the node's own name for it
                found[field] = [f'{namespace}/{DEFAULT_TOPICS[field]}']
            if len(found[field]) != 1:
                verb = 'subscribes to' if kind == 'sub' else 'publishes'
                raise LiveReplayError(
                    f'{target.node} {verb} {len(found[field])} {kind_type} topics '
                    f'({", ".join(found[field]) or "none"}); give it with '
                    f'--node-{field[:-6].replace("_", "-")}-topic')
        return replace(target, **{field: found[field][0] for field in missing})

    def _spin(self) -> None:
        while not self._stop.is_set():
            self.executor.spin_once(timeout_sec=0.05)

    def _on_pose(self, msg: Any) -> None:
        stamp = stamp_seconds(msg.header.stamp)
        self.processed = max(self.processed, stamp)
        self.poses.append((stamp, pose_to_xyyaw(msg.pose.pose)))

    def _on_diagnostics(self, msg: Any) -> None:
        for entry in msg.status:
            if entry.name != self._status_name:
                continue
            values = {kv.key: kv.value for kv in entry.values}
            self.camera_note = values.get('camera', self.camera_note)
            if 'last_frame_stamp' in values and 'state' in values:
                self.states.append((float(values['last_frame_stamp']), values['state']))

    def _on_cloud(self, msg: Any) -> None:
        stamp = stamp_seconds(msg.header.stamp)
        self.processed = max(self.processed, stamp)
        self.clouds.append((stamp, _cloud_array(msg)))

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate() and time.monotonic() < deadline:
            time.sleep(0.05)
        return predicate()

    def close(self) -> None:
        import rclpy

        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def state_changes(reports: Sequence[Tuple[float, str]]) -> List[Tuple[float, str]]:
    """Return ``(frame stamp, state)`` where the state changes, from /diagnostics reports."""
    changes: List[Tuple[float, str]] = []
    for stamp, state in sorted(r for r in reports if np.isfinite(r[0])):
        if not changes or changes[-1][1] != state:
            changes.append((stamp, state))
    return changes


def live_replay(bag: Path, topics: BagTopics, target: Optional[LiveTarget] = None,
                map_source: str = 'bag', map_bag: Optional[Path] = None,
                every_metres: Optional[float] = None, every_degrees: Optional[float] = None,
                extent: Optional[Sequence[float]] = None, frame_id: str = 'map',
                snapshot_times: Sequence[float] = (), progress: bool = True) -> ReplayResult:
    """
    Build the node's map over its service, play ``bag`` to it, return what it published.

    The estimates are the node's published poses (by their stamps: the frames it
    processed; frames it dropped while busy have none). Raises :class:`LiveReplayError`
    when the node is not there, refuses the map, or publishes no pose.
    """
    from rclpy.serialization import deserialize_message
    from rosbags.highlevel import AnyReader

    from nav_msgs.msg import Odometry
    from sensor_msgs.msg import Image

    bag = Path(bag)
    target = target or LiveTarget()
    images, poses = map_views(bag, topics, map_source, map_bag, every_metres, every_degrees)
    player = _Player(target)
    try:
        if not player.build_map.wait_for_service(timeout_sec=target.connect_timeout):
            raise LiveReplayError(f'no service {target.node}/build_map within '
                                  f'{target.connect_timeout:.0f} s: is the node running '
                                  '(same ROS_DOMAIN_ID)?')
        target = player.resolve(target)
        player.start(target)
        _send_camera_info(bag, topics, target, player, deserialize_message)
        request = build_map_request(images, poses, frame_id, extent)
        response = call_idempotent(player.build_map, request,
                                   lambda future, seconds: player.wait(future.done, seconds),
                                   target.connect_timeout)
        if response is None:
            raise LiveReplayError(f'{target.node}/build_map did not answer')
        if not response.success:
            raise LiveReplayError(f'{target.node} refused the map: {response.message}')
        if not player.wait(lambda: player.image_pub.get_subscription_count() > 0
                           and player.odom_pub.get_subscription_count() > 0,
                           target.connect_timeout):
            raise LiveReplayError(f'the node does not subscribe to {target.image_topic} and '
                                  f'{target.odom_topic}')
        map_extent = list(extent) if extent is not None else default_extent(
            poses, LocalizerSettings().map_margin)
        result = ReplayResult(map_poses=poses, extent=[float(v) for v in map_extent],
                              camera=player.camera_note)
        frame_stamps = _play(bag, topics, target, player, result, deserialize_message,
                             AnyReader, Image, Odometry, progress)
        last = frame_stamps[-1] if frame_stamps else None
        player.wait(lambda: bool(player.poses) and last is not None
                    and player.poses[-1][0] >= last - 1e-6, target.settle)
        received = sorted(player.poses)
        if not received:
            raise LiveReplayError(f'{target.node} published no pose on {target.pose_topic}')
        result.state_changes = state_changes(player.states)
        result.stamps = [s for s, _ in received]
        result.estimates = [np.array(p) for _, p in received]
        if player.clouds and snapshot_times:
            start = result.stamps[0]
            for when in sorted(snapshot_times):
                after = [c for c in player.clouds if c[0] - start >= when]
                if after:
                    cloud = after[0][1]
                    result.snapshots[when] = CloudSnapshot(
                        cloud, np.full(len(cloud), 1.0 / max(len(cloud), 1)))
        return result
    finally:
        player.close()


def _send_camera_info(bag: Path, topics: BagTopics, target: LiveTarget, player: _Player,
                      deserialize: Any) -> None:
    """
    Give the node the bag's camera (its first ``topics.camera_info``) before the map.

    Published until the node's /diagnostics say it crops from camera_info, as a camera
    driver publishes it beside every image; nothing when the bag has no such topic.
    """
    from rosbags.highlevel import AnyReader
    from sensor_msgs.msg import CameraInfo

    with AnyReader([bag]) as reader:
        conns = [c for c in reader.connections if c.topic == topics.camera_info]
        raw = next((bytes(r) for _, _, r in reader.messages(connections=conns)),
                   None) if conns else None
    if raw is None:
        return
    msg = deserialize(raw, CameraInfo)
    expected = f'{Intrinsics.from_camera_info(msg).describe()} (camera_info)'

    def taken() -> bool:
        player.camera_info_pub.publish(msg)
        return (player.camera_note or '').startswith(expected)

    if not player.wait(taken, target.connect_timeout):
        raise LiveReplayError(f'{target.node} did not take the camera of {topics.camera_info} '
                              f'from {target.camera_info_topic} (its /diagnostics say: '
                              f'{player.camera_note})')


def _play(bag: Path, topics: BagTopics, target: LiveTarget, player: _Player,
          result: ReplayResult, deserialize: Any, reader_cls: Any, image_type: Any,
          odom_type: Any, progress: bool) -> List[float]:
    """Publish the run at bag timing; record the truth; return the frames' stamps."""
    if target.rate <= 0:
        raise ValueError(f'rate must be positive, got {target.rate}')
    frames: List[float] = []
    with reader_cls([bag]) as reader:
        conns = run_connections(reader, bag, topics)
        total = sum(c.msgcount for c in conns if c.topic == topics.image)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=total, unit='frame', desc=f'{bag.name} (live)', mininterval=1.0)
        wall0: Optional[float] = None
        bag0 = 0
        for conn, timestamp, raw in reader.messages(connections=conns):
            if wall0 is None:
                wall0, bag0 = time.monotonic(), timestamp
            delay = wall0 + (timestamp - bag0) * 1e-9 / target.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if conn.topic == topics.truth:
                msg = reader.deserialize(raw, conn.msgtype)
                result.truth_stamps.append(stamp_seconds(msg.header.stamp))
                result.truth.append(pose_of_message(msg))
            elif conn.topic == topics.odom:
                player.odom_pub.publish(deserialize(bytes(raw), odom_type))
            else:
                msg = deserialize(bytes(raw), image_type)
                frames.append(stamp_seconds(msg.header.stamp))
                player.image_pub.publish(msg)
                if target.lockstep:
                    # bag timing resumes after the wait instead of catching up in a burst
                    waited = time.monotonic()
                    player.wait(lambda: player.processed >= frames[-1] - 1e-6,
                                target.settle)
                    wall0 += time.monotonic() - waited
                if bar is not None:
                    bar.update()
        if bar is not None:
            bar.close()
    return frames
