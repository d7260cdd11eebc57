"""The central's store writer: a batching store's commits on their own thread.

Why: a commit waits on the database (its WAL flush, its index inserts). Done on the
thread that receives, the towers' messages wait in the socket during every commit and
the central's decoding and the database's work never overlap. Here the serving thread
keeps receiving, checking and decoding while one batch is committed; when the commit
returns, everything that arrived meanwhile goes into the next transaction (group
commit: the busier the central, the larger each batch, the fewer commits per record).

The writer only stores: it never touches the ROUTER (ZeroMQ sockets are not
thread-safe). It hands each batch's results back and wakes the serving thread through
a pipe that thread polls beside its socket; the serving thread then sends the ACKs, so
an ACK still follows the commit that holds its records. HEALTH objects are passed to the
store on the writer's thread too, so that the store is used from one thread.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Sequence

from towerd.central.storetypes import Pending, ReportStore, StoreResult
from towerd.errors import OutboxError

log = logging.getLogger(__name__)

Batch = list[tuple[bytes, int, int, Pending]]
"""(routing id, first seq, last seq, message) per message of one transaction."""


class StoreWriter:
    """Runs ``store.store_many`` on a thread of its own, one batch at a time.

    :meth:`submit` hands a batch over (only when :attr:`idle`); :meth:`results` returns
    ``(batch, results, internal)`` for each batch finished since the last call
    (``internal``: the store raised something other than OutboxError, a defect);
    :attr:`fd` becomes readable when there are some."""

    def __init__(self, store: ReportStore) -> None:
        self._store = store
        self._cond = threading.Condition()
        self._todo: Batch | None = None
        self._busy = False
        self._health: list[tuple[str, dict]] = []
        self._done: deque[tuple[Batch, list[StoreResult], bool]] = deque()
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
        """No batch handed over and not yet finished."""
        with self._cond:
            return not self._busy

    def submit(self, batch: Batch) -> None:
        with self._cond:
            if self._busy:
                raise RuntimeError("store writer is busy")
            self._todo, self._busy = batch, True
            self._cond.notify()

    def record_health(self, tower_id: str, health: dict) -> None:
        """Pass a HEALTH object to the store (on the writer's thread, soon)."""
        with self._cond:
            self._health.append((tower_id, health))
            self._cond.notify()

    def results(self) -> list[tuple[Batch, list[StoreResult], bool]]:
        try:
            while os.read(self._rfd, 4096):
                pass
        except BlockingIOError:
            pass
        with self._cond:
            out = list(self._done)
            self._done.clear()
        return out

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._todo is None and not self._health and not self._stop:
                    self._cond.wait()
                if self._stop and self._todo is None:
                    return
                batch, self._todo = self._todo, None
                health, self._health = self._health, []
            for tower_id, obj in health:
                try:
                    self._store.record_health(tower_id, obj)
                except Exception:  # best effort, as the ICD says of HEALTH
                    log.exception("central: a HEALTH object could not be kept (a defect, please report)")
            if batch is None:
                continue
            results, internal = self._store_batch([p for _, _, _, p in batch])
            with self._cond:
                self._done.append((batch, results, internal))
                self._busy = False
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
        towers send them again and the duplicates are dropped), then stop. Idempotent."""
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
