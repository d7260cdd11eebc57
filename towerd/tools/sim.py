"""``towerd sim``: a device emulator on pseudo-terminals, for the bench, the demo and tests.

Runs one emulated device driven by a scenario until Ctrl-C (or ``--duration``) and
prints where it is (``data_port: /dev/pts/N``; ``cli_port:`` for a TI radar with its
CLI; ``link:`` for each symlink asked for with ``--link``/``--cli-link``, which point
a configuration's stable name at the pty; then ``ready``).

Commands on standard input, one a line, inject faults while it runs:

    garbage N     N random bytes before the next frame / scan
    truncate      cut the next frame (TI) or sentence (NMEA) short
    checksum      next NMEA sentence with a wrong checksum
    stall S       send nothing for S seconds
    unplug        the device vanishes: its ptys close and its links are removed
    replug        it comes back on new ptys (a TI radar freshly booted, unconfigured);
                  the links are recreated, so the configured names follow
    status        counters so far
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

from towerd import geo
from towerd.drivers.transport import port_holders
from towerd.errors import ConfigError
from towerd.sim.pty import PtyPair
from towerd.sim.scenario import Scenario, builtin_scenario, load_scenario

DEVICES = ("ti_mmwave", "nmea_radar", "rfexplorer", "remoteid")


class SimDevice:
    """One emulated device on its ptys, pluggable and unpluggable."""

    def __init__(self, args: argparse.Namespace, scenario: Scenario) -> None:
        self.args = args
        self.scenario = scenario
        self.plugs = 0
        self.data: PtyPair | None = None
        self.cli: PtyPair | None = None
        self.emulator: Any = None

    def _make(self) -> Any:
        a = self.args
        rng = np.random.default_rng(a.seed + self.plugs)
        if a.device == "ti_mmwave":
            from towerd.sim.ti_mmwave import TiMmwaveEmulator

            return TiMmwaveEmulator(self.scenario, boresight_azimuth_deg=a.boresight, tilt_deg=a.tilt,
                                    position_enu_m=tuple(a.position), frame_rate_hz=a.rate, rng=rng)
        if a.device == "rfexplorer":
            from towerd.sim.rfexplorer import RfExplorerEmulator

            return RfExplorerEmulator(self.scenario, rng=rng, position_enu_m=tuple(a.position), sweep_rate_hz=a.rate)
        if a.device == "remoteid":
            from towerd.sim.remoteid import from_sim_args

            return from_sim_args(self.scenario, a, rng)
        from towerd.sim.nmea_radar import NmeaRadarEmulator

        site = geo.Site(*a.site) if a.site else None
        sentences = ("TTM", "TLL") if a.tll else ("TTM",)
        return NmeaRadarEmulator(self.scenario, rng=rng, heading_deg=a.boresight, position_enu_m=tuple(a.position),
                                 site=site, scan_period_s=a.scan_period, baudrate=a.baud, units=a.units,
                                 bearing_ref=a.bearing_ref, course_ref=a.bearing_ref, sentences=sentences)

    def plug(self) -> None:
        for link in (self.args.link, self.args.cli_link):
            if link:
                _check_link_free(link)
        self.plugs += 1
        self.data = PtyPair.open()
        self.cli = PtyPair.open() if self.args.cli else None
        self.emulator = self._make()
        if self.cli is not None:
            self.emulator.start(self.data, self.cli)
        else:
            self.emulator.start(self.data)
        print(f"data_port: {self.data.path}", flush=True)
        if self.cli is not None:
            print(f"cli_port: {self.cli.path}", flush=True)
        for link, pty in ((self.args.link, self.data), (self.args.cli_link, self.cli)):
            if link and pty is not None:
                tmp = Path(f"{link}.towerd-sim-tmp")
                tmp.unlink(missing_ok=True)
                os.symlink(pty.path, tmp)
                os.replace(tmp, link)  # atomic: a reader never sees the name missing
                print(f"link: {link} -> {pty.path}", flush=True)

    def unplug(self) -> None:
        if self.emulator is not None:
            self.emulator.stop()
        ours = {pty.path for pty in (self.data, self.cli) if pty is not None}
        for link in (self.args.link, self.args.cli_link):
            if link and os.path.islink(link) and os.readlink(link) in ours:  # never another sim's link
                os.unlink(link)
        for pty in (self.data, self.cli):
            if pty is not None:
                pty.close()
        self.data = self.cli = self.emulator = None
        print("unplugged", flush=True)

    def status(self) -> str:
        em = self.emulator
        if em is None:
            return "unplugged"
        if hasattr(em, "status_line"):
            return em.status_line()
        if self.args.device == "ti_mmwave":
            started = "" if em.cli is None else f", sensor {'started' if em.cli.started else 'stopped'}"
            return f"frames sent {em.frames_sent}, skipped {em.frames_skipped}, stalled {em.frames_stalled}{started}"
        if self.args.device == "rfexplorer":
            return f"sweeps sent {em.sweeps_sent}, commands received {len(em.commands)}, refused {len(em.refused)}"
        return f"scans sent {em.scans_sent}, skipped {em.scans_skipped}, bytes {em.bytes_sent}"

    def command(self, line: str) -> str:
        words = line.split()
        if not words:
            return ""
        verb, rest = words[0], words[1:]
        em = self.emulator
        try:
            if verb == "unplug":
                self.unplug() if em is not None else None
                return "ok"
            if verb == "replug":
                if em is None:
                    self.plug()
                return "ok"
            if verb == "status":
                return self.status()
            if em is None:
                return "error: unplugged"
            if verb == "garbage":
                em.inject_garbage(int(rest[0]) if rest else 100)
            elif verb == "truncate":
                em.inject_truncated()
            elif verb == "checksum" and hasattr(em, "inject_bad_checksum"):
                em.inject_bad_checksum()
            elif verb == "stall":
                em.inject_stall(float(rest[0]) if rest else 5.0)
            elif verb == "reset" and hasattr(em, "inject_reset"):
                em.inject_reset()
            else:
                return f"error: unknown command {line.strip()!r} (garbage N, truncate, checksum, stall S, " \
                       "reset, unplug, replug, status)"
        except (ValueError, IndexError) as exc:
            return f"error: {exc}"
        return "ok"


def _check_link_free(link: str) -> None:
    """Refuse (OSError) a --link path that names something other than a stale link: a
    file, or a link to a port another process (another sim) holds open."""
    if not os.path.lexists(link):
        return
    if not os.path.islink(link):
        raise OSError(f"{link} exists and is not a symlink; refusing to replace it")
    target = os.path.realpath(link)
    holders = [h for h in port_holders(target) if h.pid != os.getpid()] if os.path.exists(target) else []
    if holders:
        who = ", ".join(f"{h.name} (pid {h.pid})" for h in holders)
        raise OSError(f"{link} is in use: it points at {target}, held by {who}; another sim? Stop it or choose "
                      "another --link")


def cmd_sim(args: argparse.Namespace) -> int:
    try:
        scenario = builtin_scenario(args.scenario) if args.scenario == "demo" else load_scenario(args.scenario)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    if args.device != "ti_mmwave" and (args.cli or args.cli_link):
        print("towerd sim: --cli and --cli-link are for ti_mmwave", file=sys.stderr)
        return 2
    if args.cli_link:
        args.cli = True
    if args.tll and not args.site:
        print("towerd sim: --tll needs --site LAT LON H (the scenario origin's WGS84 position)", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda _s, _f: stop.set())
    device = SimDevice(args, scenario)
    try:
        device.plug()
    except OSError as exc:
        device.unplug()
        print(f"towerd sim: {exc}", file=sys.stderr)
        return 1
    print(f"ready: {args.device}, scenario {scenario.name}; commands on stdin: garbage N, truncate, checksum, "
          f"stall S, unplug, replug, status; Ctrl-C to stop", flush=True)
    stdin_fd: int | None = sys.stdin.fileno() if sys.stdin is not None else None
    pending = b""
    timer = threading.Timer(args.duration, stop.set) if args.duration is not None else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        while not stop.is_set():
            if stdin_fd is None:
                stop.wait(0.5)
                continue
            try:
                ready, _, _ = select.select([stdin_fd], [], [], 0.2)
                chunk = os.read(stdin_fd, 4096) if ready else None
            except (OSError, ValueError):
                chunk = b""
            if chunk is None:
                continue
            if not chunk:  # end of input: keep running until a signal or --duration
                stdin_fd = None
                continue
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                answer = device.command(line.decode("utf-8", "replace"))
                if answer:
                    print(answer, flush=True)
    finally:
        if timer is not None:
            timer.cancel()
        device.unplug()
    return 0


def register_sim(sub: Any) -> None:
    p = sub.add_parser("sim", help="run a device emulator on pseudo-terminals until Ctrl-C",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=DEVICES, default="ti_mmwave")
    p.add_argument("--scenario", default="demo", help="scenario YAML file, or 'demo' (built in)")
    p.add_argument("--link", help="create this symlink to the data pty (e.g. the path a configuration uses)")
    p.add_argument("--cli", action="store_true", help="ti_mmwave: also emulate the CLI UART; frames start at "
                   "sensorStart")
    p.add_argument("--cli-link", help="ti_mmwave: symlink to the CLI pty (implies --cli)")
    p.add_argument("--seed", type=int, default=1, help="random seed (measurement noise, false alarms)")
    p.add_argument("--boresight", type=float, default=0.0, help="boresight / radar heading, degrees from north")
    p.add_argument("--tilt", type=float, default=0.0, help="ti_mmwave: boresight tilt, degrees")
    p.add_argument("--position", type=float, nargs=3, default=[0.0, 0.0, 10.0], metavar=("E", "N", "U"),
                   help="antenna position in the scenario's ENU frame, metres (default 0 0 10)")
    p.add_argument("--rate", type=float, default=10.0, help="ti_mmwave: frames/s without --cli (with --cli the "
                   "pushed frameCfg decides)")
    p.add_argument("--baud", type=int, default=4800, choices=[4800, 38400], help="nmea_radar: line speed")
    p.add_argument("--scan-period", type=float, default=2.5, help="nmea_radar: seconds per antenna revolution")
    p.add_argument("--units", choices=["K", "N", "S"], default="N", help="nmea_radar: distance/speed units")
    p.add_argument("--bearing-ref", choices=["T", "R"], default="T",
                   help="nmea_radar: bearings and courses true (T) or relative to the heading (R)")
    p.add_argument("--tll", action="store_true", help="nmea_radar: also send TLL (needs --site)")
    p.add_argument("--site", type=float, nargs=3, metavar=("LAT", "LON", "H"),
                   help="WGS84 of the scenario's ENU origin (for TLL and remoteid)")
    p.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    p.set_defaults(func=cmd_sim)
