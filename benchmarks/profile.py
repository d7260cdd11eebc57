"""Sampling profile of the daemon at nominal tower load (py-spy), by stage.

``.venv/bin/python -m benchmarks.profile [--seconds 30] [--rate 250] [--out build/profile]``

Starts the nominal tower of :mod:`benchmarks.tower` (TI radar 10 frames/s of ~50
points, RF Explorer 10 sweeps/s, ~20 tracks, one central behind a relay), lets tracks
confirm, then samples the ``towerd run`` subprocess with py-spy (``record --pid
--nonblocking --gil --format raw``: collapsed stacks). py-spy is not a towerd
dependency: install it in the venv first (``.venv/bin/pip install py-spy``).

``--gil``: only the thread holding the GIL is sampled, so the samples are where the
Python CPU goes. Without it (``--all-active``) py-spy samples every thread the kernel
does not show asleep, and that counts waits as work: a thread in a disk sync (state D:
the outbox commit's fdatasync) and a reader thread just woken from its select() waiting
for the GIL. At nominal load that made ``Outbox.commit`` 12-17 % and
``SensorDriver.read`` 7-11 % of the samples, where the stage timers of
:mod:`benchmarks.stages` and ``--gil`` find about 4 % each. What ``--gil`` leaves out is
CPU in C code that released the GIL (SQLite's commit, ZeroMQ's I/O thread, the kernel's
side of wake-ups and system calls): the CPU of each OS thread of the daemon over the
same window (``/proc/PID/task/*/schedstat``: user + system time and times scheduled) is
printed beside the samples for that.

Writes ``OUT.collapsed`` (the raw stacks, for flame graphs) and prints, from them, the
share of samples per stage (a sample counts for the innermost stage on its stack, so
the stages add up) and the hottest functions by self samples.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.tower import CountingRelay, NominalTower, TimedCentral

STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    # (stage, path fragments of the frames that belong to it); the innermost match wins.
    ("parse", ("drivers/ti_mmwave/", "drivers/rfexplorer/", "drivers/base.py", "serial/")),
    ("detect", ("towerd/detection/",)),
    ("rf", ("towerd/rf/processor.py", "towerd/rf/cfar.py", "towerd/rf/floor.py", "towerd/rf/emitters.py",
            "towerd/rf/tracker.py", "towerd/rf/classify.py", "towerd/rf/hopgrid.py")),
    ("track", ("towerd/tracking/tracker.py",)),
    ("label", ("towerd/tracking/classify.py", "towerd/tracking/clutter.py", "towerd/threat.py",
               "towerd/rf/fusion.py", "towerd/labeller.py", "towerd/tracking/features.py",
               "towerd/tracking/labels.py", "towerd/identity/", "(label)")),
    ("report", ("towerd/reports/", "towerd/geo.py", "pymap3d/")),
    ("store", ("towerd/outbox/",)),
    ("send", ("towerd/uplink/", "zmq/")),
    ("web console", ("towerd/web/",)),
    ("daemon loop", ("towerd/daemon.py", "towerd/sensors.py", "towerd/handoff.py", "towerd/pipeline.py")),
)


WAITS = ("Serial.read (serial/serialposix.py", "Poller.poll (zmq/sugar/poll.py", ".select (selectors.py",
         "Condition.wait (threading.py", "Event.wait (threading.py")
"""Innermost frames that are a thread blocked in a system call (py-spy counts some of
them as active): shown apart, not as any stage's CPU."""


def stage_of(stack: list[str]) -> str:
    """The stage of one sample: the innermost frame that matches a stage."""
    for frame in reversed(stack):
        for stage, fragments in STAGES:
            if any(f in frame for f in fragments):
                return stage
    return "other"


def summarise(collapsed: Path, top: int = 25) -> str:
    """Per-stage shares and hottest functions of a py-spy raw (collapsed) profile."""
    stages: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = waits = 0
    for line in collapsed.read_text().splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not stack_text:
            continue
        n = int(count_text)
        frames = stack_text.split(";")[1:]  # the first is the thread
        if frames and any(w in frames[-1] for w in WAITS):
            waits += n
            continue
        total += n
        stages[stage_of(frames)] += n
        if frames:
            own[frames[-1]] += n
    lines = [f"{total} samples ({waits} more blocked in a wait, not counted)", "",
             "| stage | share of samples |", "|---|---:|"]
    lines += [f"| {s} | {100.0 * n / max(total, 1):.1f} % |" for s, n in stages.most_common()]
    lines += ["", "| function (self samples) | share |", "|---|---:|"]
    lines += [f"| `{f}` | {100.0 * n / max(total, 1):.1f} % |" for f, n in own.most_common(top)]
    return "\n".join(lines)


