"""The outbox's size cap: dropping the oldest rows when it is full, and announcing
exactly what was dropped.

Size cap: ``max_records`` rows and ``max_bytes`` bytes of payload, counted from the
database itself when it is opened (so a restart does not reset the accounting) and kept
in step with every insert and delete. When an add would exceed either, the oldest rows
are deleted in the same transaction and an EVENTS object ``outbox.dropped`` naming them
exactly (``first_seq``, ``last_seq``, ``count``, and ``ranges`` when the dropped rows
were not contiguous) is added in their place. The drop is announced atomically with the
loss: both commit or neither does.
"""

from __future__ import annotations

import logging
import math
import sqlite3

import json

from towerd.icd import EVENT_OUTBOX_DROPPED
from towerd.seqranges import RANGES_PER_EVENT, dropped_events, dropped_ranges, merge_ranges

log = logging.getLogger(__name__)

_EVENT_RESERVE_BYTES = 4096
"""Room kept for each ``outbox.dropped`` event (with up to 64 ranges it is < 2 KiB)."""


def _announced(payload: bytes) -> list[tuple[int, int]]:
    """The seq ranges an event row names if it is an ``outbox.dropped`` ([] otherwise)."""
    try:
        ev = json.loads(payload)
    except ValueError:
        return []
    return (dropped_ranges(ev) if isinstance(ev, dict) else None) or []


class CapMixin:
    """The part of :class:`~towerd.outbox.sqlite.Outbox` that keeps it within
    ``max_records`` and ``max_bytes``."""

    def _over_cap(self, extra_records: int = 0, extra_bytes: int = 0) -> bool:
        return (self._count + extra_records > self._max_records
                or self._bytes + extra_bytes > self._max_bytes)

    def _enforce_cap(self, conn: sqlite3.Connection) -> None:
        """Drop the oldest rows until the store is within its cap less 1 % (so that a
        full store drops in chunks, not a few rows per add), with room for the
        ``outbox.dropped`` event(s) that name them, then add those events. An earlier
        announcement that is itself dropped is not lost: the new one names everything it
        named too (its own seq is among the dropped rows)."""
        if not self._over_cap():
            return
        reason = "max_records" if self._count > self._max_records else "max_bytes"
        max_records = self._max_records - self._max_records // 100
        max_bytes = self._max_bytes - self._max_bytes // 100
        runs: list[list[int]] = []
        announced: list[tuple[int, int]] = []  # named by announcements that are dropped now
        protected = merge_ranges([r for ranges in self._protected.values() for r in ranges])
        p = 0
        dropped = freed = 0
        cur = conn.execute("SELECT seq, length(payload), CASE WHEN kind = 'E' THEN payload END FROM records "
                           "ORDER BY seq")
        try:
            for seq, size, event_payload in cur:
                n_events = max(1, math.ceil((len(runs) + len(announced)) / RANGES_PER_EVENT))
                if (self._count - dropped + n_events <= max_records
                        and self._bytes - freed + n_events * _EVENT_RESERVE_BYTES <= max_bytes):
                    break
                while p < len(protected) and protected[p][1] < seq:
                    p += 1
                if p < len(protected) and protected[p][0] <= seq:
                    continue  # in flight to a central: it may arrive, so it is not "lost"
                if runs and runs[-1][1] == seq - 1:
                    runs[-1][1] = seq
                else:
                    runs.append([seq, seq])
                dropped += 1
                freed += size
                if event_payload is not None:
                    announced.extend(_announced(event_payload))
        finally:
            cur.close()
        if not dropped:
            self._limited_cap_warning()
            return
        self._tail.forget_to(runs[-1][1])
        conn.executemany("DELETE FROM records WHERE seq BETWEEN ? AND ?", [tuple(r) for r in runs])
        self._count -= dropped
        self._bytes -= freed
        self._dropped_total += dropped
        self._deleted_since_truncate += dropped
        conn.execute("UPDATE meta SET dropped_total = ?", (self._dropped_total,))
        named = merge_ranges([(a, b) for a, b in runs] + announced)
        for message, fields in dropped_events(named, reason):
            self._insert_event(conn, EVENT_OUTBOX_DROPPED, "error", message, **fields)
        log.error("outbox %s full (%s): dropped %d oldest records, seq %d..%d%s", self._path, reason, dropped,
                  runs[0][0], runs[-1][1], f" ({len(named)} ranges named with earlier announcements)"
                  if announced else "")
        if self._over_cap():
            self._limited_cap_warning()

    def _limited_cap_warning(self) -> None:
        """The cap cannot be met now: what is left is in flight to some central."""
        self._cap_exceeded += 1
        if self._cap_exceeded in (1, 10, 100) or self._cap_exceeded % 1000 == 0:
            log.warning("outbox %s: %d records held, over its cap, because %d are in flight to a central and "
                        "may be delivered (seen %d times)", self._path, self._count, self.protected_count(),
                        self._cap_exceeded)

