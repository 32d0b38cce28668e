"""
Episode batches as model input: preprocessed images and normalized poses, on a device.

Every episode is normalized by its own environment's extent (rooms differ in size), so
the models see coordinates in ``[-1, 1]`` as in the paper. In ``dmn_dataset`` worlds that
extent is the outer wall, and every wall runs along an axis of the frame, which a model
reading global coordinates can learn. :func:`with_frame_change` moves each episode's
world by a random offset (``shift``: the extent no longer says where the walls are)
and turns it by a random angle about its centre (``turn``: the axes no longer say which
way the walls run).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass, replace
import math
from typing import Any, Optional

from dmn_localization.core import geometry
from dmn_localization.core.configs import InputConfig
from dmn_localization.core.inference import InitialBelief
from dmn_localization.core.particle_filter import TRACKING_STD, turn_about
from dmn_localization.core.preprocessing import preprocess_images
from dmn_localization.data.episodes import EpisodeBatch
import numpy as np
import torch
from torch import Tensor


@dataclass
class TensorEpisodes:
    """
    Model-ready episodes.

    ``context_images`` ``(B, Nc, 3, h, w)``, ``context_poses`` ``(B, Nc, 3)``,
    ``query_images`` ``(B, T, 3, h, w)``, ``truth`` ``(B, T, 3)``, ``motions``
    ``(B, T, 3)`` (all poses normalized), ``bounds`` ``(B, 4)``: the normalized extent;
    ``turn`` ``(B,)`` or None: the angle each world is turned by about the centre of its
    bounds (:meth:`turned`; None: not turned).
    """

    context_images: Tensor
    context_poses: Tensor
    query_images: Tensor
    truth: Tensor
    motions: Tensor
    bounds: Tensor
    turn: Optional[Tensor] = None

    def __len__(self) -> int:
        """Return the batch size."""
        return int(self.truth.shape[0])

    def select(self, index: slice) -> 'TensorEpisodes':
        """Return the episodes ``index`` (a slice of the batch)."""
        return TensorEpisodes(*(getattr(self, f)[index] for f in (
            'context_images', 'context_poses', 'query_images', 'truth', 'motions', 'bounds')),
            turn=None if self.turn is None else self.turn[index])

    def split_queries(self, steps: int = 1) -> 'TensorEpisodes':
        """
        Return the ``T`` queries as ``T / steps`` episodes of ``steps`` queries each.

        Batch ``B * T / steps``: episode ``b * T / steps + j`` holds queries ``j * steps``
        to ``(j + 1) * steps - 1`` of episode ``b`` with the same context views and world;
        its first motion is zero, as every episode's, and the odometry within it is kept.
        The order matches :func:`repeat_context` of the episodes' map. ``steps=1``: every
        query a one-step episode of its own.
        """
        total = self.truth.shape[1]
        if steps < 1 or total % steps:
            raise ValueError(f'{total} queries do not split into episodes of {steps} steps')
        parts = total // steps

        def each(t: Optional[Tensor]) -> Optional[Tensor]:
            return None if t is None else t.repeat_interleave(parts, dim=0)

        def split(t: Tensor) -> Tensor:
            return t.reshape(t.shape[0] * parts, steps, *t.shape[2:])

        motions = split(self.motions).clone()
        motions[:, 0] = 0.0
        return TensorEpisodes(each(self.context_images), each(self.context_poses),
                              split(self.query_images), split(self.truth), motions,
                              each(self.bounds), each(self.turn))

    def global_belief(self) -> InitialBelief:
        """Global localization: uniform over each world's (turned) extent and all yaws."""
        return InitialBelief('uniform', bounds=self.bounds, turn=self.turn)

    def moved(self, offsets: Tensor) -> 'TensorEpisodes':
        """
        Return the episodes with each world moved by its offset ``(B, 2)`` (normalized).

        Context poses, true poses and the bounds move; odometry is relative and stays, and
        the squared error of an estimate against the moved truth does not see the move.
        """
        def move(poses: Tensor) -> Tensor:
            return torch.cat([poses[..., :2] + offsets[:, None], poses[..., 2:]], -1)

        return replace(self, context_poses=move(self.context_poses), truth=move(self.truth),
                       bounds=self.bounds + offsets.repeat(1, 2))

    def turned(self, angles: Tensor) -> 'TensorEpisodes':
        """
        Return the episodes with each world turned by its angle ``(B,)`` about its centre.

        Context poses and true poses turn (yaws grow by the angle); odometry is in the
        robot's frame and stays; the bounds stay and the turn is kept in :attr:`turn`,
        so a global belief is drawn over the turned extent (not a larger box around it).
        Turns add up; moving and turning commute (the centre moves with the world).
        """
        center = (self.bounds[:, :2] + self.bounds[:, 2:]) / 2
        total = angles if self.turn is None else geometry.wrap_angle(self.turn + angles)
        return replace(self, context_poses=turn_about(self.context_poses, center, angles),
                       truth=turn_about(self.truth, center, angles), turn=total)


