"""Remote ID: from a broadcast line on the receiver's serial port to the central's ACK,
and the cost of fusing broadcasts with radar tracks.

Latency: `towerd run` (a real subprocess) reads a `remoteid` receiver on a pty; this
process writes one JSON line (the Sky Spy / drone-mesh-mapper dialect) per broadcast, 5
a second, for a drone no radar covers, so every line with a new position gives an ID-only
track record (``remote_id.id_only_interval_s`` 0.1 s). The k-th line puts the drone
0.4·k m east, so a record's longitude names its line. Latency: the instant the line was
written (this process's UTC clock) to the instant the central (in this process, plain
ZeroMQ on loopback) sent the ACK covering that record: pty, driver, fusion, outbox commit
(``commit_interval_s`` 20 ms), uplink and the central's store. Process CPU time of the
daemon over the run is given beside it (wall-clock figures move with the machine's load;
the load average is noted).

Fusion cost: :meth:`RemoteIdFusion.on_radar` (one evaluation: merge, gate, assign, rules,
reports) in this process, N transmitters against K confirmed radar tracks from the real
tracker, CPU time per call (``time.thread_time``: this thread only; the process clock
costs 17 µs a read here).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.common import Figure, Section
from benchmarks.tower import cpu_seconds
from towerd.central.server import CentralServer
from towerd.icd import SOURCE_REMOTE_ID
from towerd.sim.pty import PtyPair

SITE = (27.5036, -99.5076, 130.0)
RATE_HZ = 5.0


class TimedCentral(CentralServer):
    """The reference central, noting when each ACK leaves and for which stream (the
    tower's identity stream has its own seq numbers)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.acks: list[tuple[int, int, int, int]] = []  # (utc_us sent, stream_id, first_seq, last_seq)

    def _ack(self, rid, tower_id, stream_id, first, last):
        result = super()._ack(rid, tower_id, stream_id, first, last)
        self.acks.append((time.time_ns() // 1000, int(stream_id), first, last))
        return result


def config(rid_path: str, endpoint: str, state: Path) -> str:
    return f"""\
version: 1
tower: {{id: tx-bench-rid, latitude_deg: {SITE[0]}, longitude_deg: {SITE[1]}, height_m: {SITE[2]}}}
state_dir: {state}
status_socket: null
sensors:
  - name: rid0
    driver: remoteid
    settings: {{port: {rid_path}}}
centrals:
  - {{name: hq, endpoint: "{endpoint}", plain: true}}
remote_id: {{id_only_interval_s: 0.1}}
web: {{enabled: false}}
logging: {{level: warning}}
"""


STEP_DEG = 0.4 / 98_700.0
"""Longitude step between broadcasts: 0.4 m at the site (1e-7 degrees is 1 cm)."""


def line(k: int) -> bytes:
    """The k-th broadcast (k from 1) of a drone 600 m south of the tower, moving east."""
    lat = SITE[0] - 600.0 / 111_000.0
    lon = SITE[1] + k * STEP_DEG
    return (json.dumps({"mac": "60:60:1f:be:0c:01", "rssi": -71, "drone_lat": round(lat, 7),
                        "drone_long": round(lon, 7), "drone_altitude": 220, "pilot_lat": 27.4990,
                        "pilot_long": -99.5080, "basic_id": "1581F5FJD23A80BENCH1"}) + "\n").encode()


def latency(duration_s: float) -> tuple[np.ndarray, float, float, int]:
    """(latencies ms, daemon CPU s, wall s, lines written)."""
    import subprocess

    with tempfile.TemporaryDirectory(prefix="towerd-bench-rid-") as tmp:
        tmp_path = Path(tmp)
        central = TimedCentral("tcp://127.0.0.1:*", tmp_path / "central.sqlite", plain=True)
        stop_central = threading.Event()
        central_thread = threading.Thread(target=central.serve_forever, args=(stop_central,), name="central")
        central_thread.start()
        pty = PtyPair.open()
        cfg = tmp_path / "towerd.yaml"
        cfg.write_text(config(pty.path, central.bound_endpoint, tmp_path / "state"))
        written: dict[int, int] = {}
        with open(tmp_path / "daemon.log", "wb") as log:
            daemon = subprocess.Popen([sys.executable, "-m", "towerd", "run", "--config", str(cfg)],
                                      stdout=subprocess.DEVNULL, stderr=log)
        try:
            deadline = time.monotonic() + 60.0
            while not central.store.events() and time.monotonic() < deadline:
                time.sleep(0.1)  # benchmark: until the daemon is up (its daemon.started event arrived)
            time.sleep(0.5)
            cpu0, wall0 = cpu_seconds(daemon.pid), time.monotonic()
            k, next_t = 0, time.monotonic()
            while time.monotonic() - wall0 < duration_s:
                k += 1
                written[k] = time.time_ns() // 1000
                pty.write(line(k))
                next_t += 1.0 / RATE_HZ
                time.sleep(max(0.0, next_t - time.monotonic()))  # benchmark: paces the broadcasts
            time.sleep(1.0)  # benchmark: the last records' ACKs
            cpu1, wall1 = cpu_seconds(daemon.pid), time.monotonic()
        finally:
            daemon.terminate()
            daemon.wait(20)
            stop_central.set()
            central_thread.join()
            pty.close()
        rows = {(_stream(r["stream_id"]), r["seq"]): r for r in central.store.tracks()}
        out = []
        for ack_us, stream_id, first, last in central.acks:
            for seq in range(first, last + 1):
                r = rows.get((stream_id, seq))
                if r is None or r["sources"] != SOURCE_REMOTE_ID or r["status"] != 1:
                    continue
                k = round((r["lon_e7"] / 1e7 - SITE[1]) / STEP_DEG)
                if k in written:
                    out.append((ack_us - written[k]) / 1e3)
        central.close()
    return np.array(out), cpu1 - cpu0, wall1 - wall0, k


def _stream(value: int | str) -> int:
    """A stored stream id (an int, or 16 hex digits) as an int."""
    return int(value, 16) if isinstance(value, str) else int(value)


def fusion_cost(n_tx: int, k_tracks: int, calls: int) -> float:
    """CPU µs per on_radar call with ``n_tx`` broadcasting transmitters near ``k_tracks``
    confirmed radar tracks (every broadcast on its drone)."""
    from towerd.clock import ManualClock
    from towerd.detection.plots import Detections, SensorMount
    from towerd.drivers.measurements import RemoteIdReading
    from towerd.geo import Site, enu_to_geodetic
    from towerd.icd import Category
    from towerd.identity import RemoteIdFusion, RemoteIdSettings
    from towerd.reports.tracks import TrackReporter
    from towerd.tracking.associator import GnnAssociator
    from towerd.tracking.deleter import MissDeleter
    from towerd.tracking.initiator import MofNInitiator
    from towerd.tracking.models import ConstantVelocity
    from towerd.tracking.predictor import KalmanPredictor
    from towerd.tracking.tracker import Tracker
    from towerd.tracking.updater import KalmanUpdater

    site = Site(*SITE)
    rng = np.random.default_rng(3)
    truth = np.column_stack([rng.uniform(-80, 80, k_tracks), rng.uniform(50, 180, k_tracks),
                             rng.uniform(20, 80, k_tracks)])
    tracker = Tracker(KalmanPredictor(ConstantVelocity(3.0)), KalmanUpdater(), GnnAssociator(0.999),
                      MofNInitiator(3, 5, initial_velocity_sigma_mps=20.0), MissDeleter())
    clock = ManualClock()
    fusion = RemoteIdFusion(RemoteIdSettings(), site, {"radar0": SensorMount((0.0, 0.0, 10.0), 0.0)}, clock)
    reporter = TrackReporter(site)
    lat, lon, h = enu_to_geodetic(site, truth[:n_tx])
    cats = None
    total = 0.0
    for f in range(calls + 10):
        t = 0.1 * f
        clock.advance(t - clock.monotonic())
        det = Detections("r", t, truth + rng.normal(0, 1.0, truth.shape), np.tile(np.eye(3), (k_tracks, 1, 1)),
                         np.full(k_tracks, 20.0), np.full(k_tracks, np.nan))
        update = tracker.step(det)
        cats = np.full(len(update.tracks), Category.UAS, dtype=np.uint8)
        if f % 10 == 0:
            for i in range(n_tx):
                fusion.ingest(RemoteIdReading("rid0", t, f"60:60:1f:00:00:{i:02x}", uas_id=f"SN{i:04d}",
                                              lat_deg=float(lat[i]), lon_deg=float(lon[i]), alt_geo_m=float(h[i]),
                                              speed_mps=0.0, h_accuracy_m=10.0, v_accuracy_m=15.0))
        records = reporter.build(update, clock)
        c0 = time.thread_time()
        fusion.on_radar(update, cats, records)
        if f >= 10:
            total += time.thread_time() - c0
    return total / calls * 1e6


def run(quick: bool) -> Section:
    duration = 10.0 if quick else 60.0
    load = os.getloadavg()[0]
    lat, cpu, wall, lines = latency(duration)
    figures = [
        Figure("broadcast line -> central ACK, median", float(np.median(lat)) if len(lat) else float("nan"), "ms",
               reference="ID-only track record, loopback, plain ZeroMQ",
               note=f"{len(lat)} of {lines} lines at {RATE_HZ:.0f}/s matched to their record; load average "
                    f"{load:.1f} on the shared machine when the run started"),
        Figure("broadcast line -> central ACK, 99th percentile",
               float(np.percentile(lat, 99)) if len(lat) else float("nan"), "ms",
               reference=f"max {float(np.max(lat)) if len(lat) else float('nan'):.1f} ms"),
        Figure("daemon CPU with a receiver at 5 lines/s", 100.0 * cpu / wall, "% of one core",
               reference=f"process CPU seconds over {wall:.0f} s wall"),
    ]
    calls = 100 if quick else 500
    for n_tx, k in ((1, 1), (5, 20), (20, 50)):
        us = fusion_cost(n_tx, k, calls)
        figures.append(Figure(f"fusion evaluation, {n_tx} transmitters x {k} tracks", us, "µs CPU",
                              reference=f"per radar frame, mean of {calls} calls"))
    return Section("Remote ID: broadcast to central, fusion cost", figures, __doc__.split("\n\n", 1)[1].strip())
