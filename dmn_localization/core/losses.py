"""
Training losses: the paper's pose loss, and the density of the truth under a belief.

Pose loss: ``(x̂ - x)² + (ŷ - y)² + alpha · wrap(ψ̂ - ψ)²``, alpha = 0.5, of the weighted
mean estimate. Belief density: minus the log density of the true pose under the
particles read as a Gaussian mixture (as differentiable particle filters are often
trained); it rewards weight on the particles near the truth, where the pose loss only
sees their mean.
"""

from __future__ import annotations

import math
from typing import Sequence

from dmn_localization.core.geometry import wrap_angle
import torch
from torch import Tensor

#: The paper's weight of the squared yaw error.
YAW_WEIGHT = 0.5
#: Kernel of :func:`belief_nll`: x, y (normalized units), yaw (radians).
DENSITY_STD = (0.1, 0.1, math.radians(20.0))


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


def belief_nll(particles: Tensor, log_weights: Tensor, truth: Tensor,
               std: Sequence[float] = DENSITY_STD) -> Tensor:
    """
    Mean over the batch of ``-log p(truth)`` under a belief as a Gaussian mixture.

    ``particles`` ``(B, K, 3)``, normalized ``log_weights`` ``(B, K)``, ``truth``
    ``(B, 3)``; each particle is a Gaussian with diagonal ``std`` (yaw differences
    wrapped). Differentiable in the weights (and the particles).
    """
    scale = torch.as_tensor(std, dtype=particles.dtype, device=particles.device)
    dev = truth[:, None, :] - particles
    dev = torch.cat([dev[..., :2], wrap_angle(dev[..., 2:])], -1) / scale
    log_kernel = (-0.5 * (dev ** 2).sum(-1) - torch.log(scale).sum()
                  - 1.5 * math.log(2 * math.pi))
    return -torch.logsumexp(log_weights + log_kernel, dim=-1).mean()
