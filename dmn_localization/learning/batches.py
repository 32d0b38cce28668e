"""
Episode batches as model input: preprocessed images and normalized poses, on a device.

Every episode is normalized by its own environment's extent (rooms differ in size), so
the models see coordinates in ``[-1, 1]`` as in the paper. In ``dmn_dataset`` worlds that
extent is the outer wall, which a model reading global coordinates can learn; a
``frame_shift`` moves each episode's world by a random offset in the normalized frame
(:func:`with_frame_shift`), so the extent no longer says where the walls are.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
import math
from typing import Optional

from dmn_localization.core import geometry
from dmn_localization.core.configs import InputConfig
from dmn_localization.core.inference import InitialBelief
from dmn_localization.core.particle_filter import TRACKING_STD
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
    ``(B, T, 3)`` (all poses normalized), ``bounds`` ``(B, 4)``: the normalized extent.
    """

    context_images: Tensor
    context_poses: Tensor
    query_images: Tensor
    truth: Tensor
    motions: Tensor
    bounds: Tensor

    def __len__(self) -> int:
        """Return the batch size."""
        return int(self.truth.shape[0])

    def select(self, index: slice) -> 'TensorEpisodes':
        """Return the episodes ``index`` (a slice of the batch)."""
        return TensorEpisodes(*(getattr(self, f)[index] for f in (
            'context_images', 'context_poses', 'query_images', 'truth', 'motions', 'bounds')))

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


def with_frame_shift(episodes: TensorEpisodes, shift: float,
                     rng: np.random.Generator) -> TensorEpisodes:
    """
    Move each episode's world by an offset drawn uniformly from ``[-shift, shift]^2``.

    ``shift`` 0 returns ``episodes`` unchanged and draws nothing from ``rng`` (runs
    without a shift keep their random streams).
    """
    if shift < 0:
        raise ValueError(f'frame shift must be >= 0, got {shift}')
    if shift == 0:
        return episodes
    offsets = rng.uniform(-shift, shift, (len(episodes), 2))
    return episodes.moved(torch.as_tensor(offsets, dtype=episodes.truth.dtype,
                                          device=episodes.truth.device))


def tracking_belief(truth: Tensor, generator: Optional[torch.Generator] = None,
                    bounds: Optional[Tensor] = None, uniform_share: float = 0.0) -> InitialBelief:
    """
    Tracking initial belief around the true first pose ``truth`` ``(B, 3)``.

    The belief's mean is itself drawn from the paper's Gaussian (sigma 0.3, 0.3, 30
    degrees) around the truth, so the true pose is a sample of the belief, not its mean
    (otherwise a regression model could answer the mean and be exact). With
    ``uniform_share`` > 0, that share of the particles is spread uniformly over
    ``bounds`` ``(B, 4)``: a model trained only on particles near the truth never sees
    the far-off positions and headings that global localization asks it to reject.
    """
    std = torch.tensor(TRACKING_STD, dtype=truth.dtype, device=truth.device)
    noise = torch.randn(truth.shape, generator=generator, dtype=truth.dtype,
                        device=truth.device) * std
    mean = truth + noise
    mean = torch.cat([mean[:, :2], torch.remainder(mean[:, 2:] + math.pi, 2 * math.pi) - math.pi],
                     -1)
    return InitialBelief('gaussian', bounds=bounds, mean=mean, uniform_share=uniform_share)


def global_belief(bounds: Tensor) -> InitialBelief:
    """Global localization: uniform over the normalized extent ``bounds`` ``(B, 4)``."""
    return InitialBelief('uniform', bounds=bounds)
