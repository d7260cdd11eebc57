"""The central's store writer: a batching store's commits on their own thread.

Why: a commit waits on the database (its WAL flush, its index inserts). Done on the
thread that receives, the towers' messages wait in the socket during every commit and
the central's decoding and the database's work never overlap. Here the serving thread
keeps receiving, checking and decoding, and queues each decoded message here; the writer
takes everything queued as one transaction as soon as the previous commit returns and
``min_interval_s`` has passed since it started (group commit: the busier the central, the
larger each transaction, the fewer commits per record; an idle central commits what
arrived within that interval, a busy one is bounded by one commit plus its queue).

Live before backlog: messages with the REPLAY flag wait in a queue of their own. Each
transaction takes the live messages first (up to ``batch_records`` records), then about
``replay_records`` records of backlog, so the towers' replays after an outage neither
delay live reports by more than that slice of a commit nor are starved. When live
records are left waiting after a transaction's live share (the central is behind on the
live load: a slow database, a machine short of CPU), the backlog gets one message in
that transaction instead of its slice: the commits then go to catching up on live
reports, and the backlog still moves (measured: with the full slice in every commit, a
loaded machine let live reports fall 15 s behind while the backlog kept its pace).

The writer only stores: it never touches the ROUTER (ZeroMQ sockets are not
thread-safe). It hands each batch's results back and wakes the serving thread through
a pipe that thread polls beside its socket; the serving thread then sends the ACKs, so
an ACK still follows the commit that holds its records. HEALTH objects are passed to the
store on the writer's thread too, so that the store is used from one thread.

Timing (for :class:`AckTiming`): each queued message carries the monotonic time it was
queued; each batch the times its commit started and returned.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Sequence

import numpy as np

from towerd.central.storetypes import Pending, ReportStore, StoreResult
from towerd.errors import OutboxError

log = logging.getLogger(__name__)

Entry = tuple[bytes, int, int, Pending, float]
"""(routing id, first seq, last seq, message, monotonic time queued) of one message."""
Batch = list[Entry]
"""The messages of one transaction."""


MIN_COMMIT_INTERVAL_S = 0.015
"""Least time from the start of one commit to the start of the next. Measured on a
2-core machine at 10,000 records/s: back-to-back commits of a few dozen records each
cost the central's writer and PostgreSQL more CPU in their fixed part (round trips,
transaction start and end, the WAL flush) than in their records; 15 ms adds at most that
to an ACK and makes each commit hold about 150 records at that rate."""


class StoreWriter:
    """Runs ``store.store_many`` on a thread of its own, one batch at a time, taking what
    is queued as soon as the previous batch is committed and ``min_interval_s`` has
    passed since it started (unless ``batch_records`` records wait).

    :meth:`put` queues a decoded message; :meth:`results` returns ``(batch, results,
    internal, started, finished)`` for each batch finished since the last call
    (``internal``: the store raised something other than OutboxError, a defect;
    ``started``/``finished``: monotonic times of the commit); :attr:`fd` becomes
    readable when there are some and :attr:`has_results` says so without a system call.
    ``replay_records``: backlog (REPLAY) records per transaction at most (default a fifth
    of the store's ``batch_records``)."""

    def __init__(self, store: ReportStore, replay_records: int | None = None,
                 min_interval_s: float = MIN_COMMIT_INTERVAL_S) -> None:
        self._store = store
        self._min_interval = min_interval_s
        self._last_start = -float("inf")
        self._limit = max(1, store.batch_records)
        self._replay_limit = max(1, replay_records if replay_records is not None else self._limit // 5)
        self._cond = threading.Condition()
        self._live: deque[Entry] = deque()
        self._replay: deque[Entry] = deque()
        self._queued = 0
        self._busy = False
        self._health: list[tuple[str, dict]] = []
        self._done: deque[tuple[Batch, list[StoreResult], bool, float, float]] = deque()
        self.has_results = False
        self._stop = False
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        os.set_blocking(self._wfd, False)
        self._thread = threading.Thread(target=self._run, name="central-store-writer", daemon=True)
        self._thread.start()

    @property
    def fd(self) -> int:
        """Readable when finished batches wait in :meth:`results` (for a zmq.Poller)."""
        return self._rfd

    @property
    def idle(self) -> bool:
        """Nothing queued and no batch being stored."""
        with self._cond:
            return not self._busy and not self._queued

    @property
    def queued_records(self) -> int:
        """Records queued and not yet taken into a transaction."""
        return self._queued

    @property
    def busy(self) -> bool:
        """A batch is being stored (read without the lock: a hint)."""
        return self._busy

    def put(self, entries: Sequence[Entry]) -> None:
        """Queue decoded messages (REPLAY ones behind the live ones)."""
        with self._cond:
            live, replay = self._live, self._replay
            for entry in entries:
                item = entry[3]
                (replay if item.replay else live).append(entry)
                self._queued += item.size
            if not self._busy:
                self._cond.notify()

    def record_health(self, tower_id: str, health: dict) -> None:
        """Pass a HEALTH object to the store (on the writer's thread, soon)."""
        with self._cond:
            self._health.append((tower_id, health))
            self._cond.notify()

    def results(self) -> list[tuple[Batch, list[StoreResult], bool, float, float]]:
        try:
            while os.read(self._rfd, 4096):
                pass
        except BlockingIOError:
            pass
        with self._cond:
            self.has_results = False
            out = list(self._done)
            self._done.clear()
        return out

    def _take(self) -> Batch:
        """Live messages up to the batch limit (at least one message when any waits),
        then backlog up to ``replay_records`` (at least one message when any waits; only
        that one while live messages are left waiting). Holds the lock."""
        batch: Batch = []
        records = 0
        live = self._live
        while live and records < self._limit:
            entry = live.popleft()
            batch.append(entry)
            records += entry[3].size
        replay = self._replay
        budget = 1 if live else self._replay_limit  # live left behind: catch up first, the backlog still moves
        taken = 0
        while replay and taken < budget:
            entry = replay.popleft()
            batch.append(entry)
            taken += entry[3].size
        self._queued -= records + taken
        return batch

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._live and not self._replay and not self._health and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                # Commits at least min_interval_s apart (unless a full batch waits): each
                # costs the same CPU whatever its size (round trips, the WAL flush), and an
                # idle central would otherwise commit every message alone.
                due = self._last_start + self._min_interval
                while not self._stop and self._queued < self._limit and (now := time.monotonic()) < due:
                    self._cond.wait(due - now)
                if self._stop:
                    return
                batch = self._take()
                self._busy = bool(batch)
                health, self._health = self._health, []
            for tower_id, obj in health:
                try:
                    self._store.record_health(tower_id, obj)
                except Exception:  # best effort, as the ICD says of HEALTH
                    log.exception("central: a HEALTH object could not be kept (a defect, please report)")
            if not batch:
                continue
            started = self._last_start = time.monotonic()
            results, internal = self._store_batch([e[3] for e in batch])
            finished = time.monotonic()
            with self._cond:
                self._done.append((batch, results, internal, started, finished))
                self._busy = False
                self.has_results = True
            try:
                os.write(self._wfd, b"\x01")
            except BlockingIOError:
                pass  # already readable

    def _store_batch(self, items: Sequence[Pending]) -> tuple[list[StoreResult], bool]:
        try:
            return self._store.store_many(items), False
        except OutboxError as exc:
            return [exc] * len(items), False
        except Exception:  # last resort: a defect is loud, never an outage (and never an ACK)
            log.exception("central: storing %d messages failed (not acknowledged; a defect, please report)",
                          len(items))
            return [OutboxError("internal error while storing")] * len(items), True

    def close(self, timeout_s: float = 60.0) -> None:
        """Finish the batch being stored (its records committed; not acknowledged, the
        towers send them again and the duplicates are dropped), then stop; what is still
        queued is dropped unacknowledged (the towers send it again). Idempotent."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.error("central: the store writer did not finish within %.0f s", timeout_s)
            return
        for fd in (self._rfd, self._wfd):
            try:
                os.close(fd)
            except OSError:
                pass


class AckTiming:
    """Where a message's time at the central goes, per message acknowledged (ms): ``queue``
    (queued for the writer until its transaction started: waiting for the commit before),
    ``commit`` (its transaction's store_many: COPY, insert, commit), ``ack`` (commit
    returned until the ACK was handed to the socket: the serving thread was busy).

    Every message since start counts, in a histogram of fixed size: bins 1 % wide from
    10 µs (shorter times fall in the first) to about 10^4 s; :meth:`summary` gives median and
    p99 as the middle of their bin (within 0.5 %). Why not the last N values: the summary
    then covered a different stretch of time for each central (a central taking twice the
    messages of another covered half the time), so the centrals of one run could not be
    compared (docs/central.md, Sizing, "Two central processes on one database")."""

    PARTS = ("queue", "commit", "ack")
    _FLOOR_S = 1e-5
    _STEP = 1.01
    _BINS = 2100  # _FLOOR_S * _STEP ** 2100 is about 1.2e4 s

    def __init__(self) -> None:
        self._counts = {p: [0] * self._BINS for p in self.PARTS}  # plain lists: += 1 on one is ~40 ns
        self._edges = [self._FLOOR_S * self._STEP ** (k + 1) for k in range(self._BINS - 1)]

    def add(self, queued: float, started: float, finished: float, acked: float) -> None:
        self.add_batch((queued,), started, finished, acked)

    def add_batch(self, queued: Sequence[float], started: float, finished: float, acked: float) -> None:
        """The messages of one transaction (``queued``: when each was queued), acknowledged
        together at ``acked``."""
        n = len(queued)
        if not n:
            return
        counts, edges = self._counts, self._edges
        counts["commit"][bisect_right(edges, finished - started)] += n
        counts["ack"][bisect_right(edges, acked - finished)] += n
        q = counts["queue"]
        for t in queued:
            q[bisect_right(edges, started - t)] += 1

    def _value_ms(self, cumulative: np.ndarray, q: float) -> float:
        k = int(np.searchsorted(cumulative, q * cumulative[-1], side="left"))
        return self._FLOOR_S * self._STEP ** (k + 0.5) * 1000.0

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for part, counts in self._counts.items():
            cumulative = np.cumsum(np.asarray(counts, dtype=np.int64))
            n = int(cumulative[-1])
            if n:
                out[part] = {"median_ms": round(self._value_ms(cumulative, 0.5), 2),
                             "p99_ms": round(self._value_ms(cumulative, 0.99), 2), "n": n}
        return out

