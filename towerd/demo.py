"""``towerd demo``: a whole tower on one machine, with live tracks on screen.

One process tree: this process runs the TI radar and RF Explorer emulators on
pseudo-terminals (the built-in "demo" scenario: drones with their radio links,
clutter, a Wi-Fi access point), and starts two children exactly as they run in the
field:
``towerd central`` (plain ZeroMQ on loopback, SQLite in a temporary directory) and
``towerd run`` with a generated configuration pointing at the pty. The screen shows
what the central has stored, beside the scenario's truth, until Ctrl-C or
``--duration``; then a summary of the tracks received.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np

from towerd.demo_identity import DEMO_RID_SPECS, REMOTE_ID_YAML, IdentityView, describe, is_id_only, rid_sensor
from towerd.geo import Site, geodetic_to_enu
from towerd.icd import LAT_LON_UNKNOWN, SOURCE_RADAR, SOURCE_REMOTE_ID, SOURCE_RF, Category, Status, Threat
from towerd.identity import ID_ONLY_TRACK_ID_BASE
from towerd.rf.processor import RF_TRACK_ID_BASE
from towerd.sim.pty import PtyPair
from towerd.tools.output import plural
from towerd.sim.remoteid import RemoteIdEmulator
from towerd.sim.rfexplorer import RfExplorerEmulator
from towerd.sim.scenario import Scenario, builtin_scenario
from towerd.sim.ti_mmwave import TiMmwaveEmulator

log = logging.getLogger(__name__)

DEMO_SITE = Site(latitude_deg=27.5036, longitude_deg=-99.5076, height_m=130.0)
"""A tower on the Rio Grande near Laredo (any site works; this one reads well)."""
RADAR_POSITION_ENU_M = (0.0, 0.0, 10.0)
RADAR_BORESIGHT_DEG = 0.0
FRAME_RATE_HZ = 10.0
REFRESH_S = 0.5
STATUS_NAMES = {s.value: s.name.lower() for s in Status}
CATEGORY_NAMES = {c.value: c.name.lower().replace("_", " ") for c in Category}
THREAT_NAMES = {t.value: t.name.lower() for t in Threat}


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def demo_config(pty_path: str, endpoint: str, state_dir: Path, rf_path: str | None = None, web_port: int = 0,
                rid_path: str | None = None) -> str:
    """The daemon's YAML for the demo (plain ZeroMQ: lab use, as the ICD allows; the web
    console on ``web_port``, 0: any free port)."""
    return f"""\
version: 1
tower:
  id: tx-demo-001
  latitude_deg: {DEMO_SITE.latitude_deg}
  longitude_deg: {DEMO_SITE.longitude_deg}
  height_m: {DEMO_SITE.height_m}
state_dir: {state_dir}
status_socket: {state_dir}/status.sock
sensors:
  - name: radar0
    driver: ti_mmwave
    settings:
      port: {pty_path}
    mount:
      boresight_azimuth_deg: {RADAR_BORESIGHT_DEG}
      position_enu_m: [{', '.join(str(v) for v in RADAR_POSITION_ENU_M)}]
    noise:
      range_sigma_m: 0.3
      azimuth_sigma_deg: 1.0
      elevation_sigma_deg: 1.5
{rf_sensor(rf_path)}{rid_sensor(rid_path)}centrals:
  - name: local
    endpoint: {endpoint}
    plain: true
rf:
  cfar: {{looks: 8}}   # the emulated analyser averages 8 looks per point
web:
  port: {web_port}
{REMOTE_ID_YAML if rid_path else ""}"""


def rf_sensor(rf_path: str | None) -> str:
    if rf_path is None:
        return ""
    return f"""\
  - name: rf0
    driver: rfexplorer
    settings:
      port: {rf_path}
      bands:
        - {{name: srd868, start_mhz: 863.0, end_mhz: 870.0, dwell_s: 2.0}}
        - {{name: ism2400, start_mhz: 2400.0, end_mhz: 2483.5, dwell_s: 3.0}}
        - {{name: ism5800, start_mhz: 5725.0, end_mhz: 5875.0, dwell_s: 3.0}}
