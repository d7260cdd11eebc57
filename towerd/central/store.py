"""Reference central's durable store of tower reports (SQLite, WAL, synchronous=FULL).

The key of every record is ``(tower_id, stream_id, seq)`` (ICD "Sequence numbers"); rows
are inserted with ``INSERT OR IGNORE`` so the duplicates that at-least-once delivery
produces are dropped here. Every ``store_*`` call is one committed transaction: the server
sends its ACK only after it returns.

Columns: ``stream_id`` is 16 lowercase hex digits (a u64 does not fit SQLite's signed
INTEGER); every ICD TRACKS field is a column of the same name. SQLite stores a float NaN
as NULL, so "unknown" float fields are NULL in the database; :meth:`CentralStore.tracks`
turns them back into NaN. ``lat_e7``/``lon_e7`` keep the ICD's -2^31 for unknown.
``seq`` beyond 2^63 - 1 (SQLite's INTEGER range) is refused with ValueError.
``rx_msg`` numbers the stored messages in the order they arrived (across restarts), so
the order of delivery (live before backlog after an outage) can be checked afterwards.

Losses: every ``outbox.dropped`` event is also written to table ``dropped`` (tower,
stream, the event's seq, ``first_seq``, ``last_seq``, ``count``, ``ranges``), and
:meth:`CentralStore.streams` gives per stream the seq ranges missing, those the tower
announced as dropped, and those missing without announcement. A tower that is still
replaying its backlog, or a central whose sharing rule filters records, also shows
missing ranges: a gap alone is not a loss (ICD "Transport").

Identity (ICD v1.1 IDENTITY records, :mod:`towerd.central.identity`): table
``identities``, keyed and acknowledged like the tracks.

Schema version (``PRAGMA user_version``): 3 (2 plus ``identities``). A version 0/1/2
file is upgraded in place.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from towerd.central import identity
from towerd.central.storetypes import (  # noqa: F401 - re-exported: the stores' shared types
    Pending,
    ReportStore,
    StoreResult,
    StreamSummary,
    event_json,
)
from towerd.clock import Clock, SystemClock
from towerd.errors import OutboxError
from towerd.icd import EVENT_OUTBOX_DROPPED, IDENTITY_RECORD_DTYPE, TRACK_RECORD_DTYPE
from towerd.seqranges import SEQ_MAX, dropped_ranges, subtract_ranges

log = logging.getLogger(__name__)

TRACK_FIELDS: tuple[str, ...] = TRACK_RECORD_DTYPE.names
_FLOAT_FIELDS = frozenset(n for n in TRACK_FIELDS if TRACK_RECORD_DTYPE.fields[n][0].kind == "f")
SCHEMA_VERSION = 3

_TRACK_COLUMNS = ("tower_id", "stream_id", "received_us", "replay", "rx_msg") + TRACK_FIELDS


def _track_column_sql(name: str) -> str:
    if name in _FLOAT_FIELDS:
        return f"{name} REAL"  # NULL when unknown (NaN)
    return f"{name} INTEGER NOT NULL"


_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS tracks ("
    "tower_id TEXT NOT NULL, stream_id TEXT NOT NULL, received_us INTEGER NOT NULL, "
    "replay INTEGER NOT NULL, rx_msg INTEGER NOT NULL DEFAULT 0, "
    + ", ".join(_track_column_sql(n) for n in TRACK_FIELDS)
    + ", PRIMARY KEY (tower_id, stream_id, seq)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS events ("
    "tower_id TEXT NOT NULL, stream_id TEXT NOT NULL, seq INTEGER NOT NULL, "
    "received_us INTEGER NOT NULL, replay INTEGER NOT NULL, rx_msg INTEGER NOT NULL DEFAULT 0, "
    "time_us INTEGER NOT NULL, code TEXT NOT NULL, severity TEXT NOT NULL, message TEXT NOT NULL, "
    "json TEXT NOT NULL, PRIMARY KEY (tower_id, stream_id, seq)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS dropped ("
    "tower_id TEXT NOT NULL, stream_id TEXT NOT NULL, event_seq INTEGER NOT NULL, "
    "first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL, count INTEGER NOT NULL, ranges TEXT NOT NULL, "
    "received_us INTEGER NOT NULL, PRIMARY KEY (tower_id, stream_id, event_seq)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS tracks_time ON tracks (time_us)",
    *identity.SQLITE_SCHEMA,
]
_UPGRADE_TO_2 = [
    "ALTER TABLE tracks ADD COLUMN rx_msg INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE events ADD COLUMN rx_msg INTEGER NOT NULL DEFAULT 0",
]


class CentralStore:
    """TRACKS records and EVENTS objects from every tower, de-duplicated by key.

    ``read_only``: open an existing store for reading (export) without changing it.
    Not thread-safe: use it from one thread at a time (it may be created in one thread
    and served from another, as ``serve_forever`` in a thread does)."""

    batch_records = 0  # one committed transaction per message, as before

    def __init__(self, path: str | Path, *, clock: Clock | None = None, read_only: bool = False) -> None:
        self._path = Path(path)
        self._clock = clock if clock is not None else SystemClock()
        self._read_only = read_only
        self.bad_dropped_events = 0
        try:
            if read_only:
                if not self._path.exists():
                    raise OutboxError(f"central store {self._path}: no such file")
                self._conn: sqlite3.Connection | None = sqlite3.connect(
                    f"file:{self._path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
            else:
                self._conn = sqlite3.connect(str(self._path), isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise OutboxError(f"central store {self._path}: cannot open: {exc}") from exc
        try:
            if read_only:
                version = self._conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise OutboxError(f"central store {self._path}: schema version {version}, this towerd knows "
                                      f"{SCHEMA_VERSION}")
                self._has_rx_msg = version >= 2
                self._rx_msg = 0
            else:
                self._initialise()
        except sqlite3.Error as exc:
            self._conn.close()
            self._conn = None
            raise OutboxError(f"central store {self._path}: cannot initialise: {exc}") from exc
        except BaseException:
            self._conn.close()
            self._conn = None
            raise

    def _initialise(self) -> None:
        conn = self._conn
        assert conn is not None
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise OutboxError(f"central store {self._path}: journal_mode {mode}, WAL required")
        conn.execute("PRAGMA synchronous=FULL")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise OutboxError(f"central store {self._path}: schema version {version}, this towerd knows "
                              f"{SCHEMA_VERSION}")
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        conn.execute("BEGIN IMMEDIATE")
        try:
            if version < 2 and "tracks" in tables:
                for stmt in _UPGRADE_TO_2:
                    conn.execute(stmt)
                log.info("central store %s upgraded to schema version %d", self._path, SCHEMA_VERSION)
            for stmt in _SCHEMA:
                conn.execute(stmt)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._has_rx_msg = True
        self._rx_msg = conn.execute(
            "SELECT max(coalesce((SELECT max(rx_msg) FROM tracks), 0), "
            "coalesce((SELECT max(rx_msg) FROM events), 0), "
            "coalesce((SELECT max(rx_msg) FROM identities), 0))").fetchone()[0]

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise OutboxError(f"central store {self._path} is closed")
        return self._conn

    def _insert(self, statements: list[tuple[str, list[tuple]]]) -> int:
        """Run the inserts in one committed transaction; returns the changes made by the
        first statement (the records that were new)."""
        conn = self._db()
        if self._read_only:
            raise OutboxError(f"central store {self._path} is open read-only")
        try:
            conn.execute("BEGIN IMMEDIATE")
            before = conn.total_changes
            conn.executemany(*statements[0])
            new = conn.total_changes - before
            for sql, rows in statements[1:]:
                if rows:
                    conn.executemany(sql, rows)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            except sqlite3.Error:
                log.exception("central store %s: rollback failed", self._path)
            raise OutboxError(f"central store {self._path}: insert failed: {exc}") from exc
        return new

    def _head(self, tower_id: str, stream_id: int, records: np.ndarray, dtype: np.dtype,
              replay: bool) -> tuple | None:
        """The leading columns of a message's rows (numbering the message in ``rx_msg``),
        or None when it holds no record; ValueError for a wrong array or a seq beyond
        SQLite's INTEGER range."""
        if records.dtype != dtype or records.ndim != 1:
            raise ValueError("records must be a 1-D array of the message's record dtype")
        if records.size == 0:
            return None
        if int(records["seq"].max()) > SEQ_MAX:
            raise ValueError("seq beyond SQLite's INTEGER range")
        self._rx_msg += 1
        return (tower_id, f"{stream_id:016x}", self._clock.utc_us(), int(bool(replay)), self._rx_msg)

    def store_tracks(self, tower_id: str, stream_id: int, records: np.ndarray, replay: bool) -> int:
        """Store TRACKS records (TRACK_RECORD_DTYPE, shape (n,)) durably; returns how many
        were new (the rest were duplicates)."""
        head = self._head(tower_id, stream_id, records, TRACK_RECORD_DTYPE, replay)
        if head is None:
            return 0
        rows = [head + tuple(r) for r in records.tolist()]
        sql = (f"INSERT OR IGNORE INTO tracks ({', '.join(_TRACK_COLUMNS)}) "
               f"VALUES ({', '.join('?' * len(_TRACK_COLUMNS))})")
        return self._insert([(sql, rows)])

    def store_events(self, tower_id: str, stream_id: int, events: list[dict], replay: bool,
                     encoded: Sequence[str] | None = None) -> int:
        """Store EVENTS objects (each with seq, time_us, code, severity, message) durably;
        the whole object is kept in ``json`` (``encoded``: each already as JSON text);
        ``outbox.dropped`` events are also recorded in ``dropped``. Returns how many were
        new."""
        if not events:
            return 0
        if max(ev["seq"] for ev in events) > SEQ_MAX:
            raise ValueError("seq beyond SQLite's INTEGER range")
        self._rx_msg += 1
        received_us = self._clock.utc_us()
        stream_hex = f"{stream_id:016x}"
        texts = encoded if encoded is not None else [event_json(ev) for ev in events]
        rows = [
            (tower_id, stream_hex, ev["seq"], received_us, int(bool(replay)), self._rx_msg, ev["time_us"],
             ev["code"], ev["severity"], ev["message"], text)
            for ev, text in zip(events, texts)
        ]
        drops = []
        for ev in events:
            if ev["code"] != EVENT_OUTBOX_DROPPED:
                continue
            ranges = dropped_ranges(ev)
            if ranges is None:
                self.bad_dropped_events += 1
                log.warning("central store: %s stream %s: outbox.dropped event seq %d does not name a valid range; "
                            "stored as an event only", tower_id, stream_hex, ev["seq"])
                continue
            drops.append((tower_id, stream_hex, ev["seq"], ev["first_seq"], ev["last_seq"], ev["count"],
                          json.dumps([list(r) for r in ranges]), received_us))
        sql = ("INSERT OR IGNORE INTO events (tower_id, stream_id, seq, received_us, replay, rx_msg, time_us, code, "
               "severity, message, json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
        drop_sql = ("INSERT OR IGNORE INTO dropped (tower_id, stream_id, event_seq, first_seq, last_seq, count, "
                    "ranges, received_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
        return self._insert([(sql, rows), (drop_sql, drops)])

    def store_identities(self, tower_id: str, stream_id: int, records: np.ndarray, replay: bool) -> int:
        """Store IDENTITY records (IDENTITY_RECORD_DTYPE, shape (n,)) durably; returns how
        many were new."""
        head = self._head(tower_id, stream_id, records, IDENTITY_RECORD_DTYPE, replay)
        if head is None:
            return 0
        sql = (f"INSERT OR IGNORE INTO identities ({', '.join(identity.COLUMNS)}) "
               f"VALUES ({', '.join('?' * len(identity.COLUMNS))})")
        return self._insert([(sql, identity.rows(records, head))])

    def store_many(self, items: Sequence[Pending]) -> list[StoreResult]:
        """Each message in its own transaction (:meth:`store_tracks`/:meth:`store_events`/
        :meth:`store_identities`)."""
        out: list[StoreResult] = []
        for item in items:
            try:
                if item.identities is not None:
                    out.append(self.store_identities(item.tower_id, item.stream_id, item.identities, item.replay))
                elif item.records is not None:
                    out.append(self.store_tracks(item.tower_id, item.stream_id, item.records, item.replay))
                else:
                    out.append(self.store_events(item.tower_id, item.stream_id, item.events or [], item.replay,
                                                 item.event_json))
            except OutboxError as exc:
                out.append(exc)
        return out

    def record_health(self, tower_id: str, health: dict) -> None:
        """HEALTH is not kept in the SQLite store (the server keeps the last one)."""

    # ---------------------------------------------------------------- reading

    def _row_dicts(self, cur: sqlite3.Cursor) -> Iterator[dict]:
        names = [d[0] for d in cur.description]
        for row in cur:
            d = dict(zip(names, row))
            d["stream_id"] = int(d["stream_id"], 16)
            d["replay"] = bool(d["replay"])
            yield d

    def _select(self, table: str, tower_id: str | None) -> list[dict]:
        conn = self._db()
        where, args = ("WHERE tower_id = ?", (tower_id,)) if tower_id is not None else ("", ())
        try:
            cur = conn.execute(f"SELECT * FROM {table} {where} ORDER BY tower_id, stream_id, seq", args)
            return list(self._row_dicts(cur))
        except sqlite3.Error as exc:
            raise OutboxError(f"central store {self._path}: query failed: {exc}") from exc

    def tracks(self, tower_id: str | None = None) -> list[dict]:
        """Stored TRACKS records as dicts (ICD field names plus tower_id, stream_id (int),
        received_us, replay (bool), rx_msg), ordered by tower, stream, seq; unknown floats
        are NaN."""
        out = self._select("tracks", tower_id)
        for d in out:
            for name in _FLOAT_FIELDS:
                if d[name] is None:
                    d[name] = math.nan
        return out

    def events(self, tower_id: str | None = None) -> list[dict]:
        """Stored EVENTS objects as dicts of the table's columns, ``json`` holding the
        whole object as received."""
        return self._select("events", tower_id)

    def identities(self, tower_id: str | None = None) -> list[dict]:
        """Stored IDENTITY records as dicts (ICD field names, text as str, plus tower_id,
        stream_id (int), received_us, replay (bool), rx_msg), ordered by tower, stream,
        seq; unknown floats are NaN. [] for a store made before identities existed."""
        if not self._has_table("identities"):
            return []
        out = self._select("identities", tower_id)
        for d in out:
            for name in identity.FLOAT_FIELDS:
                if d[name] is None:
                    d[name] = math.nan
        return out

    def _has_table(self, name: str) -> bool:
        try:
            return bool(self._db().execute("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?",
                                           (name,)).fetchone()[0])
        except sqlite3.Error as exc:
            raise OutboxError(f"central store {self._path}: query failed: {exc}") from exc

    def _count(self, table: str) -> int:
        try:
            return self._db().execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        except sqlite3.Error as exc:
            raise OutboxError(f"central store {self._path}: count failed: {exc}") from exc

    def count_tracks(self) -> int:
        return self._count("tracks")

    def count_events(self) -> int:
        return self._count("events")

    def count_identities(self) -> int:
        return self._count("identities") if self._has_table("identities") else 0

    def dropped(self, tower_id: str | None = None) -> list[dict]:
        """Every ``outbox.dropped`` announcement received: tower_id, stream_id (int),
        event_seq, first_seq, last_seq, count, ranges (list of [first, last])."""
        conn = self._db()
        where, args = ("WHERE tower_id = ?", (tower_id,)) if tower_id is not None else ("", ())
        try:
            rows = conn.execute("SELECT tower_id, stream_id, event_seq, first_seq, last_seq, count, ranges "
                                f"FROM dropped {where} ORDER BY tower_id, stream_id, event_seq", args).fetchall()
        except sqlite3.Error as exc:
            raise OutboxError(f"central store {self._path}: query failed: {exc}") from exc
        return [{"tower_id": t, "stream_id": int(s, 16), "event_seq": e, "first_seq": f, "last_seq": la,
                 "count": c, "ranges": json.loads(r)} for t, s, e, f, la, c, r in rows]

    def streams(self, tower_id: str | None = None, max_ranges: int = 10_000) -> list[StreamSummary]:
        """A :class:`StreamSummary` per (tower, stream) held (the records streams and the
        identity streams), with its missing, dropped and unexplained seq ranges."""
        conn = self._db()
        where, args = ("WHERE tower_id = ?", (tower_id,)) if tower_id is not None else ("", ())
        try:
            tables = ["tracks", "events"] + (["identities"] if self._has_table("identities") else [])
            heads = conn.execute(
                "SELECT tower_id, stream_id, count(*), min(seq), max(seq) FROM ("
                + " UNION ".join(f"SELECT tower_id, stream_id, seq FROM {t} {where}" for t in tables)
                + ") GROUP BY tower_id, stream_id ORDER BY tower_id, stream_id", args * len(tables)).fetchall()
            out = []
            for tower, stream_hex, n, first, last in heads:
                key = (tower, stream_hex) * len(tables)
                gap_sql = (
                    "SELECT seq + 1, nxt - 1 FROM (SELECT seq, LEAD(seq) OVER (ORDER BY seq) AS nxt FROM ("
                    + " UNION ".join(f"SELECT seq FROM {t} WHERE tower_id = ? AND stream_id = ?" for t in tables)
                    + ")) WHERE nxt > seq + 1 ORDER BY seq")
                missing: list[tuple[int, int]] = [(1, first - 1)] if first > 1 else []
                missing_records = last - n  # every seq in 1..last that is not held
                truncated = False
                for lo, hi in conn.execute(gap_sql, key):
                    if len(missing) >= max_ranges:
                        truncated = True
                        break
                    missing.append((lo, hi))
                dropped: list[tuple[int, int]] = []
                for (ranges,) in conn.execute("SELECT ranges FROM dropped WHERE tower_id = ? AND stream_id = ? "
                                              "ORDER BY first_seq", key[:2]):
                    dropped.extend((a, b) for a, b in json.loads(ranges))
                dropped.sort()
                out.append(StreamSummary(
                    tower_id=tower, stream_id=int(stream_hex, 16), records=n, first_seq=first, last_seq=last,
                    missing_records=missing_records, missing=tuple(missing), dropped=tuple(dropped),
                    unexplained=tuple(subtract_ranges(missing, dropped)), truncated=truncated))
        except sqlite3.Error as exc:
            raise OutboxError(f"central store {self._path}: query failed: {exc}") from exc
        return out

    def export(self, tower_id: str | None = None) -> Iterator[dict]:
        """Everything held, as JSON-ready dicts streamed from the database (never all in
        memory): every track (``"kind": "track"``, ICD fields, unknown floats as null),
        every event (``"kind": "event"`` plus the object as received under ``event``),
        every identity (``"kind": "identity"``, ICD v1.1 fields, text as strings), then a
        ``"kind": "stream"`` summary per records stream (see :class:`StreamSummary`).
        ``stream_id`` is 16 hex digits (a u64 does not fit a JSON number exactly)."""
        conn = self._db()
        where, args = ("WHERE tower_id = ?", (tower_id,)) if tower_id is not None else ("", ())
        try:
            cur = conn.execute(f"SELECT * FROM tracks {where} ORDER BY tower_id, stream_id, seq", args)
            names = [d[0] for d in cur.description]
            for row in cur:
                d = dict(zip(names, row))
                d["replay"] = bool(d["replay"])
                yield {"kind": "track", **d}
            cur = conn.execute("SELECT tower_id, stream_id, seq, received_us, replay, "
                               + ("rx_msg, " if self._has_rx_msg else "")
                               + f"json FROM events {where} ORDER BY tower_id, stream_id, seq", args)
            names = [d[0] for d in cur.description]
            for row in cur:
                d = dict(zip(names, row))
                d["replay"] = bool(d["replay"])
                d["event"] = json.loads(d.pop("json"))
                yield {"kind": "event", **d}
            if self._has_table("identities"):
                cur = conn.execute(f"SELECT {', '.join(identity.COLUMNS)} FROM identities {where} "
                                   "ORDER BY tower_id, stream_id, seq", args)
                yield from identity.export_lines(cur, identity.COLUMNS, lambda s: s)
            has_dropped = conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'dropped'").fetchone()[0]
        except sqlite3.Error as exc:
            raise OutboxError(f"central store {self._path}: export failed: {exc}") from exc
        if has_dropped:
            for summary in self.streams(tower_id):
                yield summary.as_json()

    def close(self) -> None:
        """Close the database. Idempotent."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
