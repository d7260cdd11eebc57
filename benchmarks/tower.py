"""The whole daemon at a nominal tower load: CPU, memory, end-to-end latency, bytes on
the wire.

Nominal load: a TI radar at 10 frames/s with about 50 points a frame (20 drones,
clutter and false alarms), an RF Explorer at 10 sweeps/s through a three-band scan
plan, 20 drones (about 21 tracks reported at a time; the tracker also carries about 13
tentative ones from false alarms), one central. `towerd run` is a real
subprocess reading the emulator's pty; the central runs in this process behind a TCP
relay that counts the bytes of both directions (ZMTP framing included; TCP/IP headers
not). CPU and resident memory are read from /proc for the daemon's pid. Beside them, the
same tower with commit 88a59ac's daemon (its own emulators and central; another commit
when TOWERD_BENCH_REFERENCE names one, as for the stages section) runs at the same
time, so that both see the same machine load. Each daemon serves its web console (idle,
no browser open) as a tower does, on a port of its own (port 0): on the default port only
the first daemon started got one, and the two columns then differed by its threads.

Latency: from the instant the daemon read a frame's last byte (a record's ``time_us``)
to the instant the central sent the ACK covering that record (its own clock; same
machine, same UTC).
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.common import Figure, Section
from towerd.central.server import CentralServer
from towerd.demo import rf_sensor
from towerd.icd import SOURCE_RADAR, TRACK_RECORD_DTYPE
from towerd.sim.pty import PtyPair
from towerd.sim.rfexplorer import RfExplorerEmulator
from towerd.sim.scenario import ClutterPoint, OrbitPath, Scenario, Target
from towerd.sim.ti_mmwave import TiMmwaveEmulator

SITE = (27.5036, -99.5076, 130.0)
CLK_TCK = os.sysconf("SC_CLK_TCK")


def nominal_scenario(n_targets: int = 20) -> Scenario:
    """``n_targets`` drones orbiting inside the radar's field of view, plus clutter."""
    rng = np.random.default_rng(11)
    targets = []
    for i in range(n_targets):
        targets.append(Target(
            name=f"uas{i:02d}", kind="uas", rcs_dbsm=-15.0,
            path=OrbitPath(centre_enu_m=(float(rng.uniform(-60, 60)), float(rng.uniform(70, 140))),
                           radius_m=float(rng.uniform(8, 20)), speed_mps=float(rng.uniform(3, 10)),
                           start_deg=float(rng.uniform(0, 360)), up_m=float(rng.uniform(20, 60))),
        ))
    clutter = tuple(ClutterPoint(float(e), float(n), 5.0, 10.0)
                    for e, n in rng.uniform([-60, 30], [60, 150], size=(5, 2)))
    return Scenario(name="nominal", targets=tuple(targets), clutter=clutter, false_alarms_per_frame=5.0)


class TimedCentral(CentralServer):
    """The reference central, noting when each ACK leaves (for the latency figure)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.acks: list[tuple[int, int, int]] = []  # (utc_us sent, first_seq, last_seq)

    def _ack(self, rid, tower_id, stream_id, first, last):
        result = super()._ack(rid, tower_id, stream_id, first, last)
        self.acks.append((time.time_ns() // 1000, first, last))
        return result


class CountingRelay:
    """TCP relay 127.0.0.1:listen -> target, counting bytes each way."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = self.down = 0  # tower->central, central->tower
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="relay")
        self._thread.start()

    def _run(self) -> None:
        pairs: dict[socket.socket, socket.socket] = {}
        from_tower: set[socket.socket] = set()
        self.listener.setblocking(False)
        while not self._stop.is_set():
            ready, _, _ = select.select([self.listener, *pairs], [], [], 0.05)
            for sock in ready:
                if sock is self.listener:
                    client, _ = self.listener.accept()
                    server = socket.create_connection(("127.0.0.1", self.target_port))
                    # As ZeroMQ does on its own TCP sockets: without it, Nagle's algorithm held
                    # a message written soon after another behind the peer's delayed ACK, a
                    # relay-only 35-41 ms that made the slowest 1 % (issue 16).
                    for s in (client, server):
                        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    pairs[client], pairs[server] = server, client
                    from_tower.add(client)
                    continue
                data = b""
                try:
                    data = sock.recv(65536)
                except OSError:
                    pass
                peer = pairs.get(sock)
                if not data or peer is None:
                    for s in (sock, peer):
                        if s is not None:
                            pairs.pop(s, None)
                            from_tower.discard(s)
                            s.close()
                    continue
                if sock in from_tower:
                    self.up += len(data)
                else:
                    self.down += len(data)
                peer.sendall(data)
        for s in pairs:
            s.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.listener.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def rss_mib(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) in MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def wakeups(pid: int) -> tuple[int, int]:
    """(voluntary context switches of all of ``pid``'s threads so far, number of threads):
    each voluntary switch is a thread going to sleep (a wait, a poll, a disk sync, the
    GIL), so over a window they count its wake-ups."""
    total = threads = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "status").read_text()
        except OSError:
            continue  # the thread ended meanwhile
        threads += 1
        total += int(text.split("voluntary_ctxt_switches:", 1)[1].split()[0])
    return total, threads


