"""The outbox's identity stream (ICD v1.1 IDENTITY): track identities held until every
central that takes them has acknowledged them.

Identities are a stream of their own, not rows among the TRACKS/EVENTS records: their
own random ``stream_id`` (never 0, never the records stream's) and their own ``seq``
from 1, contiguous, kept in table ``identity_meta`` with the outbox. So a central that
does not take identities (an ICD v1 central, or a partner whose sharing rule says
``identity: {enabled: false}``) sees no gap in the records stream, and nothing it
refuses there can hold the records up.

Tables (made when missing; the outbox's schema version is unchanged, and a towerd
before v1.1 opens such a file and ignores them): ``identities(seq INTEGER PRIMARY KEY,
time_us, payload BLOB, done, records_mark)`` with the 112-byte IDENTITY record (``seq``
filled in), one bit per central in ``done`` as in ``records``, and the records stream's
next seq when it was added (the TRACKS records of its cycle are below it: a central whose
sharing rule filters tracks gets an identity only once its uplink has judged those);
``identity_meta(stream_id, next_seq)``. They share the records' transaction: :meth:`Outbox.commit` makes both
durable with one fsync, a failed write rolls both back (the identities lost are counted
in the next ``outbox.write_failed`` event with the records).

Cap: at most ``max(1000, max_records // 10)`` identity rows. Beyond it the oldest are
deleted (down to 99 %) in the same transaction and an EVENTS object
``outbox.identity_dropped`` (``stream_id`` the identity stream in 16 hex digits,
``first_seq``, ``last_seq``, ``count``: rows deleted, every central's copy included)
goes on the records stream, so the loss is never silent.
"""

from __future__ import annotations

import logging
import math
import secrets
import sqlite3
from collections.abc import Sequence

import numpy as np

from towerd.errors import OutboxError
from towerd.icd import IDENTITY_RECORD_SIZE, LAT_LON_UNKNOWN
from towerd.icd_identity import (
    IDENTITY_RECORD_DTYPE,
    OPERATOR_ID_LEN,
    SELF_ID_LEN,
    check_identity_records,
    empty_identity_records,
    text_field,
    uas_id_bytes,
)
from towerd.reports.identity import IdentityStatus, TrackIdentity
from towerd.seqranges import SEQ_MAX

log = logging.getLogger(__name__)

EVENT_IDENTITY_DROPPED = "outbox.identity_dropped"
_INT64 = (-(2**63), 2**63 - 1)

_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS identity_meta (id INTEGER PRIMARY KEY CHECK (id = 1), stream_id TEXT NOT NULL, "
    "next_seq INTEGER NOT NULL CHECK (next_seq >= 1))",
    "CREATE TABLE IF NOT EXISTS identities (seq INTEGER PRIMARY KEY, time_us INTEGER NOT NULL, "
    "payload BLOB NOT NULL, done INTEGER NOT NULL DEFAULT 0, records_mark INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS identity_capability (central TEXT PRIMARY KEY, server_key TEXT NOT NULL, "
    "capability TEXT NOT NULL, learnt_us INTEGER NOT NULL)",
]


def _uas_id(value: object, id_type: object) -> bytes:
    """The UAS ID field: ASCII text, or the bytes a binary ID's (type 3, 4) hex spells."""
    if not isinstance(value, str):
        raise ValueError("uas_id must be a string")
    return uas_id_bytes(value, _int(id_type, 0, 15, "id_type"))


def _int(value: object, lo: int, hi: int, what: str) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not lo <= int(value) <= hi:
        raise ValueError(f"{what} {value!r} is not an integer in {lo}..{hi}")
    return int(value)


def _e7(value: float, limit: float, what: str) -> int:
    if not math.isfinite(value) or abs(value) > limit:
        raise ValueError(f"{what} {value!r} is not within +-{limit} degrees")
    return int(round(value * 1e7))


def _float(value: object, what: str) -> float:
    value = float(value)  # type: ignore[arg-type]
    if math.isinf(value):
        raise ValueError(f"{what} is infinite (unknown is NaN)")
    return value


