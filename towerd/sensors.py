"""Keep one sensor talking: open with backoff, read in a thread, watch for silence.

A :class:`SensorRunner` owns one driver and one thread. The daemon starts and keeps
running with any sensor absent: a port that cannot be opened is retried with capped
exponential backoff and jitter; a read error (unplug, EIO) closes the port and starts
over; a port that stays open but sends nothing for ``degraded_after_s`` is
``degraded``. Each change of state is handed to ``on_event`` once, as the ICD's
``sensor.down`` / ``sensor.up`` / ``sensor.degraded`` events.

Who reads the open port: the runner's thread (:meth:`SensorRunner.start`), or, with
``in_loop``, the caller's own loop, gpsd style: the thread then only opens the port
(with its backoff and the device's configuration, which may take seconds) and ends; the
loop polls :attr:`SensorRunner.fd` beside its other descriptors and calls
:meth:`SensorRunner.read_ready` when it is readable or :meth:`SensorRunner.due` has
come. One wake-up of one thread then reads, decodes and processes a radar frame: a
reader thread's wake-up, its hand-off through the wake-up pipe and the GIL passed
between two threads cost more than the reading itself on a tower's small CPU, all the
more as each wake-up after 0.1 s idle runs on cold caches. A port without a descriptor
(loop://, rfc2217://) is read by the thread as before. A read error hands the port back
to a new thread, which reopens it with the same backoff.
"""

from __future__ import annotations

import collections
import enum
import logging
import random
import threading
from dataclasses import dataclass
from typing import Any, Callable

from towerd.clock import Clock, SystemClock
from towerd.drivers.base import SensorDriver
from towerd.errors import DriverError

log = logging.getLogger(__name__)


class SensorState(str, enum.Enum):
    OK = "ok"
    DEGRADED = "degraded"
    DOWN = "down"


@dataclass(frozen=True)
class SensorEvent:
    """A change of a sensor's state, for the EVENTS stream and the log."""

    sensor: str
    code: str  # sensor.up | sensor.down | sensor.degraded
    severity: str  # info | warning | error
    message: str
    t_mono: float


ERROR_COUNTERS = ("bad_frames", "resyncs", "dropped_bytes")
"""Driver counters that only rise when bytes from the device are lost or malformed."""
ERROR_WINDOW_S = 60.0
"""How far back ``errors_recent`` looks."""


class ErrorTrend:
    """How much the error counters rose over the last ``window_s``: a total since start
    hides whether a sensor is losing bytes now or lost a few an hour ago. Sampled at most
    once per ``every_s`` by whoever reads the port; read from any thread (deque appends and
    copies are atomic)."""

    def __init__(self, window_s: float = ERROR_WINDOW_S, every_s: float = 1.0) -> None:
        self.window_s = window_s
        self.every_s = every_s
        self._samples: collections.deque[tuple[float, tuple[int, ...]]] = collections.deque(
            maxlen=int(window_s / every_s) + 2)

    def rebase(self, now: float, counters: Any) -> None:
        """Forget what came before: the bytes a port delivers before the first whole frame
        after it opens (the tail of a frame in flight) are no sign of trouble."""
        self._samples.clear()
        self._samples.append((now, tuple(getattr(counters, name) for name in ERROR_COUNTERS)))

    def sample(self, now: float, counters: Any) -> None:
        if self._samples and now - self._samples[-1][0] < self.every_s:
            return
        self._samples.append((now, tuple(getattr(counters, name) for name in ERROR_COUNTERS)))

    def recent(self, now: float, counters: Any) -> dict[str, int]:
        """Increase of each error counter since the oldest sample within the window
        (zeros before the first sample)."""
        current = tuple(getattr(counters, name) for name in ERROR_COUNTERS)
        base = None
        for t, values in list(self._samples):
            if now - t <= self.window_s:
                base = values
                break
        if base is None:
            base = current
        return {name: max(0, c - b) for name, c, b in zip(ERROR_COUNTERS, current, base)}


