"""
Trajectory metrics of a localization run against ground truth (no ROS).

All poses are ``(x, y, yaw)`` in metres and radians in the map frame, ``stamps`` in
seconds; the ground truth is interpolated at the estimate stamps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from dmn_localization.data.from_bag import interpolate_poses
from dmn_localization.runtime import status
import numpy as np

#: The paper's success threshold on the squared x-y error in normalized units.
NORMALIZED_SUCCESS = 0.2


@dataclass
class TrajectoryMetrics:
    """
    Summary of a run; distances in metres, angles in degrees, times in seconds.

    Converged: from the first frame on which the localizer reports itself converged and
    the estimate stays within 0.5 m of the truth for :data:`CONVERGENCE_HOLD_S` seconds
    (both must hold: a global belief whose mean happens to lie near the truth has not
    converged); ``ate_rmse_after_convergence_m`` covers the whole rest of the run,
    excursions included.
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
                       extent: Sequence[float],
                       states: Optional[Sequence[Optional[str]]] = None) -> TrajectoryMetrics:
    """
    Compute :class:`TrajectoryMetrics`; ``extent`` normalizes for the paper's criterion.

    ``states``: the localizer's state for each estimate (:mod:`dmn_localization.runtime.status`);
    convergence counts only frames reported converged. Without states (an estimator
    that reports none) convergence is read from the error alone.
    """
    stamps = np.asarray(stamps, float)
    estimates = np.asarray(estimates, float)
    if states is not None and len(states) != len(stamps):
        raise ValueError(f'{len(states)} states for {len(stamps)} estimates')
    err = errors(stamps, estimates, np.asarray(truth_stamps, float), np.asarray(truth, float))
    valid = np.isfinite(err[:, 0])
    if not valid.any():
        raise ValueError('no estimate lies within the time span of the ground truth')
    stamps, estimates, err = stamps[valid], estimates[valid], err[valid]
    pos, yaw = err[:, 0], err[:, 1]
    held_error = pos
    if states is not None:
        converged = np.array([s == status.CONVERGED for s in states], bool)[valid]
        held_error = np.where(converged, pos, np.inf)
    index = convergence_index(held_error, stamps)
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


#: A ground-truth step longer than this is a kidnap (driving covers < 0.05 m per 20 Hz step).
KIDNAP_JUMP_M = 1.0
#: Seconds the estimate must stay within 0.5 m after a kidnap to count as recovered.
RECOVERY_HOLD_S = 1.0
#: Position error above which a frame is wrong enough that the localizer must not be sure.
WRONG_M = 1.0
#: Position error within which a frame is right: flagging it lost or global is a false alarm.
RIGHT_M = 0.5
#: States in which the localizer admits it does not know where it is.
UNSURE_STATES = (status.LOST, status.GLOBAL)
#: frames this soon after a kidnap may still be reported converged: the time to notice
KIDNAP_NOTICE_S = 2.0


@dataclass
class StatusMetrics:
    """
    How honest the reported status was, and how fast kidnaps were recovered from.

    ``false_confidence_share``: share of all frames reported ``converged`` while the
    error was over :data:`WRONG_M` (goal under 1 %). ``wrong_flagged_share``: of the
    frames with an error over :data:`WRONG_M`, the share reported ``lost`` or ``global``
    (goal over 90 %; None without such frames). ``false_alarm_share``: of the frames
    within :data:`RIGHT_M` of the truth, the share reported ``lost`` or ``global`` (a
    localizer that is right but says it is not; None without such frames).
    ``false_confidence_at_kidnap_share``: the part of ``false_confidence_share`` within
    :data:`KIDNAP_NOTICE_S` after a kidnap (the time to notice it); the rest is a belief
    sure of a wrong place elsewhere. ``time_to_recover_s``: per kidnap, from
    the jump of the truth until the estimate stays within 0.5 m for
    :data:`RECOVERY_HOLD_S` (None: not within the run).
    """

    frames: int
    false_confidence_share: float
    wrong_frames: int
    wrong_flagged_share: Optional[float]
    kidnaps_s: List[float]
    time_to_recover_s: List[Optional[float]]
    right_frames: int = 0
    false_alarm_share: Optional[float] = None
    false_confidence_at_kidnap_share: float = 0.0

    def to_dict(self) -> Dict[str, object]:
        """Return the metrics as a JSON-serializable dict."""
        return asdict(self)


