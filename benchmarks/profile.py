"""Sampling profile of the daemon at nominal tower load (py-spy), by stage.

``.venv/bin/python -m benchmarks.profile [--seconds 30] [--rate 250] [--out build/profile]``

Starts the nominal tower of :mod:`benchmarks.tower` (TI radar 10 frames/s of ~50
points, RF Explorer 10 sweeps/s, ~20 tracks, one central behind a relay), lets tracks
confirm, then samples the ``towerd run`` subprocess with py-spy (``record --pid
--nonblocking --format raw``: collapsed stacks; idle threads are not sampled, so the
samples are where the CPU time goes). py-spy is not a towerd dependency: install it in
the venv first (``.venv/bin/pip install py-spy``).

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
    ("daemon loop", ("towerd/daemon.py", "towerd/sensors.py")),
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
    lines = [f"{total} samples of active threads ({waits} more blocked in a wait, not counted)", "",
             "| stage | share of samples |", "|---|---:|"]
    lines += [f"| {s} | {100.0 * n / max(total, 1):.1f} % |" for s, n in stages.most_common()]
    lines += ["", "| function (self samples) | share |", "|---|---:|"]
    lines += [f"| `{f}` | {100.0 * n / max(total, 1):.1f} % |" for f, n in own.most_common(top)]
    return "\n".join(lines)


def py_spy() -> str | None:
    """The py-spy executable (the venv's first), or None."""
    return shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")


def record(out: Path, seconds: float, warmup: float = 5.0, rate: int = 250) -> Path:
    """Sample the nominal tower's daemon for ``seconds``; the collapsed stacks go to ``out``."""
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
            subprocess.run([spy, "record", "--pid", str(tower.daemon.pid), "--nonblocking", "--format", "raw",
                            "--function", "--rate", str(rate), "--duration", str(int(seconds)), "--output",
                            str(out)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
    args = parser.parse_args(argv)
    if py_spy() is None:
        print("py-spy not found: .venv/bin/pip install py-spy", file=sys.stderr)
        return 1
    out = record(Path(args.out).with_suffix(".collapsed"), args.seconds, args.warmup, args.rate)
    print(summarise(out))
    print(f"\nraw stacks: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
