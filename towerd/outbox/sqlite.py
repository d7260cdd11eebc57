"""Durable outbox: the tower's store of reports not yet acknowledged by every central.

Why SQLite: a committed transaction in WAL mode with ``synchronous=FULL`` survives a
power cut, a crash never corrupts the file, and rows can be streamed oldest first without
loading the backlog into memory (see docs/durability.md for what each ``synchronous`` setting may cost, measured).

A row is deleted when every configured central's bit is set ("deleted only when every
central that should receive it has acknowledged it"), or when the size cap drops it.

Transactions: ``add_tracks``/``add_event``/``ack`` work inside one open transaction that
:meth:`Outbox.commit` ends; the daemon loop commits every ``commit_interval_s`` so that
many records share one fsync (SD-card wear). ``pending()`` returns committed rows only, so
nothing is ever sent that a power cut could take back. An ACK's effect becomes durable at
the next commit: a crash in between only means those rows are sent again, and the
central drops duplicates by key.

Write failures (disk full, I/O error): the call raises :class:`~towerd.errors.OutboxError`
after rolling back; the records created since the last commit are lost (they were never
sent). The next transaction that succeeds starts with an ``outbox.write_failed`` event
saying how many were lost, so no loss is silent.

The other jobs live beside this module: :mod:`towerd.outbox.opening` (schema, migration,
integrity check, moving an unusable file aside), :mod:`towerd.outbox.acks` (one bit per
central), :mod:`towerd.outbox.cap` (size cap and ``outbox.dropped`` announcements),
:mod:`towerd.outbox.durability` (fsync policy, rollback after a failed write),
:mod:`towerd.outbox.settings` (the ``outbox:`` configuration block),
:mod:`towerd.outbox.rows` (a batch of track records stamped and inserted) and
:mod:`towerd.outbox.tail` (the newest committed rows in memory, for the live flow).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from towerd.clock import Clock
from towerd.errors import OutboxError
from towerd.icd import RECORD_SIZE, SEVERITIES, TRACK_RECORD_DTYPE
from towerd.outbox.acks import MAX_CENTRALS, SINGLE_CONSUMER, AckMixin
from towerd.outbox.cap import _EVENT_RESERVE_BYTES, CapMixin
from towerd.outbox.durability import _TRUNCATE_AFTER_DELETES, NORMAL_SYNC_INTERVAL_S, DurabilityMixin
from towerd.outbox.identity import IdentityMixin
from towerd.outbox.opening import SCHEMA_VERSION, OpeningMixin, _Unusable
from towerd.outbox.settings import DEFAULT_MAX_BYTES, DEFAULT_MAX_RECORDS, OutboxSettings
from towerd.outbox.rows import KIND_TRACK, insert_tracks, stamped
from towerd.outbox.tail import Tail
from towerd.seqranges import SEQ_MAX, subtract_range

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_RECORDS", "EVENT_WRITE_FAILED", "KIND_EVENT", "KIND_TRACK",
           "MAX_CENTRALS", "NORMAL_SYNC_INTERVAL_S", "SCHEMA_VERSION", "SINGLE_CONSUMER", "Outbox",
           "OutboxSettings"]

log = logging.getLogger(__name__)

KIND_EVENT = "E"
EVENT_WRITE_FAILED = "outbox.write_failed"

_SYNCHRONOUS = {"normal", "full", "extra"}


def _json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def _event_body(code: str, severity: str, message: str, fields: dict) -> bytes:
    """The JSON of an event without its seq and time_us (known only when it is stored)."""
    return _json({"code": code, "severity": severity, "message": message, **fields})


def _event_payload(seq: int, time_us: int, body: bytes) -> bytes:
    """The stored (and sent) JSON event object: ``{"seq", "time_us", ...body}``, the
    bytes json.dumps gives for the whole object, with the body encoded only once."""
    return b'{"seq":%d,"time_us":%d,%s' % (seq, time_us, body[1:])


class Outbox(OpeningMixin, AckMixin, CapMixin, DurabilityMixin, IdentityMixin):
    """SQLite-backed queue of TRACKS records and EVENTS objects keyed by ``seq``, with
    acknowledgement state per central; and of track identities (ICD v1.1) on a stream
    of their own (:mod:`towerd.outbox.identity`; :meth:`add_identities` is the entry
    point for Remote ID fusion).

    ``centrals``: the names of the centrals that must each acknowledge (or exclude) a
    record before it is deleted. ``None`` opens the outbox for a single consumer whose
    name is not checked (one central per tower); :meth:`attach` refuses a second one.

    ``exclusive``: hold the file's lock from opening to :meth:`close` (SQLite
    ``locking_mode=EXCLUSIVE``): each transaction then skips the file-lock system calls
    and the WAL's shared-memory index, but no other process can read the outbox while it
    is open. The daemon keeps the default (an operator may inspect its outbox); the load
    generator's emulated towers, whose files nobody else opens, use it. Durability is
    the same: ``synchronous`` alone decides it.

    Not thread-safe: use it from one thread at a time (the daemon's loop thread; it may
    be created in another thread before the loop starts)."""

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Clock,
        synchronous: str = "full",
        centrals: Sequence[str] | None = None,
        max_records: int = DEFAULT_MAX_RECORDS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        exclusive: bool = False,
    ) -> None:
        if synchronous.lower() not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {sorted(_SYNCHRONOUS)}, got {synchronous!r}")
        if not isinstance(max_records, int) or max_records < 2:
            raise ValueError(f"max_records must be an integer >= 2, got {max_records!r}")
        if not isinstance(max_bytes, int) or max_bytes < 2 * _EVENT_RESERVE_BYTES:
            raise ValueError(f"max_bytes must be an integer >= {2 * _EVENT_RESERVE_BYTES}, got {max_bytes!r}")
        if centrals is not None:
            names = list(centrals)
            if not names:
                raise ValueError("centrals is empty: pass None for an outbox with one unnamed consumer")
            if len(set(names)) != len(names) or any(not isinstance(n, str) or not n or n == SINGLE_CONSUMER
                                                    for n in names):
                raise ValueError(f"central names must be unique non-empty strings, got {names!r}")
            if len(names) > MAX_CENTRALS:
                raise ValueError(f"at most {MAX_CENTRALS} centrals per outbox, got {len(names)}")
        self._path = Path(path)
        self._clock = clock
        self._synchronous = synchronous.upper()
        self._exclusive = bool(exclusive)
        self._single = centrals is None
        self._wanted = [SINGLE_CONSUMER] if centrals is None else list(centrals)
        self._max_records = max_records
        self._max_bytes = max_bytes
        self._conn: sqlite3.Connection | None = None
        self._stream_id = 0
        self._bits: dict[str, int] = {}
        self._full_mask = 0
        self._attached: set[str] = set()
        # In-memory state; the ``_c_`` twins are its value at the last commit, restored
        # when a transaction is rolled back.
        self._next_seq = self._c_next_seq = 1
        self._count = self._c_count = 0
        self._bytes = self._c_bytes = 0
        self._dropped_total = self._c_dropped_total = 0
        # Rows built into a message for a central and not yet acknowledged by it: they
        # may be at that central already, so the size cap never drops them (an
        # announcement must name only what is really lost). In memory; bounded by the
        # senders' windows. Acknowledgements release them when they commit.
        self._protected: dict[str, list[tuple[int, int]]] = {}
        self._release_on_commit: list[tuple[str, int, int]] = []
        self._cap_exceeded = 0
        self._synced_next_seq = 1  # rows below it are on stable storage (normal mode)
        self._last_sync = float("-inf")
        self._deleted_since_truncate = 0
        self._peak_count = 0  # the largest backlog committed since the last truncation of the WAL
        self._generation = 0
        self._write_failures = 0
        self._last_error: str | None = None
        self._write_error: str | None = None  # set by a failed write, cleared by the next good commit/sync
        self._lost_unannounced = 0  # records lost by failed writes, not yet announced
        self._lost_error = ""
        self._note_in_txn = False
        self._tail = Tail()  # the newest committed rows, for the senders (towerd.outbox.tail)
        self._init_identity_state()
        try:
            self._conn = self._open()
        except _Unusable as exc:
            self._move_aside(str(exc))
            try:
                self._conn = self._open()
            except _Unusable as exc2:
                raise OutboxError(f"new outbox {self._path} is unusable: {exc2}") from exc2
        if self._synchronous == "NORMAL":
            self._sync_to_disk(directory=True)

    @classmethod
    def from_settings(cls, state_dir: str | Path, settings: OutboxSettings, *, clock: Clock,
                      centrals: Sequence[str] | None) -> Outbox:
        """The outbox ``settings`` describe, under ``state_dir``, for ``centrals``."""
        return cls(Path(state_dir) / settings.path, clock=clock, synchronous=settings.synchronous,
                   centrals=centrals, max_records=settings.max_records, max_bytes=settings.max_bytes)

    # ---------------------------------------------------------------- opening

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

    @property
    def committed_next_seq(self) -> int:
        """Every seq below this is committed (or was dropped, or acknowledged). With
        synchronous=normal, the rows up to here are not all sendable yet."""
        return self._c_next_seq

    @property
    def sendable_next_seq(self) -> int:
        """Rows below this may be sent (see :meth:`pending`); equal to
        :attr:`committed_next_seq` except with synchronous=normal."""
        return self._sendable_next_seq()

    @property
    def centrals(self) -> tuple[str, ...]:
        """The centrals this outbox keeps acknowledgement state for (``('*',)`` when
        opened for one unnamed consumer)."""
        return tuple(self._bits)

    @property
    def dropped_total(self) -> int:
        """Records dropped by the size cap over the life of this store (persistent)."""
        return self._dropped_total

    @property
    def generation(self) -> int:
        """Changes whenever the held rows changed in a way a sender's in-memory view
        cannot follow (a transaction rolled back after a write failure, or the set of
        centrals changed): a sender then reads what it owes from the outbox again."""
        return self._generation

    def health(self) -> dict:
        """The ICD HEALTH ``outbox`` object: pending, oldest_seq, next_seq, dropped_total;
        plus ``write_error`` (why the last write failed, null once a write has worked
        again: a full disk shows here while it lasts) and ``write_failures`` (in all)."""
        return {"pending": self.pending_count(), "oldest_seq": self.oldest_seq(), "next_seq": self._next_seq,
                "dropped_total": self._dropped_total, "write_error": self._write_error,
                "write_failures": self._write_failures}

    def stats(self) -> dict:
        """Counters (a copy): pending, bytes, max_records, max_bytes, dropped_total,
        write_failures, last_error, next_seq, committed_next_seq."""
        return {"pending": self._count, "bytes": self._bytes, "max_records": self._max_records,
                "max_bytes": self._max_bytes, "dropped_total": self._dropped_total,
                "write_failures": self._write_failures, "last_error": self._last_error,
                "next_seq": self._next_seq, "committed_next_seq": self._c_next_seq}

    # ---------------------------------------------------------------- writing

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise OutboxError(f"outbox {self._path} is closed")
        return self._conn

    def _snapshot(self) -> None:
        self._c_next_seq = self._next_seq
        self._c_count = self._count
        self._c_bytes = self._bytes
        self._c_dropped_total = self._dropped_total
        self._snapshot_identities()

    def _begin(self, conn: sqlite3.Connection) -> None:
        if not conn.in_transaction:
            conn.execute("BEGIN IMMEDIATE")
        if self._lost_unannounced and not self._note_in_txn:
            lost = self._lost_unannounced
            self._insert_event(conn, EVENT_WRITE_FAILED, "error",
                               f"outbox write failed ({self._lost_error}); {lost} records created before the "
                               "failure were lost before they were stored", lost=lost, error=self._lost_error)
            self._note_in_txn = True

    def _reserve(self, n: int) -> int:
        first = self._next_seq
        if first + n - 1 > SEQ_MAX:
            raise OutboxError(f"outbox {self._path}: seq space exhausted")
        return first

    def _insert_event(self, conn: sqlite3.Connection, code: str, severity: str, message: str,
                      time_us: int | None = None, **fields: object) -> int:
        return self._insert_encoded_event(conn, self._clock.utc_us() if time_us is None else time_us,
                                          _event_body(code, severity, message, fields))

    def _insert_encoded_event(self, conn: sqlite3.Connection, time_us: int, body: bytes) -> int:
        seq = self._reserve(1)
        payload = _event_payload(seq, time_us, body)
        conn.execute("INSERT INTO records (seq, kind, time_us, payload) VALUES (?, ?, ?, ?)",
                     (seq, KIND_EVENT, time_us, payload))
        conn.execute("UPDATE meta SET next_seq = ?", (seq + 1,))
        self._tail.added(seq, KIND_EVENT, payload, 1)
        self._next_seq = seq + 1
        self._count += 1
        self._bytes += len(payload)
        return seq

    def add_tracks(self, records: np.ndarray) -> tuple[int, int]:
        """Queue TRACKS records (1-D TRACK_RECORD_DTYPE, shape (n,)); a copy gets
        consecutive ``seq`` values. Returns ``(first, last)``; for n == 0 nothing is
        stored and the empty range ``(next_seq, next_seq - 1)`` is returned. Raises
        OutboxError when the database cannot be written (nothing is half-done)."""
        if not isinstance(records, np.ndarray) or records.ndim != 1 or (
                records.dtype is not TRACK_RECORD_DTYPE and records.dtype != TRACK_RECORD_DTYPE):
            raise ValueError("records must be a 1-D array of TRACK_RECORD_DTYPE")
        conn = self._db()
        n = int(records.size)
        if n == 0:
            return self._next_seq, self._next_seq - 1
        try:
            self._begin(conn)
            first = self._reserve(n)
            buf, times = stamped(records, first)
            insert_tracks(conn, first, buf, times)
            conn.execute("UPDATE meta SET next_seq = ?", (first + n,))
            self._tail.added(first, KIND_TRACK, buf, n)
            self._next_seq = first + n
            self._count += n
            self._bytes += n * RECORD_SIZE
            if self._count > self._max_records or self._bytes > self._max_bytes:
                self._enforce_cap(conn)
        except sqlite3.Error as exc:
            raise self._failed(conn, "add_tracks", exc) from exc
        return first, first + n - 1

    def add_event(self, code: str, severity: str, message: str, **fields: object) -> int:
        """Queue one EVENTS object ``{seq, time_us, code, severity, message, **fields}``;
        ``time_us`` defaults to now (UTC). Returns its ``seq``. Raises OutboxError when
        the database cannot be written."""
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
        try:
            body = _event_body(code, severity, message, fields)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"event fields are not JSON-serialisable: {exc}") from exc
        conn = self._db()
        try:
            self._begin(conn)
            seq = self._insert_encoded_event(conn, time_us, body)
            self._enforce_cap(conn)
        except sqlite3.Error as exc:
            raise self._failed(conn, "add_event", exc) from exc
        return seq

    def commit(self) -> None:
        """Make every add and ack since the last commit durable (one WAL fsync with
        synchronous=FULL). A no-op when nothing is open. Raises OutboxError on failure
        (after a rollback: the records created since the last commit are lost)."""
        conn = self._db()
        if not conn.in_transaction:
            return
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._failed(conn, "commit", exc) from exc
        self._tail.committed()
        self._write_error = None
        if self._note_in_txn:
            self._lost_unannounced = 0
            self._note_in_txn = False
        for central, lo, hi in self._release_on_commit:
            ranges = self._protected.get(central)
            if not ranges:
                continue
            a, b = ranges[0]
            if lo <= a <= hi and (len(ranges) == 1 or ranges[1][0] > hi):  # the usual: the oldest in flight
                if b <= hi:
                    del ranges[0]
                else:
                    ranges[0] = (hi + 1, b)
            else:
                self._protected[central] = subtract_range(ranges, lo, hi)
        self._release_on_commit.clear()
        self._snapshot()
        if self._count > self._peak_count:
            self._peak_count = self._count
        if (self._deleted_since_truncate >= _TRUNCATE_AFTER_DELETES and self._peak_count >= _TRUNCATE_AFTER_DELETES
                and self._count <= _TRUNCATE_AFTER_DELETES // 10):
            self._truncate_wal(conn)

    # ---------------------------------------------------------------- reading

    def pending(self, after_seq: int = 0, limit: int = 64, *, central: str | None = None,
                before_seq: int | None = None, recent: bool = False) -> list[tuple[int, str, bytes]]:
        """Up to ``limit`` committed rows with ``after_seq < seq < before_seq``, oldest
        first, as ``(seq, kind, payload)`` with kind 'T' (80-byte record) or 'E' (JSON).
        With ``central``: only rows that central still needs; without: every row held.
        With synchronous=normal only rows already fsynced are returned; the WAL is
        fsynced here at most once per NORMAL_SYNC_INTERVAL_S when there are others.
        ``recent``: rows this outbox committed lately are given from memory, as written,
        without a query (:mod:`towerd.outbox.tail`; for a sender's live rows, read right
        after their commit); otherwise they are read back from the file."""
        conn = self._db()
        hi = self._sendable_next_seq()
        if before_seq is not None:
            hi = min(hi, before_seq)
        lo = max(after_seq, 0)
        if central is not None or self._single:
            self._bit(central)  # an unknown central is an error, as below
        if recent and self._tail.end == self._c_next_seq:  # just committed: from memory, no query
            rows = self._tail.rows(lo, hi, limit)
            if rows is not None:
                return rows
        try:
            if central is None and not self._single:
                rows = conn.execute(
                    "SELECT seq, kind, payload FROM records WHERE seq > ? AND seq < ? ORDER BY seq LIMIT ?",
                    (lo, hi, limit)).fetchall()
            else:
                bit = self._bit(central)
                rows = conn.execute(
                    "SELECT seq, kind, payload FROM records WHERE seq > ? AND seq < ? AND done & ? = 0 "
                    "ORDER BY seq LIMIT ?", (lo, hi, bit, limit)).fetchall()
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox {self._path}: pending failed: {exc}") from exc
        return [(seq, kind, bytes(payload)) for seq, kind, payload in rows]

    def recent_tracks(self, after_seq: int, limit: int, *, central: str | None = None
                      ) -> tuple[int, int, bytes] | None:
        """The committed TRACKS records right after ``after_seq`` that this outbox holds
        in memory (:mod:`towerd.outbox.tail`: none acknowledged or excluded by any
        central yet), at most ``limit``, up to the next event, as ``(first_seq, count,
        the records back to back as stored)``; None when the row after ``after_seq`` is
        not one of them (then ask :meth:`pending`). For a sender's live rows: one buffer,
        no query, no row objects."""
        if central is not None or self._single:
            self._bit(central)
        if self._tail.end != self._c_next_seq:
            return None
        return self._tail.track_run(max(after_seq, 0), self._sendable_next_seq(), limit)

    def pending_count(self, central: str | None = None) -> int:
        """Rows held, including adds not yet committed. With ``central``: the rows that
        central still needs (a scan of the store: for diagnostics, not for every loop)."""
        conn = self._db()
        if central is None:
            return self._count
        bit = self._bit(central)
        try:
            return conn.execute("SELECT count(*) FROM records WHERE done & ? = 0", (bit,)).fetchone()[0]
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox {self._path}: pending_count failed: {exc}") from exc

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
