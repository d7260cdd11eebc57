"""The outbox's durability policy: fsyncing the WAL itself with
``synchronous=normal``, truncating the WAL after a drain, and rolling back after a
failed write.

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
"""

from __future__ import annotations

import logging
import os
import sqlite3

from towerd.errors import OutboxError

log = logging.getLogger(__name__)

_TRUNCATE_AFTER_DELETES = 10_000
"""After a backlog of at least this many records was held and then drained (this many
deletions, and the backlog small again), the WAL is truncated. Not after the deletions
of a tower at its usual rate, whose backlog stays small: that WAL is overwritten in
place, and a truncated one grows again, each of its next ~500 commits then waiting
longer for its fsync (the file system's journal; measured on ext4: 3.5-3.6 instead of
3.0 waits per commit)."""
NORMAL_SYNC_INTERVAL_S = 1.0
"""With synchronous=normal, the WAL is fsynced by the outbox at most this often, and only
synced records are handed out for sending (see :meth:`Outbox.pending`)."""


class DurabilityMixin:
    """The part of :class:`~towerd.outbox.sqlite.Outbox` that decides when written rows
    are on stable storage, and what a failed write costs."""

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
        lost += self._restore_identities()
        self._release_on_commit.clear()
        self._tail.rolled_back()
        self._note_in_txn = False
        self._generation += 1
        self._write_failures += 1
        self._lost_unannounced += max(0, lost)
        self._lost_error = str(exc)
        self._last_error = self._write_error = f"{what}: {exc}"
        return OutboxError(f"outbox {self._path}: {what} failed ({exc}); {max(0, lost)} uncommitted records lost")


    def _truncate_wal(self, conn: sqlite3.Connection) -> None:
        """After a large drain: copy the WAL into the database and cut it to zero bytes,
        so that the disk space a long outage took is given back."""
        try:
            busy, wal_pages, done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as exc:
            log.warning("outbox %s: WAL checkpoint failed: %s", self._path, exc)
            return
        self._deleted_since_truncate = 0
        self._peak_count = self._count
        log.debug("outbox %s: WAL checkpoint(TRUNCATE) after a drain: busy=%s pages=%s done=%s",
                  self._path, busy, wal_pages, done)


    def _sendable_next_seq(self) -> int:
        """Rows below this may be sent: committed, and (synchronous=normal) synced, so
        that a power cut can never take back a seq a central has seen and hand it to a
        new record (the central would drop that record as a duplicate)."""
        if self._synchronous != "NORMAL":
            return self._c_next_seq
        unsynced = (self._c_next_seq > self._synced_next_seq
                    or self._id_c_next_seq > self._id_synced_next_seq)  # the identity stream too
        if unsynced and self._clock.monotonic() - self._last_sync >= NORMAL_SYNC_INTERVAL_S:
            self._sync_to_disk()
        return self._synced_next_seq

    def _sync_to_disk(self, directory: bool = False) -> None:
        """fsync the WAL (or the database, when there is no WAL) from outside SQLite: the
        commits already written become durable, as with synchronous=full, but once per
        interval instead of once per commit."""
        mark, id_mark = self._c_next_seq, self._id_c_next_seq
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
        self._id_synced_next_seq = id_mark
        self._last_sync = self._clock.monotonic()
        if self._write_error and self._write_error.startswith("fsync"):
            self._write_error = None

