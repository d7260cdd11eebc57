"""The hand-off between the sensors' reads and the daemon's loop, and the loop's sleep.

Readings and sensor events are queued here, by the loop itself when it reads a port
(the usual case, see :mod:`towerd.sensors`) or by a sensor's thread (one that opens a
port, or reads one without a descriptor); the loop takes them and sleeps in one
``zmq.Poller`` on the sensors' ports, a wake-up pipe (which the sensor threads and
signals write to), the status socket and, unless told otherwise, the uplinks' sockets.

Every wake-up costs a thread switch and, on the tower's small CPU, more than the Python
around it, so the loop is woken only for what cannot wait:

- a radar frame wakes it at once (its records are what the end-to-end latency goal is
  about); a *riding* reading (:data:`RIDING_READINGS`: an RF sweep, ten a second, whose
  records are RF-only tracks reported at most once a second) does not: it is processed
  with the next radar frame, after it, or once it has waited :data:`RIDE_SLACK_S`, and
  wakes the loop itself only if that wake-up is planned more than RIDE_SLACK_S away. The
  loop reads a sweep when it comes (so its time is true), but leaves it queued: its
  processing joins the radar frame's burst of work instead of making one of its own;
- a central's reply can be left out of the sleep (the daemon decides when:
  :meth:`towerd.daemon.Daemon._replies_wait`);
- the wake-up pipe is written only while the loop sleeps, or is about to: the flag is
  set before the loop looks at the queue, so no reading is left waiting through a poll.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import select
import signal
from typing import Any, Callable

import zmq

from towerd.drivers.measurements import Spectrum

log = logging.getLogger(__name__)

QUEUE_MAX_READINGS = 256
RIDE_SLACK_S = 0.15
"""Longest a riding reading (or a central's reply, see the daemon) waits for a wake-up
the loop has anyway: at 10 radar frames a second one comes every 100 ms."""
RIDING_READINGS: tuple[type, ...] = (Spectrum,)
"""Readings that do not wake the loop by themselves (see the module docstring)."""


class Handoff:
    """Readings and events from the sensor threads to the loop, and the loop's sleep.
    Appends and pops of the deque are atomic: no lock or condition per reading."""

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self._monotonic = monotonic
        self.readings: collections.deque[Any] = collections.deque()
        self.events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.dropped = 0  # readings refused because the queue was full
        self._urgent = False  # a reading that wakes the loop was queued since the last take
        self._riding_since: float | None = None  # monotonic time the oldest riding reading queued came
        self._sleeping = False  # the loop is in (or about to enter) its poll
        self._wake_at = float("inf")  # monotonic time the sleeping loop will wake by itself
        self._poller: zmq.Poller | None = None
        self._poller_quiet: Any = None  # a select.poll of the same without the uplinks' sockets
        self._polled: list[Any] = []
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    # -- sensor threads ---------------------------------------------------------------

    def wake(self) -> None:
        """Make the loop's poll return (from any thread)."""
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, OSError):
            pass  # the pipe is full: the loop is awake already

    def put_event(self, event: Any) -> None:
        self.events.put(event)
        self.wake()

    def put_reading(self, reading: Any) -> bool:
        """Queue ``reading``; False when the queue is full (the loop is behind)."""
        if len(self.readings) >= QUEUE_MAX_READINGS:  # two readers racing may pass it by one
            self.dropped += 1
            return False
        self.readings.append(reading)
        if not isinstance(reading, RIDING_READINGS):
            self._urgent = True
            if self._sleeping:
                self.wake()
            return True
        now = self._monotonic()
        if self._riding_since is None:
            self._riding_since = now
        if self._sleeping and self._wake_at > now + RIDE_SLACK_S:
            self.wake()
        return True

    # -- the loop -----------------------------------------------------------------------

    def take_readings(self, *, everything: bool = False) -> list[Any]:
        """What is queued (at most a full queue), the readings that wake the loop first,
        each kind in the order read (a riding reading waits for the radar frames taken
        with it, not the other way round); nothing while only riding readings younger
        than RIDE_SLACK_S are queued (they wait for a radar frame), unless
        ``everything``."""
        riding_since = self._riding_since
        if not (self._urgent or everything or riding_since is None) and \
                self._monotonic() - riding_since < RIDE_SLACK_S and len(self.readings) < QUEUE_MAX_READINGS:
            return []
        self._urgent = False
        self._riding_since = None
        readings = self.readings
        taken = [readings.popleft() for _ in range(min(len(readings), QUEUE_MAX_READINGS))]
        if len(taken) > 1:
            taken.sort(key=lambda r: isinstance(r, RIDING_READINGS))  # stable
        return taken

    def idle(self) -> bool:
        """Whether the loop has nothing to take: no event, no reading that wakes it, and
        riding readings (if any) that may still wait (:meth:`take_readings` would give
        nothing)."""
        if self._urgent or not self.events.empty():
            return False
        since = self._riding_since
        return since is None or (self._monotonic() - since < RIDE_SLACK_S
                                 and len(self.readings) < QUEUE_MAX_READINGS)

    def take_events(self) -> list[Any]:
        events = []
        while not self.events.empty():
            events.append(self.events.get_nowait())
        return events

    def sleep(self, wake_at: float, polled: list[Any], sockets: list[Any], *, replies: bool = True,
              awake: Callable[[], bool] = lambda: False) -> set[int]:
        """Wait until ``wake_at`` (monotonic) for the wake-up pipe, the descriptors of
        ``polled`` and (with ``replies``) the ZeroMQ ``sockets``; not at all when a
        reading that wakes the loop is queued or ``awake()`` says so. Returns the
        descriptors (ints) of ``polled`` found ready."""
        self._wake_at = wake_at
        self._sleeping = True  # before looking at the queue: see put_reading
        try:
            if self._urgent or awake():
                return set()
            if self.readings:  # riding readings wait at most RIDE_SLACK_S
                since = self._riding_since
                wake_at = self._wake_at = min(wake_at, (self._monotonic() if since is None else since) + RIDE_SLACK_S)
            timeout_s = max(0.0, wake_at - self._monotonic())
            ready = self._current_poller(polled, sockets, replies).poll(int(timeout_s * 1000) + 1)
        finally:
            self._sleeping = False
        fds = {item for item, _ in ready if type(item) is int}
        if self._wake_r in fds:  # one read empties the pipe unless 4096 wake-ups piled up
            try:
                while len(os.read(self._wake_r, 4096)) == 4096:
                    pass
            except BlockingIOError:
                pass
        return fds

    def _current_poller(self, polled: list[Any], sockets: list[Any], replies: bool) -> Any:
        """The poller on the wake-up pipe, ``polled`` and (with ``replies``) ``sockets``,
        made anew only when that set changed (a reconnect, a reload). Without the
        sockets it is a plain ``select.poll``: one poll(2) per sleep, where libzmq's
        poller makes two (it looks once without waiting first) and builds its items
        each time; the loop sleeps that way while readings flow."""
        items = polled + sockets
        if self._poller is None or len(items) != len(self._polled) or any(
                a is not b and a != b for a, b in zip(items, self._polled)):
            self._poller, self._poller_quiet = zmq.Poller(), select.poll()
            for poller, flag in ((self._poller, zmq.POLLIN), (self._poller_quiet, select.POLLIN)):
                poller.register(self._wake_r, flag)
                for item in polled:
                    poller.register(item, flag)
            for sock in sockets:
                self._poller.register(sock, zmq.POLLIN)
            self._polled = items
        return self._poller if replies else self._poller_quiet

    def wake_on_signals(self) -> bool:
        """Signals (stop, reload) write to the wake-up pipe, so they end the poll at once
        (only from the main thread: False elsewhere, e.g. a test's loop)."""
        try:
            signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        except ValueError:
            return False
        return True

    def close(self) -> None:
        try:
            if signal.set_wakeup_fd(-1) != self._wake_w:
                log.debug("the signal wake-up fd was not ours")
        except ValueError:
            pass
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
