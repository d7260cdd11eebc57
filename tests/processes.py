"""Test helpers for running towerd as real subprocesses."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest


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


class Sim:
    """`towerd sim` as a subprocess with a pipe to its command input."""

    def __init__(self, exe: str, tmp_path: Path, *args: str, log_name: str = "sim.log",
                 prefix: tuple[str, ...] = ()) -> None:
        """``prefix`` runs it through another command (``runuser -u USER --``)."""
        self.log_path = tmp_path / log_name
        self.log_fh = open(self.log_path, "wb")
        self.proc = subprocess.Popen([*prefix, exe, "sim", *args], stdin=subprocess.PIPE, stdout=self.log_fh,
                                     stderr=subprocess.STDOUT, text=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, count: int = 1, timeout_s: float = 15.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            log = self.log()
            if log.count(text) >= count:
                return log
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        pytest.fail(f"sim never said {text!r}:\n{self.log()}")

    def send(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdin.close()
        self.log_fh.close()
        return self.proc.returncode


def wait_listening(endpoint: str, child: Child, timeout_s: float = 30.0) -> None:
    """Until ``child`` accepts TCP connections on ``endpoint``'s port (another process:
    nothing to wait on but the port)."""
    port = int(endpoint.rsplit(":", 1)[1])
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
