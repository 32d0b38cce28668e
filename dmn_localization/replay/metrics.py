"""
Trajectory metrics of a localization run against ground truth (no ROS).

All poses are ``(x, y, yaw)`` in metres and radians in the map frame, ``stamps`` in
seconds; the ground truth is interpolated at the estimate stamps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
import math
from pathlib import Path
from typing import Dict, Optional, Sequence

from dmn_localization.data.from_bag import interpolate_poses
import numpy as np

#: The paper's success threshold on the squared x-y error in normalized units.
NORMALIZED_SUCCESS = 0.2


@dataclass
class TrajectoryMetrics:
    """
    Summary of a run; distances in metres, angles in degrees, times in seconds.

    Converged: the estimate first stays within 0.5 m of the truth for
    :data:`CONVERGENCE_HOLD_S` seconds; ``ate_rmse_after_convergence_m`` covers the
    whole rest of the run, excursions included.
    """

    frames: int
    ate_rmse_m: float
    ate_rmse_after_convergence_m: Optional[float]
    yaw_error_mean_deg: float
    time_to_converge_s: Optional[float]
    distance_to_converge_m: Optional[float]
    share_within_0_5_m: float
    share_within_1_m: float
    final_error_m: float
    paper_success_final: bool
    paper_success_share: float

    def to_dict(self) -> Dict[str, object]:
        """Return the metrics as a JSON-serializable dict."""
        return asdict(self)


def errors(stamps: np.ndarray, estimates: np.ndarray, truth_stamps: np.ndarray,
           truth: np.ndarray) -> np.ndarray:
    """Return per-estimate ``(position error m, yaw error rad)`` as ``(N, 2)``."""
    gt = interpolate_poses(np.asarray(truth_stamps, float), np.asarray(truth, float),
                           np.asarray(stamps, float))
    pos = np.hypot(estimates[:, 0] - gt[:, 0], estimates[:, 1] - gt[:, 1])
    yaw = np.abs(np.remainder(estimates[:, 2] - gt[:, 2] + np.pi, 2 * np.pi) - np.pi)
    return np.column_stack([pos, yaw])


#: Seconds the estimate must stay within the radius to count as converged.
CONVERGENCE_HOLD_S = 2.0


def convergence_index(position_error: np.ndarray, stamps: np.ndarray, radius: float = 0.5,
                      hold_s: float = CONVERGENCE_HOLD_S) -> Optional[int]:
    """
    Return the first index from which the error stays within ``radius`` for ``hold_s``.

    Seconds count by the stamps; the hold must lie within the run. None when the estimate
    never holds that long (a later excursion is not undone: it shows in the shares).
    """
    stamps = np.asarray(stamps, float)
    inside = np.asarray(position_error) <= radius
    for i in np.nonzero(inside)[0]:
        end = stamps[i] + hold_s
        if end > stamps[-1] + 1e-9:
            return None
        window = (stamps >= stamps[i]) & (stamps <= end + 1e-9)
        if inside[window].all():
            return int(i)
    return None


def trajectory_metrics(stamps: Sequence[float], estimates: np.ndarray,
                       truth_stamps: Sequence[float], truth: np.ndarray,
                       extent: Sequence[float]) -> TrajectoryMetrics:
    """Compute :class:`TrajectoryMetrics`; ``extent`` normalizes for the paper's criterion."""
    stamps = np.asarray(stamps, float)
    estimates = np.asarray(estimates, float)
    err = errors(stamps, estimates, np.asarray(truth_stamps, float), np.asarray(truth, float))
    valid = np.isfinite(err[:, 0])
    if not valid.any():
        raise ValueError('no estimate lies within the time span of the ground truth')
    stamps, estimates, err = stamps[valid], estimates[valid], err[valid]
    pos, yaw = err[:, 0], err[:, 1]
    index = convergence_index(pos, stamps)
    gt = interpolate_poses(np.asarray(truth_stamps, float), np.asarray(truth, float), stamps)
    path = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(gt[:, :2], axis=0).T))])
    half = max(extent[2] - extent[0], extent[3] - extent[1]) / 2.0
    normalized_sq = (pos / half) ** 2
    return TrajectoryMetrics(
        frames=int(len(pos)),
        ate_rmse_m=float(np.sqrt(np.mean(pos ** 2))),
        ate_rmse_after_convergence_m=None if index is None else float(
            np.sqrt(np.mean(pos[index:] ** 2))),
        yaw_error_mean_deg=float(np.degrees(np.mean(yaw))),
        time_to_converge_s=None if index is None else float(stamps[index] - stamps[0]),
        distance_to_converge_m=None if index is None else float(path[index]),
        share_within_0_5_m=float(np.mean(pos <= 0.5)),
        share_within_1_m=float(np.mean(pos <= 1.0)),
        final_error_m=float(pos[-1]),
        paper_success_final=bool(normalized_sq[-1] < NORMALIZED_SUCCESS),
        paper_success_share=float(np.mean(normalized_sq < NORMALIZED_SUCCESS)))


def write_tum(path: Path, stamps: Sequence[float], poses: np.ndarray) -> Path:
    """Write a TUM trajectory (``stamp x y z qx qy qz qw``), the format evo reads."""
    lines = []
    for t, (x, y, yaw) in zip(stamps, np.asarray(poses, float)):
        lines.append(f'{t:.9f} {x:.6f} {y:.6f} 0.0 0.0 0.0 {math.sin(yaw / 2):.9f} '
                     f'{math.cos(yaw / 2):.9f}')
    Path(path).write_text('\n'.join(lines) + '\n')
    return Path(path)
