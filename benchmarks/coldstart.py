"""What a radar frame costs when it follows an idle gap, as in the daemon, against the same
frames processed back to back.

The nominal tower's scene (:func:`benchmarks.tower.nominal_scenario`, the same seeds): the
TI emulator's frame bytes and the RF Explorer emulator's sweep bytes (its boot band; the
daemon's scan plan retunes through three) through the real drivers' ``feed`` and the
:class:`~towerd.pipeline.Pipeline` with a manual clock: no ports, threads, outbox or uplink,
so this is the pipeline's own CPU (``time.thread_time``). Each frame is timed as the daemon
times it, by its reception: 0.1 s apart give or take up to :data:`JITTER_S` (seeded), so
no two intervals are equal (with a constant step the tracker's per-interval matrices were
always cached, which they never are in the daemon). Three ways of feeding the same
frames: back to back ("hot": caches, TLBs and branch predictors keep what the previous frame
left), each after a 0.1 s sleep (the daemon's cadence at 10 frames/s), and each after 0.1 s
of busy-waiting (the CPU never idles, so what is lost is not a clock or sleep state but the
caches' contents, evicted meanwhile on this shared host).

Why it matters: a micro-benchmark in a hot loop understates what a change saves or costs in
the daemon; the section "CPU per stage at nominal tower load" is measured in the daemon and
includes this penalty.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import Figure, Section

FRAME_S = 0.1
JITTER_S = 0.5e-3
"""Largest difference between a frame's reception and its 0.1 s slot (a loaded host's
scheduling); the replay draws it per frame, uniformly, from a seeded generator."""


def _scene(n_frames: int):
    """(pipeline, feed(frame) -> records, frames): the nominal scene's bytes, ready to feed."""
    from benchmarks.tower import config, nominal_scenario
    from drivers.rfexplorer.driver import RfExplorerDriver
    from drivers.ti_mmwave.driver import TiMmwaveDriver
    from towerd.clock import ManualClock
    from towerd.config import parse_config
    from towerd.pipeline import Pipeline
    from towerd.sim.rfexplorer import RfExplorerEmulator
    from towerd.sim.ti_mmwave import TiMmwaveEmulator

    scene = nominal_scenario()
    ti_em = TiMmwaveEmulator(scene, boresight_azimuth_deg=0.0, position_enu_m=(0.0, 0.0, 10.0),
                             frame_rate_hz=10.0, rng=np.random.default_rng(5))
    rf_em = RfExplorerEmulator(scene, rng=np.random.default_rng(6), position_enu_m=(0.0, 0.0, 10.0),
                               sweep_rate_hz=10.0)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = parse_config(config("/dev/null", "tcp://127.0.0.1:1", Path(tmp) / "state", "/dev/null"), "bench.yaml")
    clock = ManualClock()
    pipeline = Pipeline(cfg.pipeline, clock)
    ti = TiMmwaveDriver("radar0", cfg.sensors[0].settings, clock=clock)
    rf = RfExplorerDriver("rf0", cfg.sensors[1].settings, clock=clock)
    rf.feed(rf_em.config_line(), 0.0)
    frames = [(ti_em.frame_bytes(n * FRAME_S, n), rf_em.sweep_bytes(n * FRAME_S)) for n in range(n_frames)]
    steps = iter(FRAME_S + np.diff(np.random.default_rng(8).uniform(-JITTER_S, JITTER_S, n_frames + 1)))

    def feed(frame: tuple[bytes, bytes]) -> int:
        clock.advance(next(steps))
        records = 0
        for reading in ti.feed(frame[0], clock.monotonic()) + rf.feed(frame[1], clock.monotonic()):
            records += len(pipeline.process(reading))
        return records

    return pipeline, feed, frames


def _per_frame_us(feed, frames, gap: str) -> float:
    """Median CPU µs of one frame's feed, each frame after ``gap`` ("none", "sleep", "spin")."""
    costs = []
    for frame in frames:
        if gap == "sleep":
            time.sleep(FRAME_S)
        elif gap == "spin":
            until = time.perf_counter() + FRAME_S
            while time.perf_counter() < until:
                pass
        t0 = time.thread_time()
        feed(frame)
        costs.append(time.thread_time() - t0)
    return statistics.median(costs) * 1e6


def run(quick: bool) -> Section:
    warm, per_mode = (50, 30) if quick else (100, 100)
    _, feed, frames = _scene(warm + 3 * per_mode)
    for frame in frames[:warm]:  # tracks confirmed, clutter map learnt: the steady scene
        feed(frame)
    rest = frames[warm:]
    # The three modes take consecutive slices of one scene (tracks evolve; each slice is the
    # same steady nominal load), hot first so the gaps' slices are not favoured.
    hot = _per_frame_us(feed, rest[:per_mode], "none")
    slept = _per_frame_us(feed, rest[per_mode:2 * per_mode], "sleep")
    spun = _per_frame_us(feed, rest[2 * per_mode:], "spin")
    what = f"median of {per_mode} frames (radar frame + RF sweep, drivers' feed and the pipeline), CPU time of this thread"
    return Section(
        "Pipeline CPU per frame: back to back or after an idle gap",
        [
            Figure("one frame, back to back", hot, "µs CPU", reference="the usual micro-benchmark's condition",
                   note=what),
            Figure("one frame after a 0.1 s sleep", slept, "µs CPU",
                   reference=f"{slept / hot:.2f}x back to back; the daemon's cadence at 10 frames/s", note=what),
            Figure("one frame after 0.1 s of busy-waiting", spun, "µs CPU",
                   reference=f"{spun / hot:.2f}x back to back; the CPU never idled", note=what),
        ],
        text=__doc__.strip(),
    )
