"""Durable outbox: the tower's store of reports not yet acknowledged by every central.

Why SQLite: a committed transaction in WAL mode with ``synchronous=FULL`` survives a
power cut, a crash never corrupts the file, and rows can be streamed oldest first without
loading the backlog into memory (see docs/durability.md for what each ``synchronous`` setting may cost, measured).

Layout (schema version 2; a version 1 file is upgraded in place when opened):

- ``records(seq INTEGER PRIMARY KEY, kind TEXT 'T'|'E', time_us INTEGER, payload BLOB,
  done INTEGER)``: ``payload`` is the 80-byte ICD TRACKS record with ``seq`` filled in
  (kind 'T') or the UTF-8 JSON event object (kind 'E'). ``seq`` is shared by both kinds,
  so within one stream the numbers are contiguous (ICD "Sequence numbers"). ``done`` is
  a bit set: bit *i* is set once the central holding bit *i* needs nothing more of the
  row (it acknowledged it, or its sharing rule excludes it).
- ``centrals(name, bit)``: which bit each configured central owns. Bits of centrals no
  longer configured are cleared when the outbox is opened; a new central starts with
  its bit clear on every held row, so it receives what is still held.
- ``meta``: one row with ``schema_version``, ``stream_id`` (16 lowercase hex digits,
  because a u64 does not fit SQLite's signed INTEGER), ``next_seq``, ``created_us`` and
  ``dropped_total``. ``next_seq`` is updated in the same transaction as the inserts that
  consume it.

A row is deleted when every configured central's bit is set ("deleted only when every
central that should receive it has acknowledged it"), or when the size cap drops it.

Transactions: ``add_tracks``/``add_event``/``ack`` work inside one open transaction that
:meth:`Outbox.commit` ends; the daemon loop commits every ``commit_interval_s`` so that
many records share one fsync (SD-card wear). ``pending()`` returns committed rows only, so
nothing is ever sent that a power cut could take back. An ACK's effect becomes durable at
the next commit: a crash in between only means those rows are sent again, and the
central drops duplicates by key.

Size cap: ``max_records`` rows and ``max_bytes`` bytes of payload, counted from the
database itself when it is opened (so a restart does not reset the accounting) and kept
in step with every insert and delete. When an add would exceed either, the oldest rows
are deleted in the same transaction and an EVENTS object ``outbox.dropped`` naming them
exactly (``first_seq``, ``last_seq``, ``count``, and ``ranges`` when the dropped rows
were not contiguous) is added in their place. The drop is announced atomically with the
loss: both commit or neither does.

``synchronous=normal`` would let a power cut roll back commits whose records were
already sent and acknowledged; the restarted tower would then give their seqs to new
records, which the central would drop as duplicates. So in that mode the outbox fsyncs
the WAL itself at most once per second and hands out only synced rows for sending: a
power cut then costs at most the last second of unsent records, never a seq a central
has seen. (With ``full``/``extra`` SQLite fsyncs every commit and committed = sendable.)

Write failures (disk full, I/O error): the call raises :class:`~towerd.errors.OutboxError`
after rolling back; the records created since the last commit are lost (they were never
sent). The next transaction that succeeds starts with an ``outbox.write_failed`` event
saying how many were lost, so no loss is silent.

Opening: ``PRAGMA quick_check`` runs at start-up. A file whose content is not a usable
outbox (SQLite reports it corrupt or not a database, quick_check fails, or the schema is
not ours) is renamed aside to ``<name>.corrupt-<UTC timestamp>`` (with its -wal/-shm
files), logged at ERROR, and a new database with a new stream is created. Errors that are
not about the file's content (permissions, missing directory, I/O errors, a newer schema
version) raise :class:`~towerd.errors.OutboxError` instead: moving a good backlog aside
because of a mis-set permission would abandon it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np

from towerd.clock import Clock
from towerd.errors import ConfigError, OutboxError
from towerd.icd import EVENT_OUTBOX_DROPPED, RECORD_SIZE, SEVERITIES, TRACK_RECORD_DTYPE
from towerd.schema import spec

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
KIND_TRACK = "T"
KIND_EVENT = "E"
EVENT_WRITE_FAILED = "outbox.write_failed"
DEFAULT_MAX_RECORDS = 1_000_000
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
MAX_CENTRALS = 32
SINGLE_CONSUMER = "*"
"""The consumer name used when the outbox is opened without central names."""

_SYNCHRONOUS = {"normal", "full", "extra"}
_JOURNAL_SIZE_LIMIT = 8 * 1024 * 1024
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26
_SEQ_MAX = 2**63 - 1  # SQLite INTEGER is signed 64-bit
_RANGES_PER_EVENT = 64
_EVENT_RESERVE_BYTES = 4096
"""Room kept for each ``outbox.dropped`` event (with up to 64 ranges it is < 2 KiB)."""
_TRUNCATE_AFTER_DELETES = 10_000
"""After this many deletions, once the backlog is small, the WAL is truncated."""
NORMAL_SYNC_INTERVAL_S = 1.0
"""With synchronous=normal, the WAL is fsynced by the outbox at most this often, and only
synced records are handed out for sending (see :meth:`Outbox.pending`)."""

_SCHEMA = """
CREATE TABLE meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    schema_version INTEGER NOT NULL,
    stream_id TEXT NOT NULL,
    next_seq INTEGER NOT NULL CHECK (next_seq >= 1),
    created_us INTEGER NOT NULL,
    dropped_total INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE records (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('T', 'E')),
    time_us INTEGER NOT NULL,
    payload BLOB NOT NULL,
    done INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE centrals (
    name TEXT PRIMARY KEY,
    bit INTEGER NOT NULL UNIQUE CHECK (bit BETWEEN 0 AND 62)
);
"""

_UPGRADE_1_TO_2 = """
ALTER TABLE records ADD COLUMN done INTEGER NOT NULL DEFAULT 0;
ALTER TABLE meta ADD COLUMN dropped_total INTEGER NOT NULL DEFAULT 0;
CREATE TABLE centrals (
    name TEXT PRIMARY KEY,
    bit INTEGER NOT NULL UNIQUE CHECK (bit BETWEEN 0 AND 62)
);
UPDATE meta SET schema_version = 2;
"""


@dataclass(frozen=True)
class OutboxSettings:
    """The ``outbox:`` block of the configuration (a superset of the walking skeleton's
    OutboxConfig: same keys plus the size cap)."""

    path: str = spec("outbox.sqlite", doc="record store, relative to state_dir")
    synchronous: Literal["full", "normal", "extra"] = spec(
        "full", doc="full/extra: a committed record survives a power cut; normal: never corrupt, but the "
        "commits since the last checkpoint may be lost on power loss (not on a crash); see docs/durability.md")
    commit_interval_s: float = spec(0.02, doc="longest a record waits for its commit", unit="s", lo=0.0, hi=10.0)
    max_records: int = spec(DEFAULT_MAX_RECORDS, doc="records held at most; when full the oldest are dropped "
                            "and an outbox.dropped event names them", lo=1000, hi=100_000_000)
    max_bytes: int = spec(DEFAULT_MAX_BYTES, doc="payload bytes held at most (the file is about 1.3 times "
                          "this, see docs/durability.md)", unit="bytes", lo=1_000_000, hi=2**40)


class _Unusable(Exception):
    """The file's content is not a usable outbox; it is moved aside."""


