"""Logging for the daemon: journald with structured fields when there is a journal,
stderr otherwise, and a rate limit so a broken sensor cannot fill the disk.

Structured fields: a log call may pass ``extra={"sensor": "radar0"}`` (also ``track``,
``central``); they become the journal fields ``SENSOR=``, ``TRACK=``, ``CENTRAL=`` so a
technician can run ``journalctl -u towerd SENSOR=radar0``. (python-systemd keeps only
UPPERCASE extra keys, hence the mapping.)
"""

from __future__ import annotations

import logging
import os
import sys
import time

STRUCTURED_FIELDS = ("sensor", "track", "central")


class RateLimitFilter(logging.Filter):
    """Let through at most ``burst`` records per ``interval_s`` for each message
    template (logger, level, format string); then say how many were suppressed."""

    def __init__(self, burst: int = 5, interval_s: float = 60.0, clock=time.monotonic) -> None:
        super().__init__()
        self.burst = burst
        self.interval_s = interval_s
        self._clock = clock
        self._windows: dict[tuple, list] = {}  # key -> [window_start, passed, suppressed]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, record.msg if isinstance(record.msg, str) else repr(record.msg))
        now = self._clock()
        window = self._windows.get(key)
        if window is None or now - window[0] >= self.interval_s:
            suppressed = window[2] if window else 0
            self._windows[key] = [now, 1, 0]
            if len(self._windows) > 1000:  # bound the table itself
                self._windows = {k: v for k, v in self._windows.items() if now - v[0] < self.interval_s}
            if suppressed:
                record.msg = f"{record.msg} [{suppressed} similar messages suppressed]"
            return True
        if window[1] < self.burst:
            window[1] += 1
            return True
        window[2] += 1
        return False


class _JournalFields(logging.Filter):
    """Copy lowercase structured extras to the UPPERCASE names journald keeps."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name in STRUCTURED_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                setattr(record, name.upper(), str(value))
        return True


def stderr_is_journal() -> bool:
    """True when systemd connected our stderr to the journal (JOURNAL_STREAM matches)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    if not stream:
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"


def setup_logging(level: str = "info", *, journal: bool | None = None) -> logging.Handler:
    """Configure the root logger once; return the handler in use."""
    if journal is None:
        journal = stderr_is_journal()
    handler: logging.Handler | None = None
    if journal:
        try:
            from systemd.journal import JournalHandler

            handler = JournalHandler(SYSLOG_IDENTIFIER="towerd")
            handler.addFilter(_JournalFields())
            handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        except ImportError:
            handler = None
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RateLimitFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    return handler