def _row(it: TrackIdentity) -> tuple:
    """One identity as a tuple in IDENTITY_RECORD_DTYPE's field order (seq 0)."""
    lat, lon = float(it.operator_lat_deg), float(it.operator_lon_deg)
    if math.isnan(lat) != math.isnan(lon):
        raise ValueError("operator position with only one of latitude/longitude known")
    if math.isnan(lat):
        lat_e7 = lon_e7 = LAT_LON_UNKNOWN
    else:
        lat_e7, lon_e7 = _e7(lat, 90.0, "operator_lat_deg"), _e7(lon, 180.0, "operator_lon_deg")
    return (0, _int(it.time_us, *_INT64, "time_us"), _int(it.last_heard_us, 0, _INT64[1], "last_heard_us"),
            _int(it.track_id, 0, 2**32 - 1, "track_id"), int(IdentityStatus(it.status)),
            _int(it.source, 0, 255, "source"), _int(it.id_type, 0, 15, "id_type"), _int(it.ua_type, 0, 15, "ua_type"),
            lat_e7, lon_e7, _float(it.operator_alt_m, "operator_alt_m"), _float(it.rssi_dbm, "rssi_dbm"), 0,
            _uas_id(it.uas_id, it.id_type), text_field(it.operator_id, OPERATOR_ID_LEN, "operator_id"),
            text_field(it.self_id, SELF_ID_LEN, "self_id"))


def identity_records(items: Sequence[TrackIdentity]) -> np.ndarray:
    """``items`` as IDENTITY records (IDENTITY_RECORD_DTYPE, shape (n,), ``seq`` 0).
    Raises ValueError naming the item and field the ICD cannot carry: text that is not
    printable ASCII or too long (UAS ID 20, operator ID 20, self-ID 23 characters), an
    operator position with only one of latitude/longitude known, numbers out of range."""
    rows = []
    for i, it in enumerate(items):
        if not isinstance(it, TrackIdentity):
            raise ValueError(f"identity {i}: {type(it).__name__} is not a TrackIdentity")
        try:
            rows.append(_row(it))
        except (ValueError, TypeError, OverflowError) as exc:
            raise ValueError(f"identity {i} (track {it.track_id!r}): {exc}") from None
    rec = np.array(rows, dtype=IDENTITY_RECORD_DTYPE) if rows else empty_identity_records(0)
    check_identity_records(rec)  # the wire's own checks, once for all (the above should leave nothing)
    return rec


