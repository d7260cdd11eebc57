"""Opening the outbox file: the SQLite schema, its migration from version 1, the
integrity check, and moving an unusable file aside.

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

Opening: ``PRAGMA quick_check`` runs at start-up. A file whose content is not a usable
outbox (SQLite reports it corrupt or not a database, quick_check fails, or the schema is
not ours) is renamed aside to ``<name>.corrupt-<UTC timestamp>`` (with its -wal/-shm
files), logged at ERROR, and a new database with a new stream is created. Errors that are
not about the file's content (permissions, missing directory, I/O errors, a newer schema
version) raise :class:`~towerd.errors.OutboxError` instead: moving a good backlog aside
because of a mis-set permission would abandon it.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
from datetime import datetime, timezone

from towerd.errors import OutboxError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
_JOURNAL_SIZE_LIMIT = 8 * 1024 * 1024
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26

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


class _Unusable(Exception):
    """The file's content is not a usable outbox; it is moved aside."""


class OpeningMixin:
    """The part of :class:`~towerd.outbox.sqlite.Outbox` that opens, creates, upgrades
    and checks the database file."""

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
        if self._exclusive:  # before the first WAL access: then SQLite never maps the -shm index
            conn.execute("PRAGMA locking_mode=EXCLUSIVE")
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
        self._open_identities(conn)  # ICD v1.1 identity stream (towerd.outbox.identity)
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