def kidnap_stamps(truth_stamps: Sequence[float], truth: np.ndarray,
                  jump_m: float = KIDNAP_JUMP_M) -> np.ndarray:
    """Return the stamps at which the ground truth jumps more than ``jump_m`` metres."""
    truth_stamps, truth = np.asarray(truth_stamps, float), np.asarray(truth, float)
    steps = np.hypot(*np.diff(truth[:, :2], axis=0).T)
    return truth_stamps[1:][steps > jump_m]


def status_metrics(stamps: Sequence[float], estimates: np.ndarray, states: Sequence[str],
                   truth_stamps: Sequence[float], truth: np.ndarray) -> StatusMetrics:
    """Compute :class:`StatusMetrics` of a run whose frames reported ``states``."""
    stamps = np.asarray(stamps, float)
    if len(states) != len(stamps):
        raise ValueError(f'{len(states)} states for {len(stamps)} frames')
    truth_stamps, truth = np.asarray(truth_stamps, float), np.asarray(truth, float)
    pos = errors(stamps, np.asarray(estimates, float), truth_stamps, truth)[:, 0]
    valid = np.isfinite(pos)
    if not valid.any():
        raise ValueError('no estimate lies within the time span of the ground truth')
    stamps, pos = stamps[valid], pos[valid]
    states_arr = np.asarray(states, dtype=object)[valid]
    wrong = pos > WRONG_M
    right = pos <= RIGHT_M
    kidnaps = kidnap_stamps(truth_stamps, truth)
    recover: List[Optional[float]] = []
    for k, when in enumerate(kidnaps):
        until = kidnaps[k + 1] if k + 1 < len(kidnaps) else np.inf
        part = (stamps >= when) & (stamps < until)
        index = convergence_index(pos[part], stamps[part], 0.5, RECOVERY_HOLD_S) if (
            part.any()) else None
        recover.append(None if index is None else float(stamps[part][index] - when))
    sure_wrong = wrong & (states_arr == status.CONVERGED)
    noticing = np.zeros(len(stamps), dtype=bool)
    for when in kidnaps:
        noticing |= (stamps >= when) & (stamps < when + KIDNAP_NOTICE_S)
    return StatusMetrics(
        frames=int(len(pos)),
        false_confidence_share=float(np.mean(sure_wrong)),
        false_confidence_at_kidnap_share=float(np.mean(sure_wrong & noticing)),
        wrong_frames=int(wrong.sum()),
        wrong_flagged_share=float(np.mean(np.isin(states_arr[wrong], UNSURE_STATES)))
        if wrong.any() else None,
        kidnaps_s=[float(k - stamps[0]) for k in kidnaps],
        time_to_recover_s=recover, right_frames=int(right.sum()),
        false_alarm_share=float(np.mean(np.isin(states_arr[right], UNSURE_STATES)))
        if right.any() else None)


def write_tum(path: Path, stamps: Sequence[float], poses: np.ndarray) -> Path:
    """Write a TUM trajectory (``stamp x y z qx qy qz qw``), the format evo reads."""
    lines = []
    for t, (x, y, yaw) in zip(stamps, np.asarray(poses, float)):
        lines.append(f'{t:.9f} {x:.6f} {y:.6f} 0.0 0.0 0.0 {math.sin(yaw / 2):.9f} '
                     f'{math.cos(yaw / 2):.9f}')
    Path(path).write_text('\n'.join(lines) + '\n')
    return Path(path)
