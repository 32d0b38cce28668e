"""
Differentiable particle filter over planar poses (paper, section 3; Karkus et al. 2018).

The belief is a set of K weighted particles per batch element: poses ``(B, K, 3)`` in
normalized coordinates and log-weights ``(B, K)`` that are log-normalized
(``logsumexp == 0``). Every operation here is differentiable where it matters:
the weight update, the estimate and soft resampling carry gradients to the
observation model.
"""

from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Optional, Sequence, Union

from dmn_localization.core import geometry
import torch
from torch import Tensor

#: The paper's tracking initial belief: sigma_x = sigma_y = 0.3 (normalized), 30 degrees.
TRACKING_STD = (0.3, 0.3, math.radians(30.0))

StdLike = Union[Tensor, Sequence[float]]


@dataclass
class Belief:
    """Weighted particles: ``particles`` ``(B, K, 3)``, ``log_weights`` ``(B, K)``."""

    particles: Tensor
    log_weights: Tensor

    @property
    def weights(self) -> Tensor:
        """Return the normalized weights ``(B, K)``."""
        return torch.exp(self.log_weights)

    def detach(self) -> 'Belief':
        """Return a copy without gradient history (e.g. between frames in the node)."""
        return Belief(self.particles.detach(), self.log_weights.detach())


def _uniform_log_weights(batch: int, num_particles: int, like: Tensor) -> Tensor:
    return torch.full((batch, num_particles), -math.log(num_particles), dtype=like.dtype,
                      device=like.device)


def uniform_belief(bounds: Tensor, num_particles: int,
                   generator: Optional[torch.Generator] = None,
                   turn: Optional[Tensor] = None) -> Belief:
    """
    Global localization: particles uniform over a box and over yaw.

    ``bounds`` ``(B, 4)``: ``[x_min, y_min, x_max, y_max]`` per batch element in
    normalized coordinates (``[-1, -1, 1, 1]`` for a square map). ``turn`` ``(B,)``
    (radians): the box is turned by that about its centre (a world turned in its
    frame), and so are the particles drawn in it; the draws are the same.
    """
    batch = bounds.shape[0]
    u = torch.rand(batch, num_particles, 3, generator=generator, dtype=bounds.dtype,
                   device=bounds.device)
    low = torch.stack([bounds[:, 0], bounds[:, 1]], -1)[:, None]
    high = torch.stack([bounds[:, 2], bounds[:, 3]], -1)[:, None]
    xy = low + u[..., :2] * (high - low)
    yaw = (u[..., 2] * 2.0 - 1.0) * math.pi
    particles = torch.cat([xy, yaw[..., None]], -1)
    if turn is not None:
        particles = turn_about(particles, (low + high)[:, 0] / 2, turn)
    return Belief(particles, _uniform_log_weights(batch, num_particles, bounds))


def turn_about(poses: Tensor, center: Tensor, turn: Tensor) -> Tensor:
    """
    Turn poses ``(B, ..., 3)`` about points ``center`` ``(B, 2)`` by angles ``turn`` ``(B,)``.

    Positions rotate about the centre and every yaw grows by the angle (wrapped): the
    rigid motion of a world turned in its frame.
    """
    shape = (poses.shape[0],) + (1,) * (poses.dim() - 2)
    cos, sin = torch.cos(turn).view(shape), torch.sin(turn).view(shape)
    c = center.view(*shape, 2)
    dx, dy = poses[..., 0] - c[..., 0], poses[..., 1] - c[..., 1]
    return torch.stack([c[..., 0] + cos * dx - sin * dy, c[..., 1] + sin * dx + cos * dy,
                        geometry.wrap_angle(poses[..., 2] + turn.view(shape))], -1)


