"""
Planar pose geometry in one place: normalization, angle wrapping, SE(2) algebra.

A pose is ``(x, y, yaw)`` in the last dimension of a tensor, e.g. ``(B, K, 3)``. World
poses are in metres and radians in the map frame (REP 103: x forward, y left, yaw
counter-clockwise). The learned models work in *normalized* coordinates: the map
extent ``[x_min, y_min, x_max, y_max]`` is centred and scaled by one factor for both
axes, so that its longer side spans ``[-1, 1]``. One factor keeps angles and rigid
motions valid in normalized coordinates (a square extent maps exactly to
``[-1, 1]^2``, as in the paper). Yaw is never scaled. Pose sequences in numpy
(a trajectory's odometry and its dead reckoning) are at the end of the file.
"""

from __future__ import annotations

import math
from typing import Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

ExtentLike = Union[Tensor, Sequence[float]]


def _extent(extent: ExtentLike, like: Tensor) -> Tensor:
    out = torch.as_tensor(extent, dtype=like.dtype, device=like.device)
    if out.shape[-1] != 4:
        raise ValueError(f'extent must be [x_min, y_min, x_max, y_max], got shape {out.shape}')
    return out


def extent_center_scale(extent: ExtentLike, like: Tensor) -> Tuple[Tensor, Tensor]:
    """
    Return the centre ``(..., 2)`` and half-size ``(..., 1)`` of an extent.

    The half-size is half the longer side; normalized = (metric - centre) / half_size.
    """
    ext = _extent(extent, like)
    if torch.any(ext[..., 2] <= ext[..., 0]) or torch.any(ext[..., 3] <= ext[..., 1]):
        raise ValueError(f'extent needs x_min < x_max and y_min < y_max, got {ext.tolist()}')
    center = torch.stack([(ext[..., 0] + ext[..., 2]) / 2, (ext[..., 1] + ext[..., 3]) / 2], -1)
    half = torch.maximum(ext[..., 2] - ext[..., 0], ext[..., 3] - ext[..., 1])[..., None] / 2
    return center, half


def normalize_poses(poses: Tensor, extent: ExtentLike) -> Tensor:
    """
    Map metric poses ``(..., 3)`` into normalized coordinates over ``extent``.

    ``extent`` is ``(4,)`` or broadcastable against ``poses[..., :1]`` with a leading
    batch, e.g. ``(B, 1, 4)`` for poses ``(B, K, 3)``.
    """
    center, half = extent_center_scale(extent, poses)
    return torch.cat([(poses[..., :2] - center) / half, poses[..., 2:3]], -1)


def denormalize_poses(poses: Tensor, extent: ExtentLike) -> Tensor:
    """Inverse of :func:`normalize_poses`: normalized ``(..., 3)`` to metres."""
    center, half = extent_center_scale(extent, poses)
    return torch.cat([poses[..., :2] * half + center, poses[..., 2:3]], -1)


def normalized_bounds(extent: ExtentLike, like: Tensor) -> Tensor:
    """
    Return the extent itself in normalized coordinates: ``[x_min, y_min, x_max, y_max]``.

    ``extent`` is ``(..., 4)``; the result has its shape (``[-1, -1, 1, 1]`` for a square).
    """
    ext = _extent(extent, like)
    center, half = extent_center_scale(ext, like)
    return torch.cat([(ext[..., :2] - center) / half, (ext[..., 2:] - center) / half], -1)


def normalize_motion(motion: Tensor, extent: ExtentLike) -> Tensor:
    """Scale a relative motion ``(..., 3)`` (robot frame, metres) to normalized units."""
    _, half = extent_center_scale(extent, motion)
    return torch.cat([motion[..., :2] / half, motion[..., 2:3]], -1)


def wrap_angle(angle: Tensor) -> Tensor:
    """Wrap angles to ``[-pi, pi)``; any shape."""
    return torch.remainder(angle + math.pi, 2 * math.pi) - math.pi


def compose(a: Tensor, b: Tensor) -> Tensor:
    """
    SE(2) composition ``a ⊕ b``: pose ``b``, given in the frame of ``a``, in ``a``'s parent.

    ``a`` and ``b`` are ``(..., 3)`` and broadcast against each other.
    """
    cos, sin = torch.cos(a[..., 2]), torch.sin(a[..., 2])
    x = a[..., 0] + cos * b[..., 0] - sin * b[..., 1]
    y = a[..., 1] + sin * b[..., 0] + cos * b[..., 1]
    return torch.stack([x, y, wrap_angle(a[..., 2] + b[..., 2])], -1)


