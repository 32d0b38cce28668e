"""
Continuous robot-like trajectories in a world, and odometry that drifts.

A small wheeled robot drives at 0.2 to 0.5 m/s, turning at most 1 rad/s: it keeps a
slowly varying random turn rate and, when the space ahead closes in, turns towards the
side with more room. Odometry is the relative motion between frames with noise whose
spread grows with the motion (like nav2 AMCL's alpha parameters), so integrating it
drifts; noise-free odometry composes exactly to the ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Optional

from dmn_localization.core.geometry import compose_motions, relative_motions
from dmn_localization.data.episodes import EpisodeBatch
from dmn_localization.data.worlds import World
import numpy as np


@dataclass
class DriveSettings:
    """Speeds of the simulated robot and its frame interval."""

    dt: float = 0.2
    min_speed: float = 0.2
    max_speed: float = 0.5
    max_turn_rate: float = 1.0
    look_ahead: float = 0.7


@dataclass
class OdometryNoise:
    """
    Standard deviations of the odometry error per frame, proportional to the motion.

    ``rot_from_rot``: radians of yaw error per radian turned; ``rot_from_trans``: per
    metre driven; ``trans_from_trans``: metres per metre; ``trans_from_rot``: metres per
    radian. Zero everywhere is perfect odometry.
    """

    rot_from_rot: float = 0.05
    rot_from_trans: float = 0.02
    trans_from_trans: float = 0.05
    trans_from_rot: float = 0.01

    @classmethod
    def none(cls) -> 'OdometryNoise':
        """Return perfect odometry."""
        return cls(0.0, 0.0, 0.0, 0.0)

    def std(self, motions: np.ndarray) -> np.ndarray:
        """Return the per-component standard deviations ``(T, 3)`` for motions ``(T, 3)``."""
        trans = np.hypot(motions[:, 0], motions[:, 1])
        rot = np.abs(motions[:, 2])
        s_trans = self.trans_from_trans * trans + self.trans_from_rot * rot
        s_rot = self.rot_from_rot * rot + self.rot_from_trans * trans
        return np.stack([s_trans, s_trans, s_rot], -1)


def _free_along(world: World, x: float, y: float, heading: float, distances: tuple) -> list:
    """Return whether the points at ``distances`` along ``heading`` are free."""
    return [bool(world.is_free(x + d * math.cos(heading), y + d * math.sin(heading)))
            for d in distances]


def drive(world: World, steps: int, rng: np.random.Generator,
          settings: Optional[DriveSettings] = None,
          start: Optional[np.ndarray] = None) -> np.ndarray:
    """Return a trajectory of ``steps`` poses ``(T, 3)`` that stays in free space."""
    s = settings or DriveSettings()
    pose = np.array(start if start is not None else world.sample_free_poses(1, rng)[0], float)
    speed = rng.uniform(s.min_speed, s.max_speed)
    turn, turning = 0.0, 0.0  # turning: side chosen while blocked, kept until free again
    out = np.empty((steps, 3))
    for t in range(steps):
        out[t] = pose
        x, y, yaw = pose
        if not all(_free_along(world, x, y, yaw, (0.35, s.look_ahead))):
            if turning == 0.0:
                left = sum(_free_along(world, x, y, yaw + 0.8, (0.4, 0.8, 1.2)))
                right = sum(_free_along(world, x, y, yaw - 0.8, (0.4, 0.8, 1.2)))
                turning = 1.0 if left > right or (left == right and rng.random() < 0.5) else -1.0
            turn, forward = turning * s.max_turn_rate, 0.0
        else:
            turning = 0.0
            # Ornstein-Uhlenbeck turn rate (1 s correlation, 0.5 rad/s spread) and speed
            keep = math.exp(-s.dt)
            turn = float(np.clip(keep * turn + rng.normal(0.0, 0.5 * math.sqrt(1 - keep ** 2)),
                                 -s.max_turn_rate, s.max_turn_rate))
            speed = float(np.clip(speed + rng.normal(0.0, 0.1 * math.sqrt(s.dt)), s.min_speed,
                                  s.max_speed))
            forward = speed
        yaw_new = yaw + turn * s.dt
        mid = yaw + 0.5 * turn * s.dt
        nx, ny = x + forward * s.dt * math.cos(mid), y + forward * s.dt * math.sin(mid)
        if not bool(world.is_free(nx, ny)):
            nx, ny = x, y
        pose = np.array([nx, ny, math.remainder(yaw_new, 2 * math.pi)])
    return out


def noisy_odometry(poses: np.ndarray, noise: OdometryNoise,
                   rng: np.random.Generator) -> np.ndarray:
    """Return odometry ``(T, 3)`` of a trajectory with noise (``[0]`` zero)."""
    motions = relative_motions(np.asarray(poses, dtype=np.float64))
    noisy = motions + rng.normal(size=motions.shape) * noise.std(motions)
    noisy[0] = 0.0
    noisy[:, 2] = np.remainder(noisy[:, 2] + np.pi, 2 * np.pi) - np.pi
    return noisy


class TrajectorySampler:
    """
    Episodes along continuous trajectories, rendered as the robot drives.

    Contexts are random free views of the world; the queries are every
    ``frame_every``-th pose of a :func:`drive` run, and the odometry between queries is
    the composition of the noisy per-step odometry in between (so it drifts).
    """

    def __init__(self, renderer: 'object', num_contexts: int, steps: int, frame_every: int = 5,
                 noise: Optional[OdometryNoise] = None,
                 settings: Optional[DriveSettings] = None) -> None:
        self.renderer = renderer
        self.num_contexts = num_contexts
        self.steps = steps
        self.frame_every = frame_every
        self.noise = noise if noise is not None else OdometryNoise()
        self.settings = settings or DriveSettings()

    def episode(self, world: World, rng: np.random.Generator) -> EpisodeBatch:
        """Drive and render one episode in ``world``, as a batch of one."""
        self.renderer.load(world)
        contexts = world.sample_free_poses(self.num_contexts, rng)
        path = drive(world, (self.steps - 1) * self.frame_every + 1, rng, self.settings)
        odometry = noisy_odometry(path, self.noise, rng)
        frames = path[::self.frame_every]
        # integrate the noisy odometry between frames, then express it frame to frame
        dead_reckoning = compose_motions(path[0], odometry)[::self.frame_every]
        motions = relative_motions(dead_reckoning)
        return EpisodeBatch(self.renderer.render(contexts)[None],
                            contexts[None].astype(np.float32),
                            self.renderer.render(frames)[None], frames[None].astype(np.float32),
                            motions[None].astype(np.float32),
                            np.asarray(world.extent, dtype=np.float32)[None],
                            np.asarray([world.seed]))