def gaussian_belief(mean: Tensor, std: StdLike, num_particles: int,
                    generator: Optional[torch.Generator] = None) -> Belief:
    """Tracking: particles from a Gaussian around ``mean`` ``(B, 3)`` with ``std`` ``(3,)``."""
    std_t = torch.as_tensor(std, dtype=mean.dtype, device=mean.device)
    noise = torch.randn(mean.shape[0], num_particles, 3, generator=generator,
                        dtype=mean.dtype, device=mean.device)
    particles = mean[:, None, :] + noise * std_t
    particles = torch.cat([particles[..., :2], geometry.wrap_angle(particles[..., 2:])], -1)
    return Belief(particles, _uniform_log_weights(mean.shape[0], num_particles, mean))


def transition(belief: Belief, motion: Tensor, noise_std: Optional[StdLike] = None,
               generator: Optional[torch.Generator] = None) -> Belief:
    """
    Move every particle by the odometry ``motion`` ``(B, 3)`` given in the robot frame.

    ``noise_std`` ``(3,)`` adds independent Gaussian noise to each particle's motion
    (x, y in normalized units, yaw in radians); None moves the particles exactly.
    """
    step = motion[:, None, :].expand_as(belief.particles)
    if noise_std is not None:
        std = torch.as_tensor(noise_std, dtype=motion.dtype, device=motion.device)
        step = step + torch.randn(step.shape, generator=generator, dtype=step.dtype,
                                  device=step.device) * std
    return Belief(geometry.compose(belief.particles, step), belief.log_weights)


def normalize_log_weights(log_weights: Tensor) -> Tensor:
    """Shift log-weights ``(B, K)`` so that their exponentials sum to one."""
    return log_weights - torch.logsumexp(log_weights, dim=-1, keepdim=True)


def update(belief: Belief, log_likelihood: Tensor) -> Belief:
    """Observation update: add log-likelihoods ``(B, K)`` and normalize."""
    return Belief(belief.particles, normalize_log_weights(belief.log_weights + log_likelihood))


def effective_sample_size(log_weights: Tensor) -> Tensor:
    """Effective sample size ``1 / sum w^2`` per batch element: ``(B,)``."""
    return torch.exp(-torch.logsumexp(2.0 * log_weights, dim=-1))


def soft_resample(belief: Belief, alpha: float = 0.5,
                  generator: Optional[torch.Generator] = None) -> Belief:
    """
    Soft resampling: draw from ``q = alpha w + (1 - alpha) / K`` and reweight by ``w / q``.

    The importance weights keep the belief an unbiased representation of the same
    distribution, and they depend on ``w`` differentiably, so gradients flow through
    resampling (``alpha = 1`` is ordinary, non-differentiable resampling).
    """
    batch, num_particles = belief.log_weights.shape
    log_alpha = math.log(alpha) if alpha > 0 else -math.inf
    log_uniform = math.log1p(-alpha) - math.log(num_particles) if alpha < 1 else -math.inf
    log_q = torch.logaddexp(belief.log_weights + log_alpha,
                            torch.full_like(belief.log_weights, log_uniform))
    index = torch.multinomial(torch.exp(log_q.detach()), num_particles, replacement=True,
                              generator=generator)
    particles = torch.gather(belief.particles, 1, index[..., None].expand(-1, -1, 3))
    log_w = torch.gather(belief.log_weights - log_q, 1, index)
    return Belief(particles, normalize_log_weights(log_w))


def estimate(belief: Belief) -> Tensor:
    """Weighted mean pose ``(B, 3)``, with the circular mean for yaw."""
    return _weighted_pose(belief.particles, belief.weights)


#: Candidate starting points of :func:`mode_estimate`: this many particles at even index
#: steps, and as many of the heaviest.
MODE_CANDIDATES = 128
#: Mean-shift iterations of :func:`mode_estimate` from the densest candidate.
MODE_ITERATIONS = 8


