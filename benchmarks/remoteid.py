"""Remote ID receiver lines: parse throughput against the 115200-baud line, per form.

Streams built by the receiver emulator (:mod:`towerd.sim.remoteid`) from drones about the
tower, fed through ``RemoteIdDriver.feed`` in 4 KiB reads (decoding and building the
readings), beside the same bytes fed one line per call (what a reader gets when lines
arrive one by one, as they do live at 115200 baud: a handful of F3411 messages is then
decoded with ``struct``, not NumPy). Figures are bytes per process CPU second. No Python
peer decodes F3411 (opendroneid-core-c and librid are C libraries).
"""

from __future__ import annotations

import numpy as np

import time

from benchmarks.common import Figure, Section, repeat
from towerd import geo
from towerd.clock import ManualClock
from towerd.drivers.remoteid.driver import RemoteIdDriver, RemoteIdSettings
from towerd.sim.remoteid import RemoteIdEmulator
from towerd.sim.rid_spec import RemoteIdSpec
from towerd.sim.scenario import Scenario, Target, WaypointPath

CHUNK = 4096
LINE_BYTES_PER_S = 115200 / 10.0
"""8N1: ten bits per byte."""
FORMS = {
    "F3411 hex, BLE single messages": {"form": "f3411-hex", "transport": "ble"},
    "F3411 hex, Message Packs (Wi-Fi beacon)": {"form": "f3411-hex", "transport": "beacon"},
    "JSON (mesh-mapper / Sky Spy)": {"form": "json"},
    "JSON (DJI DroneID, DroneSecurity)": {"form": "dji"},
}


def cpu_timed(fn) -> float:
    """Process CPU seconds one call of ``fn`` takes (holds better than wall time on a loaded machine)."""
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def stream(form: dict, seconds: float, drones: int = 20) -> bytes:
    """``seconds`` of 20 drones broadcasting at 5 Hz in one form."""
    targets = tuple(Target(f"d{i}", "uas", -20.0, WaypointPath(((0.0, 30.0 * i, 200.0, 40.0),
                                                                (3600.0, 30.0 * i, 9000.0, 40.0))))
                    for i in range(drones))
    specs = {t.name: RemoteIdSpec(uas_id=f"1581F5FKD2294{i:05d}", operator_enu_m=(-20.0, 5.0 * i, 1.5),
                                  operator_id=f"FIN87astrdge{i:04d}", self_id="Survey", rate_hz=5.0, **form)
             for i, t in enumerate(targets)}
    em = RemoteIdEmulator(Scenario("bench", targets=targets), rng=np.random.default_rng(1),
                          site=geo.Site(27.5, -99.5, 130.0), specs=specs, sensitivity_dbm=-200.0,
                          clock=ManualClock())
    return em.line_bytes(seconds, 0.0)


def bench(quick: bool) -> list[Figure]:
    figures = []
    runs = 3 if quick else 7
    for name, form in FORMS.items():
        data = stream(form, 20.0 if quick else 60.0)
        lines = data.splitlines(keepends=True)

        def chunked() -> float:
            driver = RemoteIdDriver("bench", RemoteIdSettings(port="loop://"))
            view = memoryview(data)
            seconds = cpu_timed(lambda: [driver.feed(bytes(view[i:i + CHUNK]), 0.0)
                                         for i in range(0, len(data), CHUNK)])
            assert driver.counters.bad_frames == 0 and driver.parser.stats.readings > 0
            return len(data) / seconds / 1e6

        def per_line() -> float:
            driver = RemoteIdDriver("bench", RemoteIdSettings(port="loop://"))
            seconds = cpu_timed(lambda: [driver.feed(line, 0.0) for line in lines])
            return len(data) / seconds / 1e6

        med, spread, _ = repeat(chunked, runs)
        one, one_spread, _ = repeat(per_line, runs)
        rate = LINE_BYTES_PER_S / 1e6
        figures.append(Figure(
            name, med, "MB/s", spread,
            reference=f"{med / rate:,.0f}x the 115200-baud line ({LINE_BYTES_PER_S / 1e3:.1f} kB/s); "
                      f"one line per call: {one:.2f} MB/s ({one_spread[0]:.2f}–{one_spread[1]:.2f})",
            note=f"{len(lines):,} lines, {len(data) / len(lines):.0f} bytes a line"))
    return figures


def run(quick: bool) -> Section:
    return Section("Remote ID receiver lines", bench(quick),
                   "Emulated receiver output of 20 drones at 5 Hz per form, fed in 4 KiB reads through the driver "
                   "(decoding and RemoteIdReading construction), and the same bytes one line per call; "
                   "bytes per process CPU second. The project's parsers aim at 1,000x their device's line "
                   "rate; these lines are short (80-480 bytes), so per-line costs (the line's regex or JSON "
                   "decode, its dict, the RemoteIdReading) dominate. A receiver printing at the full 115200 "
                   "baud costs 1/N of one core for a figure of N x the line.")
