"""Parse throughput per driver, in MB/s and as a multiple of the device's line rate.

Each driver decodes a realistic byte stream built by its emulator, fed in 4 KiB reads
through ``SensorDriver.feed`` (the path live bytes take, with conversion to the common
reading types), so the figure includes everything a reader thread does per byte.
"""

from __future__ import annotations

import numpy as np

from benchmarks.common import Figure, Section, repeat, timed
from towerd.drivers.ti_mmwave.driver import TiMmwaveDriver, TiMmwaveSettings
from towerd.sim.scenario import builtin_scenario
from towerd.sim.ti_mmwave import TiMmwaveEmulator

CHUNK = 4096


def line_rate_bytes_per_s(baud: int) -> float:
    """8N1: ten bits on the wire per byte."""
    return baud / 10.0


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
    runs = 3 if quick else 7

    def once() -> float:
        driver = TiMmwaveDriver("bench", TiMmwaveSettings(port="loop://"))
        seconds = timed(lambda: feed_all(driver, stream))
        assert driver.counters.frames == stream.count(b"\x02\x01\x04\x03\x06\x05\x08\x07")
        return len(stream) / seconds / 1e6

    med, spread, _ = repeat(once, runs)
    rate = line_rate_bytes_per_s(921600) / 1e6
    return [Figure("TI mmWave (SDK 3.x, 50 points/frame)", med, "MB/s", spread,
                   reference=f"{med / rate:,.0f}x the 921600-baud data UART ({rate * 1e3:.1f} kB/s)")]


def run(quick: bool) -> Section:
    figures = bench_ti(quick)
    return Section("Parse throughput per driver", figures,
                   "Bytes built by each device's emulator, fed in 4 KiB reads through the driver "
                   "(decoding and conversion to readings). Goal: at least 1,000x each device's line rate.")
