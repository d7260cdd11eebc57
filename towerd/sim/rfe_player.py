"""A recorded RF Explorer stream played back over a pty (``towerd sim``, replay tests and
evaluation runs), as the device would send it after ``C0``."""

from __future__ import annotations

import logging
import os
import select
import threading

from towerd.sim.pty import PtyPair
from towerd.sim.writer import EmulatorThread

log = logging.getLogger(__name__)


class RfExplorerPlayer(EmulatorThread):
    """An RF Explorer that plays back a recorded device -> host stream over a pty.

    Silent until the host's first command (``#\\x04C0`` when a driver opens the port),
    then the recording ``loops`` times, as fast as the host reads it: the writer waits
    until the pty can take more, so no byte is lost (a recording has no clock of its own;
    give the sweeps their recorded times on the host side). Commands are kept in
    :attr:`commands` and otherwise ignored: a recording cannot retune. :attr:`done` is set
    once everything was written."""

    def __init__(self, data: bytes, *, loops: int = 1, chunk_bytes: int = 4096) -> None:
        if loops < 1 or chunk_bytes < 1:
            raise ValueError("loops and chunk_bytes must be >= 1")
        self.data = bytes(data)
        self.loops = int(loops)
        self.chunk_bytes = int(chunk_bytes)
        self.commands = bytearray()
        self.done = threading.Event()
        self.error: BaseException | None = None
        self._init_thread()

    def start(self, pty: PtyPair) -> None:
        self._begin()
        self._launch(self._run, (pty,), "rfe-player")

    def _run(self, pty: PtyPair) -> None:
        fd = pty.master_fd
        try:
            while not self.commands and not self._stop.is_set():
                if select.select([fd], [], [], 0.05)[0]:
                    self.commands += pty.read()
            view = memoryview(self.data * self.loops)
            sent = 0
            while sent < len(view) and not self._stop.is_set():
                readable, writable, _ = select.select([fd], [fd], [], 0.05)
                if readable:
                    self.commands += pty.read()
                if writable:
                    try:
                        sent += os.write(fd, view[sent:sent + self.chunk_bytes])
                    except BlockingIOError:
                        pass  # the pty filled up between select and write: try again
            self.done.set()
            while not self._stop.is_set():  # keep taking commands (the hold on close)
                if select.select([fd], [], [], 0.05)[0]:
                    self.commands += pty.read()
        except (OSError, ValueError) as exc:
            self.error = exc
            log.error("RF Explorer player: %s", exc)

    def __enter__(self) -> "RfExplorerPlayer":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
