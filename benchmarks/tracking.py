"""Multi-target tracking: towerd's tracker beside Stone Soup's GNN tracker, same scenario,
same models, in one run: time per frame and GOSPA at 10, 100 and 1,000 targets.

Scenario (:func:`towerd.sim.scenes.field`): N drones on straight paths, ~300 m apart,
5–20 m/s, 20–150 m up; a sensor seeing all of them at 2 Hz with detection probability
0.95 and Cartesian position noise σ = 2 m per axis; as many clutter plots per frame as
targets, uniform over the area and 0–200 m up. Both trackers get the very same
detections, frame by frame.

Both trackers are configured alike (3-D state, so Stone Soup gets three CV blocks):
- motion: nearly constant velocity, q = 1 m²/s³ per axis
  (``CombinedLinearGaussianTransitionModel([ConstantVelocity(1.0)] * 3)``; towerd
  ``ConstantVelocity(accel_noise_mps2=1.0)``);
- measurement: position, R = 4 I m² (``LinearGaussian(6, (0, 2, 4), R)``);
- gate: χ²₃ 0.999 (d² <= 16.27; Stone Soup ``missed_distance`` = 4.03, non-squared);
- GNN with a 2-D assignment; new tracks from 3 updates (Stone Soup
  ``MultiMeasurementInitiator(min_points=3)``, towerd 3 of 5), held tracks dropped after
  3 steps without an update, confirmed ones after 3 (towerd: 1.25 s at 2 Hz);
- initial velocity σ 15 m/s (towerd: the tracker the daemon runs,
  ``towerd.tracking.compose.build_tracker``, with ``initiation.max_speed_mps`` = 15 √γ,
  which gives that σ and bounds the speed at confirmation to 60.5 m/s; no radial-speed
  gate, since these plots carry none; tracks may start at any range).
Stone Soup runs twice: its tutorial composition (``DistanceHypothesiser`` over every
track-detection pair, ``GNNWith2DAssignment``), and with its k-d tree association
(``DetectionKDTreeGNN2D``, 40 m query radius, wide enough to cut no gated pair here) —
the fair peer at scale. The tutorial composition is only run where it finishes in
reasonable time (it is all-pairs Python: its cost grows with N²).

Estimates scored: confirmed (and coasting) tracks' positions at every frame against the
truth, GOSPA with c = 20 m, p = 2, α = 2, averaged over the frames after the first 5
(both need 3 frames to confirm anything).

Stone Soup is never a dependency of towerd: ``.venv/bin/python -m benchmarks.tracking``
(or :func:`run`, for the suite) creates ``build/venv-bench`` with towerd (editable) and
``stonesoup==1.9.1`` when it lacks them, and runs the measurement there.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from towerd.detection.plots import Detections
from towerd.icd import Status
from towerd.metrics import gospa
from towerd.sim import scenes
from towerd.config import TrackingConfig
from towerd.tracking.score import ScoreSettings
from towerd.tracking.compose import build_tracker
from towerd.tracking.doppler import DopplerSettings
from towerd.tracking.imm import ImmSettings
from towerd.tracking.initiator import InitiationSettings

REPO = Path(__file__).resolve().parent.parent
BENCH_VENV = REPO / "build" / "venv-bench"
STONESOUP_VERSION = "1.9.1"

FRAME_DT_S = 0.5
SIGMA_M = 2.0
Q = 1.0  # m²/s³
GATE_P = 0.999
GATE_D2 = 16.266236196238129  # chi2.ppf(0.999, 3)
INIT_VEL_SIGMA = 15.0
GOSPA_C, GOSPA_P = 20.0, 2.0
WARMUP_FRAMES = 5


@dataclass
class Frame:
    t_s: float
    z: np.ndarray  # (m, 3) detections, targets then clutter (order shuffled)
    truth: np.ndarray  # (n, 3)


def make_frames(n_targets: int, n_frames: int, seed: int) -> list[Frame]:
    """The scenario above: deterministic for a seed."""
    rng = np.random.default_rng(seed)
    duration = FRAME_DT_S * n_frames
    scenario = scenes.field(rng, n_targets, duration)
    side = 300.0 * math.sqrt(n_targets)
    frames = []
    for k in range(n_frames):
        t = FRAME_DT_S * k
        _, _, truth = scenes.truth_enu(scenario, t)
        seen = rng.random(len(truth)) < 0.95
        z = truth[seen] + rng.normal(0.0, SIGMA_M, (int(seen.sum()), 3))
        nc = rng.poisson(n_targets)
        clutter = np.column_stack([rng.uniform(-side / 2, side / 2, (nc, 2)), rng.uniform(0.0, 200.0, nc)])
        z = np.vstack([z, clutter])
        frames.append(Frame(t, z[rng.permutation(len(z))], truth))
    return frames


def score(estimates: list[np.ndarray], frames: list[Frame]) -> dict:
    """Over the frames after the warm-up: mean GOSPA and its parts (RMS error of the
    assigned tracks, missed truths and false tracks per frame). GOSPA is not normalised:
    with N targets each tracked to e metres it is about e √N."""
    g = [gospa(e, f.truth, c=GOSPA_C, p=GOSPA_P) for e, f in zip(estimates[WARMUP_FRAMES:], frames[WARMUP_FRAMES:])]
    if not g:
        return {"gospa_mean_m": float("nan"), "rms_error_m": float("nan"), "missed_per_frame": float("nan"),
                "false_per_frame": float("nan")}
    pairs = sum(len(x.assignment) for x in g)
    return {
        "gospa_mean_m": float(np.mean([x.distance for x in g])),
        "rms_error_m": math.sqrt(sum(x.localisation for x in g) / max(pairs, 1)),
        "missed_per_frame": float(np.mean([x.missed for x in g])),
        "false_per_frame": float(np.mean([x.false for x in g])),
    }


def run_towerd(frames: list[Frame]) -> tuple[list[float], list[np.ndarray]]:
    """Per-frame seconds of Tracker.step and the confirmed positions after each."""
    tracker = build_tracker(TrackingConfig(
        accel_noise_mps2=math.sqrt(Q), gate_probability=GATE_P, confirm_hits=3, confirm_window=5,
        tentative_max_misses=2, confirmed_max_coast_s=2.5 * FRAME_DT_S, coast_after_s=0.0,
        imm=ImmSettings(enabled=False), doppler=DopplerSettings(enabled=False), score=ScoreSettings(enabled=False),
        # The speed bound that gives new tracks a velocity sigma of INIT_VEL_SIGMA (15 m/s).
        initiation=InitiationSettings(max_speed_mps=INIT_VEL_SIGMA * math.sqrt(GATE_D2), min_range_m=0.0),
    ))
    times, estimates = [], []
    for f in frames:
        m = len(f.z)
        det = Detections("bench", f.t_s, f.z, np.broadcast_to(np.eye(3) * SIGMA_M**2, (m, 3, 3)).copy(),
                         np.full(m, np.nan), np.full(m, np.nan))
        t0 = time.perf_counter()
        update = tracker.step(det)
        times.append(time.perf_counter() - t0)
        tr = update.tracks
        estimates.append(tr.state[tr.rows_with_status(Status.CONFIRMED, Status.COASTING), :3])
    return times, estimates


def stonesoup_tracker(kdtree: bool):
    """Stone Soup's GNN tracker, composed as in its tutorials (see the module docstring)."""
    from stonesoup.dataassociator.neighbour import GNNWith2DAssignment
    from stonesoup.dataassociator.tree import DetectionKDTreeGNN2D
    from stonesoup.deleter.time import UpdateTimeStepsDeleter
    from stonesoup.hypothesiser.distance import DistanceHypothesiser
    from stonesoup.initiator.simple import MultiMeasurementInitiator
    from stonesoup.measures import Mahalanobis
    from stonesoup.models.measurement.linear import LinearGaussian
    from stonesoup.models.transition.linear import CombinedLinearGaussianTransitionModel, ConstantVelocity
    from stonesoup.predictor.kalman import KalmanPredictor
    from stonesoup.tracker.simple import MultiTargetTracker
    from stonesoup.types.state import GaussianState
    from stonesoup.updater.kalman import KalmanUpdater

    transition = CombinedLinearGaussianTransitionModel([ConstantVelocity(Q)] * 3)
    measurement = LinearGaussian(ndim_state=6, mapping=(0, 2, 4), noise_covar=np.eye(3) * SIGMA_M**2)
    predictor = KalmanPredictor(transition)
    updater = KalmanUpdater(measurement)
    hypothesiser = DistanceHypothesiser(predictor, updater, measure=Mahalanobis(), missed_distance=math.sqrt(GATE_D2))

    def associator():
        if kdtree:
            return DetectionKDTreeGNN2D(hypothesiser=hypothesiser, predictor=predictor, updater=updater,
                                        max_distance=40.0)
        return GNNWith2DAssignment(hypothesiser)

    prior = GaussianState(np.zeros((6, 1)), np.diag([0.0, INIT_VEL_SIGMA**2] * 3))
    initiator = MultiMeasurementInitiator(
        prior_state=prior, measurement_model=measurement, deleter=UpdateTimeStepsDeleter(3),
        data_associator=associator(), updater=updater, min_points=3,
    )
    return MultiTargetTracker(initiator=initiator, deleter=UpdateTimeStepsDeleter(3), detector=None,
                              data_associator=associator(), updater=updater), measurement


