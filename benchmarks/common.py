"""Shared measuring tools: repeated timing, machine description, result rows."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Figure:
    """One measured figure, with its spread and the reference measured beside it."""

    name: str
    value: float
    unit: str
    spread: tuple[float, float] | None = None  # min, max over the runs
    reference: str = ""  # the peer or the goal, measured/stated in the same run
    note: str = ""

    def format_value(self) -> str:
        v = _fmt(self.value)
        if self.spread:
            return f"{v} {self.unit} ({_fmt(self.spread[0])}–{_fmt(self.spread[1])})"
        return f"{v} {self.unit}"


@dataclass
class Section:
    title: str
    figures: list[Figure] = field(default_factory=list)
    text: str = ""


def _fmt(x: float) -> str:
    if x != x:
        return "n/a"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def repeat(fn: Callable[[], float], runs: int) -> tuple[float, tuple[float, float], list[float]]:
    """Run ``fn`` (returning one measurement) ``runs`` times: median, (min, max), all."""
    values = [fn() for _ in range(runs)]
    return statistics.median(values), (min(values), max(values)), values


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` takes (perf_counter)."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "unknown"
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 2**20:.1f} GiB"
                break
    except OSError:
        pass
    import numpy
    import scipy
    import zmq

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                timeout=5).stdout.strip()
    except OSError:
        commit = ""
    return {
        "date (UTC)": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "memory": mem,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "numpy / scipy / pyzmq (libzmq)": f"{numpy.__version__} / {scipy.__version__} / {zmq.__version__} "
                                          f"({zmq.zmq_version()})",
        "towerd commit": commit or "unknown",
    }