"""


LEGEND = [
    "",
    "RF-n: a track of the RF sensor alone (a drone link heard, no position); the others are radar tracks "
    "(+RF: the link was matched to it).",
    "what: category and the classifier's confidence; unknown: not classified (yet).",
    "ID-n: a drone heard by the Remote ID receiver where the radar does not see; +RID: a broadcast was matched "
    "to the track.",
]


def track_label(track_id: int) -> str:
    """Radar track ids as they are; RF-only track ids (from RF_TRACK_ID_BASE up) as RF-n."""
    if is_id_only(track_id):
        return f"ID-{track_id - ID_ONLY_TRACK_ID_BASE}"
    return f"RF-{track_id - RF_TRACK_ID_BASE}" if track_id >= RF_TRACK_ID_BASE else str(track_id)


def _seen_by(sources: int) -> str:
    """'radar', 'radar+RF', 'radar+RID', 'RID', ... from a record's sources bits."""
    bits = ((SOURCE_RADAR, "radar"), (SOURCE_RF, "RF"), (SOURCE_REMOTE_ID, "RID"))
    return "+".join(n for bit, n in bits if sources & bit) or "-"


def _what(category: int, confidence: int) -> str:
    """'uas 80%'; 'unknown' alone (a confidence in "unknown" means nothing)."""
    name = CATEGORY_NAMES.get(category, "?")
    return name if category == Category.UNKNOWN else f"{name} {confidence}%"


@dataclass
class TrackSummary:
    track_id: int
    records: int = 0
    first_time_us: int = 0
    last_time_us: int = 0
    last_status: int = 0
    what: str = ""
    errors_m: list[float] = field(default_factory=list)
    truth_names: dict[str, int] = field(default_factory=dict)


