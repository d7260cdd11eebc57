"""The central's PostgreSQL store: the same guarantees as the SQLite store at border scale.

Guarantees (as :class:`towerd.central.store.CentralStore`): records keyed ``(tower_id,
stream_id, seq)`` with duplicates dropped (the primary key); :meth:`store_many`
returns only after the transaction holding the records has committed with
``synchronous_commit = on`` (set on every connection, whatever the server's default), so
the server's ACK follows the commit; ``outbox.dropped`` announcements in table
``dropped``; :meth:`streams` gives per stream the missing, dropped and unexplained seq
ranges; :meth:`export` the same JSON lines as the SQLite store.

Volume: the messages the store writer takes at once (up to ``batch_records`` records, from
any number of towers) go into ONE transaction (:mod:`towerd.central.pgwrite`): the records
known to be new with one binary ``COPY`` straight into ``tracks``, the others (backlogs,
re-sends) with one ``COPY`` into a temporary staging table and one ``INSERT ... SELECT ...
ON CONFLICT DO NOTHING`` from it; the COPY images are built with NumPy from the ICD
records, no per-row Python (:mod:`towerd.central.pgcopy`).

Schema (version 3, table ``towerd_schema``; version 1 lacked ``identities``, version 2 the
area cells index ``tracks_cell_time``; both are upgraded in place, keeping what they
have): ``tracks``, ``events`` and ``identities`` (ICD v1.1) are partitioned by range
of the record's own ``time_us``, one partition per UTC day (``tracks_20260315``),
``health`` by ``received_us``. The primary key of a partitioned table must contain the
partition key, so it is ``(tower_id, stream_id, seq, time_us)``: a re-sent record is
byte-identical (the tower keeps it in its outbox with its seq), so it carries the same
``time_us``, lands in the same partition and is dropped there. Partitions exist from
``retention_days`` ago to ``ahead_days`` ahead (made at start and by the hourly upkeep);
a record outside that window (a tower clock far off) goes to ``<table>_default`` and is
never refused; when a day's partition is made later, its rows are moved out of the
default partition first. Retention drops whole day partitions older than
``retention_days`` (and deletes such rows from the default partitions and ``dropped``).

Column types: ``stream_id`` is the u64 reinterpreted as a signed bigint (shown as 16 hex
digits in :meth:`export`, as by the SQLite store); unsigned ICD fields are widened
(u8 -> smallint, u16 -> integer, u32 -> bigint); unknown floats (NaN) are NULL;
``lat_e7``/``lon_e7`` keep -2^31 for unknown.

Several central processes may share one database: schema creation and partition upkeep
take an advisory lock; ``rx_msg`` comes from one sequence.

Modules: :mod:`towerd.central.pgschema` (the schema, the staging table, the move
statement), :mod:`towerd.central.pgcopy` (the COPY images), :mod:`towerd.central.pgwrite`
(every write), :mod:`towerd.central.pgread` (every query that only reads); this one
connects and keeps the partitions.

If the database goes away, :meth:`store_many` reports every message of the batch as not
stored (nothing is acknowledged; the towers send again) and the next call reconnects (at
most one attempt per ``reconnect_ivl_s``).
"""

from __future__ import annotations

import logging
import math
import threading
from datetime import datetime, timezone
from typing import Any

from towerd.central.pgindex import ClosedDayIndexer
from towerd.central.pgread import PgReadMixin
from towerd.central.pgschema import (  # noqa: F401 - some names are this module's API too
    _ADVISORY_KEY,
    _PARTITION_KEY,
    _SCHEMA,
    _STAGE,
    DAY_US,
    SCHEMA_VERSION,
    TRACK_COLUMNS,
    _locked,
    _redact,
    check_url,
    day_name,
)
from towerd.central.pgwrite import PgWriteMixin
from towerd.clock import Clock, SystemClock
from towerd.errors import ConfigError, OutboxError

try:
    import psycopg
except ImportError:  # pragma: no cover - the extra is not installed
    psycopg = None

log = logging.getLogger(__name__)


