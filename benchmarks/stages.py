"""Where the daemon's CPU goes at nominal tower load, per stage, beside the code of a
reference commit measured in the same run.

The nominal tower of :mod:`benchmarks.tower` (TI radar 10 frames/s of ~50 points, RF
Explorer 10 sweeps/s through its three-band scan plan, 20 drones, one central: the same
scene, seed and configuration) with the daemon (:class:`towerd.daemon.Daemon`) run in
this process, in its own thread, and its stages' methods wrapped with a timer that reads
the calling thread's CPU clock (``time.thread_time``, CLOCK_THREAD_CPUTIME_ID: CPU time,
not wall time, so other load on the machine does not count) and charges each call to its
stage, exclusive of any timed call nested in it. "daemon loop, other" is the rest of the
daemon thread's and the sensor reader threads' CPU (read with ``pthread_getcpuclockid``;
since the loop reads the sensors' ports itself, a tree has reader threads only while a
port is being opened, and the parsing is the daemon thread's)
over the same window, less what the timers themselves cost outside the calls they time
(measured: each outermost timed call's overhead, calibrated on an empty call, times the
number of such calls; shown on its own row, not in the total; it was part of "daemon
loop, other" before): the stages, that row and it add up to those threads' CPU. ZeroMQ's own I/O
thread is not a Python thread and is not counted here (the whole-process figure is in the
nominal-load section).

Tracks: about 21 radar tracks are reported at a time (the nominal ~20; benchmarks.tower
counts ~23 distinct ids among the central's latest 200 records, tracks that ended
included); about 26 are confirmed (static clutter among them, withheld from reports)
and about 13 tentative ones from the 5 false alarms a frame are carried too. The "~40
live tracks" this section once printed was ``Pipeline.tracks_active`` (tentative, RF
and ID-only tracks included) at the end of the run, not another scene: the run line
now gives the three counts, averaged over the window.

Figures: CPU microseconds per radar frame (the stage's CPU over the window divided by
the radar frames processed in it; RF sweeps arrive at the same 10/s).

Method (how to reproduce): ``.venv/bin/pip install py-spy`` (a sampling profiler; not a
towerd dependency), then ``.venv/bin/python -m benchmarks --only stages --update``. It
first samples the ``towerd run`` subprocess of the nominal-load benchmark with py-spy
(``python -m benchmarks.profile``: 250 samples/s, ``--nonblocking`` so the daemon is never
paused, ``--gil`` so that only the thread holding the GIL is sampled (without it py-spy
counted the outbox's fdatasync and reader threads just woken from select() as work),
``--function``; the collapsed stacks are left in ``build/profile.collapsed`` for a flame
graph): the share of samples per stage (a sample counts for the innermost stage on its
stack) and the hottest functions tell where to look, and each OS thread's CPU over the
same window (``/proc``) shows what the samples cannot (C code without the GIL, the
kernel's side of wake-ups). Then it measures the stage
table below with the timers described above.

The reference is the same measurement run on the tree of commit ``REFERENCE``
(``git archive`` into ``build/``, this benchmarks folder copied into it), in a
subprocess running at the same time as this tree's, so both columns come from one run
on one machine under the same load.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

from benchmarks.common import Figure, Section

REPO = Path(__file__).resolve().parents[1]
REFERENCE = os.environ.get("TOWERD_BENCH_REFERENCE", "88a59ac")
"""The commit before issue 16's hot-path work; TOWERD_BENCH_REFERENCE names another (e.g. a branch's
base, to measure a change beside it while working; the published tables keep 88a59ac)."""

TIMERS = "the stage timers themselves"
"""Measured here, not a cost of the daemon: the wrappers' own work outside the timed calls
(before this row existed it was counted in "daemon loop, other")."""
STAGE_ORDER = ("parse TI", "parse RF", "detect", "RF processing", "track", "label", "report", "store", "send",
               "daemon loop, other", TIMERS)

TIMED: tuple[tuple[str, str, str, str], ...] = (
    # (module, class, method, stage); a method a tree lacks is skipped.
    ("towerd.drivers.ti_mmwave.driver", "TiMmwaveDriver", "_decode", "parse TI"),
    ("towerd.drivers.rfexplorer.driver", "RfExplorerDriver", "_decode", "parse RF"),
    ("towerd.detection.plots", "PlotConverter", "convert", "detect"),
    ("towerd.detection.cluster", "PointClusterer", "cluster", "detect"),
    ("towerd.rf.processor", "RfProcessor", "process", "RF processing"),
    ("towerd.rf.processor", "RfProcessor", "expire", "RF processing"),
    ("towerd.tracking.tracker", "Tracker", "step", "track"),
    ("towerd.tracking.tracker", "Tracker", "expire", "track"),
    ("towerd.pipeline", "Pipeline", "label", "label"),
    ("towerd.labeller", "Labeller", "observe", "label"),
    ("towerd.labeller", "Labeller", "labels", "label"),
    # Remote ID fusion's labels of radar tracks (paired broadcasts, non-cooperative), per frame and per timer
    ("towerd.identity.fusion", "RemoteIdFusion", "on_radar", "label"),
    ("towerd.identity.fusion", "RemoteIdFusion", "expire", "label"),
    ("towerd.reports.tracks", "TrackReporter", "build", "report"),
    ("towerd.rf.fusion", "RfTrackReporter", "build", "report"),
    ("towerd.outbox.sqlite", "Outbox", "add_tracks", "store"),
    ("towerd.outbox.sqlite", "Outbox", "add_event", "store"),
    ("towerd.outbox.sqlite", "Outbox", "commit", "store"),
    ("towerd.uplink.client", "UplinkClient", "poll", "send"),
)


class StageClock:
    """Charges the thread CPU time of wrapped calls to stages, exclusive of nested ones.
    Counts the outermost calls (``outer_calls``): the timer's own work outside the timed
    window of those falls to none of the stages (:func:`timer_cost_s`)."""

    def __init__(self) -> None:
        self.cpu_s: collections.Counter[str] = collections.Counter()
        self.outer_calls = 0
        self._local = threading.local()
        self._lock = threading.Lock()

    def wrap(self, fn: Callable[..., Any], stage: str) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            stack = self._local.__dict__.setdefault("stack", [])
            stack.append(0.0)
            t0 = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                dt = time.thread_time() - t0
                inner = stack.pop()
                if stack:
                    stack[-1] += dt
                with self._lock:
                    self.cpu_s[stage] += dt - inner
                    if not stack:
                        self.outer_calls += 1
        timed.__wrapped__ = fn  # type: ignore[attr-defined]
        return timed

    def install(self) -> list[str]:
        """Wrap every TIMED method this tree has; return the ones wrapped."""
        import importlib

        done = []
        for module, cls_name, method, stage in TIMED:
            try:
                cls = getattr(importlib.import_module(module), cls_name)
            except (ImportError, AttributeError):
                continue
            fn = cls.__dict__.get(method)
            if fn is None:
                continue
            setattr(cls, method, self.wrap(fn, stage))
            done.append(f"{cls_name}.{method}")
        return done

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return {**self.cpu_s, OUTER_CALLS: self.outer_calls}


OUTER_CALLS = "(outermost timed calls)"


def timer_cost_s(calls: int = 20000) -> float:
    """CPU seconds one outermost timed call costs outside its timed window (the wrapper's
    bookkeeping and half of its two clock reads), measured here on a call that does
    nothing: that much of "daemon loop, other" per call is the measurement's own."""
    clock, bare = StageClock(), lambda: None
    timed = clock.wrap(bare, "calibration")
    best = float("inf")
    for _ in range(5):  # the least disturbed of five rounds
        t0 = time.thread_time()
        for _ in range(calls):
            timed()
        t1 = time.thread_time()
        for _ in range(calls):
            bare()
        t2 = time.thread_time()
        inside = clock.cpu_s.pop("calibration", 0.0)
        best = min(best, ((t1 - t0) - (t2 - t1) - inside) / calls)
    return max(best, 0.0)


