"""Faults a line-oriented device emulator injects into what it sends next (NMEA radar,
Remote ID receiver): random bytes, lines cut short, a stalled line.

A mixin: the emulator owns ``self._lock`` (guarding the fault state), ``self.rng`` and
``self.clock``, calls :meth:`LineFaults._init_faults` in its constructor, passes each
batch of lines through :meth:`LineFaults._with_faults` (holding its lock) and sends
nothing while ``monotonic() < self._stall_until``.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np


class LineFaults:
    """inject_garbage / inject_truncated / inject_stall for an emulator that sends lines."""

    _lock: "object"
    rng: np.random.Generator

    def _init_faults(self) -> None:
        self._garbage = 0
        self._truncate = 0
        self._stall_until = -math.inf

    def inject_garbage(self, n_bytes: int) -> None:
        """Send ``n_bytes`` random bytes before the next lines."""
        with self._lock:  # type: ignore[attr-defined]
            self._garbage += max(0, int(n_bytes))

    def inject_truncated(self, count: int = 1) -> None:
        """Cut the next ``count`` lines in half, without their line end."""
        with self._lock:  # type: ignore[attr-defined]
            self._truncate += max(0, int(count))

    def inject_stall(self, seconds: float) -> None:
        """Send nothing for ``seconds``: what falls due meanwhile is lost, bytes queued wait."""
        with self._lock:  # type: ignore[attr-defined]
            self._stall_until = self.clock.monotonic() + max(0.0, float(seconds))  # type: ignore[attr-defined]

    def _with_faults(self, lines: Iterable[bytes]) -> bytes:
        """``lines`` as wire bytes with the pending faults applied (caller holds the lock)."""
        out = bytearray()
        if self._garbage:
            out += self.rng.integers(0, 256, self._garbage, dtype=np.uint8).tobytes()
            self._garbage = 0
        for line in lines:
            if self._truncate:
                self._truncate -= 1
                line = line[: len(line) // 2]
            out += line
        return bytes(out)
