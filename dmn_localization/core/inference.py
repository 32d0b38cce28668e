"""
Localization with any model by name: particle filter, regression, or a reference method.

Conventions: poses are normalized ``(x, y, yaw)``; ``motions[:, t]`` is the robot's
relative motion (its own frame) from time ``t - 1`` to ``t``, the initial belief being
at time ``-1`` (for the paper's one-step episodes ``motions[:, 0]`` is zero).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

from dmn_localization.core import geometry, particle_filter as pf
from dmn_localization.core.particle_filter import Belief, TRACKING_STD
import torch
from torch import nn, Tensor


@dataclass
class FilterSettings:
    """Particle filter settings (the node's YAML and the evaluation CLI fill these)."""

    num_particles: int = 32
    #: resample when the effective sample size falls below this share of K
    resample_threshold: float = 0.5
    #: soft resampling mixture weight of the particle weights (1: hard resampling)
    soft_resample_alpha: float = 0.5
    #: std of the noise added to each particle's motion (x, y normalized, yaw rad)
    transition_noise: Optional[Sequence[float]] = None
    #: the fast observation model (False: the direct reference computation)
    fast: bool = True
    #: factor on the observation log-likelihoods (a temperature's inverse; 1: the model's
    #: own). Above 1 sharpens every update; measured in docs/findings.md, not a default
    likelihood_scale: float = 1.0
    #: the estimate: None, the weighted mean of the particles (the paper's); a bandwidth
    #: (normalized x-y units), the belief's densest place (``particle_filter.mode_estimate``)
    mode_bandwidth: Optional[float] = None


@dataclass
class InitialBelief:
    """
    The initial belief of an episode.

    ``uniform``: over ``bounds`` ``(B, 4)`` (normalized box) and all yaws (global
    localization). ``gaussian``: around ``mean`` ``(B, 3)`` with ``std`` (tracking);
    with ``uniform_share`` > 0 that share of the particles is drawn uniformly over
    ``bounds`` instead (a tracking belief with outliers, used for training). ``turn``
    ``(B,)`` (radians, optional): the box is turned by that about its centre (a world
    turned in its frame, see ``particle_filter.uniform_belief``).
    """

    kind: str
    bounds: Optional[Tensor] = None
    mean: Optional[Tensor] = None
    std: Sequence[float] = TRACKING_STD
    uniform_share: float = 0.0
    turn: Optional[Tensor] = None

    def sample(self, num_particles: int,
               generator: Optional[torch.Generator] = None) -> Belief:
        """Draw the particles."""
        if self.kind == 'uniform':
            return pf.uniform_belief(self.bounds, num_particles, generator, self.turn)
        if self.kind == 'gaussian':
            belief = pf.gaussian_belief(self.mean, self.std, num_particles, generator)
            outliers = int(round(self.uniform_share * num_particles))
            if outliers == 0:
                return belief
            if self.bounds is None or not 0.0 <= self.uniform_share <= 1.0:
                raise ValueError('a uniform share in [0, 1] needs the bounds to draw from')
            spread = pf.uniform_belief(self.bounds, outliers, generator, self.turn).particles
            particles = torch.cat([belief.particles[:, :num_particles - outliers], spread], 1)
            return Belief(particles, belief.log_weights)
        raise ValueError(f'initial belief kind must be uniform or gaussian, got {self.kind!r}')

    def mean_pose(self) -> Tensor:
        """Mean of the belief ``(B, 3)`` (uniform: the box's centre, yaw 0, turned or not)."""
        if self.kind == 'gaussian':
            return self.mean
        b = self.bounds
        zero = torch.zeros_like(b[:, 0])
        return torch.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, zero], -1)


@dataclass
class LocalizationResult:
    """Estimates ``(B, T, 3)`` and, if kept, the belief after each step's update."""

    estimates: Tensor
    beliefs: Optional[List[Belief]] = None


def filter_step(model: nn.Module, map_ctx: Any, query_ctx: Any, belief: Belief,
                motion: Tensor, settings: FilterSettings,
                generator: Optional[torch.Generator] = None) -> Belief:
    """One particle filter step: transition by ``motion`` ``(B, 3)``, observation update."""
    return filter_step_with_evidence(model, map_ctx, query_ctx, belief, motion, settings,
                                     generator)[0]


