"""Pose loss of the paper: (x̂ - x)² + (ŷ - y)² + alpha · wrap(ψ̂ - ψ)², alpha = 0.5."""

from __future__ import annotations

from dmn_localization.core.geometry import wrap_angle
from torch import Tensor

#: The paper's weight of the squared yaw error.
YAW_WEIGHT = 0.5


def pose_loss(estimate: Tensor, truth: Tensor, yaw_weight: float = YAW_WEIGHT,
              reduction: str = 'mean') -> Tensor:
    """
    Pose error between ``estimate`` and ``truth`` ``(..., 3)`` in normalized units.

    ``reduction`` is ``mean`` (a scalar) or ``none`` (shape ``(...)``).
    """
    err = estimate - truth
    loss = err[..., 0] ** 2 + err[..., 1] ** 2 + yaw_weight * wrap_angle(err[..., 2]) ** 2
    if reduction == 'mean':
        return loss.mean()
    if reduction == 'none':
        return loss
    raise ValueError(f'reduction must be mean or none, got {reduction!r}')


def xy_squared_error(estimate: Tensor, truth: Tensor) -> Tensor:
    """Squared x-y error ``(...)`` in normalized units (the paper's success metric)."""
    return ((estimate[..., :2] - truth[..., :2]) ** 2).sum(-1)
