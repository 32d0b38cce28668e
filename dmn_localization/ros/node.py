"""
``dmn_localization_node``: the ROS 2 wrapper around the DMN localization runtime.

Topics: subscribes ``image`` (sensor_msgs/Image, sensor-data QoS), ``odom``
(nav_msgs/Odometry), ``initialpose`` (PoseWithCovarianceStamped), ``camera_info``
(sensor_msgs/CameraInfo: images are cropped to the model's field of view); publishes ``pose``
(PoseWithCovarianceStamped) and ``particle_cloud`` (PoseArray). Services:
``~/build_map`` (dmn_localization_interfaces/BuildMap), ``~/global_localization``
(std_srvs/Empty). ``/diagnostics`` (diagnostic_msgs/DiagnosticArray) carries the state
(:mod:`dmn_localization.runtime.status`) at 1 Hz and on every change. The node only converts
messages and calls :class:`dmn_localization.runtime.localizer.Localizer`; the newest camera
frame is processed by a worker thread, frames arriving meanwhile replace it and are
counted as dropped, odometry keeps arriving on the executor. It is a lifecycle node
(``~/change_state``); ``autostart`` configures and activates it at start.
"""

from __future__ import annotations

import gc
import math
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from dmn_localization.core.camera import CameraError, Intrinsics
from dmn_localization.core.device import resolve_device
from dmn_localization.messages import image_conversion
from dmn_localization.messages.conversions import (InvalidRequestError, later_stamp,
                                                   make_pose, parse_build_map_request,
                                                   pose_to_xyyaw, stamp_seconds)
from dmn_localization.ros.parameters import (declare_parameters, localizer_settings,
                                             NODE_NAME, read_parameters)
from dmn_localization.ros.spin import spin_until_shutdown
from dmn_localization.runtime import status
from dmn_localization.runtime.default_model import DEFAULT_MODEL, installed_model_path
from dmn_localization.runtime.localizer import Localizer, LocalizerError, map_to_odom
from dmn_localization.runtime.saved_pose import (default_path as default_saved_pose_path,
                                                 save_pose, saved_pose_of, start_belief,
                                                 StartPolicy)
from dmn_localization_interfaces.msg import ViewEmbeddingMap as ViewEmbeddingMapMsg
from dmn_localization_interfaces.srv import BuildMap
from geometry_msgs.msg import Pose, PoseArray, PoseWithCovarianceStamped
from nav_msgs.msg import Odometry
import numpy as np
import rclpy
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import (LifecycleNode, LifecyclePublisher, LifecycleState,
                             TransitionCallbackReturn)
from rclpy.qos import DurabilityPolicy, qos_profile_sensor_data, QoSProfile, ReliabilityPolicy
from rclpy.service import Service
from rclpy.subscription import Subscription
from rclpy.timer import Timer
from sensor_msgs.msg import CameraInfo, Image
from std_srvs.srv import Empty

#: /diagnostics level of each localization state.
DIAGNOSTIC_LEVELS = {status.CONVERGED: DiagnosticStatus.OK, status.GLOBAL: DiagnosticStatus.WARN,
                     status.INITIALIZING: DiagnosticStatus.WARN,
                     status.LOST: DiagnosticStatus.ERROR}
STATE_MESSAGES = {
    status.INITIALIZING: 'no map, or no frame since the map: call ~/build_map, send images',
    status.GLOBAL: 'searching: the belief is spread out, no pose is trusted yet',
    status.CONVERGED: 'localized: the belief is narrow and agrees with the images',
    status.LOST: 'lost: the images no longer agree with the belief it had converged to',
}


class ConfigurationError(ValueError):
    """The node cannot be configured (a parameter out of range; the message names it)."""