class SensorRunner:
    """Runs ``driver`` in a thread, passing each decoded reading to ``sink``."""

    backoff_initial_s = 1.0

    def __init__(
        self,
        driver: SensorDriver,
        sink: Callable[[Any], None],
        on_event: Callable[[SensorEvent], None],
        *,
        degraded_after_s: float = 5.0,
        reconnect_max_s: float = 30.0,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        in_loop: bool = False,
    ) -> None:
        self.driver = driver
        self.in_loop = in_loop
        """The caller's loop reads the open port (see the module docstring)."""
        self.fd: int | None = None
        """The descriptor the loop polls while it reads the port (``in_loop``), else None."""
        self._due = float("inf")  # monotonic time the loop calls read_ready(False) by (driver.wait_s)
        self._last_data = 0.0  # monotonic time of the last readings
        self._synced = False  # a whole frame came since the port opened
        self._opened_before = False  # the port was open once (a later open is a reconnect)
        self._sink = sink
        self._on_event = on_event
        self.degraded_after_s = degraded_after_s
        self.reconnect_max_s = reconnect_max_s
        self.clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self.state = SensorState.DOWN
        self._announced: SensorState | None = None  # last state handed to on_event
        self.last_error = "not opened yet"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reading_times: collections.deque[float] = collections.deque(maxlen=64)
        self.errors = ErrorTrend()

    @property
    def name(self) -> str:
        return self.driver.name

    def start(self) -> None:
        """Open (and, unless the loop reads it, read) the port in a thread of its own."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"sensor-{self.name}", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the thread and close the port; idempotent."""
        self._stop.set()
        self.fd = None
        self.driver.close()  # unblocks a read in progress
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.error("sensor %s: reader thread did not stop within %.1f s", self.name, timeout_s)
            self._thread = None
        self.driver.close()

    def rate_hz(self) -> float:
        """Readings per second over the recent past (0 when silent)."""
        times = list(self._reading_times)
        if len(times) < 2 or self.clock.monotonic() - times[-1] > self.degraded_after_s:
            return 0.0
        span = times[-1] - times[0]
        return (len(times) - 1) / span if span > 0 else 0.0

    def status(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "rate_hz": round(self.rate_hz(), 2),
            "driver": self.driver.kind,
            "port": self.driver.settings.port,
            "last_error": self.last_error if self.state is not SensorState.OK else None,
            **self.driver.counters.as_dict(),
            "errors_recent": self.errors.recent(self.clock.monotonic(), self.driver.counters),
            "errors_window_s": self.errors.window_s,
            "device": self._device_status(),
        }

    def _device_status(self) -> dict[str, Any]:
        """The driver's own status (:meth:`SensorDriver.status`); a driver bug there is
        logged and shown, never allowed to take HEALTH down with it."""
        try:
            return dict(self.driver.status())
        except Exception as exc:  # noqa: BLE001 - any driver bug; HEALTH must still go out
            log.exception("sensor %s: driver status failed", self.name)
            return {"error": f"status failed: {exc}"}

    def _set_state(self, state: SensorState, severity: str, message: str) -> None:
        self.state = state
        if state is self._announced:
            return
        self._announced = state
        code = {SensorState.OK: "sensor.up", SensorState.DOWN: "sensor.down", SensorState.DEGRADED: "sensor.degraded"}[state]
        getattr(log, severity)("sensor %s: %s", self.name, message, extra={"sensor": self.name})
        self._on_event(SensorEvent(self.name, code, severity, message, self.clock.monotonic()))

    def _run(self) -> None:
        backoff = self.backoff_initial_s
        while not self._stop.is_set():
            if not self.driver.is_open:
                try:
                    self.driver.open()
                except DriverError as exc:
                    self.last_error = str(exc)
                    self._set_state(SensorState.DOWN, "error", f"down: {exc}; retrying")
                    self._stop.wait(backoff * self._rng.uniform(0.8, 1.2))
                    backoff = min(backoff * 2.0, self.reconnect_max_s)
                    continue
                if self._opened_before:
                    self.driver.counters.reconnects += 1
                self._opened_before = True
                backoff = self.backoff_initial_s
                self._last_data = now = self.clock.monotonic()
                self._synced = False  # no whole frame since the port opened
                self.last_error = ""
                fd = self.driver.fileno() if self.in_loop else None
                if fd is not None:  # the loop reads it from now on; the event below wakes it
                    self._due = now + self.driver.wait_s(now)
                    self.fd = fd
                    self._set_state(SensorState.OK, "info", f"up on {self.driver.settings.port}")
                    return
                self._set_state(SensorState.OK, "info", f"up on {self.driver.settings.port}")
            try:
                readings = self.driver.read()
            except DriverError as exc:
                if self._read_failed(exc):
                    break
                continue
            self._took(readings, self.clock.monotonic())

    def _read_failed(self, exc: DriverError) -> bool:
        """Close the port after a read error and say so; True when stopping anyway."""
        self.driver.close()
        if self._stop.is_set():
            return True
        self.last_error = str(exc)
        self._set_state(SensorState.DOWN, "error", f"down: {exc}; reopening")
        return False

    def _took(self, readings: list[Any], now: float) -> None:
        """After a read at ``now`` (with or without readings): the error trend, the
        readings to the sink, and the state (degraded after silence, ok again)."""
        if readings and not self._synced:
            self.errors.rebase(now, self.driver.counters)
            self._synced = True
        self.errors.sample(now, self.driver.counters)
        if readings:
            self._last_data = now
            for reading in readings:
                self._reading_times.append(now)
                self._sink(reading)
            if self.state is SensorState.DEGRADED:
                self._set_state(SensorState.OK, "info", "data flowing again")
        elif now - self._last_data > self.degraded_after_s and self.state is SensorState.OK:
            self.last_error = f"no data for {now - self._last_data:.1f} s"
            self._set_state(SensorState.DEGRADED, "warning", f"degraded: {self.last_error}")

    # -- the caller's loop (in_loop) ------------------------------------------------------

    def due(self) -> float:
        """Monotonic time by which the loop calls :meth:`read_ready` even if :attr:`fd`
        stays quiet: when the driver's :meth:`~SensorDriver.poll` may release something
        (:meth:`~SensorDriver.wait_s` after the last read) or silence makes the sensor
        degraded; infinity while the loop does not read the port."""
        if self.fd is None:
            return float("inf")
        if self.state is SensorState.OK:
            return min(self._due, self._last_data + self.degraded_after_s)
        return self._due

    def read_ready(self, readable: bool) -> None:
        """Read what :attr:`fd` holds (``readable``: the loop's poll said so) and hand the
        readings to the sink, in the loop's thread; after a read error the port goes back
        to a new thread, which reopens it."""
        try:
            readings = self.driver.read_ready(readable)
        except DriverError as exc:
            self.fd, self._due = None, float("inf")
            if self._read_failed(exc):
                return
            if self._thread is not None:
                self._thread.join(1.0)  # the opener, ending: it returned right after handing over
            self._thread = None
            self.start()
            return
        now = self.clock.monotonic()
        self._due = now + self.driver.wait_s(now)
        self._took(readings, now)