def thread_stats(pid: int) -> dict[int, tuple[str, float, int]]:
    """Each thread of ``pid``: (role, CPU seconds so far, voluntary context switches so
    far). Roles: "main" (the daemon's loop), "ZeroMQ I/O" (libzmq's own threads), "other"
    (a sensor's thread while it opens a port, the web console's)."""
    stats = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat, status = (task / "stat").read_text(), (task / "status").read_text()
        except OSError:
            continue  # the thread ended meanwhile
        comm, rest = stat.split("(", 1)[1].rsplit(")", 1)
        fields = rest.split()
        tid = int(task.name)
        role = "main" if tid == pid else "ZeroMQ I/O" if comm.startswith("ZMQbg") else "other"
        stats[tid] = (role, (int(fields[11]) + int(fields[12])) / CLK_TCK,
                      int(status.split("voluntary_ctxt_switches:", 1)[1].split()[0]))
    return stats


def by_role(before: dict[int, tuple[str, float, int]], after: dict[int, tuple[str, float, int]],
            frames: float) -> str:
    """CPU (µs) and wake-ups per radar frame of each role's threads between two
    :func:`thread_stats` (a thread started in between counts from zero; one that ended
    in between is left out)."""
    cpu: dict[str, float] = {}
    wakes: dict[str, float] = {}
    count: dict[str, int] = {}
    for tid, (role, cpu_s, switches) in after.items():
        _, cpu0, switches0 = before.get(tid, (role, 0.0, 0))
        cpu[role] = cpu.get(role, 0.0) + (cpu_s - cpu0) / frames * 1e6
        wakes[role] = wakes.get(role, 0.0) + (switches - switches0) / frames
        count[role] = count.get(role, 0) + 1
    return ", ".join(f"{role} ({count[role]}) {cpu[role]:,.0f} µs {wakes[role]:.2f} wake-ups"
                     for role in ("main", "ZeroMQ I/O", "other") if role in cpu)


def config(pty_path: str, endpoint: str, state: Path, rf_path: str, web: str = "{port: 0}") -> str:
    """The nominal tower's towerd.yaml; ``web``: its web console's settings (YAML flow mapping)."""
    return f"""\
version: 1
tower: {{id: tx-bench-001, latitude_deg: {SITE[0]}, longitude_deg: {SITE[1]}, height_m: {SITE[2]}}}
state_dir: {state}
status_socket: null
sensors:
  - name: radar0
    driver: ti_mmwave
    settings: {{port: {pty_path}}}
    mount: {{boresight_azimuth_deg: 0, position_enu_m: [0, 0, 10]}}
{rf_sensor(rf_path)}rf: {{cfar: {{looks: 8}}}}
centrals:
  - {{name: hq, endpoint: "{endpoint}", plain: true}}
logging: {{level: warning}}
web: {web}
"""


