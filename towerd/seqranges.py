"""Seq ranges and the ``outbox.dropped`` event that names them, in one place for the
tower (which drops and announces) and the central (which reads the announcements and
tells losses from gaps).

A range is an inclusive ``(first, last)`` pair of seqs. The event (ICD "Sequence
numbers, acknowledgements, delivery"; docs/protocol.md "Outbox"): ``first_seq``,
``last_seq``, ``count`` (seqs named), ``reason``, and ``ranges`` when the seqs named are
not one contiguous run; at most :data:`RANGES_PER_EVENT` ranges per event.
"""

from __future__ import annotations

from collections.abc import Iterable

from towerd.icd import EVENT_OUTBOX_DROPPED

SEQ_MAX = 2**63 - 1
"""Largest seq stored (SQLite's INTEGER and PostgreSQL's bigint are signed 64-bit)."""
RANGES_PER_EVENT = 64

Range = tuple[int, int]


def merge_ranges(ranges: Iterable[Range]) -> list[Range]:
    """Sorted, non-overlapping, non-adjacent inclusive ranges covering ``ranges``."""
    out: list[Range] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def subtract_range(ranges: list[Range], lo: int, hi: int) -> list[Range]:
    """``ranges`` (sorted) without the seqs ``lo..hi``."""
    out: list[Range] = []
    for a, b in ranges:
        if b < lo or a > hi:
            out.append((a, b))
            continue
        if a < lo:
            out.append((a, lo - 1))
        if b > hi:
            out.append((hi + 1, b))
    return out


def subtract_ranges(a: list[Range], b: list[Range]) -> list[Range]:
    """The seq ranges of ``a`` not covered by ``b`` (both sorted, inclusive, ``b`` may
    overlap itself)."""
    out: list[Range] = []
    bs = sorted(b)
    j = 0
    for lo, hi in a:
        cur = lo
        while j < len(bs) and bs[j][1] < cur:
            j += 1
        k = j
        while k < len(bs) and bs[k][0] <= hi and cur <= hi:
            blo, bhi = bs[k]
            if blo > cur:
                out.append((cur, blo - 1))
            cur = max(cur, bhi + 1)
            k += 1
        if cur <= hi:
            out.append((cur, hi))
    return out


def dropped_events(named: list[Range], reason: str) -> list[tuple[str, dict]]:
    """The ``outbox.dropped`` announcements of the merged ranges ``named``: one
    ``(message, fields)`` per :data:`RANGES_PER_EVENT` ranges (code and severity are
    ``outbox.dropped`` and ``error``)."""
    out = []
    for i in range(0, len(named), RANGES_PER_EVENT):
        chunk = named[i:i + RANGES_PER_EVENT]
        count = sum(b - a + 1 for a, b in chunk)
        first_seq, last_seq = chunk[0][0], chunk[-1][1]
        extra = {"ranges": [list(r) for r in chunk]} if len(chunk) > 1 else {}
        out.append((f"outbox full ({reason}): {count} records lost, seq {first_seq}..{last_seq}",
                    {"first_seq": first_seq, "last_seq": last_seq, "count": count, "reason": reason, **extra}))
    return out


def dropped_ranges(ev: dict) -> list[Range] | None:
    """The seq ranges an ``outbox.dropped`` event names, or None if it is not one or
    does not name valid ranges (bounds, ranges within them, count matching)."""
    if ev.get("code") != EVENT_OUTBOX_DROPPED:
        return None
    first, last, count = ev.get("first_seq"), ev.get("last_seq"), ev.get("count")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (first, last, count)):
        return None
    if not 1 <= first <= last <= SEQ_MAX or count < 1:
        return None
    raw = ev.get("ranges")
    if raw is None:
        ranges = [(first, last)]
    else:
        if not isinstance(raw, list) or not raw:
            return None
        ranges = []
        for r in raw:
            if (not isinstance(r, list) or len(r) != 2 or not all(isinstance(v, int) and not isinstance(v, bool)
                                                                     for v in r) or not first <= r[0] <= r[1] <= last):
                return None
            ranges.append((r[0], r[1]))
    if sum(b - a + 1 for a, b in ranges) != count:
        return None
    return ranges
