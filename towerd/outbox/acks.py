"""Acknowledgement state of the outbox: one bit per central in each row's ``done``
column, the centrals' names and bits, and the rows protected from the size cap while
they are in flight to a central.

A row is deleted when every configured central's bit is set. Bits of centrals no longer
configured are cleared when the outbox is opened (or the centrals are changed); a new
central starts with its bit clear on every held row, so it receives what is still held.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence

from towerd.errors import ConfigError
from towerd.seqranges import SEQ_MAX, merge_ranges

log = logging.getLogger(__name__)

MAX_CENTRALS = 32
SINGLE_CONSUMER = "*"
"""The consumer name used when the outbox is opened without central names."""


class AckMixin:
    """The part of :class:`~towerd.outbox.sqlite.Outbox` that keeps which central still
    needs which row."""

    def _assign_bits(self, conn: sqlite3.Connection) -> None:
        """Give each wanted central a bit; forget centrals no longer configured (clearing
        their bits, deleting rows every remaining central is done with)."""
        self._tail.clear()
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
        added_mask = sum(1 << kept[n] for n in added)
        self._identity_bits(conn, full, full & ~added_mask)  # the identity stream follows
        if removed:
            n, nbytes = conn.execute("SELECT count(*), coalesce(sum(length(payload)), 0) FROM records "
                                     "WHERE done & ? = ?", (full, full)).fetchone()
            if n:
                conn.execute("DELETE FROM records WHERE done & ? = ?", (full, full))
                self._count -= n
                self._bytes -= nbytes
                log.info("outbox %s: %d records acknowledged by every remaining central deleted", self._path, n)


    def protect(self, central: str | None, first_seq: int, last_seq: int) -> None:
        """A sender built ``first_seq..last_seq`` into a message for ``central``: until
        that central acknowledges those rows, the size cap does not drop them (they may
        reach it, and a dropped record must really be lost)."""
        if first_seq > last_seq:
            return
        key = SINGLE_CONSUMER if self._single else central
        if key not in self._bits:
            raise ValueError(f"outbox keeps no state for central {central!r}")
        ranges = self._protected.get(key)
        if not ranges or first_seq > ranges[-1][1] + 1:  # the usual case: after what is protected
            self._protected.setdefault(key, []).append((first_seq, last_seq))
        elif first_seq >= ranges[-1][0]:  # overlaps or extends the last range only
            ranges[-1] = (ranges[-1][0], max(ranges[-1][1], last_seq))
        else:
            self._protected[key] = merge_ranges(ranges + [(first_seq, last_seq)])

    def protected_count(self) -> int:
        """Seqs currently protected from the size cap (over all centrals, counted once
        per central)."""
        return sum(b - a + 1 for ranges in self._protected.values() for a, b in ranges)


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


    def ack(self, first_seq: int, last_seq: int, central: str | None = None) -> int:
        """Mark the committed rows with ``first_seq <= seq <= last_seq`` as done for
        ``central`` (it acknowledged them, or its sharing rule excludes them) and delete
        those every central is done with. Rows added since the last commit are never
        touched: they cannot have been sent. Durable at the next commit. Returns how many
        rows were newly marked for this central (= deleted, with one central)."""
        conn = self._db()
        bit = self._full_mask if self._single else self._bit(central)
        if first_seq > last_seq:
            return 0
        hi = min(last_seq, self._c_next_seq - 1, SEQ_MAX)
        lo = max(first_seq, 1)
        if lo > hi:
            return 0
        full = self._full_mask
        if bit == full:
            nbytes = self._tail.release(lo, hi)
            if nbytes is not None:
                return self._ack_held(conn, lo, hi, central, nbytes)
        self._tail.forget_to(hi)
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
        self._book_ack(central, lo, hi, n, nbytes)
        return n if newly is None else newly

    def _ack_held(self, conn: sqlite3.Connection, lo: int, hi: int, central: str | None, nbytes: int) -> int:
        """:meth:`ack` by the last central needed of rows the tail held
        (towerd.outbox.tail; released from it, with their ``nbytes``): each of them
        exists and is deleted now, so they are counted without a query."""
        n = hi - lo + 1
        try:
            self._begin(conn)
            deleted = conn.execute("DELETE FROM records WHERE seq BETWEEN ? AND ?", (lo, hi)).rowcount
            if deleted != n:  # the tail was wrong (a defect): count the store again
                log.error("outbox %s: acknowledging %d..%d deleted %d rows, %d expected; recounting", self._path,
                          lo, hi, deleted, n)
                count, held_bytes = conn.execute(
                    "SELECT count(*), coalesce(sum(length(payload)), 0) FROM records").fetchone()
                n, nbytes = self._count - count, self._bytes - held_bytes
        except sqlite3.Error as exc:
            raise self._failed(conn, "ack", exc) from exc
        self._book_ack(central, lo, hi, n, nbytes)
        return n

    def _book_ack(self, central: str | None, lo: int, hi: int, n: int, nbytes: int) -> None:
        """The counters after an acknowledgement of ``lo..hi`` deleted ``n`` rows of
        ``nbytes``; the rows stay protected from the size cap until it commits."""
        self._release_on_commit.append((SINGLE_CONSUMER if self._single else central, lo, hi))  # type: ignore[arg-type]
        self._count -= n
        self._bytes -= nbytes
        self._deleted_since_truncate += n