def repeat_context(context: Any, times: int) -> Any:
    """
    Repeat every batch element of a map (or query) context ``times`` times in place.

    ``context`` is a tensor ``(B, ...)`` or a dataclass of them (None fields stay None);
    the result has batch ``B * times`` with element ``b`` at ``b * times ... b * times +
    times - 1``, as :meth:`TensorEpisodes.split_queries` orders the episodes.
    """
    if context is None:
        return None
    if isinstance(context, Tensor):
        return context.repeat_interleave(times, dim=0)
    if is_dataclass(context):
        return replace(context, **{f.name: repeat_context(getattr(context, f.name), times)
                                   for f in fields(context)})
    raise TypeError(f'cannot repeat a context of type {type(context).__name__}')


def to_tensors(batch: EpisodeBatch, config: InputConfig,
               device: torch.device) -> TensorEpisodes:
    """Preprocess the images and normalize the poses of an :class:`EpisodeBatch`."""
    extents = torch.as_tensor(batch.extents, dtype=torch.float32, device=device)[:, None, :]

    def poses(array: np.ndarray) -> Tensor:
        return geometry.normalize_poses(torch.as_tensor(array, dtype=torch.float32,
                                                        device=device), extents)

    bounds = geometry.normalized_bounds(extents[:, 0], extents)
    motions = geometry.normalize_motion(
        torch.as_tensor(batch.motions, dtype=torch.float32, device=device), extents)
    return TensorEpisodes(preprocess_images(batch.context_images, config, device),
                          poses(batch.context_poses),
                          preprocess_images(batch.query_images, config, device),
                          poses(batch.query_poses), motions, bounds)


def check_frame_change(shift: float, turn: float) -> None:
    """Raise ValueError unless ``shift`` >= 0 and ``turn`` is in ``[0, 180]`` degrees."""
    if shift < 0 or turn < 0:
        raise ValueError(f'frame shift and turn must be >= 0, got {shift} and {turn}')
    if turn > 180:
        raise ValueError(f'frame turn in [0, 180] degrees expected (at most 180: any '
                         f'heading), got {turn}')


def with_frame_change(episodes: TensorEpisodes, shift: float, rng: np.random.Generator,
                      turn: float = 0.0) -> TensorEpisodes:
    """
    Move each episode's world by an offset and turn it by an angle, both drawn at random.

    The offset is uniform in ``[-shift, shift]^2`` (normalized units), the angle uniform
    in ``[-turn, turn]`` degrees about the world's centre (180: any heading). 0 changes
    nothing and draws nothing from ``rng`` (runs without a change keep their random
    streams; the offsets are drawn before the angles).
    """
    check_frame_change(shift, turn)
    like = {'dtype': episodes.truth.dtype, 'device': episodes.truth.device}
    if shift > 0:
        episodes = episodes.moved(torch.as_tensor(
            rng.uniform(-shift, shift, (len(episodes), 2)), **like))
    if turn > 0:
        episodes = episodes.turned(torch.as_tensor(
            np.radians(rng.uniform(-turn, turn, len(episodes))), **like))
    return episodes


def tracking_belief(truth: Tensor, generator: Optional[torch.Generator] = None,
                    bounds: Optional[Tensor] = None, uniform_share: float = 0.0,
                    turn: Optional[Tensor] = None) -> InitialBelief:
    """
    Tracking initial belief around the true first pose ``truth`` ``(B, 3)``.

    The belief's mean is itself drawn from the paper's Gaussian (sigma 0.3, 0.3, 30
    degrees) around the truth, so the true pose is a sample of the belief, not its mean
    (otherwise a regression model could answer the mean and be exact). With
    ``uniform_share`` > 0, that share of the particles is spread uniformly over
    ``bounds`` ``(B, 4)``: a model trained only on particles near the truth never sees
    the far-off positions and headings that global localization asks it to reject
    (``turn``: the bounds turned, see :class:`TensorEpisodes`).
    """
    std = torch.tensor(TRACKING_STD, dtype=truth.dtype, device=truth.device)
    noise = torch.randn(truth.shape, generator=generator, dtype=truth.dtype,
                        device=truth.device) * std
    mean = truth + noise
    mean = torch.cat([mean[:, :2], torch.remainder(mean[:, 2:] + math.pi, 2 * math.pi) - math.pi],
                     -1)
    return InitialBelief('gaussian', bounds=bounds, mean=mean, uniform_share=uniform_share,
                         turn=turn)
