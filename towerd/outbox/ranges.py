"""Inclusive seq-range arithmetic of the outbox, and reading the ranges an
``outbox.dropped`` event names."""

from __future__ import annotations

import json

from towerd.icd import EVENT_OUTBOX_DROPPED


def merge_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, non-overlapping, non-adjacent inclusive ranges covering ``ranges``."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def subtract_range(ranges: list[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int]]:
    """``ranges`` (sorted) without the seqs ``lo..hi``."""
    out: list[tuple[int, int]] = []
    for a, b in ranges:
        if b < lo or a > hi:
            out.append((a, b))
            continue
        if a < lo:
            out.append((a, lo - 1))
        if b > hi:
            out.append((hi + 1, b))
    return out


def announced_ranges(payload: bytes) -> list[tuple[int, int]]:
    """The seq ranges an ``outbox.dropped`` event row names ([] for any other event)."""
    try:
        ev = json.loads(payload)
    except ValueError:
        return []
    if not isinstance(ev, dict) or ev.get("code") != EVENT_OUTBOX_DROPPED:
        return []
    ranges = ev.get("ranges") or [[ev.get("first_seq"), ev.get("last_seq")]]
    return [(int(a), int(b)) for a, b in ranges if isinstance(a, int) and isinstance(b, int) and a <= b]