def filter_step_with_evidence(model: nn.Module, map_ctx: Any, query_ctx: Any, belief: Belief,
                              motion: Tensor, settings: FilterSettings,
                              generator: Optional[torch.Generator] = None
                              ) -> Tuple[Belief, Tensor]:
    """
    :func:`filter_step`, and the evidence of the observation ``(B,)``.

    The evidence is the log of the likelihood averaged over the moved belief,
    ``logsumexp(log w + log l)``: how well the image agrees with the belief as a whole
    (it falls when a converged robot has been carried elsewhere).
    """
    belief = pf.transition(belief, motion, settings.transition_noise, generator)
    log_likelihood = model.observe(map_ctx, query_ctx, belief.particles, settings.fast)[..., 0]
    if settings.likelihood_scale != 1.0:
        log_likelihood = settings.likelihood_scale * log_likelihood
    evidence = torch.logsumexp(belief.log_weights + log_likelihood, dim=-1)
    return pf.update(belief, log_likelihood), evidence


def maybe_resample(belief: Belief, settings: FilterSettings,
                   generator: Optional[torch.Generator] = None) -> Belief:
    """Soft-resample the batch elements whose effective sample size is low."""
    num_particles = belief.log_weights.shape[1]
    ess = pf.effective_sample_size(belief.log_weights)
    low = ess < settings.resample_threshold * num_particles
    if not bool(low.any()):
        return belief
    resampled = pf.soft_resample(belief, settings.soft_resample_alpha, generator)
    return Belief(torch.where(low[:, None, None], resampled.particles, belief.particles),
                  torch.where(low[:, None], resampled.log_weights, belief.log_weights))


def regression_step(model: nn.Module, map_ctx: Any, query_ctx: Any, pose: Tensor,
                    motion: Tensor) -> Tensor:
    """
    One regression step: move ``pose`` ``(B, 3)`` by ``motion``, add the predicted offset.

    The offset is a pose in ``pose``'s own frame for models whose config says
    ``relative_offset`` (DMN: its egocentric inputs cannot tell the map frame's axes),
    else it is added in the map frame (the latent maps, which read global coordinates).
    """
    pose = geometry.compose(pose, motion)
    offset = model.observe(map_ctx, query_ctx, pose[:, None, :])[:, 0]
    if getattr(model.config, 'relative_offset', False):
        return geometry.compose(pose, offset)
    return torch.cat([pose[:, :2] + offset[:, :2],
                      geometry.wrap_angle(pose[:, 2:] + offset[:, 2:])], -1)


def localize(model: nn.Module, map_ctx: Any, query_images: Tensor, motions: Tensor,
             initial: InitialBelief, settings: FilterSettings,
             generator: Optional[torch.Generator] = None,
             keep_beliefs: bool = False) -> LocalizationResult:
    """
    Localize a sequence of query images ``(B, T, 3, H, W)`` with a learned model.

    Particle filter models keep K particles; regression models carry a single pose,
    starting at the mean of the initial belief (the paper's regression baselines).
    """
    steps = query_images.shape[1]
    estimates, beliefs = [], []
    if model.config.kind == 'regression':
        pose = initial.mean_pose()
        for t in range(steps):
            pose = regression_step(model, map_ctx, model.prepare_query(query_images[:, t]),
                                   pose, motions[:, t])
            estimates.append(pose)
        return LocalizationResult(torch.stack(estimates, 1))
    belief = initial.sample(settings.num_particles, generator)
    for t in range(steps):
        belief = filter_step(model, map_ctx, model.prepare_query(query_images[:, t]), belief,
                             motions[:, t], settings, generator)
        estimates.append(pose_estimate(belief, settings))
        if keep_beliefs:
            beliefs.append(belief)
        if t + 1 < steps:
            belief = maybe_resample(belief, settings, generator)
    return LocalizationResult(torch.stack(estimates, 1), beliefs if keep_beliefs else None)


def pose_estimate(belief: Belief, settings: FilterSettings) -> Tensor:
    """Return the belief's pose estimate ``(B, 3)`` as ``settings.mode_bandwidth`` says."""
    if settings.mode_bandwidth is None:
        return pf.estimate(belief)
    return pf.mode_estimate(belief, settings.mode_bandwidth)


def uninformed(initial: InitialBelief, motions: Tensor) -> Tensor:
    """Return the uninformed estimate: the mean initial belief moved by odometry; ``(B, T, 3)``."""
    pose, out = initial.mean_pose(), []
    for t in range(motions.shape[1]):
        pose = geometry.compose(pose, motions[:, t])
        out.append(pose)
    return torch.stack(out, 1)


def closest_context(context_poses: Tensor, true_poses: Tensor) -> Tensor:
    """
    Return the context pose nearest (in x-y) to each true query pose: ``(B, T, 3)``.

    An oracle: the upper bound of any method that answers with a context's pose.
    """
    dist = torch.cdist(true_poses[..., :2], context_poses[..., :2])  # (B, T, N)
    index = dist.argmin(-1)
    return torch.gather(context_poses, 1, index[..., None].expand(-1, -1, 3))
