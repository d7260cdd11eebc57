"""Durable outbox: the tower's store of reports not yet acknowledged by the central.

Why SQLite: a committed transaction in WAL mode with ``synchronous=FULL`` survives a
power cut, a crash never corrupts the file, and rows can be streamed oldest first without
loading the backlog into memory (see ../shared/notes/uplink-and-security.md).

Layout (schema version 1):

- ``records(seq INTEGER PRIMARY KEY, kind TEXT 'T'|'E', time_us INTEGER, payload BLOB)``:
  ``payload`` is the 80-byte ICD TRACKS record with ``seq`` filled in (kind 'T') or the
  UTF-8 JSON event object (kind 'E'). ``seq`` is shared by both kinds, so within one
  stream the numbers are contiguous (ICD "Sequence numbers").
- ``meta``: one row with ``schema_version``, ``stream_id`` (16 lowercase hex digits,
  because a u64 does not fit SQLite's signed INTEGER), ``next_seq`` and ``created_us``.
  ``next_seq`` is updated in the same transaction as the inserts that consume it.

Transactions: ``add_tracks``/``add_event``/``ack`` work inside one open transaction that
:meth:`Outbox.commit` ends; the daemon loop commits every 100–200 ms so that many records
share one fsync (SD-card wear). ``pending()`` returns committed rows only, so nothing is
ever sent that a power cut could take back. An ACK's deletion becomes durable at the next
commit: a crash in between only means those rows are sent again, and the central drops
duplicates by key.

Opening: ``PRAGMA quick_check`` runs at start-up. A file whose content is not a usable
outbox (SQLite reports it corrupt or not a database, quick_check fails, or the schema is
not ours) is renamed aside to ``<name>.corrupt-<UTC timestamp>`` (with its -wal/-shm
files), logged at ERROR, and a new database with a new stream is created. Errors that are
not about the file's content (permissions, missing directory, I/O errors, a newer schema
version) raise :class:`~towerd.errors.OutboxError` instead: moving a good backlog aside
because of a mis-set permission would abandon it.

Not done yet (a later issue, do not rely on them): a size cap with dropping of the
oldest records and the ``outbox.dropped`` event the ICD requires when the store is full;
per-central acknowledgement state for towers with more than one central; WAL truncation
after a large drain beyond ``journal_size_limit``.
"""

from __future__ import annotations

import json
import logging
import secrets
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from towerd.clock import Clock
from towerd.errors import OutboxError
from towerd.icd import RECORD_SIZE, SEVERITIES, TRACK_RECORD_DTYPE

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
KIND_TRACK = "T"
KIND_EVENT = "E"
_SYNCHRONOUS = {"normal", "full", "extra"}
_JOURNAL_SIZE_LIMIT = 8 * 1024 * 1024
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26
_SEQ_MAX = 2**63 - 1  # SQLite INTEGER is signed 64-bit

_SCHEMA = """
CREATE TABLE meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    schema_version INTEGER NOT NULL,
    stream_id TEXT NOT NULL,
    next_seq INTEGER NOT NULL CHECK (next_seq >= 1),
    created_us INTEGER NOT NULL
);
CREATE TABLE records (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('T', 'E')),
    time_us INTEGER NOT NULL,
    payload BLOB NOT NULL
);
"""


class _Unusable(Exception):
    """The file's content is not a usable outbox; it is moved aside."""


