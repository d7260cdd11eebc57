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


def _what(ident: TrackIdentity) -> tuple:
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
        out = []
        for tid in sorted(current):
            ident = current[tid]
            what = _what(ident)
            last = self._last.get(tid)
            if last is None or last[1] != what or t_mono - last[0] >= self.interval_s - TIME_EPS_S:
                out.append(ident)
                self._last[tid] = (t_mono, what)
        for tid in [t for t in self._last if t not in current]:
            del self._last[tid]
        return out
