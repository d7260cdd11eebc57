"""A logger wrapper that writes at most one line per reason per interval.

Neutral (no I/O library imports) so that the tower's uplink and the reference central
both use it without importing each other."""

from __future__ import annotations

import logging

from towerd.clock import Clock


class RateLimitedLog:
    """Log at most one line per reason per ``interval_s``; the lines left out are
    counted and their number is added to the next line logged for that reason."""

    _MAX_REASONS = 256

    def __init__(self, logger: logging.Logger, clock: Clock, interval_s: float = 1.0) -> None:
        self._log = logger
        self._clock = clock
        self._interval = interval_s
        self._state: dict[str, tuple[float, int]] = {}

    def __call__(self, level: int, reason: str, msg: str, *args: object, exc_info: bool = False) -> bool:
        """Log ``msg % args`` unless ``reason`` was logged within the interval.
        Returns whether a line was written."""
        now = self._clock.monotonic()
        last = self._state.get(reason)
        if last is not None and now - last[0] < self._interval:
            self._state[reason] = (last[0], last[1] + 1)
            return False
        if last is not None and last[1]:
            msg += " (%d similar suppressed)"
            args = (*args, last[1])
        if len(self._state) >= self._MAX_REASONS and reason not in self._state:
            self._state.clear()
        self._state[reason] = (now, 0)
        self._log.log(level, msg, *args, exc_info=exc_info)
        return True

    def exception(self, reason: str, msg: str, *args: object) -> bool:
        """Like calling it at ERROR, with the current exception's traceback."""
        return self(logging.ERROR, reason, msg, *args, exc_info=True)

