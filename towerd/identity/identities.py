"""Which track identities are due for the uplink.

Policy: a track's :class:`~towerd.reports.identity.TrackIdentity` is due when the track
first has one, when what it says changes (status, source, UAS ID and its type, UA type,
operator ID, self-ID, whether the pilot's position is known), and otherwise every
``interval_s`` while the track has one (so a central that joins late, or lost one, gets
it again and sees the pilot's position and last-heard time move). State is kept for the
tracks that have an identity now and pruned on every call.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from towerd.reports.identity import TrackIdentity

TIME_EPS_S = 1e-6


def what_of(ident: TrackIdentity) -> tuple:
    """What of an identity makes it due when it changes (see the module docstring)."""
    return (ident.status, ident.source, ident.uas_id, ident.id_type, ident.ua_type, ident.operator_id,
            ident.self_id, math.isnan(ident.operator_lat_deg))


class IdentityReporter:
    """Keeps, per track id, what was last sent and when (monotonic seconds)."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = float(interval_s)
        self._last: dict[int, tuple[float, tuple]] = {}

    def due(self, current: Mapping[int, TrackIdentity], t_mono: float) -> list[TrackIdentity]:
        """The identities of ``current`` (track id -> identity now) due at ``t_mono``,
        in track id order."""
        return [current[tid] for tid in self.due_ids({tid: what_of(i) for tid, i in current.items()}, t_mono)]

    def due_ids(self, whats: Mapping[int, tuple], t_mono: float) -> list[int]:
        """:meth:`due` from what each identity says (:func:`what_of`, track id -> tuple),
        for a caller that makes only the identities due: their track ids, in order."""
        out = []
        for tid in sorted(whats):
            now = whats[tid]
            last = self._last.get(tid)
            if last is None or last[1] != now or t_mono - last[0] >= self.interval_s - TIME_EPS_S:
                out.append(tid)
                self._last[tid] = (t_mono, now)
        for tid in [t for t in self._last if t not in whats]:
            del self._last[tid]
        return out
