"""Test helpers for running towerd as real subprocesses."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Child:
    """A towerd subprocess whose output goes to a log file the test can show."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                         env=None if env is None else {**os.environ, **env})

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout_s: float = 15.0) -> int:
        """SIGTERM, wait; SIGKILL if it does not stop. Returns the exit status."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode



def wait_listening(child: Child, port: int, timeout_s: float = 30.0) -> None:
    """Wait until ``child`` accepts TCP connections on 127.0.0.1:``port`` (another
    process: nothing to wait on but the port). AssertionError with its log otherwise."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
            return
        except OSError:
            if child.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{child.args[0]} did not start listening:\n{child.log()}") from None
            time.sleep(0.05)


def wait_for(cond: Callable[[], bool], step: Callable[[], None], timeout_s: float = 10.0, what: str = "") -> None:
    """Run ``step`` until ``cond`` holds; AssertionError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        step()
