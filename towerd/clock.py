"""Injectable clocks.

Everything inside towerd measures time with a monotonic clock (seconds, float); UTC
appears only when a report is stamped. :class:`Clock` pairs both so that a test or a
replay can substitute a deterministic clock.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Time source: monotonic seconds for the loop, UTC microseconds for reports."""

    def monotonic(self) -> float: ...

    def utc_us(self, mono: float | None = None) -> int:
        """UTC microseconds since the epoch at monotonic instant ``mono`` (now if None)."""
        ...


class SystemClock:
    """The real clocks. UTC for a past monotonic instant is derived from the offset
    between the two clocks, read fresh on every call so that an NTP step is followed."""

    def monotonic(self) -> float:
        return time.monotonic()

    def utc_us(self, mono: float | None = None) -> int:
        now_mono = time.monotonic()
        now_utc_ns = time.time_ns()
        if mono is None:
            return now_utc_ns // 1000
        return (now_utc_ns - round((now_mono - mono) * 1e9)) // 1000


class ManualClock:
    """A clock that moves only when told; UTC is a fixed epoch plus monotonic time."""

    def __init__(self, start_mono: float = 0.0, utc_epoch_us: int = 1_700_000_000_000_000) -> None:
        self._mono = start_mono
        self._epoch_us = utc_epoch_us

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._mono += seconds

    def utc_us(self, mono: float | None = None) -> int:
        t = self._mono if mono is None else mono
        return self._epoch_us + round(t * 1e6)
