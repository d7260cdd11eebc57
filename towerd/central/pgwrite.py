"""Writing to the PostgreSQL store: one committed transaction per batch of messages (the
part of :class:`towerd.central.pgstore.PgCentralStore` that writes).

Records the central knows to be new go straight into ``tracks`` with one binary ``COPY``;
the others through the staging table. Why: ``INSERT ... ON CONFLICT DO NOTHING`` is what
de-duplicates, and it is what costs. Each row it moves is first copied into the staging
table, then checked against the primary key before it is inserted (a second descent of
that index), inserted speculatively (one more WAL record per row to confirm it), and the
batch is joined, sorted and counted. A plain ``COPY`` into the partitioned table inserts
the rows in bulk (WAL records per page, not per row) and checks the primary key once, as
part of inserting into it. In the store micro-benchmark (``python -m
benchmarks.central_pg_store``) that halves PostgreSQL's CPU per record.

Which records are new: the store remembers, per ``(tower_id, stream_id)``, the highest
seq it has committed. A message goes the direct way when it is live (no REPLAY flag) and
starts above that mark and above every other record of its stream in the same batch, or
when its stream is new to this process. Everything else (backlogs, re-sends, several
messages of one stream overlapping in a batch) takes the staging path, which drops
duplicates row by row. The guess can be wrong: another central process sharing the
database stored the records (a tower failing over between them), or this process was
restarted after a commit but before its ACK went out. Then the ``COPY`` meets the primary
key, PostgreSQL raises a unique violation, the whole transaction is rolled back (nothing of
it is kept) and the batch is stored again entirely through the staging path. So
de-duplication on ``(tower_id, stream_id, seq)`` holds whatever the guess; a wrong one
costs one transaction.

Order of arrival (``rx_msg``): the messages of the direct ``COPY`` get their numbers from
the ``towerd_rx_msg`` sequence in one statement before it, in batch order (live messages
first); the staged ones get theirs in the move statement after it.

Round trips: the transaction's statements and ``COPY`` data go as one simple query
(:mod:`towerd.central.pgwire`): ``BEGIN``, the numbers and the ``COPY`` in the first round
trip, the data and ``COMMIT`` in the second (events, identities and HEALTH, rare, follow
with psycopg before a ``COMMIT`` of their own).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from towerd.central import identity, pgwire
from towerd.central.pgcopy import COPY_SIGNATURE, COPY_TRAILER, direct_image, stage_image
from towerd.central.pgschema import TRACK_COLUMNS, _locked, _signed, move_sql
from towerd.central.storetypes import Pending, StoreResult, event_json
from towerd.errors import OutboxError
from towerd.icd import EVENT_OUTBOX_DROPPED, TRACK_RECORD_DTYPE
from towerd.seqranges import dropped_ranges

try:
    import psycopg
    from psycopg import errors as pg_errors
except ImportError:  # pragma: no cover - the extra is not installed
    psycopg = None

log = logging.getLogger(__name__)

_DIRECT_COPY = f"COPY tracks ({', '.join(TRACK_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
_STAGE_COPY = "COPY towerd_stage FROM STDIN (FORMAT BINARY)"
_RX_SELECT = ("SELECT min(v), CASE WHEN max(v) - min(v) + 1 = count(*) THEN NULL ELSE array_agg(v ORDER BY v) END "
              "FROM (SELECT nextval('towerd_rx_msg') AS v FROM generate_series(1, {n})) s")
"""``n`` numbers from ``towerd_rx_msg``: the first, and all of them only when they are not
one block (another process took some between)."""
MAX_STREAMS_KEPT = 200_000
"""Streams whose highest committed seq the store remembers; past that the memory starts
again (the first message of each stream is then stored through the staging path)."""


class PgWriteMixin:
    """The writing half of :class:`~towerd.central.pgstore.PgCentralStore`. Needs the
    store's ``_db``, ``_drop_conn``, ``_try_upkeep``, clock, lock and stats."""

    _high: dict[tuple[str, int], int]

    @_locked
    def store_many(self, items: Sequence[Pending]) -> list[StoreResult]:
        """Store the messages in one committed transaction; per message, how many records
        were new (or, for all of them, the OutboxError if the transaction failed)."""
        if self._read_only:
            raise OutboxError(f"central store ({self._where}) is open read-only")
        if not items:
            return []
        try:
            conn = self._db()
            if self._clock.monotonic() >= self._next_upkeep:
                self._try_upkeep(conn)  # never holds the reports up
            try:
                results = self._store_retrying(conn, items)
            except psycopg.Error as exc:
                if conn.closed or len(items) == 1:
                    raise
                # One message the database refuses (a value out of range, a string jsonb
                # will not take) must not hold up the others: store each on its own.
                log.warning("central store: batch of %d messages refused (%s); storing them one by one",
                            len(items), str(exc).strip())
                return [self._store_one(conn, item) for item in items]
        except psycopg.Error as exc:
            self.stats["failed_batches"] += 1
            if self._conn is not None and (self._conn.closed or isinstance(exc, psycopg.OperationalError)):
                self._drop_conn()
            err = OutboxError(f"central store ({self._where}): batch of {len(items)} messages not stored: "
                              f"{str(exc).strip()}")
            return [err] * len(items)
        except OutboxError as exc:
            self.stats["failed_batches"] += 1
            return [exc] * len(items)
        return results

    def _store_retrying(self, conn: Any, items: Sequence[Pending]) -> list[StoreResult]:
        direct, conflicts = True, 0
        while True:
            try:
                results, marks = self._store_batch(conn, items, direct)
            except pg_errors.UniqueViolation:
                if not direct:
                    raise
                # Records taken for new were held already (another central stored them,
                # or this one before a restart): nothing of the transaction was kept; the
                # whole batch again, through the staging path.
                self.stats["direct_conflicts"] += 1
                direct = False
                continue
            except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure):
                conflicts += 1
                if conflicts == 3:
                    raise
                log.info("central store: transaction conflict with another central, retrying")
                continue
            self._remember(marks)
            return results

    def _store_one(self, conn: Any, item: Pending) -> StoreResult:
        try:
            return self._store_retrying(conn, [item])[0]
        except psycopg.Error as exc:
            if conn.closed:
                raise
            self.stats["refused_messages"] += 1
            return OutboxError(f"central store ({self._where}): message from {item.tower_id} refused by the "
                               f"database: {str(exc).strip()}")

    def _remember(self, marks: dict[tuple[str, int], int]) -> None:
        """After a commit: the highest seq committed per stream (``marks``: the streams
        whose mark the batch raised, from :meth:`_split`)."""
        high = self._high
        if len(high) > MAX_STREAMS_KEPT:
            high.clear()
        high.update(marks)

    def _split(self, tracks: list[tuple[int, Pending]], direct_ok: bool = True) -> tuple[
            list[tuple[int, Pending]], list[tuple[int, Pending]], dict[tuple[str, int], int]]:
        """(new for sure unless another process stored them, maybe held, the streams'
        highest seqs once committed where the batch raises them): see the module doc.
        ``direct_ok`` False: every message is staged."""
        high = self._high
        direct: list[tuple[int, Pending]] = []
        staged: list[tuple[int, Pending]] = []
        batch_high: dict[tuple[str, int], int] = {}
        for k, item in tracks:
            key = (item.tower_id, item.stream_id)
            mark = batch_high.get(key)
            if mark is None:
                mark = high.get(key, 0)
            if direct_ok and not item.replay and (item.first_seq or _first_seq(item)) > mark:
                direct.append((k, item))
            else:
                staged.append((k, item))
            last = item.last_seq or _last_seq(item)
            if last > mark:
                batch_high[key] = last
        return direct, staged, batch_high

    def _store_batch(self, conn: Any, items: Sequence[Pending], direct_ok: bool = True) -> tuple[
            list[StoreResult], dict[tuple[str, int], int]]:
        """Store the messages in one transaction: (per message, how many records were
        new; the streams' marks for :meth:`_remember` once committed)."""
        received_us = self._clock.utc_us()
        results: list[StoreResult] = [item.size for item in items]  # all new, unless the statements say otherwise
        tracks = []
        others = False
        for k, item in enumerate(items):
            if item.records is not None and item.records.size:
                if item.records.dtype != TRACK_RECORD_DTYPE or item.records.ndim != 1:
                    raise ValueError("records must be a 1-D array of TRACK_RECORD_DTYPE")
                tracks.append((k, item))
            elif item.events or (item.identities is not None and item.identities.size):
                others = True
        direct, staged, marks = self._split(tracks, direct_ok)
        health = self._health_since is not None and (
            self._clock.monotonic() - self._health_since >= self._health_flush_s or len(self._health) >= 1000)
        # The TRACKS records in one script (pgwire): usually BEGIN, the rx_msg numbers and
        # the COPY in one round trip, the COPY's data and COMMIT in the second.
        script = ["BEGIN"]
        copies: list[str] = []
        if direct:
            script += [_RX_SELECT.format(n=len(direct)), _DIRECT_COPY]
            copies.append("direct")
        if staged:
            script += [_STAGE_COPY, move_sql([k for k, _ in staged])]
            copies.append("staged")
        last = not others and not health
        if last:
            script.append("COMMIT")  # else after the other statements, below

        def feed(i: int, done: list) -> bytes:
            if copies[i] == "direct":
                return COPY_SIGNATURE + direct_image(direct, _rx_numbers(done[-1], len(direct)), received_us) \
                    + COPY_TRAILER
            return COPY_SIGNATURE + stage_image(staged, received_us) + COPY_TRAILER

        try:
            done = pgwire.run(conn, "; ".join(script), feed)
            if staged:
                moved = done[-2] if last else done[-1]
                for row in range(moved.ntuples):
                    results[int(moved.get_value(row, 0))] = int(moved.get_value(row, 1))
            if not last:
                for k, item in enumerate(items):
                    if item.events:
                        results[k] = self._insert_events(conn, item, received_us)
                    elif item.identities is not None and item.identities.size:
                        results[k] = self._insert_identities(conn, item, received_us)
                if health:
                    self._write_health(conn)  # due: with this batch (else one statement less in it)
                conn.commit()
        except BaseException:
            _roll_back(conn)
            raise
        return results, marks

    def _insert_events(self, conn: Any, item: Pending, received_us: int) -> int:
        assert item.events is not None
        sid = _signed(item.stream_id)
        rx = conn.execute("SELECT nextval('towerd_rx_msg')").fetchone()[0]
        rows, drops = [], []
        texts = item.event_json if item.event_json is not None else [event_json(ev) for ev in item.events]
        for ev, text in zip(item.events, texts):
            rows.append((item.tower_id, sid, ev["seq"], received_us, item.replay, rx, ev["time_us"], ev["code"],
                         ev["severity"], ev["message"], text))
            if ev["code"] == EVENT_OUTBOX_DROPPED:
                ranges = dropped_ranges(ev)
                if ranges is None:
                    self.bad_dropped_events += 1
                    log.warning("central store: %s stream %016x: outbox.dropped event seq %d does not name a valid "
                                "range; stored as an event only", item.tower_id, item.stream_id, ev["seq"])
                    continue
                drops.append((item.tower_id, sid, ev["seq"], ev["first_seq"], ev["last_seq"], ev["count"],
                              json.dumps([list(r) for r in ranges]), received_us))
        values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb)"] * len(rows))
        cur = conn.execute("INSERT INTO events (tower_id, stream_id, seq, received_us, replay, rx_msg, time_us, code, "
                           f"severity, message, event) VALUES {values} ON CONFLICT DO NOTHING",
                           [v for row in rows for v in row])
        new = cur.rowcount
        if drops:
            values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s::jsonb, %s)"] * len(drops))
            conn.execute("INSERT INTO dropped (tower_id, stream_id, event_seq, first_seq, last_seq, count, ranges, "
                         f"received_us) VALUES {values} ON CONFLICT DO NOTHING", [v for row in drops for v in row])
        return new

    def _insert_identities(self, conn: Any, item: Pending, received_us: int) -> int:
        assert item.identities is not None
        rx = conn.execute("SELECT nextval('towerd_rx_msg')").fetchone()[0]
        rows = identity.rows(item.identities, (item.tower_id, _signed(item.stream_id), received_us, item.replay, rx))
        values = ", ".join(["(" + ", ".join(["%s"] * len(identity.COLUMNS)) + ")"] * len(rows))
        cur = conn.execute(f"INSERT INTO identities ({', '.join(identity.COLUMNS)}) VALUES {values} "
                           "ON CONFLICT DO NOTHING", [v for row in rows for v in row])
        return cur.rowcount

    @_locked
    def record_health(self, tower_id: str, health: dict) -> None:
        """Keep a HEALTH object for table ``health`` (best effort, as the ICD says: written
        after ``health_flush_s`` with the next batch or the next HEALTH, whichever comes
        first, so that most transactions hold records only; lost, and counted, if the
        database is down)."""
        now = self._clock.monotonic()
        self._health.append((tower_id, self._clock.utc_us(),
                             json.dumps(health, ensure_ascii=False, separators=(",", ":"))))
        if self._health_since is None:
            self._health_since = now
        if now - self._health_since < self._health_flush_s and len(self._health) < 1000:
            return
        try:
            conn = self._db()
            with conn.transaction():
                self._write_health(conn)
        except (psycopg.Error, OutboxError) as exc:
            if self._conn is not None and self._conn.broken:
                self._drop_conn()
            self.stats["health_lost"] += len(self._health)
            log.warning("central store: %d HEALTH objects not stored: %s", len(self._health), str(exc).strip())
            self._health, self._health_since = [], None

    def _write_health(self, conn: Any) -> None:
        if not self._health:
            return
        rows, self._health, self._health_since = self._health, [], None
        values = ", ".join(["(%s, %s, %s::jsonb)"] * len(rows))
        conn.execute(f"INSERT INTO health (tower_id, received_us, health) VALUES {values}",
                     [v for row in rows for v in row])


def _rx_numbers(res: Any, n: int) -> list[int]:
    """The numbers :data:`_RX_SELECT` returned (its result ``res``), ascending."""
    first = int(res.get_value(0, 0))
    spread = res.get_value(0, 1)
    if spread is None:
        return list(range(first, first + n))
    return [int(v) for v in spread.strip(b"{}").split(b",")]


def _roll_back(conn: Any) -> None:
    """End a failed transaction (nothing of it is kept); a connection lost is left to
    the caller, who sees it closed."""
    if conn.closed:
        return
    try:
        conn.rollback()
    except psycopg.Error:
        pass


def _first_seq(item: Pending) -> int:
    return item.first_seq if item.first_seq else int(item.records["seq"][0])  # type: ignore[index]


def _last_seq(item: Pending) -> int:
    return item.last_seq if item.last_seq else int(item.records["seq"][-1])  # type: ignore[index]
