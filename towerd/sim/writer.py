"""The writer thread every device emulator runs: started once, stopped idempotently."""

from __future__ import annotations

import logging
import math
import threading
from typing import Any, Callable

log = logging.getLogger(__name__)

CHUNK_S = 0.02
"""A line emulator writes at most this long of line time at once."""


class EmulatorThread:
    """Owns ``self._stop`` (an Event the writer loop watches) and ``self._thread``.

    Attributes a subclass using :meth:`_write_chunk` sets: ``bytes_per_s``, ``bytes_sent``,
    ``bytes_dropped``, ``error``.

    An emulator calls :meth:`_init_thread` in its constructor, :meth:`_begin` first in
    its ``start`` (refuses a second start, clears the stop flag), then :meth:`_launch`
    with its loop once its own start-up state is set."""

    def _init_thread(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _begin(self) -> None:
        if self._thread is not None:
            raise RuntimeError("emulator already started")
        self._stop.clear()

    def _launch(self, target: Callable[..., None], args: tuple[Any, ...], name: str) -> None:
        self._thread = threading.Thread(target=target, args=args, name=name, daemon=False)
        self._thread.start()

    def _write_chunk(self, pty: Any, queue: bytearray, chunk: int, now: float, line_free_at: float,
                     device: str) -> float | None:
        """Write the first ``chunk`` bytes of ``queue`` to ``pty`` as a line at
        ``self.bytes_per_s`` carries them: returns when the line is free again, or None
        when the pty failed (``self.error`` set, logged). Counts ``bytes_sent`` and
        ``bytes_dropped`` (what the pty did not take: nobody reading)."""
        data = bytes(queue[:chunk])
        del queue[:chunk]
        try:
            written = pty.write(data)
        except OSError as exc:
            self.error = exc
            log.error("%s emulator: writing to the pty failed, stopping: %s", device, exc)
            return None
        self.bytes_sent += written
        self.bytes_dropped += len(data) - written
        return max(line_free_at, now) + len(data) / self.bytes_per_s

    def _paced_run(self, pty: Any, period_s: float, next_bytes: Callable[[int, float, int, bool], bytes],
                   device: str) -> None:
        """The writer loop of a line device (NMEA radar, Remote ID receiver): every
        ``period_s`` from ``self.t0_mono`` (tick k at t0 + k period_s) it asks
        ``next_bytes(k, now, skipped, stalled)`` for that tick's bytes (``skipped``: ticks
        the thread was too late for, passed over; ``stalled``: the line is stalled by
        :class:`~towerd.sim.faults.LineFaults`, and what it returns is dropped), queues
        them, and writes the queue in chunks of ``CHUNK_S`` of line time at
        ``self.bytes_per_s`` (:meth:`_write_chunk`), until stopped or the pty fails."""
        t0 = self.t0_mono  # type: ignore[attr-defined]
        assert t0 is not None
        chunk = max(1, int(self.bytes_per_s * CHUNK_S))  # type: ignore[attr-defined]
        queue = bytearray()
        line_free_at = t0
        k = 0
        while not self._stop.is_set():
            now = self.clock.monotonic()  # type: ignore[attr-defined]
            stall_until = getattr(self, "_stall_until", -math.inf)
            stalled = now < stall_until
            due = t0 + k * period_s
            if now >= due:
                skipped = max(0, int((now - t0) / period_s) - k)
                k += skipped
                data = next_bytes(k, now, skipped, stalled)
                if not stalled:
                    queue += data
                k += 1
                continue
            if queue and not stalled and line_free_at <= now:
                free_at = self._write_chunk(pty, queue, chunk, now, line_free_at, device)
                if free_at is None:
                    return
                line_free_at = free_at
                continue
            wake = due if not queue or stalled else min(due, max(line_free_at, now + 0.001))
            if stalled:
                wake = min(wake, stall_until)
            self._stop.wait(max(0.0, min(wake - now, 0.1)))

    def stop(self) -> None:
        """Stop the writer and wait for it; safe to call any number of times."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join()
        self._thread = None
