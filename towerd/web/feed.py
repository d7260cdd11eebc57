"""The hand-over from the daemon's loop to the console's threads.

The loop owns every piece of state the console shows. It never waits for the console and
never serialises anything for it: while a console is open it takes, at the console's
rate, a :class:`Snapshot` of references to arrays the pipeline has already frozen (or
replaced rather than changed: tracks, labels, RF tracks, band results, readings) and a
few small copies, and publishes it here. The console's view thread (:mod:`towerd.web.view`)
turns snapshots into JSON. With no console open the loop's cost is one attribute test
per reading and one deque append per event.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

ACTIVE_AFTER_REQUEST_S = 5.0
"""A plain JSON request keeps snapshots coming this long (a poller needs fresh data too)."""
MAX_READINGS = 2048
"""Readings held between two snapshots at most (the oldest go first)."""
MAX_EVENTS = 100


@dataclass(frozen=True)
class Snapshot:
    """What the loop hands over at one instant. The readings (radar plots, RF band
    results) go through :meth:`ConsoleFeed.take_readings` instead, so that none is lost
    when the view skips a snapshot."""

    version: int
    t_mono: float
    utc_us: int
    tracks: Any  # TrackTable (frozen)
    labels: Any  # TrackLabels aligned with tracks, or None
    features: Any  # classifier FEATURE_DTYPE rows aligned with tracks, or None
    rf_tracks: Any  # RF_TRACK_DTYPE (read-only)
    rf_band_keys: tuple[tuple[str, str], ...]
    health: dict[str, Any] | None  # daemon.status(), about once a second
    config: Any  # Config in force
    config_digest: str
    events: tuple[dict[str, Any], ...] = field(default=())


class ConsoleFeed:
    """Thread-safe: the loop calls ``note_*``, :meth:`due` and :meth:`publish`; the web
    side calls :meth:`client_opened` / :meth:`client_closed` / :meth:`touch` and
    :meth:`wait`."""

    def __init__(self, rate_hz: float) -> None:
        self.interval_s = 1.0 / rate_hz
        self._cond = threading.Condition()
        self._clients = 0
        self._active_until = 0.0
        self._next_due = 0.0
        self._readings: collections.deque[Any] = collections.deque(maxlen=MAX_READINGS)
        self._events: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_EVENTS)
        self._latest: Snapshot | None = None
        self._version = 0
        self.active = False
        """Plain attribute the loop reads on its hot path (no lock: a stale read only
        delays or adds one snapshot)."""

    # -- web side -----------------------------------------------------------------

    def client_opened(self) -> None:
        with self._cond:
            self._clients += 1
            self.active = True
            self._next_due = 0.0

    def client_closed(self) -> None:
        with self._cond:
            self._clients = max(0, self._clients - 1)

    def touch(self) -> None:
        """A JSON request: keep publishing for a few seconds."""
        with self._cond:
            self._active_until = time.monotonic() + ACTIVE_AFTER_REQUEST_S
            self.active = True

    @property
    def clients(self) -> int:
        return self._clients

    def wait(self, after_version: int, timeout_s: float | None,
             until: Callable[[], bool] = lambda: False) -> Snapshot | None:
        """The latest snapshot once its version exceeds ``after_version`` (None on timeout,
        or once ``until()`` is true when :meth:`wake_all` is called: a waiter that needs no
        timeout to notice a stop sleeps until there is work)."""
        with self._cond:
            self._cond.wait_for(lambda: self._version > after_version or until(), timeout_s)
            return self._latest if self._version > after_version else None

    def latest(self) -> Snapshot | None:
        with self._cond:
            return self._latest

    def wake_all(self) -> None:
        with self._cond:
            self._cond.notify_all()

    # -- loop side ----------------------------------------------------------------

    def note_reading(self, reading: Any) -> None:
        """A radar reading or a tuple of RF band results (only called while active; a
        deque: appends here and pops on the view thread need no lock)."""
        self._readings.append(reading)

    def note_event(self, code: str, severity: str, message: str, utc_us: int, fields: dict[str, Any]) -> None:
        self._events.append({"code": code, "severity": severity, "message": message, "time_us": utc_us,
                             **{k: v for k, v in fields.items() if k in ("sensor", "config_digest")}})

    def due(self, now: float) -> bool:
        """True when a snapshot should be taken now (someone is watching and the interval
        has passed). Also refreshes :attr:`active`."""
        if not self.active:
            return False
        if self._clients == 0 and time.monotonic() > self._active_until:
            with self._cond:
                if self._clients == 0 and time.monotonic() > self._active_until:
                    self.active = False
                    self._readings.clear()
                    return False
        return now >= self._next_due

    def next_due(self) -> float | None:
        """When the loop should wake for the next snapshot (None: nobody watches)."""
        return self._next_due if self.active else None

    def take_readings(self) -> tuple[Any, ...]:
        """The readings noted so far, oldest first (called by the view thread)."""
        out = []
        while True:
            try:
                out.append(self._readings.popleft())
            except IndexError:
                return tuple(out)

    def events(self) -> tuple[dict[str, Any], ...]:
        return tuple(self._events)

    def publish(self, snapshot_fields: dict[str, Any], now: float) -> None:
        with self._cond:
            self._version += 1
            self._latest = Snapshot(version=self._version, **snapshot_fields)
            self._next_due = now + self.interval_s
            self._cond.notify_all()
