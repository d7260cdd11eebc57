"""The tracker's expiry skips its work when nothing can have gone stale
(MissDeleter.quiet_bounds / is_quiet): the same tracks, statuses and ENDED rows as the
full pass, at random times and exactly on the deleter's boundaries."""

from __future__ import annotations

import numpy as np

from towerd.detection.plots import Detections
from towerd.icd import Status
from towerd.tracking.compose import build_tracker
from towerd.tracking.deleter import MissDeleter
from towerd.tracking.state import TrackTable
from tracker_settings import tracker_settings


class FullPassDeleter(MissDeleter):
    """The production deleter that never calls the tracks quiet: expire always runs judge."""

    def is_quiet(self, bounds, t_mono):
        return False


def _frame(rng: np.random.Generator, t: float) -> Detections:
    """Three targets moving at 10 m/s, each seen with probability 0.6, plus a clutter point."""
    pos = [np.array([100.0 * (k + 1) + 10.0 * t, 50.0 * k, 20.0]) for k in range(3) if rng.random() < 0.6]
    pos.append(rng.uniform(-500.0, 500.0, 3))
    n = len(pos)
    return Detections("radar1", t, np.array(pos) + rng.normal(0.0, 0.5, (n, 3)), np.tile(np.eye(3) * 4.0, (n, 1, 1)),
                      np.full(n, 20.0), np.full(n, np.nan))


def _same(a: TrackTable, b: TrackTable) -> bool:
    return len(a) == len(b) and a.rows.tobytes() == b.rows.tobytes() and a._raw.tobytes() == b._raw.tobytes()


def test_quiet_expiry_gives_what_the_full_pass_gives():
    settings = tracker_settings(2.0, 0.999, 3, 5, 2, 1.0, 0.3)
    quick, full = build_tracker(settings), build_tracker(settings)
    full.deleter = FullPassDeleter(tentative_max_misses=2, confirmed_max_coast_s=1.0, coast_after_s=0.3)
    rng = np.random.default_rng(7)
    skipped = calls = 0
    statuses = set()
    for k in range(400):
        t = 0.1 * k
        det = _frame(rng, t) if k % 50 < 35 else Detections.empty("radar1", t)  # silent spells: tracks go stale
        seed = int(rng.integers(1 << 30))
        for tracker in (quick, full):
            tracker.step(det)
        assert _same(quick.tracks, full.tracks)
        last = quick.tracks.t_last_update
        # Expire at random times after the frame and exactly on the boundaries of coasting and ending.
        times = list(t + np.random.default_rng(seed).uniform(0.0, 1.5, 3))
        times += [float(x) + d for x in last[:2] for d in (0.3, 1.0)]
        for when in sorted(times):
            before = quick.tracks
            a, b = quick.expire(when), full.expire(when)
            calls += 1
            skipped += a.tracks is before
            assert _same(a.tracks, b.tracks) and _same(a.ended, b.ended)
            statuses.update(int(s) for s in a.tracks.status)
            statuses.update(int(s) for s in a.ended.status)
    assert {int(Status.CONFIRMED), int(Status.COASTING), int(Status.ENDED)} <= statuses
    assert 0 < skipped < calls  # both paths ran


def test_is_quiet_on_the_boundaries():
    deleter = MissDeleter(tentative_max_misses=2, confirmed_max_coast_s=3.0, coast_after_s=0.5)
    tab = TrackTable.empty()
    assert deleter.is_quiet(deleter.quiet_bounds(tab), 1e9)  # nothing to end
    from test_tracking import one_detection
    from towerd.tracking.initiator import MofNInitiator
    tab = TrackTable.concatenate([MofNInitiator().initiate(one_detection(0.0), np.array([0]), 1)] * 3)
    tab.status[:] = [Status.TENTATIVE, Status.CONFIRMED, Status.COASTING]
    tab.misses[:] = [2, 0, 5]
    tab.t_last_update[:] = [9.0, 10.0, 8.0]
    bounds = deleter.quiet_bounds(tab)
    assert deleter.is_quiet(bounds, 10.5) and not deleter.is_quiet(bounds, 10.51)  # the confirmed row coasts
    assert not deleter.is_quiet(bounds, 8.5)  # the coasting row would be confirmed again
    tab.misses[0] = 3  # a tentative row over its misses goes whatever the time
    assert deleter.quiet_bounds(tab) is None and not deleter.is_quiet(None, 10.0)
    tab.misses[0] = 2
    tab.t_last_update[1] = np.nan  # a NaN time is never called quiet
    assert not deleter.is_quiet(deleter.quiet_bounds(tab), 10.0)
