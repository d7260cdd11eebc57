"""The outbox's newest committed rows kept in memory, so that a sender reads what was just
committed (and an acknowledgement of it is counted) without a query.

Why: on a tower the uplink sends each commit's rows at once, and the central
acknowledges them before the next commit; reading them back from SQLite (a read
transaction, a query) and counting the acknowledged rows before deleting them (a second
query) cost more than the rest of a message's bookkeeping (measured: about 20 and 8 µs
of CPU of ~90 µs of SQL per message on tmpfs, several times that on a disk).

What it holds (the invariant every method keeps): a contiguous run of seqs
``lo .. lo + len - 1``, each a committed row that exists in the database with no central's
bit set in ``done``, in the order added. Anything that sets a bit or deletes a row (an
acknowledgement, an exclusion, the size cap, a change of centrals) first calls
:meth:`Tail.forget_to` (or :meth:`Tail.release`, :meth:`Tail.clear`): rows are only ever
forgotten, never trusted beyond what the database holds, so a rolled-back transaction
leaves the tail a subset of the truth. Rows added in the open transaction wait in :meth:`Tail.added` and
join at :meth:`Tail.committed` (or are discarded at :meth:`Tail.rolled_back`).

Rows are kept per add: one buffer for a batch of track records, one per event. Bounded
by :data:`MAX_ROWS` (the oldest are forgotten; they are read from the database).
"""

from __future__ import annotations

from towerd.icd import RECORD_SIZE
from towerd.outbox.rows import KIND_TRACK as _KIND_TRACK

MAX_ROWS = 1024
"""Rows kept at most (the live rows in flight to a central; older ones are queried)."""



class Tail:
    """The newest committed rows not yet touched by any central (see the module doc)."""

    def __init__(self, max_rows: int = MAX_ROWS) -> None:
        self._max_rows = max_rows
        # Chunks [first_seq, kind, buffer, n]: n consecutive rows; a 'T' buffer is n
        # 80-byte records back to back, an 'E' buffer one event (n == 1).
        self._chunks: list[list] = []
        self._rows = 0
        self._new: list[list] = []

    @property
    def lo(self) -> int:
        """First seq held (meaningless when empty)."""
        return self._chunks[0][0] if self._chunks else 0

    @property
    def end(self) -> int:
        """One past the last seq held (0 when empty)."""
        if not self._chunks:
            return 0
        last = self._chunks[-1]
        return last[0] + last[3]

    def added(self, first: int, kind: str, buffer: bytes, n: int) -> None:
        """Rows ``first .. first + n - 1`` inserted in the open transaction."""
        self._new.append([first, kind, buffer, n])

    def committed(self) -> None:
        """The open transaction committed: its rows join the tail."""
        if not self._new:
            return
        if self._chunks and self.end != self._new[0][0]:
            self.clear()  # not contiguous (rows in between were never held): start again
        for chunk in self._new:
            self._chunks.append(chunk)
            self._rows += chunk[3]
        self._new = []
        excess = self._rows - self._max_rows
        if excess > 0:  # the oldest go (they are read from the file if still wanted)
            self._rows -= _cut(self._chunks, self._chunks[0][0] + excess - 1)

    def rolled_back(self) -> None:
        """The open transaction was rolled back: its rows never existed."""
        self._new = []

    def clear(self) -> None:
        self._chunks = []
        self._rows = 0

    def forget_to(self, hi: int) -> None:
        """Rows with seq <= ``hi`` are about to change (a bit set, or deleted), committed
        or not (the size cap may drop rows of the open transaction)."""
        self._rows -= _cut(self._chunks, hi)
        _cut(self._new, hi)

    def release(self, lo: int, hi: int) -> int | None:
        """When every seq ``lo .. hi`` is held: forget the rows up to ``hi`` (as
        :meth:`forget_to`: they are about to be deleted) and return the payload bytes of
        ``lo .. hi``. Otherwise None, and nothing is forgotten. Only the front of the tail
        is walked: the usual acknowledgement is of its oldest rows."""
        chunks = self._chunks
        if not chunks or chunks[0][0] > lo or hi >= chunks[-1][0] + chunks[-1][3]:
            return None
        total = 0
        for first, kind, buf, n in chunks:
            if first > hi:
                break
            last = first + n - 1
            if last >= lo:  # overlaps lo .. hi
                total += (min(last, hi) - max(first, lo) + 1) * RECORD_SIZE if kind == _KIND_TRACK else len(buf)
        self._rows -= _cut(chunks, hi)
        if self._new and self._new[0][0] <= hi:
            _cut(self._new, hi)
        return total

    def track_run(self, after: int, before: int, limit: int) -> tuple[int, int, bytes] | None:
        """The TRACKS records from ``after + 1`` on, below ``before``, at most ``limit``,
        up to the next event, as ``(first, count, records back to back)``; None when
        ``after + 1`` is not a held track record."""
        out: list[bytes] = []
        count = 0
        want = after + 1
        stop = min(before, want + limit)
        for first, kind, buf, n in self._chunks:
            if first + n <= want:
                continue
            if first > want or kind != _KIND_TRACK or want >= stop:
                break
            k = min(first + n, stop) - want
            off = (want - first) * RECORD_SIZE
            out.append(buf if off == 0 and k == n else buf[off:off + k * RECORD_SIZE])
            count += k
            want += k
        if not count:
            return None
        return after + 1, count, out[0] if len(out) == 1 else b"".join(out)

    def rows(self, after: int, before: int, limit: int) -> list[tuple[int, str, bytes]] | None:
        """The rows ``after < seq < before``, oldest first, at most ``limit``, as
        :meth:`Outbox.pending` gives them; None when some of them may lie below the tail
        (then the database must be asked)."""
        chunks = self._chunks
        if not chunks or after + 1 < chunks[0][0]:
            return None
        out: list[tuple[int, str, bytes]] = []
        stop = min(before, after + 1 + limit)
        for first, kind, buf, n in chunks:
            last = first + n - 1
            if last <= after:
                continue
            if first >= stop:
                break
            if kind == _KIND_TRACK:
                a = max(first, after + 1)
                b = min(last, stop - 1)
                base = first
                out.extend((s, kind, buf[(s - base) * RECORD_SIZE:(s - base + 1) * RECORD_SIZE])
                           for s in range(a, b + 1))
            else:
                out.append((first, kind, buf))
        return out


def _cut(chunks: list[list], hi: int) -> int:
    """Remove the rows with seq <= ``hi`` from the front of ``chunks``; how many."""
    removed = 0
    while chunks and chunks[0][0] <= hi:
        first, kind, buf, n = chunks[0]
        if first + n - 1 <= hi:
            chunks.pop(0)
            removed += n
            continue
        k = hi - first + 1  # a batch of records cut: keep its newer part
        chunks[0] = [hi + 1, kind, buf[k * RECORD_SIZE:], n - k]
        removed += k
        break
    return removed
