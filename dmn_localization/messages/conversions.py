"""
Message <-> array conversions of the node other than images (see image_conversion).

Planar poses are ``(x, y, yaw)`` in metres and radians in the map frame (REP 103/105).
"""

from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

from dmn_localization.messages.image_conversion import ImageConversionError, imgmsg_to_rgb8
import numpy as np

#: Largest accepted deviation of a pose quaternion's norm from 1.
QUATERNION_NORM_TOLERANCE = 1e-3


class InvalidRequestError(ValueError):
    """A service request that cannot be served; the message says what was wrong."""


def make_pose(x: float, y: float, yaw: float, factory: Any = None) -> Any:
    """Return a ``geometry_msgs/Pose`` (or ``factory()``) at (x, y) heading ``yaw``."""
    if factory is None:
        from geometry_msgs.msg import Pose as factory
    pose = factory()
    pose.position.x, pose.position.y = float(x), float(y)
    pose.orientation.z, pose.orientation.w = math.sin(yaw / 2), math.cos(yaw / 2)
    return pose


def stamp_seconds(stamp: Any) -> float:
    """Return a ``builtin_interfaces/Time`` (rclpy or rosbags message) as float seconds."""
    return stamp.sec + stamp.nanosec * 1e-9


def build_map_request(images: Sequence[np.ndarray], poses: np.ndarray,
                      frame_id: str = 'map', extent: Optional[Sequence[float]] = None) -> Any:
    """Return a ``BuildMap`` request of rgb8 images ``(H, W, 3)`` and poses ``(N, 3)``."""
    from dmn_localization.messages.image_conversion import array_to_imgmsg
    from dmn_localization_interfaces.srv import BuildMap

    request = BuildMap.Request()
    request.header.frame_id = frame_id
    request.images = [array_to_imgmsg(np.ascontiguousarray(img), 'rgb8') for img in images]
    request.poses = [make_pose(*p) for p in np.asarray(poses, dtype=float)]
    request.extent = [float(v) for v in extent] if extent is not None else []
    return request


def later_stamp(sec: int, nanosec: int, seconds: float) -> Tuple[int, int]:
    """Return ``(sec, nanosec)`` of a ``builtin_interfaces/Time`` moved ``seconds`` later."""
    total = int(sec) * 1_000_000_000 + int(nanosec) + int(round(seconds * 1e9))
    return total // 1_000_000_000, total % 1_000_000_000


def quaternion_yaw(q: Any) -> float:
    """Return the rotation about z of a quaternion (any object with x, y, z, w), radians."""
    return math.atan2(2.0 * (q.w * q.z + q.x * q.y), 1.0 - 2.0 * (q.y * q.y + q.z * q.z))


def pose_to_xyyaw(pose: Any) -> Tuple[float, float, float]:
    """
    Return ``(x, y, yaw)`` of a ``geometry_msgs/Pose``; raise ValueError when invalid.

    Invalid: a non-finite value, or a quaternion whose norm is not 1 (within
    :data:`QUATERNION_NORM_TOLERANCE`).
    """
    p, q = pose.position, pose.orientation
    values = (p.x, p.y, p.z, q.x, q.y, q.z, q.w)
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f'non-finite value in pose {values}')
    norm = math.sqrt(q.x * q.x + q.y * q.y + q.z * q.z + q.w * q.w)
    if abs(norm - 1.0) > QUATERNION_NORM_TOLERANCE:
        raise ValueError(f'quaternion norm is {norm:.6g}, not 1')
    return float(p.x), float(p.y), quaternion_yaw(q)


@dataclass
class ContextViews:
    """
    Posed context images of a BuildMap request, decoded and checked.

    ``images``: N arrays ``(H_i, W_i, 3)`` uint8 RGB; ``poses``: ``(N, 3)`` x, y, yaw;
    ``extent``: ``(4,)`` x_min, y_min, x_max, y_max in metres, or None.
    """

    frame_id: str
    images: List[np.ndarray]
    encodings: List[str]
    poses: np.ndarray
    extent: Optional[np.ndarray]

    def summary(self) -> str:
        """
        Describe the views in one line, each kind of image once with its count.

        E.g. ``60 view(s) (rgb8 128x128)`` or ``3 view(s) (2 x rgb8 64x48, mono8 32x32)``.
        """
        kinds: Dict[str, int] = {}
        for enc, img in zip(self.encodings, self.images):
            kind = f'{enc} {img.shape[1]}x{img.shape[0]}'
            kinds[kind] = kinds.get(kind, 0) + 1
        sizes = ', '.join(kind if len(kinds) == 1 or n == 1 else f'{n} x {kind}'
                          for kind, n in kinds.items())
        return f'{len(self.images)} view(s) ({sizes})'


def parse_build_map_request(request: Any, max_views: int,
                            expected_frame: Optional[str] = None) -> ContextViews:
    """Decode and check a ``BuildMap`` request; raise InvalidRequestError when unusable."""
    images: Sequence[Any] = request.images
    poses: Sequence[Any] = request.poses
    if len(images) == 0:
        raise InvalidRequestError('no context images in the request')
    if len(images) != len(poses):
        raise InvalidRequestError(
            f'{len(images)} images but {len(poses)} poses: one pose per image is needed')
    if len(images) > max_views:
        raise InvalidRequestError(
            f'{len(images)} views exceed max_map_views = {max_views}')
    frame_id = request.header.frame_id
    if expected_frame is not None and frame_id and frame_id != expected_frame:
        raise InvalidRequestError(
            f'poses are in frame {frame_id!r}, the map frame is {expected_frame!r}')
    decoded, encodings = [], []
    for i, image in enumerate(images):
        try:
            decoded.append(imgmsg_to_rgb8(image))
        except ImageConversionError as exc:
            raise InvalidRequestError(f'image {i}: {exc}') from exc
        encodings.append(image.encoding)
    xyyaw = np.zeros((len(poses), 3))
    for i, pose in enumerate(poses):
        try:
            xyyaw[i] = pose_to_xyyaw(pose)
        except ValueError as exc:
            raise InvalidRequestError(f'pose {i}: {exc}') from exc
    extent = None
    if len(request.extent) > 0:
        extent = np.asarray(request.extent, dtype=float)
        if (extent.shape != (4,) or not np.all(np.isfinite(extent))
                or extent[0] >= extent[2] or extent[1] >= extent[3]):
            raise InvalidRequestError(
                f'extent must be empty or [x_min, y_min, x_max, y_max] with min < max; '
                f'got {list(request.extent)}')
    return ContextViews(frame_id or (expected_frame or ''), decoded, encodings, xyyaw, extent)
