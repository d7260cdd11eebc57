"""The writer thread every device emulator runs: started once, stopped idempotently."""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

log = logging.getLogger(__name__)


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

    def stop(self) -> None:
        """Stop the writer and wait for it; safe to call any number of times."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join()
        self._thread = None
