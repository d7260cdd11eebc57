"""The writer thread every device emulator runs: started once, stopped idempotently."""

from __future__ import annotations

import threading
from typing import Any, Callable


class EmulatorThread:
    """Owns ``self._stop`` (an Event the writer loop watches) and ``self._thread``.

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

    def stop(self) -> None:
        """Stop the writer and wait for it; safe to call any number of times."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join()
        self._thread = None
