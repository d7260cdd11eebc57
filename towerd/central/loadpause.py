"""Where the load generator's worker spends the time between two reads of its towers'
replies (:mod:`towerd.central.loadgen`): per window of the run (one second), the records
acknowledged, their ACK latency (p99, max), the longest gap between two reads of the
replies and what filled it (Python's garbage collector, the towers' SQLite writes, their
uplinks' sends, the worker's other bookkeeping, and wall time the thread did not run:
the CPU taken by other processes), and the longest time one read spent handling
replies (ACKs marked in the outboxes).

A reply that arrives during a gap waits in the worker until the gap ends, so the
latency a tower sees includes it; this says which part of the generator to blame for a
latency spike, and which spikes are not the generator's (no long gap at the time)."""

from __future__ import annotations

import gc
import time

import numpy as np

PARTS = ("gc", "write", "send", "pace", "mark")
"""What a gap is made of: ``gc`` (collections), ``write`` (a tower's outbox append and
commit), ``send`` (its uplink's poll after the commit), ``pace`` (the backlog pacing
pass), ``mark`` (the once-a-second bookkeeping), ``other`` (the rest of the loop).
``gc`` is also inside whichever part it interrupted; that part is given without it."""


class Pauses:
    """Time accounting for one worker's loop. ``began = begin()`` then ``part(name, began)``
    books loop work;
    ``read_begins()`` / ``read_ends()`` bracket each read of the replies;
    ``window(now, latencies)`` closes a window. Costs two clock readings per part."""

    def __init__(self) -> None:
        self._gap = dict.fromkeys(PARTS, 0.0)
        self._gc_started = 0.0
        self._gc_total = 0.0  # every collection's time since the start, s
        self._gc_window = 0.0
        self._gc_max = 0.0
        self._gc_full = 0
        self._last_read = time.monotonic()
        self._last_cpu = time.thread_time()
        self._worst: dict = {"ms": 0.0}
        self._read_max = 0.0
        self._lat_mark = 0
        self.windows: list[dict] = []
        gc.callbacks.append(self._on_gc)

    def restart(self) -> None:
        """Forget what was booked so far (the setup): the run starts now."""
        self._gap = dict.fromkeys(PARTS, 0.0)
        self._gc_window = self._gc_max = 0.0
        self._gc_full = 0
        self._last_read = time.monotonic()
        self._last_cpu = time.thread_time()
        self._worst = {"ms": 0.0}
        self._read_max = 0.0

    def close(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_started = time.monotonic()
            return
        dt = time.monotonic() - self._gc_started
        self._gap["gc"] += dt
        self._gc_total += dt
        self._gc_window += dt
        self._gc_max = max(self._gc_max, dt)
        if info.get("generation") == 2:
            self._gc_full += 1

    def begin(self) -> tuple[float, float]:
        """A part of the loop starts: give what this returns to :meth:`part` at its end."""
        return time.monotonic(), self._gc_total

    def part(self, name: str, began: tuple[float, float]) -> tuple[float, float]:
        """Book the time since ``began`` to ``name``, less the collections inside it (a
        collection between two parts is in ``gc`` alone); returns the next part's start."""
        now = time.monotonic()
        self._gap[name] += (now - began[0]) - (self._gc_total - began[1])
        return now, self._gc_total

    def read_begins(self) -> float:
        """A read of the replies starts: closes the gap since the last one."""
        now = time.monotonic()
        gap = now - self._last_read
        if gap * 1000.0 > self._worst["ms"]:
            cpu = time.thread_time() - self._last_cpu
            gap_parts = self._gap
            booked = sum(gap_parts.values())
            self._worst = {"ms": round(gap * 1000.0, 2), "cpu_ms": round(cpu * 1000.0, 2),
                           **{k: round(v * 1000.0, 2) for k, v in gap_parts.items()},
                           "unbooked": round((gap - booked) * 1000.0, 2)}
        for k in self._gap:
            self._gap[k] = 0.0
        return now

    def read_ends(self, began: float) -> float:
        """A read of the replies that began at ``began`` ends: returns the time it ended."""
        now = time.monotonic()
        self._read_max = max(self._read_max, now - began)
        self._gap["gc"] = 0.0  # a collection during the read is not in the next gap
        self._last_read = now
        self._last_cpu = time.thread_time()
        return now

    def window(self, t: float, acked: int, latencies: list[float]) -> None:
        """Close the window ending at ``t`` (s since the start): ``acked`` records in it,
        ``latencies`` the worker's list so far (the new ones are this window's)."""
        lat = np.asarray(latencies[self._lat_mark:], dtype=np.float64)
        self._lat_mark = len(latencies)
        self.windows.append({
            "t": round(t, 1), "acked": acked, "n": int(lat.size),
            "p99_ms": round(float(np.percentile(lat, 99)), 1) if lat.size else None,
            "max_ms": round(float(lat.max()), 1) if lat.size else None,
            "gap": self._worst, "read_max_ms": round(self._read_max * 1000.0, 2),
            "gc_ms": round(self._gc_window * 1000.0, 2), "gc_max_ms": round(self._gc_max * 1000.0, 2),
            "gc_full": self._gc_full})
        self._worst = {"ms": 0.0}
        self._read_max = self._gc_window = self._gc_max = 0.0
        self._gc_full = 0
