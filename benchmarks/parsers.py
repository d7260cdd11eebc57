"""Parse throughput per driver, in MB/s and as a multiple of the device's line rate.

Each driver decodes a realistic byte stream built by its emulator, fed in 4 KiB reads
through ``SensorDriver.feed`` (the path live bytes take, with conversion to the common
reading types), so the figure includes everything a reader thread does per byte. Time is
the decoding thread's CPU time (``time.thread_time``), so other load on the machine does
not count; beside the TI and RF Explorer figures, the same measurement of commit
``benchmarks.stages.REFERENCE``'s drivers, in the same run (a subprocess on its tree).

Each figure is the median of :data:`RUNS` runs (:data:`QUICK_RUNS` with ``--quick``) over
the whole stream, each with a new driver, after one warm-up run that is not counted; the
range (fastest and slowest run) is shown beside it. A run lasts tens of milliseconds, so
one scheduling hiccup moves one run, not the median.
"""

from __future__ import annotations

import numpy as np

import json
import subprocess
import sys
import time

from benchmarks.common import Figure, Section, repeat
from towerd.drivers.ti_mmwave.driver import TiMmwaveDriver, TiMmwaveSettings
from towerd.sim.scenario import builtin_scenario
from towerd.sim.ti_mmwave import TiMmwaveEmulator

CHUNK = 4096
RUNS, QUICK_RUNS = 15, 5
"""Runs per figure (the median is reported, with the range)."""


def runs(quick: bool) -> int:
    return QUICK_RUNS if quick else RUNS


def measure(once, quick: bool) -> tuple[float, tuple[float, float], list[float]]:
    """Median, (min, max) and all of :func:`runs` calls of ``once``, after one warm-up call."""
    once()
    return repeat(once, runs(quick))


def line_rate_bytes_per_s(baud: int) -> float:
    """8N1: ten bits on the wire per byte."""
    return baud / 10.0


def timed(fn) -> float:
    """CPU seconds of this thread one call of ``fn`` takes."""
    t0 = time.thread_time()
    fn()
    return time.thread_time() - t0


def feed_all(driver, stream: bytes) -> int:
    readings = 0
    view = memoryview(stream)
    for i in range(0, len(stream), CHUNK):
        readings += len(driver.feed(bytes(view[i:i + CHUNK]), 0.0))
    return readings


def ti_stream(n_frames: int, points_per_frame: int = 50) -> bytes:
    """SDK 3.x frames of ``points_per_frame`` points each (TLV 1 + TLV 7)."""
    emulator = TiMmwaveEmulator(builtin_scenario("demo"), boresight_azimuth_deg=0.0, rng=np.random.default_rng(1))
    rng = np.random.default_rng(2)
    frames = []
    for k in range(n_frames):
        pts = np.column_stack([rng.uniform(-50, 50, points_per_frame), rng.uniform(5, 150, points_per_frame),
                               rng.uniform(-5, 30, points_per_frame), rng.normal(0, 3, points_per_frame),
                               rng.uniform(5, 30, points_per_frame), np.full(points_per_frame, 3.0)])
        frames.append(emulator.encode(pts, 0.1 * k, k + 1))
    return b"".join(frames)


def bench_ti(quick: bool) -> list[Figure]:
    stream = ti_stream(500 if quick else 3000)

    def once() -> float:
        driver = TiMmwaveDriver("bench", TiMmwaveSettings(port="loop://"))
        seconds = timed(lambda: feed_all(driver, stream))
        assert driver.counters.frames == stream.count(b"\x02\x01\x04\x03\x06\x05\x08\x07")
        return len(stream) / seconds / 1e6

    med, spread, _ = measure(once, quick)
    rate = line_rate_bytes_per_s(921600) / 1e6
    return [Figure("TI mmWave (SDK 3.x, 50 points/frame)", med, "MB/s", spread,
                   reference=f"{med / rate:,.0f}x the 921600-baud data UART ({rate * 1e3:.1f} kB/s)")]


def nmea_stream(n: int) -> bytes:
    """``n`` 15-field $RATTM sentences with varied values (one radar's target output)."""
    from towerd.drivers.nmea_radar.protocol import nmea_checksum

    rng = np.random.default_rng(1)
    lines = []
    for i in range(n):
        body = (f"RATTM,{i % 100:02d},{rng.uniform(0, 12):.3f},{rng.uniform(0, 360):.1f},T,{rng.uniform(0, 40):.1f},"
                f"{rng.uniform(0, 360):.1f},T,{rng.uniform(0, 3):.2f},{rng.uniform(-30, 30):.1f},N,TGT{i % 100:02d},"
                f"T,,1200{i % 60:02d}.00,A")
        lines.append(f"${body}*{nmea_checksum(body)}\r\n".encode())
    return b"".join(lines)


