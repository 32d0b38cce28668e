"""
The training loss of a batch of episodes, and the validation of a run.

:class:`EpisodeLoss` localizes a batch of episodes with the differentiable particle
filter (or the regression) and returns the paper's pose loss, with the optional
belief-density and contrastive terms; :func:`validate` measures a model on fixed
validation episodes: the loss as trained and one-step global localization success.
"""

from __future__ import annotations

import math
from typing import Any, Dict

from dmn_localization.core import geometry
from dmn_localization.core.inference import FilterSettings, localize
from dmn_localization.core.losses import belief_nll, pose_loss, xy_squared_error
from dmn_localization.learning.batches import repeat_context, TensorEpisodes, tracking_belief
from dmn_localization.learning.train_config import SUCCESS_THRESHOLD
import torch
from torch import nn, Tensor

#: Distance of the contrastive term's near poses from the truth (min, max), in the
#: episodes' normalized units (2 = the room across: 0.45-1.8 m in a 6 m room).
NEAR_RADIUS = (0.15, 0.6)
#: Standard deviation of their heading about the truth's, radians.
NEAR_YAW_STD = math.radians(30.0)


class EpisodeLoss(nn.Module):
    """Pose loss of a batch of tracking episodes; a module so DDP can wrap it."""

    def __init__(self, model: nn.Module, num_particles: int, uniform_share: float = 0.0,
                 nce_weight: float = 0.0, precision: str = 'fp32',
                 density_weight: float = 0.0, queries_per_map: int = 1,
                 sequence_steps: int = 1, nce_near_share: float = 0.0) -> None:
        super().__init__()
        self.model = model
        self.precision = precision  # 'bf16': the forward pass under bfloat16 autocast
        self.settings = FilterSettings(num_particles=num_particles)
        self.uniform_share = uniform_share
        self.nce_weight = nce_weight if model.config.kind == 'pf' else 0.0
        self.nce_near_share = nce_near_share
        self.density_weight = density_weight if model.config.kind == 'pf' else 0.0
        #: > 1: the episodes' steps are that many episodes of ``sequence_steps`` steps each,
        #: of the same map
        self.queries_per_map = queries_per_map
        self.sequence_steps = sequence_steps

    def forward(self, episodes: TensorEpisodes, generator: torch.Generator) -> Tensor:
        """Return the mean pose loss over the batch and its time steps."""
        with torch.autocast(episodes.truth.device.type, dtype=torch.bfloat16,
                            enabled=self.precision == 'bf16'):
            return self._loss(episodes, generator)

    def _loss(self, episodes: TensorEpisodes, generator: torch.Generator) -> Tensor:
        model = self.model
        map_ctx = model.prepare_map(model.embed_views(episodes.context_images,
                                                      episodes.context_poses),
                                    episodes.context_poses)
        if self.queries_per_map > 1:
            # one encoding of each map serves all of its queries
            map_ctx = repeat_context(map_ctx, self.queries_per_map)
            episodes = episodes.split_queries(self.sequence_steps)
        initial = tracking_belief(episodes.truth[:, 0], generator, episodes.bounds,
                                  self.uniform_share, episodes.turn)
        result = localize(model, map_ctx, episodes.query_images, episodes.motions, initial,
                          self.settings, generator, keep_beliefs=self.density_weight > 0)
        loss = pose_loss(result.estimates, episodes.truth)
        if self.density_weight > 0:
            assert result.beliefs is not None
            loss = loss + self.density_weight * torch.stack([
                belief_nll(belief.particles, belief.log_weights, episodes.truth[:, t])
                for t, belief in enumerate(result.beliefs)]).mean()
        if self.nce_weight > 0:
            loss = loss + self.nce_weight * self.contrastive(map_ctx, episodes, initial,
                                                             generator)
        return loss

    def contrastive(self, map_ctx: Any, episodes: TensorEpisodes, initial: Any,
                    generator: torch.Generator) -> Tensor:
        """
        Cross-entropy of the true first pose among it and K particles of the belief.

        The observation model's log-likelihoods of ``[truth, particles]`` ``(B, K + 1)``
        are read as logits and the truth is the class: a direct signal for the model to
        score the true pose above others, beside the pose loss that only sees the
        weighted mean. A share ``nce_near_share`` of the K are :func:`near_poses`.
        """
        model = self.model
        query = model.prepare_query(episodes.query_images[:, 0])
        others = initial.sample(self.settings.num_particles, generator).particles
        near = round(self.nce_near_share * others.shape[1])
        if near > 0:
            others = torch.cat([others[:, near:],
                                near_poses(episodes.truth[:, 0], near, generator)], 1)
        poses = torch.cat([episodes.truth[:, :1], others], 1)
        logits = model.observe(map_ctx, query, poses)[..., 0]
        return -torch.log_softmax(logits, dim=-1)[:, 0].mean()


def near_poses(truth: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """
    Return ``(B, count, 3)`` poses :data:`NEAR_RADIUS` from ``truth`` ``(B, 3)``.

    Their heading is the truth's off by N(0, 30 deg). Where a belief settles when it is
    wrong by a little: hard negatives for the contrastive term, which the belief's own
    particles (mostly within 0.6 normalized units of the truth, or anywhere in the room)
    seldom are.
    """
    shape = (truth.shape[0], count)
    options = {'generator': generator, 'dtype': truth.dtype, 'device': truth.device}
    radius = NEAR_RADIUS[0] + (NEAR_RADIUS[1] - NEAR_RADIUS[0]) * torch.rand(shape, **options)
    angle = 2 * math.pi * torch.rand(shape, **options)
    yaw = truth[:, None, 2] + NEAR_YAW_STD * torch.randn(shape, **options)
    return torch.stack([truth[:, None, 0] + radius * torch.cos(angle),
                        truth[:, None, 1] + radius * torch.sin(angle),
                        geometry.wrap_angle(yaw)], -1)


@torch.no_grad()
def validate(model: nn.Module, episodes: TensorEpisodes, global_episodes: TensorEpisodes,
             num_particles: int, seed: int, chunk: int = 100,
             uniform_share: float = 0.0) -> Dict[str, float]:
    """Return the validation loss (tracking, as trained) and one-step global success (K=1024)."""
    was_training = model.training
    model.eval()
    generator = torch.Generator(device=episodes.truth.device).manual_seed(seed)
    losses = []
    for start in range(0, len(episodes), chunk):
        part = episodes.select(slice(start, start + chunk))
        loss = EpisodeLoss(model, num_particles, uniform_share)(part, generator)
        losses.append(float(loss) * len(part))
    successes = []
    settings = FilterSettings(num_particles=1024)
    for start in range(0, len(global_episodes), 20):
        part = global_episodes.select(slice(start, start + 20))
        map_ctx = model.prepare_map(model.embed_views(part.context_images, part.context_poses),
                                    part.context_poses)
        est = localize(model, map_ctx, part.query_images, part.motions,
                       part.global_belief(), settings, generator).estimates
        successes.append(xy_squared_error(est[:, -1], part.truth[:, -1]) < SUCCESS_THRESHOLD)
    model.train(was_training)
    return {'val_loss': sum(losses) / len(episodes),
            'val_global_success': float(torch.cat(successes).float().mean())}