class DmnLocalizationNode(LifecycleNode):
    """
    Localizes the camera against a view-embedding map built by ``~/build_map``.

    A managed (lifecycle) node: ``configure`` reads the parameters, loads the model and
    creates the topics and services; ``activate`` starts processing frames and
    publishing; ``deactivate`` stops both and keeps the map and the belief; ``cleanup``
    frees the model, the map and the belief. With ``autostart`` (default) the node
    configures and activates itself.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        declare_parameters(self)
        self.params: Dict[str, Any] = {}
        self.localizer: Optional[Localizer] = None
        self.device = ''
        self._active = False
        self._entities: List[Any] = []
        self._worker: Optional[threading.Thread] = None
        self._pending: Optional[Image] = None
        self._pending_lock = threading.Condition()
        self._filter_lock = threading.Lock()
        self._stop = False
        self.frames_processed = 0
        self.frames_dropped = 0
        self._last: Optional[Tuple[float, Any]] = None  # (frame stamp, FrameResult)
        self._last_latency_ms = float('nan')
        self._published_state = ''
        self._unpublished_map: Optional[ViewEmbeddingMapMsg] = None
        self._first_map = True
        self._configure_error: Optional[str] = None
        self.tf_broadcaster: Any = None
        #: the camera the images are cropped from: from camera_info, else the field-of-view
        #: parameters (None: the images are the model's view); and how it was last said
        self._camera: Optional[Intrinsics] = None
        self._camera_note = "the images are taken as the model's view"
        if self.get_parameter('autostart').value:
            self.trigger_configure()
            if self._configure_error is not None:
                raise ConfigurationError(self._configure_error)
            self.trigger_activate()

    # -- lifecycle --------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Read and check the parameters, load the model, create topics and services."""
        try:
            self.params = read_parameters(self)
        except ValueError as exc:
            self._configure_error = str(exc)
            self.get_logger().error(f'configure refused: {exc}')
            return TransitionCallbackReturn.FAILURE
        self._configure_error = None
        self.device = str(resolve_device(self.params['device']))
        self._load_model(self.params['model_path'] or installed_model_path())
        self._first_map = True
        self._create_interfaces()
        self._stop = False
        self._worker = threading.Thread(target=self._process_frames, daemon=True)
        self._worker.start()
        # Everything allocated so far (PyTorch, rclpy, the model) lives as long as the node:
        # moved out of the collector's reach, a full collection no longer scans it (which
        # took ~90 ms on the 2-core CPU and dropped camera frames at 30 Hz).
        gc.collect()
        gc.freeze()
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Start processing frames and publishing."""
        result = super().on_activate(state)
        self._active = True
        if self._unpublished_map is not None:
            self.map_pub.publish(self._unpublished_map)
            self._unpublished_map = None
        self.publish_diagnostics()
        self.get_logger().info('active: processing frames')
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop processing and publishing; the map and the belief stay."""
        self._active = False
        with self._pending_lock:
            self._pending = None
        self.get_logger().info('inactive: frames are ignored, map and belief kept')
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Free the model, map and belief and destroy topics and services."""
        self._release()
        self.get_logger().info('cleaned up: model, map and belief freed')
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release everything on the way out, from any state."""
        self._active = False
        self._release()
        return super().on_shutdown(state)

    def _release(self) -> None:
        self._stop_worker()
        for entity in self._entities:
            if isinstance(entity, LifecyclePublisher):
                self.destroy_lifecycle_publisher(entity)
            elif isinstance(entity, Subscription):
                self.destroy_subscription(entity)
            elif isinstance(entity, Service):
                self.destroy_service(entity)
            elif isinstance(entity, Timer):
                self.destroy_timer(entity)
        self._entities = []
        if self.tf_broadcaster is not None:
            self.destroy_publisher(self.tf_broadcaster.pub_tf)
        self.tf_broadcaster = None
        self.localizer = None
        self._last = None
        self._unpublished_map = None
        self._camera = None
        self._camera_note = "the images are taken as the model's view"

    def _stop_worker(self) -> None:
        with self._pending_lock:
            self._stop = True
            self._pending = None
            self._pending_lock.notify()
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(timeout=5.0)
        self._worker = None

    def _create_interfaces(self) -> None:
        latest = MutuallyExclusiveCallbackGroup()
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.pose_pub = self.create_lifecycle_publisher(PoseWithCovarianceStamped, 'pose',
                                                        QoSProfile(depth=10))
        self.cloud_pub = self.create_lifecycle_publisher(PoseArray, 'particle_cloud',
                                                         qos_profile_sensor_data)
        self.map_pub = self.create_lifecycle_publisher(ViewEmbeddingMapMsg,
                                                       'view_embedding_map', latched)
        self.diagnostics_pub = self.create_lifecycle_publisher(
            DiagnosticArray, '/diagnostics', QoSProfile(depth=10))
        entities = [
            self.pose_pub, self.cloud_pub, self.map_pub, self.diagnostics_pub,
            self.create_subscription(Image, 'image', self._on_image, qos_profile_sensor_data,
                                     callback_group=latest),
            self.create_subscription(Odometry, 'odom', self._on_odom, QoSProfile(depth=100),
                                     callback_group=MutuallyExclusiveCallbackGroup()),
            self.create_subscription(PoseWithCovarianceStamped, 'initialpose',
                                     self._on_initial_pose, QoSProfile(depth=1)),
            self.create_subscription(CameraInfo, 'camera_info', self._on_camera_info,
                                     qos_profile_sensor_data),
            self.create_service(BuildMap, '~/build_map', self._on_build_map),
            self.create_service(Empty, '~/global_localization', self._on_global_localization),
            self.create_timer(1.0, self.publish_diagnostics),
        ]
        if self.params['map_source'] == 'topic':
            entities.append(self.create_subscription(
                ViewEmbeddingMapMsg, 'view_embedding_map', self._on_map_message, latched))
        if self.params['save_pose_rate'] > 0:
            entities.append(self.create_timer(1.0 / self.params['save_pose_rate'],
                                              self._save_pose))
        self._entities = entities
        self.tf_broadcaster = self._make_tf_broadcaster()

    def _make_tf_broadcaster(self) -> Any:
        if not self.params['tf_broadcast']:
            return None
        try:
            from tf2_ros import TransformBroadcaster
        except ImportError:
            self.get_logger().info('tf2_ros is not importable: map -> odom is not broadcast '
                                   '(pose and particle_cloud are published)')
            return None
        return TransformBroadcaster(self)

    def _load_model(self, path: str) -> None:
        from dmn_localization.core.checkpoint import CheckpointError, load_checkpoint

        backend = image_conversion.select_backend()
        if not path:
            self.get_logger().warning(f'no model: model_path is empty and the package ships '
                                      f'no {DEFAULT_MODEL}; ~/build_map will refuse maps')
            return
        try:
            loaded = load_checkpoint(path, self.device)
        except CheckpointError as exc:
            self.get_logger().error(f'cannot load the model: {exc}')
            return
        settings = localizer_settings(self.params)
        self.localizer = Localizer(loaded, self.device, settings)
        self.get_logger().info(
            f'model {loaded.name} (fingerprint {loaded.fingerprint}) from {path} on '
            f'{self.device}, {settings.num_particles} particles; image conversion {backend}')
        self.get_logger().info(
            f'the model expects the view of a camera with {loaded.camera.describe()}; '
            'images are cropped to it from camera_info, or from camera_fov_x_deg and '
            'camera_fov_y_deg')
        fov = (self.params['camera_fov_x_deg'], self.params['camera_fov_y_deg'])
        if all(fov):
            # a virtual image of the camera's aspect; crops rescale it to each image
            self._use_camera(Intrinsics.of_fov(*fov), 'camera_fov_x_deg and camera_fov_y_deg')
        elif any(fov):
            self.get_logger().warning('camera_fov_x_deg and camera_fov_y_deg are used only '
                                      "together: the images are taken as the model's view")

    def _use_camera(self, camera: Intrinsics, source: str) -> None:
        """Crop images from ``camera`` from now on, and say what cannot be matched."""
        if self.localizer is None or camera == self._camera:
            return
        try:
            with self._filter_lock:
                problems = self.localizer.set_camera(camera)
        except CameraError as exc:
            self.get_logger().error(f'camera ignored ({source}): {exc}',
                                    throttle_duration_sec=5.0)
            return
        self._camera = camera
        view = f'{camera.describe()} ({source})'
        if problems:
            self._camera_note = f'{view}: ' + '; '.join(problems)
            self.get_logger().warning(
                f'{self._camera_note}. The model sees a magnified view and localizes worse; '
                "a camera at least as wide as the model's, or a model adapted to this "
                'camera (dmn_train --init-from), is needed')
        else:
            self._camera_note = f"{view}, cropped to the model's view"
            self.get_logger().info(f'images of the {self._camera_note}')
        self.publish_diagnostics()

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._use_camera(Intrinsics.from_camera_info(msg), 'camera_info')

    # -- start and saved pose ---------------------------------------------------------------
    def _start_policy(self) -> StartPolicy:
        p = self.params
        return StartPolicy(
            p['set_initial_pose'], (p['initial_pose.x'], p['initial_pose.y'],
                                    p['initial_pose.yaw']),
            p['initialize_at_saved_pose'], self._saved_pose_path())

    def _saved_pose_path(self) -> str:
        return self.params['saved_pose_path'] or str(
            default_saved_pose_path(self.get_fully_qualified_name()))

    def _after_new_map(self) -> None:
        """Apply set_initial_pose / initialize_at_saved_pose to the node's first map."""
        if not self._first_map:
            return
        self._first_map = False
        message = start_belief(self.localizer, self._start_policy())
        if message:
            self.get_logger().info(message)

    def _save_pose(self) -> None:
        if not self._active or self.localizer is None:
            return
        last = self._last
        saved = saved_pose_of(self.localizer, last[1] if last is not None else None)
        if saved is None:
            return
        try:
            save_pose(self._saved_pose_path(), saved)
        except OSError as exc:
            self.get_logger().error(f'cannot save the pose: {exc}', throttle_duration_sec=60.0)

    # -- services -------------------------------------------------------------------------
    def _on_build_map(self, request: BuildMap.Request,
                      response: BuildMap.Response) -> BuildMap.Response:
        try:
            views = parse_build_map_request(
                request, self.params['max_map_views'], self.params['global_frame_id'])
        except InvalidRequestError as exc:
            response.success, response.message = False, f'map not built: {exc}'
            self.get_logger().error(response.message)
            return response
        if self.localizer is None:
            response.success, response.num_views, response.fingerprint = False, 0, ''
            response.message = (f'received {views.summary()} in frame {views.frame_id!r}; '
                                'no model is loaded, so no map was built')
            self.get_logger().warning(response.message)
            return response
        with self._filter_lock:
            the_map = self.localizer.embed_map(views.images, views.poses, views.extent,
                                               views.frame_id)
            current = self.localizer.map
            repeated = current is not None and current.same_map(the_map)
            if not repeated:
                self.localizer.set_map(the_map)
                self._after_new_map()
        response.success = True
        response.num_views = the_map.num_views
        response.fingerprint = the_map.fingerprint
        if repeated:
            # a client that lost the response asks again (call_idempotent): restarting the
            # belief and sending the map to every robot again would serve it nothing
            response.message = (f'map of {views.summary()} is the map in use already: '
                                'belief kept, not published again')
            self.get_logger().info(response.message)
            return response
        if self.params['publish_map']:
            from dmn_localization.ros.map_conversion import map_to_msg

            msg = map_to_msg(the_map, self.params['map_dtype'], ViewEmbeddingMapMsg, Pose)
            msg.header.stamp = self.get_clock().now().to_msg()
            if self._active:
                self.map_pub.publish(msg)
            else:  # a lifecycle publisher sends nothing while inactive: at activation
                self._unpublished_map = msg
        response.message = (f'map of {views.summary()} built; belief re-initialized over '
                            f'extent {[round(float(v), 2) for v in the_map.extent]}')
        self.get_logger().info(response.message)
        return response

    def _on_map_message(self, msg: ViewEmbeddingMapMsg) -> None:
        from dmn_localization.core.maps import MapError
        from dmn_localization.ros.map_conversion import msg_to_map

        if self.localizer is None:
            self.get_logger().error('map received but no model is loaded: ignored')
            return
        merge = self.params['map_update'] == 'merge'
        try:
            the_map = msg_to_map(msg)
            with self._filter_lock:
                current = self.localizer.map
                if current is not None and (current.contains(the_map) if merge
                                            else current.same_map(the_map)):
                    # delivered again (transient local after a rediscovery) or merged before
                    self.get_logger().info(
                        f'map of {the_map.num_views} views from {the_map.model_name} '
                        f'received again: {"its views are in" if merge else "it is"} the '
                        'map in use already; belief kept')
                    return
                if merge and current is not None:
                    the_map.check_compatible(self.localizer.model)
                    merged = current.merge(the_map)
                    self.localizer.set_map(merged, keep_belief=True)
                else:
                    self.localizer.set_map(the_map)
                    self._after_new_map()
        except MapError as exc:
            self.get_logger().error(f'map from view_embedding_map refused, belief kept: {exc}')
            return
        if merge and current is not None:
            self.get_logger().info(
                f'map of {the_map.num_views} views from {the_map.model_name} (fingerprint '
                f'{the_map.fingerprint}) received and merged: {merged.num_views} views over '
                f'extent {[round(float(v), 2) for v in merged.extent]}; belief kept')
            return
        self.get_logger().info(f'map of {the_map.num_views} views from {the_map.model_name} '
                               f'(fingerprint {the_map.fingerprint}) received; belief '
                               're-initialized')

    def _on_global_localization(self, request: Empty.Request,
                                response: Empty.Response) -> Empty.Response:
        if self.localizer is not None and self.localizer.map is not None:
            with self._filter_lock:
                self.localizer.initialize_global()
            self.get_logger().info('belief re-initialized uniformly over the map')
        else:
            self.get_logger().warning('global_localization: no map yet')
        return response

    # -- subscriptions ----------------------------------------------------------------------
    def _on_odom(self, msg: Odometry) -> None:
        if self.localizer is None:
            return
        expected = self.params['odom_frame_id']
        if msg.header.frame_id not in ('', expected):
            self.get_logger().error(
                f"odometry ignored: it is in frame '{msg.header.frame_id}', expected "
                f"odom_frame_id '{expected}'", throttle_duration_sec=5.0)
            return
        try:
            pose = pose_to_xyyaw(msg.pose.pose)
        except ValueError as exc:
            self.get_logger().warning(f'odometry ignored: {exc}', throttle_duration_sec=5.0)
            return
        if not self.localizer.add_odometry(stamp_seconds(msg.header.stamp), pose):
            self.get_logger().warning('odometry time went backwards: buffer reset')

    def _on_initial_pose(self, msg: PoseWithCovarianceStamped) -> None:
        if self.localizer is None or self.localizer.map is None:
            self.get_logger().warning('initialpose ignored: no map yet')
            return
        expected = self.params['global_frame_id']
        if msg.header.frame_id != expected:
            self.get_logger().error(
                f"initialpose refused: it is in frame '{msg.header.frame_id}', expected "
                f"global_frame_id '{expected}'")
            return
        try:
            pose = pose_to_xyyaw(msg.pose.pose)
            cov = np.asarray(msg.pose.covariance, dtype=float).reshape(6, 6)[
                np.ix_([0, 1, 5], [0, 1, 5])]
            with self._filter_lock:
                self.localizer.initialize_gaussian(pose, cov)
        except (ValueError, LocalizerError) as exc:
            self.get_logger().error(f'initialpose refused: {exc}')
            return
        self.get_logger().info(f'belief re-initialized around {np.round(pose, 2).tolist()}')

    def _on_image(self, msg: Image) -> None:
        if not self._active:
            return
        with self._pending_lock:
            if self._pending is not None:
                self.frames_dropped += 1
            self._pending = msg
            self._pending_lock.notify()

    # -- frame processing -------------------------------------------------------------------
    def _process_frames(self) -> None:
        while True:
            with self._pending_lock:
                while self._pending is None and not self._stop:
                    self._pending_lock.wait(timeout=0.5)
                if self._stop:
                    return
                msg, self._pending = self._pending, None
            try:
                self._process(msg)
            except Exception as exc:  # noqa: B902 - keep the node alive, say what happened
                self.get_logger().error(f'frame not processed: {type(exc).__name__}: {exc}')

    def _process(self, msg: Image) -> None:
        if not self._active:
            return
        if self.localizer is None or self.localizer.map is None:
            self.get_logger().warning('images received but no map yet: call ~/build_map',
                                      throttle_duration_sec=5.0)
            return
        try:
            pixels = image_conversion.imgmsg_to_rgb8(msg)
        except image_conversion.EmptyImageError as exc:  # throttled apart from other faults
            self.get_logger().error(f'image ignored: {exc}', throttle_duration_sec=5.0)
            return
        except image_conversion.ImageConversionError as exc:
            self.get_logger().error(f'image ignored: {exc}', throttle_duration_sec=5.0)
            return
        stamp = stamp_seconds(msg.header.stamp)
        self._wait_for_odometry(stamp)
        started = time.monotonic()
        with self._filter_lock:
            result = self.localizer.process_frame(stamp, pixels)
        self._last_latency_ms = (time.monotonic() - started) * 1000.0
        self._last = (stamp, result)  # one assignment: the timer reads both together
        self.frames_processed += 1
        if result.state != self._published_state:
            self.get_logger().info(f'state: {result.state}')
            self.publish_diagnostics()
        if not result.moved_by_odometry and self.frames_processed > 1:
            self.get_logger().warning('no odometry around this frame: observation-only update',
                                      throttle_duration_sec=5.0)
        self._publish(msg.header.stamp, result)

    def _wait_for_odometry(self, stamp: float) -> None:
        """
        Wait up to ``odom_wait`` seconds for odometry stamped at or after the frame.

        Odometry comes on its own topic and may arrive just after the frame it brackets;
        interpolating then, not extrapolating now, gives the motion a bag replay gives.
        No wait when odometry has stopped (its newest stamp is older than max_odom_gap).
        """
        buffer = self.localizer.odometry
        deadline = time.monotonic() + self.params['odom_wait']
        while time.monotonic() < deadline:
            newest = buffer.stamps[-1] if buffer.stamps else None
            if newest is None or newest >= stamp or newest < stamp - self.params['max_odom_gap']:
                return
            time.sleep(0.002)

    def _publish(self, stamp: Any, result: Any) -> None:
        frame = self.params['global_frame_id']
        out = PoseWithCovarianceStamped()
        out.header.stamp, out.header.frame_id = stamp, frame
        out.pose.pose = make_pose(*result.pose)
        cov = np.zeros((6, 6))
        index = [0, 1, 5]
        cov[np.ix_(index, index)] = result.covariance
        out.pose.covariance = cov.reshape(-1).tolist()
        if self.params['publish_pose_when'] == 'always' or result.state == status.CONVERGED:
            self.pose_pub.publish(out)
        cloud = PoseArray()
        cloud.header.stamp, cloud.header.frame_id = stamp, frame
        count = min(self.params['max_published_particles'], len(result.weights))
        heaviest = np.argsort(-result.weights)[:count]
        cloud.poses = [make_pose(*result.particles[i]) for i in heaviest]
        self.cloud_pub.publish(cloud)
        if self.tf_broadcaster is not None and result.odom_pose is not None:
            from geometry_msgs.msg import TransformStamped

            x, y, yaw = map_to_odom(result.pose, result.odom_pose)
            tf = TransformStamped()
            tf.header.stamp.sec, tf.header.stamp.nanosec = later_stamp(
                stamp.sec, stamp.nanosec, self.params['transform_tolerance'])
            tf.header.frame_id = frame
            tf.child_frame_id = self.params['odom_frame_id']
            tf.transform.translation.x, tf.transform.translation.y = float(x), float(y)
            tf.transform.rotation.z, tf.transform.rotation.w = math.sin(yaw / 2), math.cos(yaw / 2)
            self.tf_broadcaster.sendTransform(tf)

    def publish_diagnostics(self) -> None:
        """Publish the state and its evidence on /diagnostics (1 Hz and on every change)."""
        if not self._active:
            return
        state = self.localizer.state if self.localizer is not None else status.INITIALIZING
        entry = DiagnosticStatus()
        entry.name = f'{self.get_fully_qualified_name()}: localization'
        entry.hardware_id = self.device
        entry.level = DIAGNOSTIC_LEVELS[state]
        entry.message = STATE_MESSAGES[state]
        values = {'state': state, 'frames_processed': self.frames_processed,
                  'frames_dropped': self.frames_dropped,
                  'updates_skipped': (self.localizer.updates_skipped
                                      if self.localizer is not None else 0),
                  'device': self.device, 'camera': self._camera_note,
                  'map_fingerprint': (self.localizer.map.fingerprint if self.localizer is not
                                      None and self.localizer.map is not None else '')}
        report = self._last
        if report is not None:
            frame_stamp, last = report
            cov = last.covariance
            values.update({
                'spread_x_m': f'{math.sqrt(cov[0, 0]):.3f}',
                'spread_y_m': f'{math.sqrt(cov[1, 1]):.3f}',
                'spread_yaw_rad': f'{math.sqrt(cov[2, 2]):.3f}',
                'effective_sample_size': f'{last.effective_sample_size:.1f}',
                'evidence': f'{last.evidence:.3f}',
                'relative_evidence': ('' if last.relative_evidence is None
                                      else f'{last.relative_evidence:.3f}'),
                'recovery_share': f'{last.recovery_share:.3f}',
                'last_step_latency_ms': f'{self._last_latency_ms:.1f}'})
            if last.state == state:  # the state this frame ended in (not a newer map's)
                values['last_frame_stamp'] = f'{frame_stamp:.9f}'
        entry.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [entry]
        self.diagnostics_pub.publish(array)
        self._published_state = state

    def destroy_node(self) -> None:
        """Stop the frame worker, then destroy the node."""
        self._stop_worker()
        super().destroy_node()


def main(args: Optional[list] = None) -> None:
    """Run the node until shutdown (Ctrl-C or the ROS context ends)."""
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = DmnLocalizationNode()
        executor = MultiThreadedExecutor(num_threads=2)
        executor.add_node(node)
        spin_until_shutdown(executor)
    except ConfigurationError:
        code = 1  # logged by on_configure, with the parameter named
    except KeyboardInterrupt:
        pass  # Ctrl-C before the executor spins
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    if code:
        sys.exit(code)


if __name__ == '__main__':
    main()