def _weighted_pose(particles: Tensor, w: Tensor) -> Tensor:
    """Pose ``(B, 3)`` of particles ``(B, K, 3)`` under weights ``(B, K)`` summing to 1."""
    xy = (w[..., None] * particles[..., :2]).sum(1)
    yaw = torch.atan2((w * torch.sin(particles[..., 2])).sum(1),
                      (w * torch.cos(particles[..., 2])).sum(1))
    return torch.cat([xy, yaw[:, None]], -1)


def mode_estimate(belief: Belief, bandwidth: float) -> Tensor:
    """
    Pose ``(B, 3)`` at the densest place of the belief, not its mean.

    The x-y density is the weighted particles smoothed by a Gaussian kernel of
    ``bandwidth`` (normalized units). It is evaluated at :data:`MODE_CANDIDATES` particles
    spread over the index range and as many of the heaviest; from the densest, mean shift
    climbs to the mode. The yaw is the circular mean of the particles, each weighed by its
    weight and its kernel value at the mode. A unimodal belief gives about its mean; a
    belief split over two places gives the heavier place instead of a point between them.
    """
    particles, w = belief.particles, belief.weights
    xy = particles[..., :2]
    count = particles.shape[1]
    spread = torch.linspace(0, count - 1, min(MODE_CANDIDATES, count),
                            device=particles.device).round().long()
    heavy = w.topk(min(MODE_CANDIDATES, count), dim=1).indices  # (B, M)
    index = torch.cat([spread.expand(len(w), -1), heavy], 1)
    candidates = torch.gather(xy, 1, index[..., None].expand(-1, -1, 2))  # (B, 2M, 2)
    inv = -0.5 / bandwidth ** 2
    density = (torch.exp(inv * torch.cdist(candidates, xy) ** 2) * w[:, None, :]).sum(-1)
    centre = torch.gather(candidates, 1, density.argmax(1)[:, None, None].expand(-1, 1, 2))
    for _ in range(MODE_ITERATIONS + 1):
        kernel = w * torch.exp(inv * ((xy - centre) ** 2).sum(-1))  # (B, K)
        kernel = kernel / kernel.sum(1, keepdim=True).clamp_min(1e-30)
        centre = (kernel[..., None] * xy).sum(1, keepdim=True)
    return _weighted_pose(particles, kernel)


def covariance(belief: Belief, mean: Optional[Tensor] = None) -> Tensor:
    """
    Weighted covariance ``(B, 3, 3)`` of x, y and yaw.

    Yaw deviations are wrapped around the circular mean, so a belief straddling
    ``+-pi`` has a small yaw variance, not a huge one.
    """
    mean = estimate(belief) if mean is None else mean
    dev = belief.particles - mean[:, None, :]
    dev = torch.cat([dev[..., :2], geometry.wrap_angle(dev[..., 2:])], -1)
    w = belief.weights
    return torch.einsum('bk,bki,bkj->bij', w, dev, dev)


def inject_uniform(belief: Belief, count: int, bounds: Tensor,
                   generator: Optional[torch.Generator] = None) -> Belief:
    """
    Replace ``count`` random particles by particles uniform over ``bounds`` ``(B, 4)``.

    The new particles get the mean weight ``1 / K``; the weights are normalized again
    (augmented MCL's random particles after a kidnapping).
    """
    batch, num_particles = belief.log_weights.shape
    count = max(0, min(int(count), num_particles))
    if count == 0:
        return belief
    index = torch.stack([torch.randperm(num_particles, generator=generator,
                                        device=belief.particles.device)[:count]
                         for _ in range(batch)])
    fresh = uniform_belief(bounds, count, generator).particles
    particles = belief.particles.clone()
    particles.scatter_(1, index[..., None].expand(-1, -1, 3), fresh)
    log_weights = belief.log_weights.clone()
    log_weights.scatter_(1, index, torch.full_like(index, -math.log(num_particles),
                                                   dtype=log_weights.dtype))
    return Belief(particles, normalize_log_weights(log_weights))