class IdentityMixin:
    """The part of :class:`~towerd.outbox.sqlite.Outbox` that holds the identity stream."""

    def _init_identity_state(self) -> None:
        self._id_stream_id = 0
        self._id_next_seq = self._id_c_next_seq = 1
        self._id_count = self._id_c_count = 0
        self._id_synced_next_seq = 1
        self._id_dropped_total = 0

    @property
    def _id_max_rows(self) -> int:
        return max(1000, self._max_records // 10)

    def _open_identities(self, conn: sqlite3.Connection) -> None:
        """Make the identity tables when missing and load the identity stream."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            for stmt in _SCHEMA:
                conn.execute(stmt)
            row = conn.execute("SELECT stream_id, next_seq FROM identity_meta").fetchone()
            if row is None:
                stream_id = 0
                while stream_id in (0, self._stream_id):
                    stream_id = secrets.randbits(64)
                conn.execute("INSERT INTO identity_meta (id, stream_id, next_seq) VALUES (1, ?, 1)",
                             (f"{stream_id:016x}",))
                next_seq = 1
                log.info("outbox %s: new identity stream_id %016x", self._path, stream_id)
            else:
                stream_id, next_seq = int(row[0], 16), int(row[1])
            max_seq, count = conn.execute("SELECT max(seq), count(*) FROM identities").fetchone()
            if max_seq is not None and max_seq >= next_seq:
                next_seq = max_seq + 1  # cannot happen (same transaction); never reuse a seq
                conn.execute("UPDATE identity_meta SET next_seq = ?", (next_seq,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        if not 0 < stream_id < 2**64:
            raise OutboxError(f"outbox {self._path}: identity stream_id {stream_id:x} invalid")
        self._id_stream_id = stream_id
        self._id_next_seq = self._id_c_next_seq = self._id_synced_next_seq = next_seq
        self._id_count = self._id_c_count = count

    def _identity_bits(self, conn: sqlite3.Connection, full: int, keep: int) -> None:
        """Follow a change of centrals (from ``_assign_bits``): keep only the bits in
        ``keep`` (the centrals that stay; new ones start clear), delete the rows every
        central is done with."""
        conn.execute("UPDATE identities SET done = done & ? WHERE done & ? != done", (keep, keep))
        if full:
            n = conn.execute("DELETE FROM identities WHERE done & ? = ?", (full, full)).rowcount
            self._id_count -= n

    def _snapshot_identities(self) -> None:
        self._id_c_next_seq = self._id_next_seq
        self._id_c_count = self._id_count

    def _restore_identities(self) -> int:
        """After a rollback: the state of the last commit; returns how many identity
        records were lost."""
        lost = self._id_next_seq - self._id_c_next_seq
        self._id_next_seq, self._id_count = self._id_c_next_seq, self._id_c_count
        return lost

    # ---------------------------------------------------------------- the entry point

    def add_identities(self, identities: Sequence[TrackIdentity]) -> tuple[int, int]:
        """Queue track identities for every central that takes them (the entry point of
        Remote ID fusion: call it from the daemon's loop thread, like ``add_tracks``,
        after the TRACKS records of the same cycle; :meth:`commit` makes them durable).

        Each :class:`~towerd.reports.identity.TrackIdentity` becomes one ICD v1.1
        IDENTITY record on the identity stream, with consecutive ``seq``. Returns
        ``(first, last)`` of the identity stream (for none: ``(next, next - 1)``).
        Raises ValueError, before anything is stored, for an identity the ICD cannot
        carry (see :func:`identity_records`), and OutboxError when the database cannot
        be written (nothing is half-done)."""
        rec = identity_records(identities)
        conn = self._db()
        n = int(rec.size)
        if n == 0:
            return self._id_next_seq, self._id_next_seq - 1
        try:
            self._begin(conn)
            first = self._id_next_seq
            if first + n - 1 > SEQ_MAX:
                raise OutboxError(f"outbox {self._path}: identity seq space exhausted")
            rec["seq"] = np.arange(first, first + n, dtype=np.uint64)
            raw = rec.tobytes()
            mark = self._next_seq  # the TRACKS records added before (this cycle's) are below it
            conn.executemany("INSERT INTO identities (seq, time_us, payload, records_mark) VALUES (?, ?, ?, ?)",
                             [(first + i, t, raw[i * IDENTITY_RECORD_SIZE:(i + 1) * IDENTITY_RECORD_SIZE], mark)
                              for i, t in enumerate(rec["time_us"].tolist())])
            conn.execute("UPDATE identity_meta SET next_seq = ?", (first + n,))
            self._id_next_seq = first + n
            self._id_count += n
            self._enforce_identity_cap(conn)
        except sqlite3.Error as exc:
            raise self._failed(conn, "add_identities", exc) from exc
        return first, first + n - 1

    def _enforce_identity_cap(self, conn: sqlite3.Connection) -> None:
        cap = self._id_max_rows
        if self._id_count <= cap:
            return
        n_drop = self._id_count - (cap - cap // 100)
        first, last = conn.execute("SELECT min(seq), max(seq) FROM (SELECT seq FROM identities ORDER BY seq "
                                   "LIMIT ?)", (n_drop,)).fetchone()
        conn.execute("DELETE FROM identities WHERE seq <= ?", (last,))
        self._id_count -= n_drop
        self._id_dropped_total += n_drop
        self._insert_event(conn, EVENT_IDENTITY_DROPPED, "error",
                           f"outbox full of identities: {n_drop} identity records lost, identity seq {first}..{last}",
                           stream_id=f"{self._id_stream_id:016x}", first_seq=first, last_seq=last, count=n_drop)
        log.error("outbox %s: %d identity rows held (cap %d): dropped the %d oldest, identity seq %d..%d",
                  self._path, self._id_count + n_drop, cap, n_drop, first, last)

    # ---------------------------------------------------------------- the uplinks' side

    @property
    def identity_stream_id(self) -> int:
        """The ICD stream id of the identity stream (random nonzero u64, not the records')."""
        return self._id_stream_id

    @property
    def identity_sendable_next_seq(self) -> int:
        """Identity rows below this may be sent (committed; with synchronous=normal also
        synced, as for the records)."""
        if self._synchronous != "NORMAL":
            return self._id_c_next_seq
        self._sendable_next_seq()  # syncs when due
        return self._id_synced_next_seq

    def pending_identities(self, after_seq: int = 0, limit: int = 64, *, central: str | None = None,
                           before_seq: int | None = None) -> list[tuple[int, bytes, int]]:
        """Up to ``limit`` sendable identity rows with ``after_seq < seq < before_seq``
        that ``central`` still needs, oldest first, as ``(seq, payload, records_mark)``
        (``records_mark``: the records stream's next seq when the identity was added)."""
        conn = self._db()
        hi = self.identity_sendable_next_seq
        if before_seq is not None:
            hi = min(hi, before_seq)
        bit = self._bit(central)
        if max(after_seq, 0) + 1 >= hi:
            return []  # no seq in between: no query (the uplink asks on every poll)
        try:
            rows = conn.execute("SELECT seq, payload, records_mark FROM identities WHERE seq > ? AND seq < ? "
                                "AND done & ? = 0 ORDER BY seq LIMIT ?", (max(after_seq, 0), hi, bit, limit)).fetchall()
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox {self._path}: pending_identities failed: {exc}") from exc
        return [(seq, bytes(payload), mark) for seq, payload, mark in rows]

    def ack_identities(self, first_seq: int, last_seq: int, central: str | None = None) -> int:
        """Mark the sendable identity rows ``first_seq..last_seq`` done for ``central``
        (acknowledged, or withheld from it) and delete those every central is done with.
        Durable at the next commit. Returns how many rows were newly marked."""
        conn = self._db()
        bit = self._bit(central)
        lo, hi = max(first_seq, 1), min(last_seq, self._id_c_next_seq - 1, SEQ_MAX)
        if lo > hi:
            return 0
        full = self._full_mask
        try:
            self._begin(conn)
            newly = conn.execute("UPDATE identities SET done = done | ? WHERE seq BETWEEN ? AND ? AND done & ? = 0",
                                 (bit, lo, hi, bit)).rowcount
            deleted = conn.execute("DELETE FROM identities WHERE seq BETWEEN ? AND ? AND done & ? = ?",
                                   (lo, hi, full, full)).rowcount
        except sqlite3.Error as exc:
            raise self._failed(conn, "ack_identities", exc) from exc
        self._id_count -= deleted
        return newly

    def identity_capability(self, central: str) -> tuple[str, str, int] | None:
        """What ``central`` was last found to be as to identities: (its server key then,
        capability, UTC µs when learnt), or None when never asked."""
        try:
            row = self._db().execute("SELECT server_key, capability, learnt_us FROM identity_capability "
                                     "WHERE central = ?", (central,)).fetchone()
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox {self._path}: identity_capability failed: {exc}") from exc
        return None if row is None else (str(row[0]), str(row[1]), int(row[2]))

    def set_identity_capability(self, central: str, server_key: str, capability: str, learnt_us: int) -> None:
        """Remember what ``central`` (with ``server_key``) is as to identities, so that a
        restart does not ask again at once. Durable at the next commit."""
        conn = self._db()
        try:
            self._begin(conn)
            conn.execute("INSERT OR REPLACE INTO identity_capability (central, server_key, capability, learnt_us) "
                         "VALUES (?, ?, ?, ?)", (central, server_key, capability, int(learnt_us)))
        except sqlite3.Error as exc:
            raise self._failed(conn, "set_identity_capability", exc) from exc

    def identity_pending_count(self, central: str | None = None) -> int:
        """Identity rows held (with ``central``: those it still needs; a scan)."""
        if central is None:
            return self._id_count
        bit = self._bit(central)
        try:
            return self._db().execute("SELECT count(*) FROM identities WHERE done & ? = 0", (bit,)).fetchone()[0]
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox {self._path}: identity_pending_count failed: {exc}") from exc

    def identity_health(self) -> dict:
        """The identity stream's state for HEALTH/status: stream_id (16 hex digits),
        pending, next_seq, dropped (rows lost to the identity cap since start)."""
        return {"stream_id": f"{self._id_stream_id:016x}", "pending": self._id_count,
                "next_seq": self._id_next_seq, "dropped": self._id_dropped_total}
