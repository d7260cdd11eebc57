"""The rules that judge a broadcast against the radar, and radar tracks against silence.

Per transmitter (:func:`judge`), from what the radar says about its latest position now
(:class:`Evidence`):

- matched with a radar track now, or its earlier track alive and in its gate: COOPERATIVE
  (the contradiction timer stops, a MISMATCH is cleared);
- its earlier track alive but out of its gate: contradicted ("track_elsewhere");
- no earlier track, in radar coverage, no track at all in its gate: contradicted
  ("no_echo"); some track in its gate that it did not get: pending (status None);
- no earlier track, outside radar coverage: ID_ONLY.

Contradicted for ``mismatch_after_s`` makes it MISMATCH (the rule ``rid_mismatch``); until
then a paired transmitter stays COOPERATIVE (benefit of the doubt) and an unpaired one
pending, or ID_ONLY if it was. MISMATCH holds (a transmitter that lied stays suspect)
until the radar agrees with it again.

Per radar track (:class:`SilentTracks`): eligible (confirmed or coasting, uas, in receiver
coverage) with no transmitter paired for ``after_s`` makes it NON_COOPERATIVE, which
holds until a transmitter is paired with it or it ends.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from towerd.reports.identity import IdentityStatus

TIME_EPS_S = 1e-6
NO_ECHO = "no_echo"
TRACK_ELSEWHERE = "track_elsewhere"


@dataclass
class Verdict:
    """What fusion concluded about one transmitter. ``status`` None: pending;
    ``paired_track``: radar track id matched earlier (0: none); ``contradicted_since``:
    monotonic seconds (NaN: not contradicted); ``reason``: NO_ECHO or TRACK_ELSEWHERE
    while contradicted, and of its MISMATCH; ``id_only``: its ID-only track id (0: none)
    and ``id_only_last``: (position time, status, threat) of that track's last record."""

    status: IdentityStatus | None = None
    paired_track: int = 0
    contradicted_since: float = math.nan
    reason: str = ""
    id_only: int = 0
    id_only_last: tuple[float, int, int] | None = None


@dataclass(frozen=True)
class Evidence:
    """What the radar says about one broadcast position now. ``matched_track``: the
    track id assignment gave it (0: none); ``paired_in_gate``: whether its earlier
    track, alive, is in its gate (None: no such track); ``covered``: in radar coverage;
    ``any_in_gate``: some live track (tentative too) is in its gate."""

    matched_track: int
    paired_in_gate: bool | None
    covered: bool
    any_in_gate: bool


def judge(v: Verdict, ev: Evidence, t: float, mismatch_after_s: float) -> bool:
    """Update ``v`` at ``t`` from ``ev`` (rules of the module docstring); True when it has
    just become MISMATCH."""
    reason = ""
    if ev.matched_track:
        v.paired_track, v.status = ev.matched_track, IdentityStatus.COOPERATIVE
    elif ev.paired_in_gate is not None:
        if ev.paired_in_gate:
            v.status = IdentityStatus.COOPERATIVE
        else:
            reason = TRACK_ELSEWHERE
    elif ev.covered:
        if not ev.any_in_gate:
            reason = NO_ECHO
        elif v.status != IdentityStatus.MISMATCH:
            v.status = None
    elif v.status != IdentityStatus.MISMATCH:
        v.status = IdentityStatus.ID_ONLY
    if not reason:
        v.contradicted_since = math.nan
        if v.status != IdentityStatus.MISMATCH:
            v.reason = ""
        return False
    if math.isnan(v.contradicted_since):
        v.contradicted_since = t
    if v.status == IdentityStatus.MISMATCH:
        return False
    v.reason = reason
    if t - v.contradicted_since >= mismatch_after_s - TIME_EPS_S:
        v.status = IdentityStatus.MISMATCH
        return True
    if not v.paired_track and v.status != IdentityStatus.ID_ONLY:
        v.status = None
    return False


class SilentTracks:
    """Non-cooperative radar tracks (module docstring). ``non_cooperative``: the live
    track ids found so."""

    def __init__(self) -> None:
        self.non_cooperative: set[int] = set()
        self._since: dict[int, float] = {}

    def judge(self, t: float, track_ids: np.ndarray, eligible: np.ndarray, paired: Iterable[int],
              after_s: float) -> list[tuple[int, float]]:
        """Tracks ``track_ids`` (K,) live at ``t``, ``eligible`` (K,) bool, ``paired``: track
        ids some transmitter is paired with. Returns (track id, seconds silent) of those
        that have just become non-cooperative."""
        paired = set(paired)
        ids = track_ids.tolist()
        live = set(ids)
        found = []
        for tid, ok in zip(ids, np.asarray(eligible, dtype=bool).tolist()):
            if tid in paired:
                self._since.pop(tid, None)
                self.non_cooperative.discard(tid)
            elif tid in self.non_cooperative:
                continue
            elif not ok:
                self._since.pop(tid, None)
            else:
                since = self._since.setdefault(tid, t)
                if t - since >= after_s - TIME_EPS_S:
                    self.non_cooperative.add(tid)
                    found.append((tid, t - since))
        self.non_cooperative &= live
        if not live.issuperset(self._since):
            self._since = {k: v for k, v in self._since.items() if k in live}
        return found