def run_stonesoup(frames: list[Frame], *, kdtree: bool, budget_s: float) -> tuple[list[float], list[np.ndarray]]:
    """Per-frame seconds of one tracker update and the confirmed positions after each;
    stops early (fewer frames) once ``budget_s`` of tracking time is spent."""
    from stonesoup.types.detection import Detection

    tracker, measurement = stonesoup_tracker(kdtree)
    t_epoch = dt.datetime(2026, 1, 1)
    times, estimates = [], []
    for f in frames:
        stamp = t_epoch + dt.timedelta(seconds=f.t_s)
        dets = {Detection(z.reshape(3, 1), timestamp=stamp, measurement_model=measurement) for z in f.z}
        t0 = time.perf_counter()
        _, tracks = tracker.update_tracker(stamp, dets)
        times.append(time.perf_counter() - t0)
        pos = [np.asarray(tr.state_vector, dtype=float)[[0, 2, 4], 0] for tr in tracks]
        estimates.append(np.array(pos).reshape(-1, 3))
        if sum(times) > budget_s:
            break
    return times, estimates


def measure(sizes: tuple[int, ...] = (10, 100, 1000), n_frames: int = 20, seed: int = 1,
            budget_s: float = 600.0, tutorial_budget_s: float = 240.0) -> dict:
    """Run every tracker on every size; the numbers as a dict (also printed as a table).
    A Stone Soup run stops after the frame that takes it past its time budget, so at
    1,000 targets the all-pairs tutorial composition gives a time per frame from a few
    frames and no GOSPA."""
    results: dict = {"frame_dt_s": FRAME_DT_S, "sigma_m": SIGMA_M, "q_m2ps3": Q, "frames": n_frames,
                     "gospa": {"c_m": GOSPA_C, "p": GOSPA_P, "alpha": 2, "warmup_frames": WARMUP_FRAMES},
                     "sizes": {}}
    for n in sizes:
        frames = make_frames(n, n_frames, seed)
        row: dict = {"plots_per_frame": float(np.mean([len(f.z) for f in frames]))}
        peers = [("towerd", lambda: run_towerd(frames))]
        peers.append(("stonesoup_kdtree", lambda: run_stonesoup(frames, kdtree=True, budget_s=budget_s)))
        peers.append(("stonesoup_tutorial", lambda: run_stonesoup(frames, kdtree=False, budget_s=tutorial_budget_s)))
        for name, fn in peers:
            times, estimates = fn()
            used = len(times)
            row[name] = {
                "frames_run": used,
                "median_ms_per_frame": 1e3 * statistics.median(times[WARMUP_FRAMES:] or times),
                "mean_ms_per_frame": 1e3 * statistics.fmean(times),
                "max_ms_per_frame": 1e3 * max(times),
                **score(estimates, frames[:used]),
                "confirmed_at_end": int(len(estimates[-1])),
            }
            print(f"  {n:5d} targets  {name:18s} {row[name]['median_ms_per_frame']:10.2f} ms/frame  "
                  f"GOSPA {row[name]['gospa_mean_m']:6.2f} m  ({used} frames)", file=sys.stderr, flush=True)
        results["sizes"][str(n)] = row
    return results