class NominalTower:
    """The nominal load's emulators on ptys and `towerd run` (a subprocess) reporting to
    ``endpoint``; ``web``: the web console's settings. Call :meth:`stop`."""

    def __init__(self, tmp_path: Path, endpoint: str, seed: int = 5, daemon_cwd: Path | None = None,
                 web: str = "{port: 0}") -> None:
        self.daemon_cwd = daemon_cwd  # run `python -m towerd` from there (a reference tree), None: installed
        self.pty = PtyPair.open()
        self.emulator = TiMmwaveEmulator(nominal_scenario(), boresight_azimuth_deg=0.0,
                                         position_enu_m=(0.0, 0.0, 10.0), frame_rate_hz=10.0,
                                         rng=np.random.default_rng(seed))
        self.rf_pty = PtyPair.open()
        self.rf_emulator = RfExplorerEmulator(nominal_scenario(), rng=np.random.default_rng(seed + 1),
                                              position_enu_m=(0.0, 0.0, 10.0), sweep_rate_hz=10.0)
        self.log_path = tmp_path / "daemon.log"
        self.config_path = tmp_path / "towerd.yaml"
        self.config_path.write_text(config(self.pty.path, endpoint, tmp_path / "state", self.rf_pty.path, web))
        self._start_daemon()
        self.emulator.start(self.pty)
        self.rf_emulator.start(self.rf_pty)

    def _start_daemon(self) -> None:
        """`towerd run` as a subprocess (benchmarks.stages runs it in process instead)."""
        with open(self.log_path, "wb") as log:
            self.daemon = subprocess.Popen([sys.executable, "-m", "towerd", "run", "--config", str(self.config_path)],
                                           stdout=subprocess.DEVNULL, stderr=log, cwd=self.daemon_cwd)

    def stop(self) -> None:
        self._stop_daemon()
        self.emulator.stop()
        self.rf_emulator.stop()
        self.pty.close()
        self.rf_pty.close()

    def _stop_daemon(self) -> None:
        self.daemon.terminate()
        self.daemon.wait(20)


class ReferenceTower:
    """The same nominal tower (its own emulators and central) running commit COMMIT's
    daemon at the same time, so its CPU is measured under the same machine load; nothing
    when that tree cannot be had (its figures are then NaN)."""

    COMMIT = os.environ.get("TOWERD_BENCH_REFERENCE", "88a59ac")

    def __init__(self, tmp_path: Path) -> None:
        from benchmarks.stages import reference_tree

        self.tower = None
        root = reference_tree(self.COMMIT)
        if root is None:
            return
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.central = TimedCentral("tcp://127.0.0.1:*", tmp_path / "central.sqlite", plain=True)
        self.latencies_ms: list[float] = []  # its end-to-end latencies, once stopped
        self.stop_central = threading.Event()
        self.thread = threading.Thread(target=self.central.serve_forever, args=(self.stop_central,),
                                       name="reference central")
        self.thread.start()
        # Through a relay of its own, as this tree's tower: both latencies then include the
        # same hop (a Python thread of this process, sharing its GIL with the emulators).
        self.relay = CountingRelay(int(self.central.bound_endpoint.rsplit(":", 1)[1]))
        self.tower = NominalTower(tmp_path, f"tcp://127.0.0.1:{self.relay.port}", daemon_cwd=root)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.tower.daemon.pid) if self.tower is not None else float("nan")

    def rss_mib(self) -> float:
        return rss_mib(self.tower.daemon.pid)[0] if self.tower is not None else float("nan")

    def wakeups(self) -> tuple[float, float]:
        return wakeups(self.tower.daemon.pid) if self.tower is not None else (float("nan"), float("nan"))

    def thread_stats(self) -> dict[int, tuple[str, float, int]]:
        return thread_stats(self.tower.daemon.pid) if self.tower is not None else {}

    def frames_sent(self) -> float:
        return self.tower.emulator.frames_sent if self.tower is not None else float("nan")

    def stop(self) -> None:
        if self.tower is None:
            return
        self.tower.stop()
        self.stop_central.set()
        self.thread.join()
        self.relay.close()
        self.latencies_ms = radar_latencies(self.central, self.central.store.tracks())
        self.central.close()