class CentralView:
    """Reads what the central stored (a separate read-only SQLite connection)."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self._conn: sqlite3.Connection | None = None
        self._last_seq: dict[int, int] = {}
        self.rows: dict[int, sqlite3.Row] = {}  # latest record per track id
        self.records = 0
        self.identities = IdentityView(db_path)

    def refresh(self) -> list[sqlite3.Row]:
        """New records since the last call, oldest first."""
        if self._conn is None:
            if not self.db_path.exists():
                return []
            try:
                self._conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=1.0)
                self._conn.row_factory = sqlite3.Row
            except sqlite3.Error:
                return []
        after = max(self._last_seq.values(), default=0)
        try:
            rows = self._conn.execute(
                "SELECT * FROM tracks WHERE seq > ? ORDER BY seq", (after,)
            ).fetchall()
        except sqlite3.Error:
            return []  # table not created yet, or the central is writing
        for row in rows:
            self.rows[row["track_id"]] = row
            self._last_seq[row["stream_id"]] = row["seq"]
        self.records += len(rows)
        self.identities.refresh(self._conn)
        return rows

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class Demo:
    """Runs the emulator and the two child processes; renders what the central holds."""

    def __init__(self, workdir: Path, *, seed: int, scenario: Scenario | None = None) -> None:
        self.workdir = workdir
        self.scenario = scenario or builtin_scenario("demo")
        self.pty = PtyPair.open()
        self.emulator = TiMmwaveEmulator(
            self.scenario,
            boresight_azimuth_deg=RADAR_BORESIGHT_DEG,
            position_enu_m=RADAR_POSITION_ENU_M,
            frame_rate_hz=FRAME_RATE_HZ,
            rng=np.random.default_rng(seed),
        )
        self.rf_pty = PtyPair.open()
        self.rf_emulator = RfExplorerEmulator(self.scenario, rng=np.random.default_rng(seed + 1),
                                              position_enu_m=RADAR_POSITION_ENU_M, sweep_rate_hz=10.0)
        self.rid_pty = PtyPair.open()
        self.rid_emulator = RemoteIdEmulator(self.scenario, rng=np.random.default_rng(seed + 2), site=DEMO_SITE,
                                             position_enu_m=RADAR_POSITION_ENU_M, specs=DEMO_RID_SPECS)
        self.endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
        self.console_url = f"http://127.0.0.1:{free_tcp_port()}/"
        self.central_db = workdir / "central.sqlite"
        self.view = CentralView(self.central_db)
        self.children: list[subprocess.Popen] = []
        self.summaries: dict[int, TrackSummary] = {}

    def start(self) -> None:
        config_path = self.workdir / "towerd.yaml"
        config_path.write_text(demo_config(self.pty.path, self.endpoint, self.workdir / "state", self.rf_pty.path,
                                           web_port=int(self.console_url.rsplit(":", 1)[1].strip("/")),
                                           rid_path=self.rid_pty.path))
        logs = open(self.workdir / "children.log", "ab")
        self.emulator.start(self.pty)
        self.rf_emulator.start(self.rf_pty)
        self.rid_emulator.start(self.rid_pty)
        base = [sys.executable, "-m", "towerd"]
        self.children.append(subprocess.Popen(
            base + ["central", "--bind", self.endpoint, "--db", str(self.central_db), "--plain"],
            stdout=logs, stderr=subprocess.STDOUT))
        self.children.append(subprocess.Popen(
            base + ["run", "--config", str(config_path)], stdout=logs, stderr=subprocess.STDOUT))
        logs.close()

    def children_alive(self) -> bool:
        return all(child.poll() is None for child in self.children)

    def stop(self) -> None:
        """Daemon first (it flushes its outbox), then the central, then the emulator."""
        for child in reversed(self.children):
            if child.poll() is None:
                child.terminate()
                try:
                    child.wait(10)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
        self.emulator.stop()
        self.rf_emulator.stop()
        self.rid_emulator.stop()
        self.view.close()
        self.pty.close()
        self.rf_pty.close()
        self.rid_pty.close()

    def truth_error(self, row: sqlite3.Row) -> tuple[float, str]:
        """Distance from a reported position to the nearest true target, and its name."""
        if row["lat_e7"] == LAT_LON_UNKNOWN:
            return float("nan"), ""
        t_s = (row["time_us"] - self.emulator.t0_utc_us) / 1e6
        enu = geodetic_to_enu(DEMO_SITE, row["lat_e7"] / 1e7, row["lon_e7"] / 1e7, row["alt_m"])[0]
        dist, name, _kind = self.scenario.nearest(t_s, enu)
        return dist, name

    def update(self) -> None:
        for row in self.view.refresh():
            s = self.summaries.setdefault(row["track_id"], TrackSummary(row["track_id"], first_time_us=row["time_us"]))
            s.records += 1
            s.last_time_us = row["time_us"]
            s.last_status = row["status"]
            seen = _seen_by(row["sources"])
            s.what = f"{_what(row['category'], row['confidence'])}, seen by " + (
                f"{seen} only" if "+" not in seen and seen != "radar" else seen)
            err, name = self.truth_error(row)
            if name:
                s.errors_m.append(err)
                s.truth_names[name] = s.truth_names.get(name, 0) + 1

    def render(self, out: TextIO, live: bool, footer: str = "Ctrl-C to stop.") -> None:
        now_us = time.time_ns() // 1000
        lines = [
            f"towerd demo — tower tx-demo-001: radar emulator {self.emulator.frames_sent} frames, RF Explorer "
            f"emulator {self.rf_emulator.sweeps_sent} sweeps; central {self.endpoint}, {self.view.records} records",
            f"web console: {self.console_url} (open it in a browser on this computer)",
            f"{'track':>10} {'status':<9} {'age s':>5} {'what':<19} {'threat':<6} {'seen by':<9} {'range m':>7} "
            f"{'az':>5} {'el':>5} {'latitude':>10} {'longitude':>11} {'alt m':>6} {'m/s':>5} {'RF link':<16} truth",
        ]
        for tid in sorted(self.view.rows):
            r = self.view.rows[tid]
            if r["status"] == Status.ENDED and now_us - r["time_us"] > 10e6:
                continue
            lines.append(self._row(tid, r, now_us))
        if len(lines) == 2:
            lines.append("  (no confirmed tracks yet)")
        if live:
            lines += LEGEND
            out.write("\x1b[H\x1b[J" + "\n".join(lines) + f"\n\n{footer}\n")
        else:
            out.write("\n".join(lines) + "\n")
        out.flush()

    def _row(self, tid: int, r: sqlite3.Row, now_us: int) -> str:
        what = _what(r["category"], r["confidence"])
        seen = _seen_by(r["sources"])
        # SQLite stores the ICD's NaN ("unknown") as NULL.
        rf = f"{r['rf_freq_mhz']:.1f}/{r['rf_bw_mhz']:.1f} MHz" if r["rf_freq_mhz"] is not None else "-"
        head = (f"{track_label(tid):>10} {STATUS_NAMES.get(r['status'], '?'):<9} {(now_us - r['time_us']) / 1e6:>5.1f} "
                f"{what:<19} {THREAT_NAMES.get(r['threat'], '?'):<6} {seen:<9} ")
        if r["lat_e7"] == LAT_LON_UNKNOWN or r["alt_m"] is None:  # RF only: no position
            return head + f"{'-':>7} {'-':>5} {'-':>5} {'-':>10} {'-':>11} {'-':>6} {'-':>5} {rf:<16}"
        speed = float(np.hypot(r["vel_east_mps"], r["vel_north_mps"]))
        err, name = self.truth_error(r)
        return head + (f"{r['range_m']:>7.1f} {r['azimuth_deg']:>5.0f} {r['elevation_deg']:>5.1f} "
                       f"{r['lat_e7'] / 1e7:>10.5f} {r['lon_e7'] / 1e7:>11.5f} {r['alt_m']:>6.1f} {speed:>5.1f} "
                       f"{rf:<16} {name} ({err:.1f} m)")

    def summary(self) -> str:
        lines = [f"Summary: {plural(len(self.summaries), 'track')}, {plural(self.view.records, 'track record')} "
                 "stored by the central."]
        for tid in sorted(self.summaries):
            s = self.summaries[tid]
            dur = (s.last_time_us - s.first_time_us) / 1e6
            target = max(s.truth_names, key=s.truth_names.get) if s.truth_names else "-"
            err = f"{np.median(s.errors_m):.1f} m" if s.errors_m else "n/a"
            end = ("ended" if s.last_status == Status.ENDED
                   else f"still {STATUS_NAMES.get(s.last_status, '?')} when the demo stopped")
            ident = self.view.identities.latest.get(tid)
            who = f", {describe(ident)}" if ident is not None else ""
            lines.append(f"  track {track_label(tid)}: {plural(s.records, 'record')} over {dur:.1f} s, {end}, {s.what}, "
                         f"nearest truth {target}, median error {err}{who}")
        if any(tid >= RF_TRACK_ID_BASE for tid in self.summaries):
            lines.append(LEGEND[1])
        if any(is_id_only(tid) for tid in self.summaries):
            lines.append(LEGEND[3])
        return "\n".join(lines)


def run_demo(*, duration_s: float | None, stop: threading.Event, seed: int = 1, show: str = "auto",
             out: TextIO = sys.stdout) -> int:
    """Run the demo until ``stop`` or ``duration_s``; 0 when tracks reached the central."""
    live = show == "live" or (show == "auto" and out.isatty())
    with tempfile.TemporaryDirectory(prefix="towerd-demo-") as tmp:
        demo = Demo(Path(tmp), seed=seed)
        demo.start()
        print(f"towerd demo: web console on {demo.console_url}", file=out, flush=True)
        deadline = None if duration_s is None else time.monotonic() + duration_s
        try:
            while not stop.is_set():
                if not demo.children_alive():
                    log_path = Path(tmp) / "children.log"
                    print("towerd demo: a child process exited early; its log:\n" + log_path.read_text(),
                          file=sys.stderr)
                    return 1
                demo.update()
                if show != "none":
                    demo.render(out, live, "Ctrl-C to stop." if deadline is None else
                                f"Stops by itself after {duration_s:g} s, then prints a summary.")
                remaining = REFRESH_S if deadline is None else min(REFRESH_S, deadline - time.monotonic())
                if remaining <= 0:
                    break
                stop.wait(remaining)
        finally:
            demo.stop()
        demo.update()
        demo.view.close()
        print(demo.summary(), file=out)
        if os.environ.get("TOWERD_DEMO_KEEP_LOG"):
            print((Path(tmp) / "children.log").read_text(), file=sys.stderr)
        return 0 if demo.summaries else 1
