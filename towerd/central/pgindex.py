"""GiST position indexes on the closed day partitions of ``tracks``, built off the ingest path.

Why: a GiST index on ``point(lon_e7, lat_e7)`` kept up to date row by row cost about a
third of the database's CPU per record stored (docs/central.md, "Ingest"). The day being
written (and the days ahead) carry only the cheap btree on ``(towerd_cell(lat_e7, lon_e7),
time_us)``; once a day is over, its partition gets the GiST index in one bulk build
(PostgreSQL 15 sorts points for it), ``CREATE INDEX CONCURRENTLY`` on a connection of its
own, so that late records for that day (a tower's backlog) are never blocked. Analysts'
area queries that carry both conditions (docs/central.md) use whichever index each
partition has: the cells on today's, the GiST (or the cells) on older days.

One builder at a time across central processes (a session advisory lock); a failed or
interrupted build (an INVALID index) is dropped and built again at the next round.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timezone
from typing import Any

from towerd.central.pgschema import _ADVISORY_KEY, DAY_US
from towerd.clock import Clock
from towerd.icd import LAT_LON_UNKNOWN

try:
    import psycopg
except ImportError:  # pragma: no cover - the extra is not installed
    psycopg = None

log = logging.getLogger(__name__)

_BUILDER_KEY = _ADVISORY_KEY + 1


def index_closed_days(conn: Any, clock: Clock) -> list[str]:
    """Build the GiST position index of every day partition of ``tracks`` before today
    that lacks it (``conn`` in autocommit; waits for no other builder). Returns the
    indexes made."""
    if not conn.execute("SELECT pg_try_advisory_lock(%s)", (_BUILDER_KEY,)).fetchone()[0]:
        return []
    made = []
    try:
        today = clock.utc_us() // DAY_US
        rows = conn.execute(
            "SELECT c.relname, (SELECT x.indisvalid FROM pg_index x JOIN pg_class ic ON ic.oid = x.indexrelid "
            "                   WHERE ic.relname = c.relname || '_position') "
            "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'tracks'::regclass "
            "AND c.relname ~ '^tracks_[0-9]{8}$' "
            "AND NOT EXISTS (SELECT 1 FROM pg_index x JOIN pg_class ic ON ic.oid = x.indexrelid "
            "                JOIN pg_am a ON a.oid = ic.relam WHERE x.indrelid = c.oid AND a.amname = 'gist' "
            "                AND x.indisvalid AND ic.relname <> c.relname || '_position')").fetchall()
        for name, valid in sorted(rows):
            day = int(datetime.strptime(name[-8:], "%Y%m%d").replace(tzinfo=timezone.utc).timestamp()) // 86400
            if day >= today or valid:
                continue
            if valid is False:  # a build that failed or was interrupted
                conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}_position")
            conn.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name}_position ON {name} USING gist "
                         f"(point(lon_e7, lat_e7)) WHERE lat_e7 <> {LAT_LON_UNKNOWN}")
            made.append(f"{name}_position")
            log.info("central store: GiST position index built on the closed day partition %s", name)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_BUILDER_KEY,))
    return made


class ClosedDayIndexer:
    """Runs :func:`index_closed_days` on its own thread and connection: first after
    ``first_after_s``, then every ``interval_s``. :meth:`close` stops it (an index build
    in progress is cancelled with its connection and made again later)."""

    def __init__(self, url: str, clock: Clock, *, interval_s: float = 3600.0, first_after_s: float = 60.0) -> None:
        self._url = url
        self._clock = clock
        self._interval_s = interval_s
        self._first_after_s = first_after_s
        self._stop = threading.Event()
        self._conn: Any = None
        self._conn_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="central-store-indexer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        wait = self._first_after_s
        while not self._stop.wait(wait):
            wait = self._interval_s
            try:
                conn = psycopg.connect(self._url, autocommit=True, application_name="towerd-central-indexer")
            except psycopg.Error as exc:
                log.warning("central store: indexer cannot connect (retried in %.0f s): %s", wait, str(exc).strip())
                continue
            with self._conn_lock:
                if self._stop.is_set():
                    conn.close()
                    return
                self._conn = conn
            try:
                index_closed_days(conn, self._clock)
            except psycopg.Error as exc:
                if not self._stop.is_set():
                    log.warning("central store: indexing closed days failed (retried in %.0f s): %s", wait,
                                str(exc).strip())
            finally:
                with self._conn_lock:
                    self._conn = None
                conn.close()

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the thread (cancelling a build in progress). Idempotent."""
        self._stop.set()
        with self._conn_lock:
            if self._conn is not None:
                try:
                    getattr(self._conn, "cancel_safe", self._conn.cancel)()  # cancel_safe: psycopg >= 3.2
                except psycopg.Error:
                    pass
        self._thread.join(timeout_s)
