"""
Whether the localizer knows where it is: ``initializing``, ``global``, ``converged``, ``lost``.

Decided from what every processed frame gives, with no ROS:

* ``initializing``: no map, or no frame processed since the map came;
* ``global``: the belief is spread out; the filter is still searching;
* ``converged``: the weighted spread of x, y (metres) and yaw (radians) has been under
  the thresholds for ``converged_frames`` consecutive frames;
* ``lost``: after convergence, the observation evidence (log of the mean likelihood of
  the frame under the belief) stayed more than ``lost_evidence_drop`` below its own
  running level for ``lost_evidence_frames`` consecutive frames (one odd frame, a
  passing occlusion, is not a kidnapping), or the x-y spread grew past ``lost_xy_std``.
  A lost belief that spreads out again is searching (``global``); one that stays
  narrow and agrees with the images again for ``converged_frames`` frames is
  ``converged``.

With a relative evidence (the frame's evidence under the belief minus its evidence
averaged over reference poses spread over the whole map, both from log-likelihoods
times ``likelihood_scale``; see :mod:`dmn_localization.runtime.localizer`), a belief
that explains the frame less than ``min_relative_evidence`` better than the map at large
does not count as converged: such a frame makes a converged belief ``lost`` (it counts
like a low-evidence frame) and keeps a narrow one from converging. Unlike the evidence
itself, the relative evidence does not change with what the image shows, so one
threshold holds for every frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

INITIALIZING = 'initializing'
GLOBAL = 'global'
CONVERGED = 'converged'
LOST = 'lost'
STATES = (INITIALIZING, GLOBAL, CONVERGED, LOST)


class StatusSettingsError(ValueError):
    """A threshold out of its range; the message names it."""


@dataclass
class StatusSettings:
    """Thresholds of the states (metres, radians, frames, nats)."""

    converged_xy_std: float = 0.4
    converged_yaw_std: float = 0.35
    converged_frames: int = 3
    lost_xy_std: float = 1.0
    lost_evidence_drop: float = 3.0
    #: consecutive frames the evidence must stay that low
    lost_evidence_frames: int = 1
    #: weight of a new frame in the running level of the evidence while converged
    evidence_alpha: float = 0.1
    #: least relative evidence of a converged belief, nats (used when the frame has one).
    #: Chosen on kidnapped runs other than those reported (docs/benchmarks.md, "What the
    #: status can and cannot tell")
    min_relative_evidence: float = 0.5

    def check(self) -> 'StatusSettings':
        """Return self, or raise :class:`StatusSettingsError` naming the bad threshold."""
        for name in ('converged_xy_std', 'converged_yaw_std', 'lost_xy_std',
                     'lost_evidence_drop'):
            if not getattr(self, name) > 0:
                raise StatusSettingsError(f'{name} must be positive, got {getattr(self, name)}')
        if self.lost_evidence_frames < 1:
            raise StatusSettingsError(
                f'lost_evidence_frames must be at least 1, got {self.lost_evidence_frames}')
        if self.converged_frames < 1:
            raise StatusSettingsError(
                f'converged_frames must be at least 1, got {self.converged_frames}')
        if not 0 < self.evidence_alpha <= 1:
            raise StatusSettingsError(
                f'evidence_alpha must be in (0, 1], got {self.evidence_alpha}')
        if self.lost_xy_std <= self.converged_xy_std:
            raise StatusSettingsError(
                f'lost_xy_std ({self.lost_xy_std}) must exceed converged_xy_std '
                f'({self.converged_xy_std})')
        return self


class StatusTracker:
    """The state machine; feed it one :meth:`update` per processed frame."""

    def __init__(self, settings: Optional[StatusSettings] = None) -> None:
        self.settings = (settings or StatusSettings()).check()
        self.state = INITIALIZING
        self.narrow_frames = 0
        self.low_evidence_frames = 0
        self.evidence_level: Optional[float] = None

    def reset(self, has_map: bool) -> str:
        """Start over after a new map or belief: ``global`` (``initializing`` without map)."""
        self.state = INITIALIZING if not has_map else GLOBAL
        self.narrow_frames = 0
        self.low_evidence_frames = 0
        self.evidence_level = None
        return self.state

    def update(self, xy_std: float, yaw_std: float, evidence: float,
               relative_evidence: Optional[float] = None) -> str:
        """
        Return the state after a frame.

        ``xy_std``: the larger weighted std of x and y (metres), ``yaw_std`` that of yaw
        (radians), ``evidence``: the frame's log mean likelihood under the belief,
        ``relative_evidence``: that minus the frame's log mean likelihood over the map's
        reference poses (None: the rule that reads it is off).
        """
        s = self.settings
        narrow = xy_std < s.converged_xy_std and yaw_std < s.converged_yaw_std
        explains = relative_evidence is None or relative_evidence >= s.min_relative_evidence
        self.narrow_frames = self.narrow_frames + 1 if narrow else 0
        if self.state == INITIALIZING:
            self.state = GLOBAL
        if self.state == CONVERGED:
            level = self.evidence_level if self.evidence_level is not None else evidence
            low = evidence < level - s.lost_evidence_drop or not explains
            self.low_evidence_frames = self.low_evidence_frames + 1 if low else 0
            if self.low_evidence_frames >= s.lost_evidence_frames or xy_std > s.lost_xy_std:
                self.state = LOST
                self.narrow_frames = 0
                self.low_evidence_frames = 0
                return self.state
            if not low:  # the running level follows the frames that agree with it
                self.evidence_level = ((1 - s.evidence_alpha) * level
                                       + s.evidence_alpha * evidence)
            return self.state
        if self.state == LOST:
            if xy_std > s.lost_xy_std:
                self.state = GLOBAL  # spread out again: searching, no longer confidently wrong
            elif (self.narrow_frames >= s.converged_frames and self.evidence_level is not None
                  and evidence >= self.evidence_level - s.lost_evidence_drop and explains):
                self.state = CONVERGED
            return self.state
        # global
        if self.narrow_frames >= s.converged_frames and explains:
            self.state = CONVERGED
            self.evidence_level = evidence
        return self.state