def bench_nmea(quick: bool) -> list[Figure]:
    """towerd's NMEA parser beside pynmea2 on the same bytes, both decoding every field."""
    import pynmea2

    from towerd.drivers.nmea_radar.protocol import NmeaParser

    data = nmea_stream(2000 if quick else 10000)
    text = data.decode("ascii").split("\r\n")[:-1]

    def ours() -> float:
        parser = NmeaParser()
        view = memoryview(data)
        seconds = timed(lambda: [parser.feed(bytes(view[i:i + CHUNK])) for i in range(0, len(data), CHUNK)])
        return len(data) / seconds / 1e6

    def theirs() -> float:
        def parse_all() -> None:
            for line in text:
                p = pynmea2.parse(line, check=True)
                (p.target_number, p.distance, p.bearing, p.brg_ref, p.speed, p.cog, p.cog_unit, p.dist_cpa,
                 p.time_cpa, p.dist_unit, p.name, p.status, p.reference, p.timestamp, p.acquisition)
        return len(data) / timed(parse_all) / 1e6

    med, spread, _ = measure(ours, quick)
    ref, ref_spread, _ = measure(theirs, quick)
    rate = line_rate_bytes_per_s(38400) / 1e6
    return [Figure("NMEA 0183 $RATTM (15 fields, all decoded)", med, "MB/s", spread,
                   reference=f"pynmea2 {pynmea2.__version__} on the same bytes, same fields read: {ref:.2f} MB/s "
                             f"({ref_spread[0]:.2f}–{ref_spread[1]:.2f}); ours is {med / rate:,.0f}x a 38400-baud "
                             f"line")]


def bench_rfexplorer(quick: bool) -> list[Figure]:
    from towerd.drivers.rfexplorer.driver import RfExplorerDriver, RfExplorerSettings
    from towerd.sim.rfexplorer import RfExplorerEmulator
    from towerd.sim.scenario import builtin_scenario as scenario

    figures = []
    for points in (112, 1024):
        emulator = RfExplorerEmulator(scenario("demo"), rng=np.random.default_rng(3), points=points)
        stream = emulator.stream((300 if quick else 6000) if points < 1024 else (300 if quick else 1500))

        def once() -> float:
            driver = RfExplorerDriver("bench", RfExplorerSettings(port="loop://"))
            seconds = timed(lambda: feed_all(driver, stream))
            return len(stream) / seconds / 1e6

        med, spread, _ = measure(once, quick)
        rate = line_rate_bytes_per_s(500000) / 1e6
        figures.append(Figure(f"RF Explorer ({points}-point sweeps)", med, "MB/s", spread,
                              reference=f"{med / rate:,.0f}x the 500000-baud line ({rate * 1e3:.0f} kB/s)"))
    return figures


def reference(quick: bool) -> dict[str, float]:
    """{figure name: MB/s} of the reference commit's TI and RF Explorer drivers ({} when
    its tree cannot be had)."""
    from benchmarks.stages import REFERENCE, reference_tree

    root = reference_tree(REFERENCE)
    if root is None:
        return {}
    code = ("import json, benchmarks.parsers as p; "
            f"print(json.dumps({{f.name: f.value for f in p.bench_ti({quick}) + p.bench_rfexplorer({quick})}}))")
    try:
        out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True,
                             timeout=600).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return json.loads(out.strip().splitlines()[-1])


def run(quick: bool) -> Section:
    from benchmarks.stages import REFERENCE

    figures = bench_ti(quick) + bench_nmea(quick) + bench_rfexplorer(quick)
    ref = reference(quick)
    for f in figures:
        if f.name in ref:
            rate = line_rate_bytes_per_s(921600 if f.name.startswith("TI") else 500000) / 1e6
            f.reference += f"; {REFERENCE}: {ref[f.name]:.2f} MB/s, {ref[f.name] / rate:,.0f}x"
    load = " / ".join(open("/proc/loadavg").read().split()[:3])
    return Section("Parse throughput per driver", figures,
                   "Bytes built by each device's emulator, fed in 4 KiB reads through the driver "
                   "(decoding and conversion to readings), per second of the decoding thread's CPU time "
                   f"(time.thread_time); each figure is the median of {runs(quick)} runs over the whole stream "
                   "after a warm-up run, with the range (fastest–slowest run) in brackets; beside the TI and RF "
                   f"Explorer figures, commit {REFERENCE}'s drivers measured the same way (median of as many runs) "
                   "in the same run. Goal: at least 1,000x each "
                   f"device's line rate. Load average at the end (1/5/15 min): {load} on 2 cores shared with "
                   "other work (CPU time still stretches when the cores are this busy: caches and the shared "
                   "core are contended).")
