"""
Pose-conditioned matching: how well the query matches view ``i`` seen from a particle.

A branch of the DMN observation model (``DMNConfig.pose_match_dim``; off in the paper's
architecture). The paper's head sees a particle's pose only through the attention
weights and the attended egocentric coordinates, which enter one linear layer: it can
say "the query looks like view ``i``", not "the query is what view ``i``'s scene looks
like from 40 cm to its left, turned 15 degrees". This branch gives every particle and
view a small MLP over the view, the query and the relative pose:

    h1_ki = relu(V p(f_i) + Q p(q) + P phi(e_ki))        (D units)
    h2_ki = relu(W h1_ki + b)                            (D units)
    s_ki  = u . h2_ki + c                                (a match score)

with ``p`` an average pool of the features to a small grid and ``phi`` Fourier features
of the egocentric pose (:func:`pose_features`): the view's position and heading in the
particle's frame, the particle's position in the view's frame, distance and bearing,
and sines and cosines of the positions at wavelengths halving from 4 normalized units (a
6 m room is 2 units wide) down to ``DMNConfig.pose_match_min_wavelength`` (0.5: four).
The branch returns the score of the particle, ``logsumexp_i s_ki - log N``, and the
match-weighted hidden units ``sum_i softmax_i(s) h2_ki`` for the head.

Fast computation: the first layer is linear in the concatenation of its three inputs,
so ``V p(f_i)`` runs once per map, ``Q p(q)`` once per frame, and per particle and view
only ``P phi(e_ki)``, a sum, and the second layer remain. The direct computation applies
the first layer to the concatenated input of every particle and view; a test checks
that both agree.

Shapes: ``B`` batch, ``K`` particles, ``N`` views, ``C`` feature channels, ``D`` width.
"""

from __future__ import annotations

import math
from typing import Tuple

from dmn_localization.core.encoders import pool_grid
import torch
from torch import nn, Tensor

#: Wavelengths of the Fourier features, in normalized units (2 = one room across).
WAVELENGTHS = (4.0, 2.0, 1.0, 0.5)


def wavelengths(shortest: float) -> Tuple[float, ...]:
    """Return the wavelengths halving from 4 down to ``shortest`` (> 0, at most 4)."""
    if not 0.0 < shortest <= WAVELENGTHS[0]:
        raise ValueError(f'the shortest wavelength must be in (0, {WAVELENGTHS[0]:g}], got '
                         f'{shortest}')
    values = [WAVELENGTHS[0]]
    while values[-1] / 2 >= shortest * (1 - 1e-9):
        values.append(values[-1] / 2)
    return tuple(values)


def feature_count(waves: Tuple[float, ...] = WAVELENGTHS) -> int:
    """Size of :func:`pose_features`: 11 geometric values, sin and cos of 4 positions a wave."""
    return 11 + 2 * 4 * len(waves)


def pose_features(ego: Tensor, waves: Tuple[float, ...] = WAVELENGTHS) -> Tensor:
    """
    Features ``(..., feature_count(waves))`` of egocentric coordinates ``ego`` ``(..., 4)``.

    ``ego`` is ``(dx, dy, cos, sin)``: the view's position and heading in the
    particle's frame (:func:`~dmn_localization.core.geometry.egocentric`).
    """
    dx, dy, cos, sin = ego.unbind(-1)
    # the particle's position in the view's frame: rotate (-dx, -dy) by minus the heading
    px = -(cos * dx + sin * dy)
    py = sin * dx - cos * dy
    dist = torch.sqrt(dx * dx + dy * dy + 1e-6)
    geometric = [dx, dy, cos, sin, cos * cos - sin * sin, 2 * cos * sin, dist,
                 dx / dist, dy / dist, px, py]
    positions = torch.stack([dx, dy, px, py], -1)  # (..., 4)
    scales = torch.tensor([2 * math.pi / w for w in waves], dtype=ego.dtype, device=ego.device)
    phases = (positions[..., :, None] * scales).flatten(-2)  # (..., 4 * len(waves))
    return torch.cat([torch.stack(geometric, -1), torch.sin(phases), torch.cos(phases)], -1)


class PoseMatch(nn.Module):
    """Match scores ``(B, K)`` and attended hidden units ``(B, K, D)`` (module doc)."""

    def __init__(self, channels: int, grid: Tuple[int, int], dim: int,
                 waves: Tuple[float, ...] = WAVELENGTHS) -> None:
        super().__init__()
        self.grid = tuple(grid)
        self.waves = tuple(waves)
        pooled = channels * math.prod(self.grid)
        self.view = nn.Linear(pooled, dim)
        self.query = nn.Linear(pooled, dim, bias=False)
        self.pose = nn.Linear(feature_count(self.waves), dim, bias=False)
        self.hidden = nn.Linear(dim, dim)
        self.score = nn.Linear(dim, 1)

    def view_partials(self, view_features: Tensor) -> Tensor:
        """``V p(f_i)`` ``(B, N, D)`` of view features ``(B, N, C, h, w)``, once per map."""
        return self.view(pool_grid(view_features, self.grid))

    def query_partial(self, query_features: Tensor) -> Tensor:
        """``Q p(q)`` ``(B, D)`` of query features ``(B, C, h, w)``, once per frame."""
        return self.query(pool_grid(query_features, self.grid))

    def forward_fast(self, view_partials: Tensor, query_partial: Tensor,
                     ego: Tensor) -> Tuple[Tensor, Tensor]:
        """Return scores ``(B, K)`` and hidden ``(B, K, D)``; ``ego`` is ``(B, K, N, 4)``."""
        first = torch.relu(view_partials[:, None] + query_partial[:, None, None]
                           + self.pose(pose_features(ego, self.waves)))
        return self._combine(first)

    def forward_direct(self, view_features: Tensor, query_features: Tensor,
                       ego: Tensor) -> Tuple[Tensor, Tensor]:
        """Compute :meth:`forward_fast` directly: the first layer on every concatenated input."""
        batch, num_particles, num_views = ego.shape[:3]
        views = pool_grid(view_features, self.grid)[:, None].expand(
            batch, num_particles, num_views, -1)
        query = pool_grid(query_features, self.grid)[:, None, None].expand(
            batch, num_particles, num_views, -1)
        inputs = torch.cat([views, query, pose_features(ego, self.waves)], -1)
        weight = torch.cat([self.view.weight, self.query.weight, self.pose.weight], 1)
        return self._combine(torch.relu(nn.functional.linear(inputs, weight, self.view.bias)))

    def _combine(self, first: Tensor) -> Tuple[Tensor, Tensor]:
        """Second layer, per-view scores and their combination over views."""
        second = torch.relu(self.hidden(first))  # (B, K, N, D)
        scores = self.score(second)[..., 0]  # (B, K, N)
        combined = torch.logsumexp(scores, dim=-1) - math.log(scores.shape[-1])
        attended = (torch.softmax(scores, dim=-1)[..., None] * second).sum(dim=2)
        return combined, attended
