"""The localization states on hand-made spreads and evidence sequences."""

from dmn_localization.runtime.status import (CONVERGED, GLOBAL, INITIALIZING, LOST,
                                             StatusSettings, StatusSettingsError,
                                             StatusTracker)
import pytest

WIDE, NARROW = (3.0, 1.5), (0.1, 0.05)


def run(tracker, frames):
    """Feed ``(xy_std, yaw_std, evidence)`` frames; return the states after each."""
    return [tracker.update(*f) for f in frames]


def test_converges_after_enough_narrow_frames_only():
    tracker = StatusTracker(StatusSettings(converged_frames=3))
    assert tracker.state == INITIALIZING
    states = run(tracker, [(*WIDE, -5.0), (*NARROW, 1.0), (*NARROW, 1.0), (*WIDE, 1.0),
                           (*NARROW, 1.0), (*NARROW, 1.0), (*NARROW, 1.0)])
    assert states == [GLOBAL, GLOBAL, GLOBAL, GLOBAL, GLOBAL, GLOBAL, CONVERGED]
    # a narrow x-y spread with a wide yaw is not converged
    other = StatusTracker(StatusSettings(converged_frames=1))
    assert run(other, [(0.1, 1.0, 0.0)]) == [GLOBAL]


def test_an_evidence_collapse_after_convergence_is_lost_then_search_then_converged():
    tracker = StatusTracker(StatusSettings(converged_frames=2, lost_evidence_drop=3.0))
    run(tracker, [(*NARROW, 2.0)] * 2)
    assert tracker.state == CONVERGED
    # the images keep agreeing: small changes of the evidence stay converged
    assert run(tracker, [(*NARROW, 1.5), (*NARROW, 2.2)]) == [CONVERGED, CONVERGED]
    # kidnapped: the belief is still narrow, the images no longer fit it
    assert run(tracker, [(*NARROW, -4.0)]) == [LOST]
    # recovery spreads the particles: searching again, then converged elsewhere
    assert run(tracker, [(*WIDE, -3.0), (*NARROW, 0.5), (*NARROW, 0.6)]) == [
        GLOBAL, GLOBAL, CONVERGED]


def test_one_odd_frame_is_not_lost_when_the_drop_must_last():
    tracker = StatusTracker(StatusSettings(converged_frames=2, lost_evidence_drop=3.0,
                                           lost_evidence_frames=2))
    run(tracker, [(*NARROW, 2.0)] * 2)
    # one frame far below (an occlusion, a blurred image), then agreeing again
    assert run(tracker, [(*NARROW, -4.0), (*NARROW, 2.1)]) == [CONVERGED, CONVERGED]
    # the odd frame did not pull the running level down: a real drop is still caught
    assert tracker.evidence_level > 1.9
    assert run(tracker, [(*NARROW, -4.0), (*NARROW, -4.5)]) == [CONVERGED, LOST]
    with pytest.raises(StatusSettingsError, match='lost_evidence_frames'):
        StatusTracker(StatusSettings(lost_evidence_frames=0))


def test_a_spread_growing_past_the_threshold_is_lost_and_lost_can_come_back():
    tracker = StatusTracker(StatusSettings(converged_frames=2, lost_xy_std=1.0))
    run(tracker, [(*NARROW, 0.0)] * 2)
    assert run(tracker, [(1.2, 0.1, 0.0)]) == [LOST]
    # narrow again and agreeing with the images for enough frames: converged
    assert run(tracker, [(*NARROW, 0.0), (*NARROW, 0.0)]) == [LOST, CONVERGED]


def test_reset_and_bad_thresholds():
    tracker = StatusTracker()
    run(tracker, [(*NARROW, 0.0)] * 5)
    assert tracker.state == CONVERGED
    assert tracker.reset(has_map=True) == GLOBAL
    assert tracker.reset(has_map=False) == INITIALIZING
    with pytest.raises(StatusSettingsError, match='converged_frames'):
        StatusTracker(StatusSettings(converged_frames=0))
    with pytest.raises(StatusSettingsError, match='lost_xy_std'):
        StatusTracker(StatusSettings(converged_xy_std=1.0, lost_xy_std=0.5))
    with pytest.raises(StatusSettingsError, match='evidence_alpha'):
        StatusTracker(StatusSettings(evidence_alpha=0.0))


def test_a_belief_that_explains_the_frame_no_better_than_the_map_is_not_converged():
    tracker = StatusTracker(StatusSettings(converged_frames=2, min_relative_evidence=0.25))
    # narrow, but the images fit the rest of the map as well: still searching
    assert [tracker.update(*NARROW, 1.0, 0.1) for _ in range(3)] == [GLOBAL] * 3
    assert tracker.update(*NARROW, 1.0, 0.3) == CONVERGED
    # one frame the belief explains worse than the map at large: lost at once, although the
    # evidence itself stayed at its running level
    assert tracker.update(*NARROW, 1.0, -0.5) == LOST
    # narrow and explaining the frames again: converged again only with the relative evidence
    assert [tracker.update(*NARROW, 1.0, 0.1) for _ in range(3)] == [LOST] * 3
    assert tracker.update(*NARROW, 1.0, 0.3) == CONVERGED
    # without a relative evidence (the localizer computes none) the rule is off
    other = StatusTracker(StatusSettings(converged_frames=1, min_relative_evidence=0.25))
    assert [other.update(*NARROW, 1.0) for _ in range(2)] == [CONVERGED, CONVERGED]
