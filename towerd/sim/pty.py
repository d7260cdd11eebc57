"""A raw pseudo-terminal pair standing in for a serial device.

The emulator writes to ``master_fd`` exactly what the device would put on the wire;
towerd opens ``path`` (the slave) with pyserial as if it were /dev/ttyACM1. The slave
is set raw (no echo, no CR/LF translation) and kept open by the pair itself, so the pty
stays alive while the reader closes and reopens the port.
"""

from __future__ import annotations

import errno
import os
import tty
from dataclasses import dataclass


@dataclass
class PtyPair:
    master_fd: int
    slave_fd: int
    path: str
    dropped_bytes: int = 0

    @classmethod
    def open(cls) -> "PtyPair":
        master, slave = os.openpty()
        tty.setraw(slave)
        tty.setraw(master)
        os.set_blocking(master, False)
        return cls(master, slave, os.ttyname(slave))

    def write(self, data: bytes) -> int:
        """Write like a UART transmitter: never block; bytes that do not fit are lost
        (and counted), as they are on a real line nobody reads."""
        view = memoryview(data)
        written = 0
        while written < len(view):
            try:
                written += os.write(self.master_fd, view[written:])
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in (errno.EIO, errno.EAGAIN):
                    break
                raise
        self.dropped_bytes += len(view) - written
        return written

    def read(self, n: int = 4096) -> bytes:
        """Read what the host wrote to the device (commands); b'' when nothing is there."""
        try:
            return os.read(self.master_fd, n)
        except (BlockingIOError, OSError):
            return b""

    def close(self) -> None:
        for fd in (self.master_fd, self.slave_fd):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.master_fd = self.slave_fd = -1