def radar_latencies(central: TimedCentral, rows: list[dict]) -> list[float]:
    """End-to-end latency (ms) of each radar record ``central`` acknowledged (``rows``:
    its stored records)."""
    by_seq = {r["seq"]: r for r in rows}
    latencies = []
    for ack_us, first, last in central.acks:
        for seq in range(first, last + 1):
            r = by_seq.get(seq)
            # Tentative/confirmed records come from a frame; coasting and ended
            # ones also from the timer, stamped with an older state time.
            if r is not None and r["status"] in (0, 1) and r["sources"] & SOURCE_RADAR:
                latencies.append((ack_us - r["time_us"]) / 1e3)
    return latencies


def record_json_bytes(rows: list[dict]) -> float:
    """Mean size of the same reports as compact JSON objects (field names as in the ICD)."""
    names = TRACK_RECORD_DTYPE.names
    sizes = [len(json.dumps({k: row[k] for k in names if k in row}, separators=(",", ":"))) for row in rows]
    return float(np.mean(sizes)) if sizes else float("nan")


def run(quick: bool) -> Section:
    duration = 10.0 if quick else 60.0
    warmup = 3.0 if quick else 5.0
    with tempfile.TemporaryDirectory(prefix="towerd-bench-") as tmp:
        tmp_path = Path(tmp)
        central = TimedCentral("tcp://127.0.0.1:*", tmp_path / "central.sqlite", plain=True)
        central_port = int(central.bound_endpoint.rsplit(":", 1)[1])
        relay = CountingRelay(central_port)
        stop_central = threading.Event()
        central_thread = threading.Thread(target=central.serve_forever, args=(stop_central,), name="central")
        central_thread.start()
        tower = NominalTower(tmp_path, f"tcp://127.0.0.1:{relay.port}")
        daemon, emulator, rf_emulator = tower.daemon, tower.emulator, tower.rf_emulator
        ref = ReferenceTower(tmp_path / "reference")
        try:
            time.sleep(warmup)  # benchmark: let tracks confirm before measuring
            load0 = Path("/proc/loadavg").read_text().split()[:3]
            ref_cpu0, (ref_wake0, _), ref_frames0 = ref.cpu_seconds(), ref.wakeups(), ref.frames_sent()
            ref_threads0, threads0 = ref.thread_stats(), thread_stats(daemon.pid)
            (wake0, _), cpu0, wall0 = wakeups(daemon.pid), cpu_seconds(daemon.pid), time.monotonic()
            up0, down0, recs0 = relay.up, relay.down, central.store.count_tracks()
            points0, sweeps0 = emulator.frames_sent, rf_emulator.sweeps_sent
            time.sleep(duration)
            cpu1, wall1 = cpu_seconds(daemon.pid), time.monotonic()
            wake1, threads = wakeups(daemon.pid)
            threads1, ref_threads1 = thread_stats(daemon.pid), ref.thread_stats()
            ref_cpu1, ref_rss = ref.cpu_seconds(), ref.rss_mib()
            (ref_wake1, ref_threads), ref_frames = ref.wakeups(), ref.frames_sent() - ref_frames0
            load1 = Path("/proc/loadavg").read_text().split()[:3]
            rss, peak = rss_mib(daemon.pid)
            up1, down1, recs1 = relay.up, relay.down, central.store.count_tracks()
            frames = emulator.frames_sent - points0
            sweeps = rf_emulator.sweeps_sent - sweeps0
        finally:
            tower.stop()
            ref.stop()
            stop_central.set()
            central_thread.join()
            relay.close()
        rows = central.store.tracks()
        latencies = radar_latencies(central, rows)
        central.close()
        points_per_frame = float(np.mean([len(emulator.detections(0.1 * k)) for k in range(50)]))
        live = [r for r in rows if r["status"] in (1, 2)]
        tracks_live = len({r["track_id"] for r in live[-200:]})

    wall = wall1 - wall0
    records = recs1 - recs0
    cpu_pct = 100.0 * (cpu1 - cpu0) / wall
    up_per_record = (up1 - up0) / max(records, 1)
    json_per_record = record_json_bytes(live)
    per_hour_mb = (up1 - up0 + down1 - down0) / wall * 3600 / 1e6
    lat = np.array(latencies)
    ref_pct = 100.0 * (ref_cpu1 - ref_cpu0) / wall if ref_cpu1 == ref_cpu1 else float("nan")
    ref_text = f"; {ReferenceTower.COMMIT} at the same time, same load: {ref_pct:.2f} %, {ref_rss:.0f} MiB" \
        if ref_pct == ref_pct else ""
    figures = [
        Figure("daemon CPU", cpu_pct, "% of one core",
               reference="goal < 3%" + ref_text, note=f"process CPU time (utime + stime of the daemon) over wall time: "
                                            f"{frames} radar frames of ~{points_per_frame:.0f} points and {sweeps} "
                                            f"RF sweeps, {tracks_live} live tracks, over {wall:.0f} s; load average "
                                            f"(1/5/15 min) {' / '.join(load0)} at the start, {' / '.join(load1)} at "
                                            f"the end (2 cores shared with other work)"),
        Figure("daemon wake-ups per radar frame", (wake1 - wake0) / max(frames, 1), "wake-ups",
               reference=f"{threads} threads" + (f"; {ReferenceTower.COMMIT} at the same time: "
                                                 f"{(ref_wake1 - ref_wake0) / max(ref_frames, 1):.1f}, "
                                                 f"{ref_threads} threads" if ref_frames == ref_frames else ""),
               note="voluntary context switches of all the daemon's threads (/proc/PID/task/*/status) over "
                    "the window, per radar frame: each is a thread going to sleep (a poll, a select, a disk "
                    "sync, a wait for the GIL) to be woken again; an RF sweep arrives with each frame"),
        Figure("daemon CPU per radar frame, by thread", 1e6 * (cpu1 - cpu0) / max(frames, 1), "µs",
               reference=by_role(threads0, threads1, max(frames, 1)) + (
                   f"; {ReferenceTower.COMMIT} at the same time: {by_role(ref_threads0, ref_threads1, ref_frames)}"
                   if ref_frames == ref_frames and ref_frames > 0 else ""),
               note="per role (number of threads): CPU (utime + stime, /proc/PID/task/*/stat, in clock ticks of "
                    f"{1e3 / CLK_TCK:.0f} ms) and voluntary context switches per radar frame over the window; "
                    "the main thread reads the sensors' ports itself (a sensor's thread only opens its port), "
                    "so the threads that read them in older trees show as \"other\""),
        Figure("daemon resident memory", rss, "MiB", reference=f"peak {peak:.1f} MiB; goal < 100 MB"),
        Figure("end-to-end latency, median", float(np.median(lat)) if len(lat) else float("nan"), "ms",
               reference="frame's last byte read -> central's ACK sent, loopback"),
        Figure("end-to-end latency, 99th percentile", float(np.percentile(lat, 99)) if len(lat) else float("nan"),
               "ms", reference=f"goal < 20 ms; {len(lat)} records" + (
                   f"; {ReferenceTower.COMMIT} at the same time: {np.percentile(ref.latencies_ms, 99):.2f} ms "
                   f"(median {np.median(ref.latencies_ms):.2f} ms)" if ref.latencies_ms else ""),
               note="a reading's records are committed and sent as soon as it is processed (only the same "
                    "sensor's commit less than outbox.commit_interval_s before makes them wait; other "
                    "records wait up to that interval for a reading's commit to carry them), so a radar "
                    "frame does not wait behind an RF sweep's commit; the rest is processing, the commit's "
                    "fsync, the central's, and the wait for a core: the reference tower runs at the same "
                    "time on the same 2 cores, beside other work"),
        Figure("bytes on the wire per track report", up_per_record, "B",
               reference=f"the same report as compact JSON: {json_per_record:.0f} B "
                         f"(ICD record alone: 80 B + 16 B header per message)"),
        Figure("bytes on the wire per hour (both directions)", per_hour_mb, "MB",
               reference=f"{records / wall:.1f} track reports/s; as JSON payload alone: "
                         f"{json_per_record * records / wall * 3600 / 1e6:.1f} MB/h"),
    ]
    return Section("The whole daemon at nominal tower load", figures, __doc__.split("\n\n", 1)[1].strip())
