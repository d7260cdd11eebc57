"""Reading the PostgreSQL store: records, events, identities, HEALTH history, drop
announcements, the per-stream summaries and the JSON lines export (the part of
:class:`towerd.central.pgstore.PgCentralStore` that only reads)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

from towerd.central import identity
from towerd.central.pgschema import _FLOAT_FIELDS, TRACK_COLUMNS, _locked, _unsigned
from towerd.central.storetypes import StreamSummary
from towerd.errors import OutboxError
from towerd.seqranges import subtract_ranges

try:
    import psycopg
except ImportError:  # pragma: no cover - the extra is not installed
    psycopg = None


class PgReadMixin:
    """The reading half of :class:`~towerd.central.pgstore.PgCentralStore`."""

    @_locked
    def _query(self, sql: str, args: Sequence = ()) -> list[tuple]:
        conn = self._db()
        try:
            rows = conn.execute(sql, args).fetchall()
            conn.rollback()
            return rows
        except psycopg.Error as exc:
            if conn.broken:
                self._drop_conn()
            else:
                conn.rollback()
            raise OutboxError(f"central store ({self._where}): query failed: {exc}") from exc

    @staticmethod
    def _where_tower(tower_id: str | None) -> tuple[str, tuple]:
        return ("WHERE tower_id = %s", (tower_id,)) if tower_id is not None else ("", ())

    def tracks(self, tower_id: str | None = None) -> list[dict]:
        """Stored TRACKS records as dicts (as :meth:`CentralStore.tracks`: stream_id an int,
        unknown floats NaN), ordered by tower, stream, seq."""
        where, args = self._where_tower(tower_id)
        rows = self._query(f"SELECT {', '.join(TRACK_COLUMNS)} FROM tracks {where} "
                           "ORDER BY tower_id, stream_id, seq", args)
        out = []
        for row in rows:
            d = dict(zip(TRACK_COLUMNS, row))
            d["stream_id"] = _unsigned(d["stream_id"])
            for name in _FLOAT_FIELDS:
                if d[name] is None:
                    d[name] = math.nan
            out.append(d)
        return out

    def events(self, tower_id: str | None = None) -> list[dict]:
        """Stored EVENTS objects: the table's columns, ``event`` the object as received."""
        where, args = self._where_tower(tower_id)
        cols = ("tower_id", "stream_id", "seq", "received_us", "replay", "rx_msg", "time_us", "code", "severity",
                "message", "event")
        rows = self._query(f"SELECT {', '.join(cols)} FROM events {where} ORDER BY tower_id, stream_id, seq", args)
        out = []
        for row in rows:
            d = dict(zip(cols, row))
            d["stream_id"] = _unsigned(d["stream_id"])
            out.append(d)
        return out

    def count_tracks(self) -> int:
        return self._query("SELECT count(*) FROM tracks")[0][0]

    def count_events(self) -> int:
        return self._query("SELECT count(*) FROM events")[0][0]

    def identities(self, tower_id: str | None = None) -> list[dict]:
        """Stored IDENTITY records as dicts (as :meth:`CentralStore.identities`)."""
        if not self._has_identities:
            return []
        where, args = self._where_tower(tower_id)
        rows = self._query(f"SELECT {', '.join(identity.COLUMNS)} FROM identities {where} "
                           "ORDER BY tower_id, stream_id, seq", args)
        out = []
        for row in rows:
            d = dict(zip(identity.COLUMNS, row))
            d["stream_id"] = _unsigned(d["stream_id"])
            for name in identity.FLOAT_FIELDS:
                if d[name] is None:
                    d[name] = math.nan
            out.append(d)
        return out

    def health_history(self, tower_id: str | None = None) -> Iterator[dict]:
        """Every HEALTH object stored (for ``tower_id``, or every tower), oldest first per
        tower: ``{"kind": "health", "tower_id", "received_us", "health": object}``
        (``towerd central export --health``)."""
        where, args = self._where_tower(tower_id)
        rows = self._query(f"SELECT tower_id, received_us, health FROM health {where} "
                           "ORDER BY tower_id, received_us", args)
        for t, r, h in rows:
            yield {"kind": "health", "tower_id": t, "received_us": r, "health": h}

    def dropped(self, tower_id: str | None = None) -> list[dict]:
        """Every ``outbox.dropped`` announcement received (as :meth:`CentralStore.dropped`)."""
        where, args = self._where_tower(tower_id)
        rows = self._query("SELECT tower_id, stream_id, event_seq, first_seq, last_seq, count, ranges FROM dropped "
                           f"{where} ORDER BY tower_id, stream_id, event_seq", args)
        return [{"tower_id": t, "stream_id": _unsigned(s), "event_seq": e, "first_seq": f, "last_seq": la,
                 "count": c, "ranges": r} for t, s, e, f, la, c, r in rows]

    def streams(self, tower_id: str | None = None, max_ranges: int = 10_000) -> list[StreamSummary]:
        """A :class:`StreamSummary` per (tower, stream), as the SQLite store gives."""
        where, args = self._where_tower(tower_id)
        heads = self._query(
            "SELECT tower_id, stream_id, count(*), min(seq), max(seq) FROM "
            f"(SELECT tower_id, stream_id, seq FROM tracks {where} "
            f"UNION SELECT tower_id, stream_id, seq FROM events {where}"
            + (f" UNION SELECT tower_id, stream_id, seq FROM identities {where}" if self._has_identities else "")
            + ") u GROUP BY tower_id, stream_id ORDER BY tower_id, stream_id",
            args * (3 if self._has_identities else 2))
        gap_sql = ("SELECT seq + 1, nxt - 1 FROM (SELECT seq, lead(seq) OVER (ORDER BY seq) AS nxt FROM "
                   "(SELECT seq FROM tracks WHERE tower_id = %s AND stream_id = %s "
                   "UNION SELECT seq FROM events WHERE tower_id = %s AND stream_id = %s"
                   + (" UNION SELECT seq FROM identities WHERE tower_id = %s AND stream_id = %s"
                      if self._has_identities else "")
                   + ") u) g WHERE nxt > seq + 1 ORDER BY seq LIMIT %s")
        out = []
        for tower, sid, n, first, last in heads:
            key = (tower, sid)
            missing: list[tuple[int, int]] = [(1, first - 1)] if first > 1 else []
            gaps = self._query(gap_sql, key * (3 if self._has_identities else 2) + (max_ranges + 1,))
            truncated = len(missing) + len(gaps) > max_ranges
            missing.extend((lo, hi) for lo, hi in gaps[:max_ranges - len(missing)])
            dropped: list[tuple[int, int]] = []
            for (ranges,) in self._query("SELECT ranges FROM dropped WHERE tower_id = %s AND stream_id = %s "
                                         "ORDER BY first_seq", key):
                dropped.extend((a, b) for a, b in ranges)
            dropped.sort()
            out.append(StreamSummary(
                tower_id=tower, stream_id=_unsigned(sid), records=n, first_seq=first, last_seq=last,
                missing_records=last - n, missing=tuple(missing), dropped=tuple(dropped),
                unexplained=tuple(subtract_ranges(missing, dropped)), truncated=truncated))
        return out

    def export(self, tower_id: str | None = None) -> Iterator[dict]:
        """Everything held, streamed with a server-side cursor, in the SQLite store's JSON
        lines shape: tracks, events, then one summary per stream."""
        where, args = self._where_tower(tower_id)
        with self._lock:  # held while the lines are read: the connection is shared
            conn = self._db()
            try:
                with conn.transaction():
                    with conn.cursor(name="towerd_export_tracks") as cur:
                        cur.execute(f"SELECT {', '.join(TRACK_COLUMNS)} FROM tracks {where} "
                                    "ORDER BY tower_id, stream_id, seq", args)
                        for row in cur:
                            d = dict(zip(TRACK_COLUMNS, row))
                            d["stream_id"] = f"{_unsigned(d['stream_id']):016x}"
                            yield {"kind": "track", **d}
                    with conn.cursor(name="towerd_export_events") as cur:
                        cur.execute("SELECT tower_id, stream_id, seq, received_us, replay, rx_msg, event FROM events "
                                    f"{where} ORDER BY tower_id, stream_id, seq", args)
                        for t, s, q, r, rp, rx, ev in cur:
                            yield {"kind": "event", "tower_id": t, "stream_id": f"{_unsigned(s):016x}", "seq": q,
                                   "received_us": r, "replay": rp, "rx_msg": rx, "event": ev}
                    if self._has_identities:
                        with conn.cursor(name="towerd_export_identities") as cur:
                            cur.execute(f"SELECT {', '.join(identity.COLUMNS)} FROM identities {where} "
                                        "ORDER BY tower_id, stream_id, seq", args)
                            yield from identity.export_lines(cur, identity.COLUMNS, lambda s: f"{_unsigned(s):016x}")
            except psycopg.Error as exc:
                raise OutboxError(f"central store ({self._where}): export failed: {exc}") from exc
        for summary in self.streams(tower_id):
            yield summary.as_json()