def thread_cpu_s(threads: list[threading.Thread]) -> float:
    """CPU seconds of live ``threads`` so far."""
    return sum(threads_cpu_s(threads).values())


def threads_cpu_s(threads: list[threading.Thread]) -> dict[str, float]:
    """CPU seconds of each live thread of ``threads`` so far, by name."""
    return {t.name: time.clock_gettime(time.pthread_getcpuclockid(t.ident)) for t in threads
            if t.ident is not None and t.is_alive()}


def measure(duration_s: float, warmup_s: float) -> dict[str, Any]:
    """One run of the nominal tower with the daemon in this process (see the module docstring)."""
    clock = StageClock()
    wrapped = clock.install()
    from benchmarks.tower import NominalTower, TimedCentral
    from towerd.config import load_config
    from towerd.daemon import Daemon

    with tempfile.TemporaryDirectory(prefix="towerd-stages-") as tmp:
        tmp_path = Path(tmp)
        central = TimedCentral("tcp://127.0.0.1:*", tmp_path / "central.sqlite", plain=True)
        stop_central = threading.Event()
        central_thread = threading.Thread(target=central.serve_forever, args=(stop_central,), name="central")
        central_thread.start()
        endpoint = central.bound_endpoint.replace("*", "127.0.0.1")

        class InProcess(NominalTower):
            """NominalTower's emulators and configuration, with the daemon in a thread of this process."""

            def _start_daemon(self) -> None:
                self.stop_event = threading.Event()
                self.daemon_obj = Daemon(load_config(self.config_path))
                self.thread = threading.Thread(target=self.daemon_obj.run, args=(self.stop_event,), name="daemon")
                self.thread.start()

            def _stop_daemon(self) -> None:
                self.stop_event.set()
                self.thread.join(30)

        tower = InProcess(tmp_path, endpoint)
        try:
            time.sleep(warmup_s)  # benchmark: let tracks confirm before measuring
            daemon = tower.daemon_obj
            threads = [tower.thread] + [r._thread for r in daemon.runners if r._thread is not None]
            by_thread0, stages0 = threads_cpu_s(threads), clock.snapshot()
            frames0, wall0 = daemon.pipeline.frames, time.monotonic()
            counts = []
            while time.monotonic() < wall0 + duration_s:
                time.sleep(min(0.5, max(0.0, wall0 + duration_s - time.monotonic())))
                counts.append(track_counts(daemon.pipeline))
            by_thread1, stages1 = threads_cpu_s(threads), clock.snapshot()
            frames1, wall1 = daemon.pipeline.frames, time.monotonic()
        finally:
            tower.stop()
            stop_central.set()
            central_thread.join()
            central.close()
    frames = frames1 - frames0
    cpu0, cpu1 = sum(by_thread0.values()), sum(by_thread1.values())
    thread_us = {name: (by_thread1[name] - cpu) / max(frames, 1) * 1e6 for name, cpu in by_thread0.items()
                 if name in by_thread1}
    per_frame = {s: (stages1.get(s, 0.0) - stages0.get(s, 0.0)) / max(frames, 1) * 1e6 for s in STAGE_ORDER}
    outer_calls = stages1.get(OUTER_CALLS, 0) - stages0.get(OUTER_CALLS, 0)
    per_frame[TIMERS] = outer_calls * timer_cost_s() / max(frames, 1) * 1e6
    per_frame["daemon loop, other"] = (cpu1 - cpu0) / max(frames, 1) * 1e6 - sum(
        v for k, v in per_frame.items() if k != "daemon loop, other")
    mean = {k: sum(c[k] for c in counts) / max(len(counts), 1) for k in ("reported", "confirmed", "tentative")}
    return {"us_per_frame": per_frame, "frames": frames, "wall_s": wall1 - wall0, "tracks": mean["reported"],
            "tracks_confirmed": mean["confirmed"], "tracks_tentative": mean["tentative"],
            "threads_cpu_s": cpu1 - cpu0, "threads_us_per_frame": thread_us, "wrapped": wrapped}