class Outbox:
    """SQLite-backed queue of TRACKS records and EVENTS objects keyed by ``seq``.

    Not thread-safe: use it from one thread at a time (the daemon's loop thread; it may
    be created in another thread before the loop starts)."""

    def __init__(self, path: str | Path, *, clock: Clock, synchronous: str = "full") -> None:
        if synchronous.lower() not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {sorted(_SYNCHRONOUS)}, got {synchronous!r}")
        self._path = Path(path)
        self._clock = clock
        self._synchronous = synchronous.upper()
        self._conn: sqlite3.Connection | None = None
        self._stream_id = 0
        self._next_seq = 1
        self._committed_next_seq = 1  # rows with seq below this are committed
        self._count = 0
        try:
            self._conn = self._open()
        except _Unusable as exc:
            self._move_aside(str(exc))
            try:
                self._conn = self._open()
            except _Unusable as exc2:
                raise OutboxError(f"new outbox {self._path} is unusable: {exc2}") from exc2

    # ---------------------------------------------------------------- opening

    def _open(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(str(self._path), isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot open outbox {self._path}: {exc}") from exc
        try:
            self._prepare(conn)
        except _Unusable:
            conn.close()
            raise
        except sqlite3.DatabaseError as exc:
            conn.close()
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
                raise _Unusable(str(exc)) from exc
            raise OutboxError(f"cannot open outbox {self._path}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise OutboxError(f"outbox {self._path}: journal_mode is {mode}, WAL required")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute(f"PRAGMA journal_size_limit={_JOURNAL_SIZE_LIMIT}")
        check = [row[0] for row in conn.execute("PRAGMA quick_check").fetchall()]
        if check != ["ok"]:
            raise _Unusable("quick_check: " + "; ".join(str(c) for c in check[:5]))
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            self._create(conn)
        elif {"meta", "records"} <= tables:
            self._load(conn)
        else:
            raise _Unusable(f"not an outbox: tables {sorted(tables)}")

    def _create(self, conn: sqlite3.Connection) -> None:
        stream_id = 0
        while stream_id == 0:
            stream_id = secrets.randbits(64)
        conn.execute("BEGIN IMMEDIATE")
        try:
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            conn.execute(
                "INSERT INTO meta (id, schema_version, stream_id, next_seq, created_us) VALUES (1, ?, ?, 1, ?)",
                (SCHEMA_VERSION, f"{stream_id:016x}", self._clock.utc_us()),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._stream_id = stream_id
        self._next_seq = self._committed_next_seq = 1
        self._count = 0
        log.info("outbox %s created, new stream_id %016x", self._path, stream_id)

    def _load(self, conn: sqlite3.Connection) -> None:
        rows = conn.execute("SELECT schema_version, stream_id, next_seq FROM meta").fetchall()
        if len(rows) != 1:
            raise _Unusable(f"meta holds {len(rows)} rows, expected 1")
        version, stream_hex, next_seq = rows[0]
        if version != SCHEMA_VERSION:
            raise OutboxError(
                f"outbox {self._path} has schema version {version}, this towerd knows {SCHEMA_VERSION}"
            )
        try:
            stream_id = int(stream_hex, 16)
        except (TypeError, ValueError):
            raise _Unusable(f"meta stream_id {stream_hex!r} is not hex") from None
        if not 0 < stream_id < 2**64 or not isinstance(next_seq, int) or next_seq < 1:
            raise _Unusable(f"meta stream_id {stream_hex!r} / next_seq {next_seq!r} invalid")
        max_seq, count = conn.execute("SELECT max(seq), count(*) FROM records").fetchone()
        if max_seq is not None and max_seq >= next_seq:
            # Cannot happen with this code (same transaction); repair rather than reuse seq.
            log.error("outbox %s: next_seq %d <= stored seq %d, repairing", self._path, next_seq, max_seq)
            next_seq = max_seq + 1
            conn.execute("UPDATE meta SET next_seq = ?", (next_seq,))
        self._stream_id = stream_id
        self._next_seq = self._committed_next_seq = next_seq
        self._count = count
        log.info("outbox %s opened: stream_id %016x, next_seq %d, %d pending",
                 self._path, stream_id, next_seq, count)

    def _move_aside(self, reason: str) -> None:
        stamp = datetime.fromtimestamp(self._clock.utc_us() / 1e6, tz=timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        base = self._path.with_name(f"{self._path.name}.corrupt-{stamp}")
        target, n = base, 0
        while target.exists():
            n += 1
            target = base.with_name(f"{base.name}-{n}")
        try:
            self._path.rename(target)
            for suffix in ("-wal", "-shm"):
                side = self._path.with_name(self._path.name + suffix)
                if side.exists():
                    side.rename(target.with_name(target.name + suffix))
        except OSError as exc:
            raise OutboxError(f"outbox {self._path} is unusable ({reason}) and cannot be moved aside: {exc}") from exc
        log.error("outbox %s is unusable (%s): moved aside to %s; starting a new stream, "
                  "its unsent records are not delivered", self._path, reason, target)

    # ---------------------------------------------------------------- properties

    @property
    def path(self) -> Path:
        return self._path

    @property
    def stream_id(self) -> int:
        """The ICD stream id of this store (random nonzero u64, fixed for its life)."""
        return self._stream_id

    @property
    def uncommitted(self) -> bool:
        """True while adds or acks wait for :meth:`commit` (the loop commits on its timer
        when this is set, so that ack-only changes become durable too)."""
        return self._conn is not None and self._conn.in_transaction

    @property
    def next_seq(self) -> int:
        """The seq the next added record will get."""
        return self._next_seq

    # ---------------------------------------------------------------- writing

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise OutboxError(f"outbox {self._path} is closed")
        return self._conn

    def _begin(self, conn: sqlite3.Connection) -> None:
        if not conn.in_transaction:
            conn.execute("BEGIN IMMEDIATE")

    def _failed(self, conn: sqlite3.Connection, what: str, exc: sqlite3.Error) -> OutboxError:
        """Roll back the open transaction (its uncommitted adds are lost, and the caller is
        told so) and resynchronise the in-memory counters with the database."""
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._next_seq = self._committed_next_seq = conn.execute("SELECT next_seq FROM meta").fetchone()[0]
            self._count = conn.execute("SELECT count(*) FROM records").fetchone()[0]
        except sqlite3.Error as exc2:
            log.error("outbox %s: recovery after failed %s failed too: %s", self._path, what, exc2)
        return OutboxError(f"outbox {self._path}: {what} failed, uncommitted records lost: {exc}")

    def _reserve(self, n: int) -> int:
        first = self._next_seq
        if first + n - 1 > _SEQ_MAX:
            raise OutboxError(f"outbox {self._path}: seq space exhausted")
        return first

    def add_tracks(self, records: np.ndarray) -> tuple[int, int]:
        """Queue TRACKS records (1-D TRACK_RECORD_DTYPE, shape (n,)); a copy gets
        consecutive ``seq`` values. Returns ``(first, last)``; for n == 0 nothing is
        stored and the empty range ``(next_seq, next_seq - 1)`` is returned."""
        if not isinstance(records, np.ndarray) or records.dtype != TRACK_RECORD_DTYPE or records.ndim != 1:
            raise ValueError("records must be a 1-D array of TRACK_RECORD_DTYPE")
        conn = self._db()
        n = int(records.size)
        if n == 0:
            return self._next_seq, self._next_seq - 1
        first = self._reserve(n)
        rec = np.array(records, dtype=TRACK_RECORD_DTYPE, copy=True)
        rec["seq"] = np.arange(first, first + n, dtype=np.uint64)
        raw = rec.tobytes()
        rows = [
            (first + i, KIND_TRACK, t, raw[i * RECORD_SIZE:(i + 1) * RECORD_SIZE])
            for i, t in enumerate(rec["time_us"].tolist())
        ]
        try:
            self._begin(conn)
            conn.executemany("INSERT INTO records (seq, kind, time_us, payload) VALUES (?, ?, ?, ?)", rows)
            conn.execute("UPDATE meta SET next_seq = ?", (first + n,))
        except sqlite3.Error as exc:
            raise self._failed(conn, "add_tracks", exc) from exc
        self._next_seq = first + n
        self._count += n
        return first, first + n - 1

    def add_event(self, code: str, severity: str, message: str, **fields: object) -> int:
        """Queue one EVENTS object ``{seq, time_us, code, severity, message, **fields}``;
        ``time_us`` defaults to now (UTC). Returns its ``seq``."""
        if not isinstance(code, str) or not code:
            raise ValueError("event code must be a non-empty string")
        if severity not in SEVERITIES:
            raise ValueError(f"severity {severity!r} not one of {sorted(SEVERITIES)}")
        if not isinstance(message, str):
            raise ValueError("event message must be a string")
        if "seq" in fields:
            raise ValueError("seq is assigned by the outbox")
        time_us = fields.pop("time_us", None)
        if time_us is None:
            time_us = self._clock.utc_us()
        if not isinstance(time_us, int) or isinstance(time_us, bool):
            raise ValueError("time_us must be an integer")
        conn = self._db()
        seq = self._reserve(1)
        event = {"seq": seq, "time_us": time_us, "code": code, "severity": severity, "message": message, **fields}
        try:
            payload = json.dumps(event, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise ValueError(f"event fields are not JSON-serialisable: {exc}") from exc
        try:
            self._begin(conn)
            conn.execute("INSERT INTO records (seq, kind, time_us, payload) VALUES (?, ?, ?, ?)",
                         (seq, KIND_EVENT, time_us, payload))
            conn.execute("UPDATE meta SET next_seq = ?", (seq + 1,))
        except sqlite3.Error as exc:
            raise self._failed(conn, "add_event", exc) from exc
        self._next_seq = seq + 1
        self._count += 1
        return seq

    def commit(self) -> None:
        """Make every add and ack since the last commit durable (one WAL fsync with
        synchronous=FULL). A no-op when nothing is open."""
        conn = self._db()
        if not conn.in_transaction:
            return
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._failed(conn, "commit", exc) from exc
        self._committed_next_seq = self._next_seq

    def ack(self, first_seq: int, last_seq: int) -> int:
        """Delete the committed rows with ``first_seq <= seq <= last_seq`` (an ACK covers
        them). Rows added since the last commit are never touched: they cannot have been
        sent. Durable at the next commit. Returns how many rows were deleted."""
        conn = self._db()
        if first_seq > last_seq:
            return 0
        hi = min(last_seq, self._committed_next_seq - 1, _SEQ_MAX)
        lo = max(first_seq, 1)
        if lo > hi:
            return 0
        try:
            self._begin(conn)
            cur = conn.execute("DELETE FROM records WHERE seq BETWEEN ? AND ?", (lo, hi))
        except sqlite3.Error as exc:
            raise self._failed(conn, "ack", exc) from exc
        self._count -= cur.rowcount
        return cur.rowcount

    # ---------------------------------------------------------------- reading

    def pending(self, after_seq: int = 0, limit: int = 64) -> list[tuple[int, str, bytes]]:
        """Up to ``limit`` committed, unacknowledged rows with ``seq > after_seq``, oldest
        first, as ``(seq, kind, payload)`` with kind 'T' (80-byte record) or 'E' (JSON)."""
        conn = self._db()
        try:
            rows = conn.execute(
                "SELECT seq, kind, payload FROM records WHERE seq > ? AND seq < ? ORDER BY seq LIMIT ?",
                (max(after_seq, 0), self._committed_next_seq, limit),
            ).fetchall()
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox {self._path}: pending failed: {exc}") from exc
        return [(seq, kind, bytes(payload)) for seq, kind, payload in rows]

    def pending_count(self) -> int:
        """Rows held and not yet acknowledged, including adds not yet committed."""
        self._db()
        return self._count

    def oldest_seq(self) -> int | None:
        """The lowest seq held (committed or not), or None when empty."""
        conn = self._db()
        try:
            return conn.execute("SELECT min(seq) FROM records").fetchone()[0]
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox {self._path}: oldest_seq failed: {exc}") from exc

    # ---------------------------------------------------------------- closing

    def close(self) -> None:
        """Commit what is open and close the database. Idempotent."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if conn.in_transaction:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox {self._path}: final commit failed: {exc}") from exc
        finally:
            conn.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