def table(results: dict) -> str:
    """Markdown table of :func:`measure`'s numbers."""
    lines = ["| targets | plots/frame | tracker | ms/frame (median) | ms/frame (max) | mean GOSPA (m) | "
             "RMS error (m) | missed/frame | false/frame | frames |",
             "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    names = {"towerd": "towerd", "stonesoup_kdtree": "Stone Soup GNN, k-d tree",
             "stonesoup_tutorial": "Stone Soup GNN, tutorial"}
    for n, row in results["sizes"].items():
        for key, label in names.items():
            if key in row:
                r = row[key]
                lines.append(f"| {n} | {row['plots_per_frame']:.0f} | {label} | {r['median_ms_per_frame']:.1f} | "
                             f"{r['max_ms_per_frame']:.1f} | {_num(r['gospa_mean_m'])} | {_num(r['rms_error_m'])} | "
                             f"{_num(r['missed_per_frame'])} | {_num(r['false_per_frame'])} | {r['frames_run']} |")
    return "\n".join(lines)


def _num(x: float) -> str:
    return "n/a" if x != x else f"{x:.2f}"


def ensure_bench_venv() -> Path:
    """build/venv-bench with towerd (editable) and Stone Soup; its python."""
    python = BENCH_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
    probe = subprocess.run([str(python), "-c", f"import stonesoup, towerd; assert stonesoup.__version__ == "
                            f"'{STONESOUP_VERSION}'"], capture_output=True)
    if probe.returncode != 0:
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-e", str(REPO), f"stonesoup=={STONESOUP_VERSION}"],
                       check=True)
    return python