class PgCentralStore(PgWriteMixin, PgReadMixin):
    """TRACKS, EVENTS, HEALTH and drop announcements in PostgreSQL (see the module doc).

    ``retention_days``: day partitions older than this are dropped by the upkeep, which
    runs at start and every ``upkeep_interval_s``; ``ahead_days``: partitions made ahead.
    ``read_only``: for export; nothing is created or changed.
    ``index_closed_days_after_s``: the GiST position index of each closed day partition
    is built on a thread of its own (:mod:`towerd.central.pgindex`) first this long after
    start, then every ``upkeep_interval_s``; None: never. Thread-safe: one lock
    serialises the use of the connection (the central's store writer commits while an
    operator's or a test's thread reads)."""

    batch_records = 5000

    def __init__(self, url: str, *, clock: Clock | None = None, read_only: bool = False, retention_days: int = 30,
                 ahead_days: int = 2, upkeep_interval_s: float = 3600.0, reconnect_ivl_s: float = 1.0,
                 connect_timeout_s: float = 5.0, health_flush_s: float = 1.0,
                 index_closed_days_after_s: float | None = 60.0) -> None:
        check_url(url)
        if not 1 <= retention_days <= 36_500:
            raise ConfigError(f"retention_days {retention_days} not in 1..36500")
        if not 0 <= ahead_days <= 366:
            raise ConfigError(f"ahead_days {ahead_days} not in 0..366")
        self._url = url
        self._where = _redact(url)
        self._clock = clock if clock is not None else SystemClock()
        self._read_only = read_only
        self.retention_days = retention_days
        self.ahead_days = ahead_days
        self._upkeep_interval_s = upkeep_interval_s
        self._reconnect_ivl_s = reconnect_ivl_s
        self._connect_timeout_s = connect_timeout_s
        self._health_flush_s = health_flush_s
        self._conn: Any = None
        self._lock = threading.RLock()
        self._closed = False
        self._next_connect = -math.inf
        self._next_upkeep = -math.inf
        self._health: list[tuple[str, int, str]] = []
        self._health_since: float | None = None
        self.bad_dropped_events = 0
        self._has_identities = True  # False: a version 1 database opened read-only
        self._indexer: ClosedDayIndexer | None = None
        self._high: dict[tuple[str, int], int] = {}  # (tower_id, stream_id): highest seq committed
        self.stats = {"reconnects": 0, "failed_batches": 0, "health_lost": 0, "partitions_made": 0,
                      "partitions_dropped": 0, "refused_messages": 0, "direct_conflicts": 0}
        conn = self._connect()
        try:
            if read_only:
                self._check_schema(conn)
            else:
                self._initialise(conn)
                self._try_upkeep(conn)
                if index_closed_days_after_s is not None:
                    self._indexer = ClosedDayIndexer(url, self._clock, interval_s=upkeep_interval_s,
                                                     first_after_s=index_closed_days_after_s)
        except psycopg.Error as exc:
            self._drop_conn()
            raise OutboxError(f"central store ({self._where}): cannot initialise: {exc}") from exc
        except BaseException:
            self._drop_conn()
            raise

    # ---------------------------------------------------------------- connection

    def _connect(self) -> Any:
        if self._closed:
            raise OutboxError("central store is closed")
        try:
            conn = psycopg.connect(self._url, connect_timeout=max(1, round(self._connect_timeout_s)),
                                   application_name="towerd-central")
        except psycopg.Error as exc:
            raise OutboxError(f"central store ({self._where}): cannot connect: {exc}") from exc
        try:
            conn.execute("SET synchronous_commit = on")  # ACK after commit means durable, whatever the default
            if self._read_only:
                conn.execute("SET default_transaction_read_only = on")
            else:
                conn.execute(_STAGE)  # per session: the binary COPY lands here, emptied at every commit
            conn.commit()
        except psycopg.Error as exc:
            conn.close()
            raise OutboxError(f"central store ({self._where}): cannot set up the session: {exc}") from exc
        self._conn = conn
        return conn

    def _db(self) -> Any:
        """The live connection, reconnecting (at most once per ``reconnect_ivl_s``)."""
        if self._conn is not None and not self._conn.closed and not self._conn.broken:
            return self._conn
        self._drop_conn()
        now = self._clock.monotonic()
        if now < self._next_connect:
            raise OutboxError(f"central store ({self._where}): database unavailable, next attempt in "
                              f"{self._next_connect - now:.1f} s")
        self._next_connect = now + self._reconnect_ivl_s
        conn = self._connect()
        self.stats["reconnects"] += 1
        log.warning("central store: reconnected to the database (%s)", self._where)
        return conn

    def _drop_conn(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                pass

    def _check_schema(self, conn: Any) -> None:
        row = conn.execute("SELECT to_regclass('towerd_schema') IS NOT NULL").fetchone()
        if not row[0]:
            raise OutboxError(f"central store ({self._where}): no towerd schema in this database")
        version = conn.execute("SELECT max(version) FROM towerd_schema").fetchone()[0]
        if version is None or version > SCHEMA_VERSION:
            raise OutboxError(f"central store ({self._where}): schema version {version}, this towerd knows "
                              f"{SCHEMA_VERSION}")
        self._has_identities = version >= 2
        conn.rollback()

    def _initialise(self, conn: Any) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_KEY,))
            conn.execute("SET LOCAL client_min_messages = warning")  # no NOTICE per existing object
            exists = conn.execute("SELECT to_regclass('towerd_schema') IS NOT NULL").fetchone()[0]
            if exists:
                version = conn.execute("SELECT max(version) FROM towerd_schema").fetchone()[0]
                if version is not None and version > SCHEMA_VERSION:
                    raise OutboxError(f"central store ({self._where}): schema version {version}, this towerd "
                                      f"knows {SCHEMA_VERSION}")
                if version == SCHEMA_VERSION:
                    return  # made before: an operator's changes (a dropped index) are kept
            for stmt in _SCHEMA:
                conn.execute(stmt)
            if conn.execute("SELECT count(*) FROM towerd_schema").fetchone()[0] == 0:
                conn.execute("INSERT INTO towerd_schema VALUES (%s)", (SCHEMA_VERSION,))
            else:  # version 1 or 2: ``identities`` and the area cells were made above
                conn.execute("UPDATE towerd_schema SET version = %s", (SCHEMA_VERSION,))
                log.info("central store: schema upgraded from version %d to %d (identities, area cells; an "
                         "existing GiST index tracks_position is kept: drop it once the area queries use the "
                         "cells, docs/central.md)", version, SCHEMA_VERSION)

    # ---------------------------------------------------------------- partitions and retention

    def _partitions(self, conn: Any, table: str) -> dict[str, int]:
        """{partition name: lower bound} of ``table``'s day partitions."""
        rows = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = %s", (table,)).fetchall()
        out = {}
        for (name,) in rows:
            suffix = name[len(table) + 1:]
            if suffix.isdigit() and len(suffix) == 8:
                day = datetime.strptime(suffix, "%Y%m%d").replace(tzinfo=timezone.utc)
                out[name] = int(day.timestamp()) // 86400
        return out

    @_locked
    def upkeep(self) -> None:
        """Make the day partitions of the window, drop those past retention (also run at
        start and every ``upkeep_interval_s`` before a batch)."""
        self._upkeep(self._db())

    def _try_upkeep(self, conn: Any) -> None:
        """:meth:`_upkeep`, but a failure (other than the connection's) is logged and
        retried in a minute: without the partitions the rows go to the default ones."""
        try:
            self._upkeep(conn)
        except psycopg.Error as exc:
            if conn.broken:
                raise
            log.error("central store: partition upkeep failed (retried in a minute): %s", str(exc).strip())
            self._next_upkeep = self._clock.monotonic() + 60.0

    def _upkeep(self, conn: Any) -> None:
        today = self._clock.utc_us() // DAY_US
        first_day, last_day = today - self.retention_days, today + self.ahead_days
        with conn.transaction():
            # Making and dropping partitions locks the parent table; behind a long analyst
            # query that would queue every insert too, so give up quickly and retry later.
            conn.execute("SET LOCAL lock_timeout = '2s'")
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_KEY,))
            for table, key in _PARTITION_KEY.items():
                have = self._partitions(conn, table)
                for name, day in sorted(have.items()):
                    if day < first_day:
                        conn.execute(f"DROP TABLE {name}")
                        self.stats["partitions_dropped"] += 1
                        log.info("central store: retention: dropped partition %s", name)
                made = set(have.values())
                for day in range(first_day, last_day + 1):
                    if day not in made:
                        self._make_partition(conn, table, key, day)
                conn.execute(f"DELETE FROM {table}_default WHERE {key} < %s", (first_day * DAY_US,))
            conn.execute("DELETE FROM dropped WHERE received_us < %s", (first_day * DAY_US,))
        self._next_upkeep = self._clock.monotonic() + self._upkeep_interval_s

    def _make_partition(self, conn: Any, table: str, key: str, day: int) -> None:
        name, lo, hi = day_name(table, day), day * DAY_US, (day + 1) * DAY_US
        held = conn.execute(f"SELECT count(*) FROM {table}_default WHERE {key} >= %s AND {key} < %s",
                            (lo, hi)).fetchone()[0]
        if held == 0:
            conn.execute(f"CREATE TABLE {name} PARTITION OF {table} FOR VALUES FROM ({lo}) TO ({hi})")
        else:  # rows that arrived before their day's partition existed: move them in
            conn.execute(f"CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
            conn.execute(f"INSERT INTO {name} SELECT * FROM {table}_default WHERE {key} >= %s AND {key} < %s",
                         (lo, hi))
            conn.execute(f"DELETE FROM {table}_default WHERE {key} >= %s AND {key} < %s", (lo, hi))
            conn.execute(f"ALTER TABLE {table} ATTACH PARTITION {name} FOR VALUES FROM ({lo}) TO ({hi})")
            log.info("central store: moved %d rows from %s_default into new partition %s", held, table, name)
        self.stats["partitions_made"] += 1

    @_locked
    def close(self) -> None:
        """Write any HEALTH still held (best effort) and close the connection. Idempotent."""
        if self._closed:
            return
        if self._health and self._conn is not None and not self._read_only:
            try:
                with self._conn.transaction():
                    self._write_health(self._conn)
            except psycopg.Error:
                log.warning("central store: HEALTH objects held at close not stored")
        self._closed = True
        if self._indexer is not None:
            self._indexer.close()
        self._drop_conn()