def inverse(a: Tensor) -> Tensor:
    """Invert SE(2) poses ``(..., 3)``: composing a pose with its inverse gives the identity."""
    cos, sin = torch.cos(a[..., 2]), torch.sin(a[..., 2])
    x = -cos * a[..., 0] - sin * a[..., 1]
    y = sin * a[..., 0] - cos * a[..., 1]
    return torch.stack([x, y, wrap_angle(-a[..., 2])], -1)


def relative(a: Tensor, b: Tensor) -> Tensor:
    """
    Pose of ``b`` in the frame of ``a``: ``inverse(a) ⊕ b``; ``(..., 3)``, broadcasting.

    For consecutive robot poses this is the odometry: ``compose(a, relative(a, b)) == b``.
    """
    dx, dy = b[..., 0] - a[..., 0], b[..., 1] - a[..., 1]
    cos, sin = torch.cos(a[..., 2]), torch.sin(a[..., 2])
    return torch.stack([cos * dx + sin * dy, -sin * dx + cos * dy,
                        wrap_angle(b[..., 2] - a[..., 2])], -1)


def egocentric(particles: Tensor, views: Tensor) -> Tensor:
    """
    Express view poses in each particle's egocentric frame as ``(dx, dy, cos, sin)``.

    ``particles``: ``(B, K, 3)``; ``views``: ``(B, N, 3)``; returns ``(B, K, N, 4)`` where
    ``(dx, dy)`` is the view position in the particle's frame and ``(cos, sin)`` the
    view's heading relative to the particle's.
    """
    rel = relative(particles[:, :, None, :], views[:, None, :, :])
    return torch.stack([rel[..., 0], rel[..., 1], torch.cos(rel[..., 2]),
                        torch.sin(rel[..., 2])], -1)


def pose_features(poses: Tensor) -> Tensor:
    """Global-frame pose features ``(x, y, cos, sin)`` of poses ``(..., 3)``: ``(..., 4)``."""
    return torch.stack([poses[..., 0], poses[..., 1], torch.cos(poses[..., 2]),
                        torch.sin(poses[..., 2])], -1)


# -- pose sequences in numpy (odometry of a trajectory, dead reckoning) ----------------
def relative_motions(poses: np.ndarray) -> np.ndarray:
    """
    Return the odometry ``(..., T, 3)`` of a pose sequence ``(..., T, 3)``.

    ``out[..., t]`` is pose ``t`` in the frame of pose ``t - 1``; ``out[..., 0]`` is zero.
    """
    prev, nxt = poses[..., :-1, :], poses[..., 1:, :]
    dx, dy = nxt[..., 0] - prev[..., 0], nxt[..., 1] - prev[..., 1]
    cos, sin = np.cos(prev[..., 2]), np.sin(prev[..., 2])
    dyaw = np.remainder(nxt[..., 2] - prev[..., 2] + np.pi, 2 * np.pi) - np.pi
    rel = np.stack([cos * dx + sin * dy, -sin * dx + cos * dy, dyaw], -1)
    zero = np.zeros_like(poses[..., :1, :])
    return np.concatenate([zero, rel], axis=-2).astype(poses.dtype)


def compose_motions(start: np.ndarray, motions: np.ndarray) -> np.ndarray:
    """Integrate odometry ``(T, 3)`` from ``start`` ``(3,)``: poses ``(T, 3)``."""
    poses = np.empty((len(motions), 3), dtype=np.float64)
    x, y, yaw = (float(v) for v in start)
    for t, (dx, dy, dyaw) in enumerate(np.asarray(motions, dtype=np.float64)):
        x, y = x + np.cos(yaw) * dx - np.sin(yaw) * dy, y + np.sin(yaw) * dx + np.cos(yaw) * dy
        yaw = float(np.remainder(yaw + dyaw + np.pi, 2 * np.pi) - np.pi)
        poses[t] = (x, y, yaw)
    return poses


def compose_poses(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Return ``a * b`` for planar poses ``(..., 3)`` in numpy: ``b`` given in ``a``'s frame."""
    cos, sin = np.cos(a[..., 2]), np.sin(a[..., 2])
    x = a[..., 0] + cos * b[..., 0] - sin * b[..., 1]
    y = a[..., 1] + sin * b[..., 0] + cos * b[..., 1]
    yaw = np.remainder(a[..., 2] + b[..., 2] + np.pi, 2 * np.pi) - np.pi
    return np.stack([x, y, yaw], -1)


def invert_poses(a: np.ndarray) -> np.ndarray:
    """Return the inverse of planar poses ``(..., 3)`` in numpy."""
    cos, sin = np.cos(a[..., 2]), np.sin(a[..., 2])
    x = -cos * a[..., 0] - sin * a[..., 1]
    y = sin * a[..., 0] - cos * a[..., 1]
    return np.stack([x, y, np.remainder(-a[..., 2] + np.pi, 2 * np.pi) - np.pi], -1)