def run(quick: bool):
    """For the benchmark suite (``python -m benchmarks``): measure in the bench venv,
    return a :class:`benchmarks.common.Section`."""
    from benchmarks.common import Figure, Section

    python = ensure_bench_venv()
    args = [str(python), "-m", "benchmarks.tracking", "--json"] + (["--quick"] if quick else [])
    out = subprocess.run(args, cwd=REPO, check=True, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    results = json.loads(out.stdout)
    figures = []
    for n, row in results["sizes"].items():
        peer = row.get("stonesoup_kdtree", {})
        tut = row.get("stonesoup_tutorial")
        ref = (f"Stone Soup GNN k-d tree {peer.get('median_ms_per_frame', float('nan')):.1f} ms, "
               f"GOSPA {peer.get('gospa_mean_m', float('nan')):.2f} m")
        if tut:
            ref += f"; tutorial {tut['median_ms_per_frame']:.1f} ms, GOSPA {tut['gospa_mean_m']:.2f} m"
        figures.append(Figure(f"tracker step, {n} targets + {n} clutter plots", row["towerd"]["median_ms_per_frame"],
                              "ms/frame", (row["towerd"]["median_ms_per_frame"], row["towerd"]["max_ms_per_frame"]),
                              reference=ref, note=f"towerd mean GOSPA {row['towerd']['gospa_mean_m']:.2f} m"))
    return Section("Tracking: towerd beside Stone Soup", figures, text=table(results))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tracking", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 and 100 targets, 12 frames")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON on stdout")
    parser.add_argument("--sizes", type=int, nargs="*", default=None)
    parser.add_argument("--frames", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        import stonesoup  # noqa: F401
    except ImportError:
        python = ensure_bench_venv()
        forwarded = argv if argv is not None else sys.argv[1:]
        return subprocess.call([str(python), "-m", "benchmarks.tracking", *forwarded],
                               cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    sizes = tuple(args.sizes) if args.sizes else ((10, 100) if args.quick else (10, 100, 1000))
    frames = args.frames or (12 if args.quick else 20)
    results = measure(sizes, frames)
    if args.json:
        print(json.dumps(results))
    else:
        print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
