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
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
from pathlib import Path

import numpy as np

from towerd.clock import Clock, SystemClock
from towerd.errors import OutboxError
from towerd.icd import TRACK_RECORD_DTYPE

log = logging.getLogger(__name__)

TRACK_FIELDS: tuple[str, ...] = TRACK_RECORD_DTYPE.names
_FLOAT_FIELDS = frozenset(n for n in TRACK_FIELDS if TRACK_RECORD_DTYPE.fields[n][0].kind == "f")
_SEQ_MAX = 2**63 - 1

_TRACK_COLUMNS = ("tower_id", "stream_id", "received_us", "replay") + TRACK_FIELDS


def _track_column_sql(name: str) -> str:
    if name in _FLOAT_FIELDS:
        return f"{name} REAL"  # NULL when unknown (NaN)
    return f"{name} INTEGER NOT NULL"


_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS tracks ("
    "tower_id TEXT NOT NULL, stream_id TEXT NOT NULL, received_us INTEGER NOT NULL, "
    "replay INTEGER NOT NULL, "
    + ", ".join(_track_column_sql(n) for n in TRACK_FIELDS)
    + ", PRIMARY KEY (tower_id, stream_id, seq)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS events ("
    "tower_id TEXT NOT NULL, stream_id TEXT NOT NULL, seq INTEGER NOT NULL, "
    "received_us INTEGER NOT NULL, replay INTEGER NOT NULL, time_us INTEGER NOT NULL, "
    "code TEXT NOT NULL, severity TEXT NOT NULL, message TEXT NOT NULL, json TEXT NOT NULL, "
    "PRIMARY KEY (tower_id, stream_id, seq)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS tracks_time ON tracks (time_us)",
]


class CentralStore:
    """TRACKS records and EVENTS objects from every tower, de-duplicated by key.

    Not thread-safe: use it from one thread at a time (it may be created in one thread
    and served from another, as ``serve_forever`` in a thread does)."""

    def __init__(self, path: str | Path, *, clock: Clock | None = None) -> None:
        self._path = Path(path)
        self._clock = clock if clock is not None else SystemClock()
        try:
            self._conn: sqlite3.Connection | None = sqlite3.connect(
                str(self._path), isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise OutboxError(f"central store {self._path}: cannot open: {exc}") from exc
        try:
            mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise OutboxError(f"central store {self._path}: journal_mode {mode}, WAL required")
            self._conn.execute("PRAGMA synchronous=FULL")
            for stmt in _SCHEMA:
                self._conn.execute(stmt)
        except sqlite3.Error as exc:
            self._conn.close()
            self._conn = None
            raise OutboxError(f"central store {self._path}: cannot initialise: {exc}") from exc
        except BaseException:
            self._conn.close()
            self._conn = None
            raise

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise OutboxError(f"central store {self._path} is closed")
        return self._conn

    def _insert(self, sql: str, rows: list[tuple]) -> int:
        conn = self._db()
        before = conn.total_changes
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(sql, rows)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            except sqlite3.Error:
                log.exception("central store %s: rollback failed", self._path)
            raise OutboxError(f"central store {self._path}: insert failed: {exc}") from exc
        return conn.total_changes - before

    def store_tracks(self, tower_id: str, stream_id: int, records: np.ndarray, replay: bool) -> int:
        """Store TRACKS records (TRACK_RECORD_DTYPE, shape (n,)) durably; returns how many
        were new (the rest were duplicates)."""
        if records.dtype != TRACK_RECORD_DTYPE or records.ndim != 1:
            raise ValueError("records must be a 1-D array of TRACK_RECORD_DTYPE")
        if records.size == 0:
            return 0
        if int(records["seq"].max()) > _SEQ_MAX:
            raise ValueError("seq beyond SQLite's INTEGER range")
        head = (tower_id, f"{stream_id:016x}", self._clock.utc_us(), int(bool(replay)))
        rows = [head + tuple(r) for r in records.tolist()]
        sql = (f"INSERT OR IGNORE INTO tracks ({', '.join(_TRACK_COLUMNS)}) "
               f"VALUES ({', '.join('?' * len(_TRACK_COLUMNS))})")
        return self._insert(sql, rows)

    def store_events(self, tower_id: str, stream_id: int, events: list[dict], replay: bool) -> int:
        """Store EVENTS objects (each with seq, time_us, code, severity, message) durably;
        the whole object is kept in ``json``. Returns how many were new."""
        if not events:
            return 0
        if max(ev["seq"] for ev in events) > _SEQ_MAX:
            raise ValueError("seq beyond SQLite's INTEGER range")
        received_us = self._clock.utc_us()
        stream_hex = f"{stream_id:016x}"
        rows = [
            (tower_id, stream_hex, ev["seq"], received_us, int(bool(replay)), ev["time_us"], ev["code"],
             ev["severity"], ev["message"], json.dumps(ev, ensure_ascii=False, separators=(",", ":")))
            for ev in events
        ]
        sql = ("INSERT OR IGNORE INTO events (tower_id, stream_id, seq, received_us, replay, time_us, code, "
               "severity, message, json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
        return self._insert(sql, rows)

    def _select(self, table: str, tower_id: str | None) -> list[dict]:
        conn = self._db()
        where, args = ("WHERE tower_id = ?", (tower_id,)) if tower_id is not None else ("", ())
        try:
            cur = conn.execute(f"SELECT * FROM {table} {where} ORDER BY tower_id, stream_id, seq", args)
            names = [d[0] for d in cur.description]
            rows = cur.fetchall()
        except sqlite3.Error as exc:
            raise OutboxError(f"central store {self._path}: query failed: {exc}") from exc
        out = []
        for row in rows:
            d = dict(zip(names, row))
            d["stream_id"] = int(d["stream_id"], 16)
            d["replay"] = bool(d["replay"])
            out.append(d)
        return out

    def tracks(self, tower_id: str | None = None) -> list[dict]:
        """Stored TRACKS records as dicts (ICD field names plus tower_id, stream_id (int),
        received_us, replay (bool)), ordered by tower, stream, seq; unknown floats are NaN."""
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

    def _count(self, table: str) -> int:
        try:
            return self._db().execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        except sqlite3.Error as exc:
            raise OutboxError(f"central store {self._path}: count failed: {exc}") from exc

    def count_tracks(self) -> int:
        return self._count("tracks")

    def count_events(self) -> int:
        return self._count("events")

    def close(self) -> None:
        """Close the database. Idempotent."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