def track_counts(pipeline: Any) -> dict[str, int]:
    """Live radar tracks now: ``reported`` (the tracks being reported: what
    benchmarks.tower counts from the central's records, and the issue's "~20 tracks"),
    ``confirmed`` (confirmed or coasting, including static clutter that is never
    reported) and ``tentative`` (candidates from false alarms and new targets, which the
    tracker carries but nobody reports)."""
    status = pipeline.tracker.tracks.status
    reporter = pipeline.reporter
    reported = reporter.reported_count if hasattr(reporter, "reported_count") else len(reporter._ids)
    return {"reported": reported,
            "confirmed": int(((status == 1) | (status == 2)).sum()), "tentative": int((status == 0).sum())}


def reference_tree(commit: str) -> Path | None:
    """The tree of ``commit`` under build/, importable as towerd, with this benchmarks
    folder in it (None when git or the commit is missing)."""
    root = REPO / "build" / f"ref-{commit}"
    if not (root / "towerd").is_dir():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        try:
            archive = subprocess.run(["git", "-C", str(REPO), "archive", commit], capture_output=True, check=True,
                                     timeout=60).stdout
            subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            shutil.rmtree(root, ignore_errors=True)
            return None
        (root / "towerd" / "drivers").symlink_to("../drivers")  # setup.cfg: towerd.drivers = drivers
    shutil.rmtree(root / "benchmarks", ignore_errors=True)
    shutil.copytree(REPO / "benchmarks", root / "benchmarks", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def run_trees(roots: list[Path], duration_s: float, warmup_s: float) -> list[dict[str, Any]]:
    """:func:`measure` in one subprocess per tree (its ``towerd`` is the tree at that
    root), all at the same time, so that they share the machine's conditions (on a
    machine busy with other work, runs one after the other see different loads)."""
    procs = [subprocess.Popen([sys.executable, "-m", "benchmarks.stages", "--measure", "--seconds", str(duration_s),
                               "--warmup", str(warmup_s)], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for root in roots]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=duration_s + warmup_s + 300)
        if proc.returncode:
            raise RuntimeError(f"stages measurement failed: {err[-2000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def load_average() -> str:
    try:
        return " / ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def run(quick: bool) -> Section:
    duration, warmup = (10.0, 4.0) if quick else (30.0, 5.0)
    load_before = load_average()
    ref_root = reference_tree(REFERENCE)
    if ref_root is not None:
        now, ref = run_trees([REPO, ref_root], duration, warmup)
    else:
        (now,), ref = run_trees([REPO], duration, warmup), None
    load_after = load_average()
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip() or "this tree"
    spy_text = ""
    try:
        from benchmarks.profile import record, summarise

        collapsed = record(REPO / "build" / "profile.collapsed", duration, warmup)
        spy_text = "py-spy on this tree (the daemon subprocess at nominal load, " \
                   f"{duration:.0f} s, the GIL's holder sampled):\n\n" + summarise(collapsed, top=12) + "\n\n" \
                   + collapsed.with_suffix(".threads").read_text() + "\n"
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        spy_text = f"(no py-spy profile: {exc})\n\n"
    lines = [f"| stage | {REFERENCE} (µs CPU per radar frame) | {head} (µs CPU per radar frame) |", "|---|---:|---:|"]
    for stage in STAGE_ORDER[:-1]:
        before = f"{ref['us_per_frame'][stage]:,.0f}" if ref else "n/a"
        lines.append(f"| {stage} | {before} | {now['us_per_frame'][stage]:,.0f} |")
    total_now = daemon_total_us(now)
    total_ref = daemon_total_us(ref) if ref else float("nan")
    lines.append(f"| **total** | **{total_ref:,.0f}** | **{total_now:,.0f}** |")
    before = f"{ref['us_per_frame'].get(TIMERS, float('nan')):,.0f}" if ref else "n/a"
    lines.append(f"| ({TIMERS}: measured, not in the total) | {before} | {now['us_per_frame'][TIMERS]:,.0f} |")
    text = __doc__.split("\n\n", 1)[1].strip() + "\n\n" + spy_text + "\n".join(lines) + (
        f"\n\nRuns: {now['frames']} radar frames over {now['wall_s']:.0f} s (this tree), {tracks_text(now)}"
        + (f"; {ref['frames']} frames, {tracks_text(ref)} ({REFERENCE})" if ref else "")
        + f". Load average (1/5/15 min) before: {load_before}, after: {load_after} (2 cores shared with other "
        "work; CPU-clock figures, not wall time).")
    figures = [Figure("daemon threads' CPU per radar frame", total_now, "µs",
                      reference=f"{REFERENCE}: {total_ref:,.0f} µs" if ref else "")]
    return Section("CPU per stage at nominal tower load", figures, text)


def daemon_total_us(result: dict[str, Any]) -> float:
    """The daemon's threads' CPU per radar frame, without the stage timers' own cost."""
    return sum(v for k, v in result["us_per_frame"].items() if k != TIMERS)


def tracks_text(result: dict[str, Any]) -> str:
    """The run's live radar tracks, averaged over the window (see :func:`track_counts`)."""
    if "tracks_confirmed" not in result:  # a measurement by an older benchmarks folder
        return f"{result['tracks']} live tracks at the end"
    return (f"{result['tracks']:.0f} tracks reported, {result['tracks_confirmed']:.0f} confirmed or coasting and "
            f"{result['tracks_tentative']:.0f} tentative on average")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stages")
    parser.add_argument("--measure", action="store_true", help="measure this tree once and print JSON")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    args = parser.parse_args(argv)
    if args.measure:
        import logging

        logging.basicConfig(level=logging.ERROR)
        print(json.dumps(measure(args.seconds, args.warmup)))
        return 0
    section = run(quick=args.seconds < 30)
    print(section.text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