def _merge_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, non-overlapping, non-adjacent inclusive ranges covering ``ranges``."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _subtract_range(ranges: list[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int]]:
    """``ranges`` (sorted) without the seqs ``lo..hi``."""
    out: list[tuple[int, int]] = []
    for a, b in ranges:
        if b < lo or a > hi:
            out.append((a, b))
            continue
        if a < lo:
            out.append((a, lo - 1))
        if b > hi:
            out.append((hi + 1, b))
    return out


def _announced_ranges(payload: bytes) -> list[tuple[int, int]]:
    """The seq ranges an ``outbox.dropped`` event row names ([] for any other event)."""
    try:
        ev = json.loads(payload)
    except ValueError:
        return []
    if not isinstance(ev, dict) or ev.get("code") != EVENT_OUTBOX_DROPPED:
        return []
    ranges = ev.get("ranges") or [[ev.get("first_seq"), ev.get("last_seq")]]
    return [(int(a), int(b)) for a, b in ranges if isinstance(a, int) and isinstance(b, int) and a <= b]


def _json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


class Outbox:
    """SQLite-backed queue of TRACKS records and EVENTS objects keyed by ``seq``, with
    acknowledgement state per central.

    ``centrals``: the names of the centrals that must each acknowledge (or exclude) a
    record before it is deleted. ``None`` opens the outbox for a single consumer whose
    name is not checked (one central per tower); :meth:`attach` refuses a second one.

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
        self._generation = 0
        self._write_failures = 0
        self._last_error: str | None = None
        self._write_error: str | None = None  # set by a failed write, cleared by the next good commit/sync
        self._lost_unannounced = 0  # records lost by failed writes, not yet announced
        self._lost_error = ""
        self._note_in_txn = False
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
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._assign_bits(conn)
            self._enforce_cap(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._snapshot()

    def _script(self, conn: sqlite3.Connection, script: str) -> None:
        for stmt in script.split(";"):
            if stmt.strip():
                conn.execute(stmt)

    def _create(self, conn: sqlite3.Connection) -> None:
        stream_id = 0
        while stream_id == 0:
            stream_id = secrets.randbits(64)
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._script(conn, _SCHEMA)
            conn.execute(
                "INSERT INTO meta (id, schema_version, stream_id, next_seq, created_us) VALUES (1, ?, ?, 1, ?)",
                (SCHEMA_VERSION, f"{stream_id:016x}", self._clock.utc_us()),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._stream_id = stream_id
        self._next_seq = 1
        self._count = self._bytes = self._dropped_total = 0
        log.info("outbox %s created, new stream_id %016x", self._path, stream_id)

    def _load(self, conn: sqlite3.Connection) -> None:
        try:
            version = conn.execute("SELECT schema_version FROM meta").fetchall()
        except sqlite3.OperationalError as exc:
            raise _Unusable(f"meta unreadable: {exc}") from exc
        if len(version) != 1:
            raise _Unusable(f"meta holds {len(version)} rows, expected 1")
        version = version[0][0]
        if version == 1:
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._script(conn, _UPGRADE_1_TO_2)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            log.info("outbox %s upgraded from schema version 1 to 2", self._path)
        elif version != SCHEMA_VERSION:
            raise OutboxError(
                f"outbox {self._path} has schema version {version}, this towerd knows {SCHEMA_VERSION}"
            )
        stream_hex, next_seq, dropped_total = conn.execute(
            "SELECT stream_id, next_seq, dropped_total FROM meta").fetchone()
        try:
            stream_id = int(stream_hex, 16)
        except (TypeError, ValueError):
            raise _Unusable(f"meta stream_id {stream_hex!r} is not hex") from None
        if not 0 < stream_id < 2**64 or not isinstance(next_seq, int) or next_seq < 1:
            raise _Unusable(f"meta stream_id {stream_hex!r} / next_seq {next_seq!r} invalid")
        max_seq, count, nbytes = conn.execute(
            "SELECT max(seq), count(*), coalesce(sum(length(payload)), 0) FROM records").fetchone()
        if max_seq is not None and max_seq >= next_seq:
            # Cannot happen with this code (same transaction); repair rather than reuse seq.
            log.error("outbox %s: next_seq %d <= stored seq %d, repairing", self._path, next_seq, max_seq)
            next_seq = max_seq + 1
            conn.execute("UPDATE meta SET next_seq = ?", (next_seq,))
        self._stream_id = stream_id
        self._next_seq = next_seq
        self._count = count
        self._bytes = nbytes
        self._dropped_total = int(dropped_total)
        log.info("outbox %s opened: stream_id %016x, next_seq %d, %d pending (%d payload bytes)",
                 self._path, stream_id, next_seq, count, nbytes)

    def _assign_bits(self, conn: sqlite3.Connection) -> None:
        """Give each wanted central a bit; forget centrals no longer configured (clearing
        their bits, deleting rows every remaining central is done with)."""
        existing = {name: bit for name, bit in conn.execute("SELECT name, bit FROM centrals")}
        removed = {n: b for n, b in existing.items() if n not in self._wanted}
        kept = {n: b for n, b in existing.items() if n in self._wanted}
        used = set(kept.values())
        added = []
        for name in self._wanted:
            if name in kept:
                continue
            bit = next(i for i in range(63) if i not in used)
            used.add(bit)
            kept[name] = bit
            added.append(name)
        full = 0
        for bit in kept.values():
            full |= 1 << bit
        if removed:
            stale = 0
            for bit in removed.values():
                stale |= 1 << bit
            conn.executemany("DELETE FROM centrals WHERE name = ?", [(n,) for n in removed])
            conn.execute("UPDATE records SET done = done & ? WHERE done & ? != 0", (full, stale))
            log.info("outbox %s: centrals %s are no longer configured; their acknowledgement state is dropped",
                     self._path, ", ".join(sorted(removed)))
        for name in added:
            bit = kept[name]
            conn.execute("INSERT INTO centrals (name, bit) VALUES (?, ?)", (name, bit))
            conn.execute("UPDATE records SET done = done & ? WHERE done & ? != 0", (~(1 << bit), 1 << bit))
            if existing or self._count:
                log.info("outbox %s: new central %s will receive the %d records held", self._path, name,
                         self._count)
        self._bits = {n: 1 << b for n, b in kept.items()}
        self._full_mask = full
        if removed:
            n, nbytes = conn.execute("SELECT count(*), coalesce(sum(length(payload)), 0) FROM records "
                                     "WHERE done & ? = ?", (full, full)).fetchone()
            if n:
                conn.execute("DELETE FROM records WHERE done & ? = ?", (full, full))
                self._count -= n
                self._bytes -= nbytes
                log.info("outbox %s: %d records acknowledged by every remaining central deleted", self._path, n)

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

    def protect(self, central: str | None, first_seq: int, last_seq: int) -> None:
        """A sender built ``first_seq..last_seq`` into a message for ``central``: until
        that central acknowledges those rows, the size cap does not drop them (they may
        reach it, and a dropped record must really be lost)."""
        if first_seq > last_seq:
            return
        key = SINGLE_CONSUMER if self._single else central
        if key not in self._bits:
            raise ValueError(f"outbox keeps no state for central {central!r}")
        self._protected[key] = _merge_ranges(self._protected.get(key, []) + [(first_seq, last_seq)])

    def protected_count(self) -> int:
        """Seqs currently protected from the size cap (over all centrals, counted once
        per central)."""
        return sum(b - a + 1 for ranges in self._protected.values() for a, b in ranges)

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

    def attach(self, central: str) -> None:
        """Declare a sender for ``central``. Raises ConfigError when the outbox keeps no
        state for it, or when a single-consumer outbox already has another sender (two
        senders sharing one acknowledgement state would each delete the other's rows)."""
        if self._single:
            if self._attached and central not in self._attached:
                raise ConfigError(
                    f"outbox {self._path} was opened for one central ({', '.join(sorted(self._attached))}); "
                    f"to send to {central!r} too, open it with centrals=[every central's name]"
                )
        elif central not in self._bits:
            raise ConfigError(f"outbox {self._path} keeps no state for central {central!r} "
                              f"(it was opened for {', '.join(self._bits)})")
        self._attached.add(central)

    def detach(self, central: str) -> None:
        """The sender for ``central`` is gone (closed); its acknowledgement state stays."""
        self._attached.discard(central)

    def set_centrals(self, centrals: Sequence[str] | None) -> None:
        """Change the set of centrals that must each acknowledge a record (a live
        configuration reload): a new central receives every record still held; the
        state of a removed one is dropped and rows the others are done with are deleted.
        Commits what was open first. ``None``: one unnamed consumer."""
        if centrals is not None:
            names = list(centrals)
            if not names or len(set(names)) != len(names) or len(names) > MAX_CENTRALS or any(
                    not isinstance(n, str) or not n or n == SINGLE_CONSUMER for n in names):
                raise ValueError(f"centrals must be 1..{MAX_CENTRALS} unique non-empty names, got {names!r}")
        wanted = [SINGLE_CONSUMER] if centrals is None else list(centrals)
        if wanted == list(self._bits) and self._single == (centrals is None):
            return
        self.commit()
        conn = self._db()
        old = (self._wanted, self._single, dict(self._bits), self._full_mask)
        self._wanted, self._single = wanted, centrals is None
        try:
            conn.execute("BEGIN IMMEDIATE")
            self._assign_bits(conn)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._wanted, self._single, self._bits, self._full_mask = old
            raise self._failed(conn, "set_centrals", exc) from exc
        self._snapshot()
        self._protected = {c: r for c, r in self._protected.items() if c in self._bits}
        if not self._single:
            self._attached &= set(self._bits)
        self._generation += 1

    def _bit(self, central: str | None) -> int:
        if self._single:
            return self._full_mask
        if central is None:
            raise ValueError(f"outbox serves centrals {', '.join(self._bits)}: name the central")
        try:
            return self._bits[central]
        except KeyError:
            raise ValueError(f"outbox keeps no state for central {central!r}") from None

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

    def _begin(self, conn: sqlite3.Connection) -> None:
        if not conn.in_transaction:
            conn.execute("BEGIN IMMEDIATE")
        if self._lost_unannounced and not self._note_in_txn:
            lost = self._lost_unannounced
            self._insert_event(conn, EVENT_WRITE_FAILED, "error",
                               f"outbox write failed ({self._lost_error}); {lost} records created before the "
                               "failure were lost before they were stored", lost=lost, error=self._lost_error)
            self._note_in_txn = True

    def _failed(self, conn: sqlite3.Connection, what: str, exc: sqlite3.Error) -> OutboxError:
        """Roll back the open transaction and restore the state of the last commit; the
        records created since then are lost and announced by the next transaction."""
        lost = self._next_seq - self._c_next_seq - (1 if self._note_in_txn else 0)
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error as exc2:
            log.error("outbox %s: rollback after failed %s failed too: %s", self._path, what, exc2)
        self._next_seq, self._count = self._c_next_seq, self._c_count
        self._bytes, self._dropped_total = self._c_bytes, self._c_dropped_total
        self._release_on_commit.clear()
        self._note_in_txn = False
        self._generation += 1
        self._write_failures += 1
        self._lost_unannounced += max(0, lost)
        self._lost_error = str(exc)
        self._last_error = self._write_error = f"{what}: {exc}"
        return OutboxError(f"outbox {self._path}: {what} failed ({exc}); {max(0, lost)} uncommitted records lost")

    def _reserve(self, n: int) -> int:
        first = self._next_seq
        if first + n - 1 > _SEQ_MAX:
            raise OutboxError(f"outbox {self._path}: seq space exhausted")
        return first

    def _insert_event(self, conn: sqlite3.Connection, code: str, severity: str, message: str,
                      time_us: int | None = None, **fields: object) -> int:
        seq = self._reserve(1)
        event = {"seq": seq, "time_us": self._clock.utc_us() if time_us is None else time_us, "code": code,
                 "severity": severity, "message": message, **fields}
        payload = _json(event)
        conn.execute("INSERT INTO records (seq, kind, time_us, payload) VALUES (?, ?, ?, ?)",
                     (seq, KIND_EVENT, event["time_us"], payload))
        conn.execute("UPDATE meta SET next_seq = ?", (seq + 1,))
        self._next_seq = seq + 1
        self._count += 1
        self._bytes += len(payload)
        return seq

    def add_tracks(self, records: np.ndarray) -> tuple[int, int]:
        """Queue TRACKS records (1-D TRACK_RECORD_DTYPE, shape (n,)); a copy gets
        consecutive ``seq`` values. Returns ``(first, last)``; for n == 0 nothing is
        stored and the empty range ``(next_seq, next_seq - 1)`` is returned. Raises
        OutboxError when the database cannot be written (nothing is half-done)."""
        if not isinstance(records, np.ndarray) or records.dtype != TRACK_RECORD_DTYPE or records.ndim != 1:
            raise ValueError("records must be a 1-D array of TRACK_RECORD_DTYPE")
        conn = self._db()
        n = int(records.size)
        if n == 0:
            return self._next_seq, self._next_seq - 1
        try:
            self._begin(conn)
            first = self._reserve(n)
            rec = np.array(records, dtype=TRACK_RECORD_DTYPE, copy=True)
            rec["seq"] = np.arange(first, first + n, dtype=np.uint64)
            raw = rec.tobytes()
            rows = [
                (first + i, KIND_TRACK, t, raw[i * RECORD_SIZE:(i + 1) * RECORD_SIZE])
                for i, t in enumerate(rec["time_us"].tolist())
            ]
            conn.executemany("INSERT INTO records (seq, kind, time_us, payload) VALUES (?, ?, ?, ?)", rows)
            conn.execute("UPDATE meta SET next_seq = ?", (first + n,))
            self._next_seq = first + n
            self._count += n
            self._bytes += n * RECORD_SIZE
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
            _json({"code": code, "severity": severity, "message": message, **fields})
        except (TypeError, ValueError) as exc:
            raise ValueError(f"event fields are not JSON-serialisable: {exc}") from exc
        conn = self._db()
        try:
            self._begin(conn)
            seq = self._insert_event(conn, code, severity, message, time_us=time_us, **fields)
            self._enforce_cap(conn)
        except sqlite3.Error as exc:
            raise self._failed(conn, "add_event", exc) from exc
        return seq

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
        protected = _merge_ranges([r for ranges in self._protected.values() for r in ranges])
        p = 0
        dropped = freed = 0
        cur = conn.execute("SELECT seq, length(payload), CASE WHEN kind = 'E' THEN payload END FROM records "
                           "ORDER BY seq")
        try:
            for seq, size, event_payload in cur:
                n_events = max(1, math.ceil((len(runs) + len(announced)) / _RANGES_PER_EVENT))
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
                    announced.extend(_announced_ranges(event_payload))
        finally:
            cur.close()
        if not dropped:
            self._limited_cap_warning()
            return
        conn.executemany("DELETE FROM records WHERE seq BETWEEN ? AND ?", [tuple(r) for r in runs])
        self._count -= dropped
        self._bytes -= freed
        self._dropped_total += dropped
        self._deleted_since_truncate += dropped
        conn.execute("UPDATE meta SET dropped_total = ?", (self._dropped_total,))
        named = _merge_ranges([(a, b) for a, b in runs] + announced)
        for i in range(0, len(named), _RANGES_PER_EVENT):
            chunk = named[i:i + _RANGES_PER_EVENT]
            count = sum(b - a + 1 for a, b in chunk)
            first_seq, last_seq = chunk[0][0], chunk[-1][1]
            extra = {"ranges": [list(r) for r in chunk]} if len(chunk) > 1 else {}
            self._insert_event(
                conn, EVENT_OUTBOX_DROPPED, "error",
                f"outbox full ({reason}): {count} records lost, seq {first_seq}..{last_seq}",
                first_seq=first_seq, last_seq=last_seq, count=count, reason=reason, **extra)
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
        self._write_error = None
        if self._note_in_txn:
            self._lost_unannounced = 0
            self._note_in_txn = False
        for central, lo, hi in self._release_on_commit:
            ranges = self._protected.get(central)
            if ranges:
                self._protected[central] = _subtract_range(ranges, lo, hi)
        self._release_on_commit.clear()
        self._snapshot()
        if (self._deleted_since_truncate >= _TRUNCATE_AFTER_DELETES
                and self._count <= _TRUNCATE_AFTER_DELETES // 10):
            self._truncate_wal(conn)

    def _truncate_wal(self, conn: sqlite3.Connection) -> None:
        """After a large drain: copy the WAL into the database and cut it to zero bytes,
        so that the disk space a long outage took is given back."""
        try:
            busy, wal_pages, done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as exc:
            log.warning("outbox %s: WAL checkpoint failed: %s", self._path, exc)
            return
        self._deleted_since_truncate = 0
        log.debug("outbox %s: WAL checkpoint(TRUNCATE) after a drain: busy=%s pages=%s done=%s",
                  self._path, busy, wal_pages, done)

    def ack(self, first_seq: int, last_seq: int, central: str | None = None) -> int:
        """Mark the committed rows with ``first_seq <= seq <= last_seq`` as done for
        ``central`` (it acknowledged them, or its sharing rule excludes them) and delete
        those every central is done with. Rows added since the last commit are never
        touched: they cannot have been sent. Durable at the next commit. Returns how many
        rows were newly marked for this central (= deleted, with one central)."""
        conn = self._db()
        bit = self._bit(central)
        if first_seq > last_seq:
            return 0
        hi = min(last_seq, self._c_next_seq - 1, _SEQ_MAX)
        lo = max(first_seq, 1)
        if lo > hi:
            return 0
        full = self._full_mask
        try:
            self._begin(conn)
            if bit == full:  # the only central: its acknowledgement is the last one needed
                newly = None
                where, args = "seq BETWEEN ? AND ?", (lo, hi)
            else:
                newly = conn.execute("UPDATE records SET done = done | ? WHERE seq BETWEEN ? AND ? "
                                     "AND done & ? = 0", (bit, lo, hi, bit)).rowcount
                where, args = "seq BETWEEN ? AND ? AND done = ?", (lo, hi, full)
            n, nbytes = conn.execute(
                f"SELECT count(*), coalesce(sum(length(payload)), 0) FROM records WHERE {where}", args).fetchone()
            if n:
                conn.execute(f"DELETE FROM records WHERE {where}", args)
        except sqlite3.Error as exc:
            raise self._failed(conn, "ack", exc) from exc
        self._release_on_commit.append((SINGLE_CONSUMER if self._single else central, lo, hi))  # type: ignore[arg-type]
        self._count -= n
        self._bytes -= nbytes
        self._deleted_since_truncate += n
        return n if newly is None else newly

    # ---------------------------------------------------------------- reading

    def _sendable_next_seq(self) -> int:
        """Rows below this may be sent: committed, and (synchronous=normal) synced, so
        that a power cut can never take back a seq a central has seen and hand it to a
        new record (the central would drop that record as a duplicate)."""
        if self._synchronous != "NORMAL":
            return self._c_next_seq
        if (self._c_next_seq > self._synced_next_seq
                and self._clock.monotonic() - self._last_sync >= NORMAL_SYNC_INTERVAL_S):
            self._sync_to_disk()
        return self._synced_next_seq

    def _sync_to_disk(self, directory: bool = False) -> None:
        """fsync the WAL (or the database, when there is no WAL) from outside SQLite: the
        commits already written become durable, as with synchronous=full, but once per
        interval instead of once per commit."""
        mark = self._c_next_seq
        wal = self._path.with_name(self._path.name + "-wal")
        targets = [wal if wal.exists() else self._path] + ([self._path.parent] if directory else [])
        try:
            for target in targets:
                fd = os.open(target, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except OSError as exc:
            self._last_error = self._write_error = f"fsync: {exc}"
            log.error("outbox %s: fsync failed (%s); records are held back until it works", self._path, exc)
            self._last_sync = self._clock.monotonic()
            return
        self._synced_next_seq = mark
        self._last_sync = self._clock.monotonic()
        if self._write_error and self._write_error.startswith("fsync"):
            self._write_error = None

    def pending(self, after_seq: int = 0, limit: int = 64, *, central: str | None = None,
                before_seq: int | None = None) -> list[tuple[int, str, bytes]]:
        """Up to ``limit`` committed rows with ``after_seq < seq < before_seq``, oldest
        first, as ``(seq, kind, payload)`` with kind 'T' (80-byte record) or 'E' (JSON).
        With ``central``: only rows that central still needs; without: every row held.
        With synchronous=normal only rows already fsynced are returned; the WAL is
        fsynced here at most once per NORMAL_SYNC_INTERVAL_S when there are others."""
        conn = self._db()
        hi = self._sendable_next_seq()
        if before_seq is not None:
            hi = min(hi, before_seq)
        lo = max(after_seq, 0)
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
