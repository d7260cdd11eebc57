"""The web console's cost: the daemon's CPU at the nominal tower load of the section above
(the same scenario, emulators and configuration, from benchmarks/tower.py) with the
console switched off, switched on with no page open, and with one page open.

`towerd run` is a real subprocess; its CPU is read from /proc for its pid (the
console's threads are in it; the page's browser is not). The open page is a client in
this process reading the push stream (/api/stream) as a browser's EventSource does, at
the default 4 updates a second, gzip-compressed as browsers ask for it. The three set-ups alternate, each run measured for the
same time after the same warm-up, so the machine's other load falls on all of them.
"""

from __future__ import annotations

import socket
import statistics
import tempfile
import threading
import time
import zlib
from pathlib import Path

from benchmarks.common import Figure, Section
from benchmarks.tower import NominalTower, cpu_seconds, rss_mib
from towerd.central.server import CentralServer
from towerd.demo import free_tcp_port

MODES = ("off", "idle", "open")


class StreamReader:
    """Reads the console's server-sent events as a browser does (asking for gzip) until
    closed; counts the bytes received and the updates in them."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(b"GET /api/stream HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept-Encoding: gzip, deflate\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(4096)
        head, self._first = head.split(b"\r\n\r\n", 1)
        assert b" 200 " in head.split(b"\r\n")[0] and b"Content-Encoding: gzip" in head, head
        self.bytes = self.updates = 0
        self._thread = threading.Thread(target=self._run, name="sse-reader")
        self._thread.start()

    def _run(self) -> None:
        unzip = zlib.decompressobj(31)
        tail = b""
        chunk = self._first
        try:
            while True:
                self.bytes += len(chunk)
                text = tail + unzip.decompress(chunk)
                self.updates += text.count(b"event: state\n")
                tail = text[-16:]
                chunk = self.sock.recv(65536)
                if not chunk:
                    return
        except (OSError, zlib.error):
            pass

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self._thread.join()
        self.sock.close()


def one_run(mode: str, duration_s: float, warmup_s: float, seed: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="towerd-bench-console-") as tmp:
        tmp_path = Path(tmp)
        central = CentralServer("tcp://127.0.0.1:*", tmp_path / "central.sqlite", plain=True)
        stop_central = threading.Event()
        central_thread = threading.Thread(target=central.serve_forever, args=(stop_central,), name="central")
        central_thread.start()
        port = free_tcp_port()
        web = "{enabled: false}" if mode == "off" else f"{{port: {port}}}"
        tower = NominalTower(tmp_path, central.bound_endpoint, seed=seed, web=web)
        daemon = tower.daemon
        reader = None
        try:
            deadline = time.monotonic() + 60.0
            while central.store.count_tracks() == 0:  # the daemon is up and reporting
                if daemon.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"towerd run did not report:\n{tower.log_path.read_text()}")
                time.sleep(0.1)
            time.sleep(warmup_s)  # benchmark: let tracks confirm before measuring
            if mode == "open":
                reader = StreamReader(port)
                time.sleep(1.0)  # the first updates (whole waterfall) are not the steady state
            cpu0, wall0 = cpu_seconds(daemon.pid), time.monotonic()
            b0, u0 = (reader.bytes, reader.updates) if reader else (0, 0)
            time.sleep(duration_s)
            cpu1, wall1 = cpu_seconds(daemon.pid), time.monotonic()
            rss, _ = rss_mib(daemon.pid)
            b1, u1 = (reader.bytes, reader.updates) if reader else (0, 0)
        finally:
            if reader is not None:
                reader.close()
            tower.stop()
            stop_central.set()
            central_thread.join()
            central.close()
    wall = wall1 - wall0
    return {"cpu_pct": 100.0 * (cpu1 - cpu0) / wall, "rss_mib": rss, "stream_kBps": (b1 - b0) / wall / 1e3,
            "updates_hz": (u1 - u0) / wall}


def run(quick: bool) -> Section:
    duration, warmup, rounds = (6.0, 3.0, 1) if quick else (12.0, 4.0, 2)
    results: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    for r in range(rounds):
        for mode in MODES:
            results[mode].append(one_run(mode, duration, warmup, seed=5 + 10 * r))

    def med(mode: str, key: str) -> tuple[float, tuple[float, float]]:
        values = [x[key] for x in results[mode]]
        return statistics.median(values), (min(values), max(values))

    off, off_spread = med("off", "cpu_pct")
    idle, idle_spread = med("idle", "cpu_pct")
    opened, open_spread = med("open", "cpu_pct")
    rss_off, _ = med("off", "rss_mib")
    rss_open, _ = med("open", "rss_mib")
    kbps, _ = med("open", "stream_kBps")
    hz, _ = med("open", "updates_hz")
    runs = f"{rounds} runs of {duration:.0f} s each"
    figures = [
        Figure("daemon CPU, one console open", opened, "% of one core", open_spread,
               reference=f"console off: {off:.2f} % ({off_spread[0]:.2f}–{off_spread[1]:.2f}); "
                         f"on, no page open: {idle:.2f} % ({idle_spread[0]:.2f}–{idle_spread[1]:.2f})",
               note=f"{runs} per set-up, alternating; nominal load as in the section above"),
        Figure("daemon resident memory, one console open", rss_open, "MiB", reference=f"console off: {rss_off:.1f} MiB"),
        Figure("push stream to one open console (gzip)", kbps, "kB/s", reference=f"{hz:.2f} updates/s (web.rate_hz 4)"),
    ]
    return Section("The web console's cost at nominal tower load", figures, __doc__.strip())
