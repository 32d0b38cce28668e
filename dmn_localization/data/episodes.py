"""
Episodes for training and evaluation, drawn from a :class:`~.dataset.Dataset`.

An episode is one environment: ``Nc`` context views (the map) and a sequence of ``T``
query views with the odometry between them. As in the paper, the queries are random
views of the environment in random order, and the odometry is their relative pose
(``motions[:, t]`` is the motion from query ``t - 1`` to query ``t`` in the robot
frame of ``t - 1``; ``motions[:, 0]`` is zero). Continuous, robot-like trajectories
with drifting odometry come from :mod:`.trajectories`.

Arrays are numpy, metric (metres, radians, ROS map frame); the learning code
normalizes them with the extents.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from dmn_localization.core.geometry import relative_motions
from dmn_localization.data.dataset import Dataset
import numpy as np


@dataclass
class EpisodeBatch:
    """
    A batch of episodes.

    ``context_images`` ``(B, Nc, H, W, 3)`` uint8, ``context_poses`` ``(B, Nc, 3)``,
    ``query_images`` ``(B, T, H, W, 3)``, ``query_poses`` ``(B, T, 3)``, ``motions``
    ``(B, T, 3)`` (robot frame, ``[:, 0]`` zero), ``extents`` ``(B, 4)``,
    ``env_indices`` ``(B,)``.
    """

    context_images: np.ndarray
    context_poses: np.ndarray
    query_images: np.ndarray
    query_poses: np.ndarray
    motions: np.ndarray
    extents: np.ndarray
    env_indices: np.ndarray

    def __len__(self) -> int:
        """Return the batch size B."""
        return int(self.context_images.shape[0])


class EpisodeSampler:
    """
    Draw episodes from a dataset: contexts and queries are distinct random views.

    ``environments`` restricts sampling to some environments (e.g. a fixed validation
    subset); ``rng`` makes the draw reproducible.
    """

    def __init__(self, dataset: Dataset, num_contexts: int, steps: int,
                 environments: Optional[Sequence[int]] = None) -> None:
        if num_contexts + steps > dataset.views_per_env:
            raise ValueError(f'{num_contexts} contexts + {steps} queries need more than the '
                             f'{dataset.views_per_env} views per environment of {dataset.root}')
        self.dataset = dataset
        self.num_contexts = num_contexts
        self.steps = steps
        self.environments = np.arange(len(dataset)) if environments is None else np.asarray(
            environments)

    def sample(self, batch: int, rng: np.random.Generator) -> EpisodeBatch:
        """Draw ``batch`` episodes."""
        envs = rng.choice(self.environments, size=batch, replace=True)
        return self.episodes(envs, rng)

    def episodes(self, envs: Sequence[int], rng: np.random.Generator) -> EpisodeBatch:
        """Draw one episode from each environment in ``envs``."""
        ctx_img, ctx_pose, q_img, q_pose, extents = [], [], [], [], []
        for env in envs:
            pick = rng.permutation(self.dataset.views_per_env)[:self.num_contexts + self.steps]
            images, poses = self.dataset.views(int(env), pick)
            ctx_img.append(images[:self.num_contexts])
            ctx_pose.append(poses[:self.num_contexts])
            q_img.append(images[self.num_contexts:])
            q_pose.append(poses[self.num_contexts:])
            extents.append(self.dataset.extent(int(env)))
        query_poses = np.stack(q_pose)
        return EpisodeBatch(np.stack(ctx_img), np.stack(ctx_pose), np.stack(q_img), query_poses,
                            relative_motions(query_poses), np.stack(extents).astype(np.float32),
                            np.asarray(envs))