def py_spy() -> str | None:
    """The py-spy executable (the venv's first), or None."""
    return shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")


def thread_cpu(pid: int) -> dict[str, tuple[int, int]]:
    """Each OS thread of ``pid``: "comm tid" -> (CPU ns so far, times scheduled)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            comm = (task / "comm").read_text().strip()
            run_ns, _, slices = (int(v) for v in (task / "schedstat").read_text().split()[:3])
        except (OSError, ValueError):
            continue  # the thread ended meanwhile
        out[f"{comm} {task.name}"] = (run_ns, slices)
    return out


def threads_table(pid: int, before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]],
                  seconds: float, frames: int) -> str:
    """CPU and wake-ups per radar frame of each thread of the daemon over the window."""
    lines = ["| thread | CPU µs per radar frame | times scheduled per radar frame |", "|---|---:|---:|"]
    rows = []
    for name, (ns1, n1) in after.items():
        ns0, n0 = before.get(name, (0, 0))
        if ns1 - ns0 or n1 - n0:
            tid = int(name.rsplit(" ", 1)[1])
            label = "main loop" if tid == pid else name.rsplit(" ", 1)[0]
            rows.append((ns1 - ns0, f"| {label} ({tid}) | {(ns1 - ns0) / 1e3 / max(frames, 1):,.0f} | "
                                     f"{(n1 - n0) / max(frames, 1):.1f} |"))
    lines += [row for _, row in sorted(rows, reverse=True)]
    total = sum(a[0] - before.get(k, (0, 0))[0] for k, a in after.items())
    lines.append(f"| all ({len(after)} threads) | {total / 1e3 / max(frames, 1):,.0f} | |")
    return (f"CPU of the daemon's threads over the same {seconds:.0f} s ({frames} radar frames; "
            "the unnamed ones are the sensor readers and the web console):\n\n" + "\n".join(lines))


def record(out: Path, seconds: float, warmup: float = 5.0, rate: int = 250, *, gil: bool = True) -> Path:
    """Sample the nominal tower's daemon for ``seconds``; the collapsed stacks go to
    ``out``, and the threads' CPU table (:func:`threads_table`) to ``out`` + ``.threads``."""
    spy = py_spy()
    if spy is None:
        raise RuntimeError("py-spy not found: .venv/bin/pip install py-spy")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="towerd-profile-") as tmp:
        tmp_path = Path(tmp)
        central = TimedCentral("tcp://127.0.0.1:*", tmp_path / "central.sqlite", plain=True)
        relay = CountingRelay(int(central.bound_endpoint.rsplit(":", 1)[1]))
        stop = threading.Event()
        thread = threading.Thread(target=central.serve_forever, args=(stop,), name="central")
        thread.start()
        tower = NominalTower(tmp_path, f"tcp://127.0.0.1:{relay.port}")
        try:
            time.sleep(warmup)  # let tracks confirm before sampling
            pid = tower.daemon.pid
            before, frames0 = thread_cpu(pid), tower.emulator.frames_sent
            subprocess.run([spy, "record", "--pid", str(pid), "--nonblocking", *(["--gil"] if gil else []),
                            "--format", "raw", "--function", "--rate", str(rate), "--duration", str(int(seconds)),
                            "--output", str(out)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            after, frames = thread_cpu(pid), tower.emulator.frames_sent - frames0
            out.with_suffix(".threads").write_text(threads_table(pid, before, after, seconds, frames) + "\n")
        finally:
            tower.stop()
            stop.set()
            thread.join()
            relay.close()
            central.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="sampling time")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before sampling starts")
    parser.add_argument("--rate", type=int, default=250, help="samples per second")
    parser.add_argument("--out", default="build/profile", help="output path prefix")
    parser.add_argument("--all-active", action="store_true",
                        help="sample every thread not asleep, not only the GIL's holder (counts disk syncs and "
                             "threads waiting for the GIL as work)")
    args = parser.parse_args(argv)
    if py_spy() is None:
        print("py-spy not found: .venv/bin/pip install py-spy", file=sys.stderr)
        return 1
    out = record(Path(args.out).with_suffix(".collapsed"), args.seconds, args.warmup, args.rate,
                 gil=not args.all_active)
    print(summarise(out))
    print("\n" + out.with_suffix(".threads").read_text())
    print(f"\nraw stacks: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
