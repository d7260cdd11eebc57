"""Running scenarios through the whole radar chain in-process, for tests with known truth.

The frame loop is :mod:`towerd.sim.radar_run` (emulator bytes -> real TI driver ->
``process``), shared with the benchmarks; here a real :class:`Pipeline` tracks,
classifies and reports each frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from types import SimpleNamespace
from typing import Any, Iterator

import numpy as np

from towerd.clock import ManualClock
from towerd.icd import Status
from towerd.pipeline import Pipeline
from towerd.sim.radar_run import SITE, radar_config, run_frames
from towerd.sim.scenario import Scenario
from towerd.threat import ThreatSettings
from towerd.tracking.classify import ClassificationSettings
from towerd.tracking.clutter import StaticClutterSettings
from towerd.tracking.imm import ImmSettings

__all__ = ["SITE", "Frame", "Run", "frames", "pipeline_config", "run"]


def pipeline_config(
    *,
    imm: ImmSettings = ImmSettings(enabled=True),
    static_clutter: StaticClutterSettings = StaticClutterSettings(),
    classification: ClassificationSettings = ClassificationSettings(),
    threat: ThreatSettings = ThreatSettings(),
    **tracking: Any,
) -> Any:
    """A configuration for :class:`Pipeline`: a real :class:`Config` for the demo radar,
    plus the sections this work adds (``tracking.imm``, ``tracking.static_clutter``,
    ``classification``, ``threat``). Until towerd.config.Config has those fields the
    result is a namespace with every Config field and the new ones (Pipeline only reads
    attributes); once it has them, the same values go through."""
    base = radar_config("tx-test-001")
    t = {f.name: getattr(base.tracking, f.name) for f in fields(base.tracking)}
    t.update(tracking, imm=imm, static_clutter=static_clutter)
    c = {f.name: getattr(base, f.name) for f in fields(base)}
    c.update(tracking=SimpleNamespace(**t), classification=classification, threat=threat)
    return SimpleNamespace(**c)


@dataclass
class Frame:
    """One processed frame: time, the records it produced, the pipeline (its state now)
    and the truth present in the field of view."""

    t_s: float
    records: np.ndarray
    pipeline: Pipeline
    names: np.ndarray
    kinds: np.ndarray
    truth_enu_m: np.ndarray

    def reported_tracks(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(track ids, positions (n, 3), rows) of the live tracks the central is told
        about: confirmed or coasting and reportable (not static clutter)."""
        tr = self.pipeline.tracker.tracks
        labels = self.pipeline.last_labels
        ok = tr.rows_with_status(Status.CONFIRMED, Status.COASTING) & labels.reportable
        rows = np.flatnonzero(ok)
        return tr.track_id[rows], tr.state[rows, :3], rows


@dataclass
class Run:
    """Everything a scenario run produced."""

    frames: list[Frame] = field(default_factory=list)

    @property
    def records(self) -> np.ndarray:
        return np.concatenate([f.records for f in self.frames])


def frames(scenario: Scenario, pipeline: Pipeline, *, duration_s: float, seed: int,
           rate_hz: float = 10.0) -> Iterator[Frame]:
    """Feed ``duration_s`` of emulated TI frames through ``pipeline``, yielding each."""
    for f in run_frames(scenario, pipeline.process, duration_s=duration_s, seed=seed, rate_hz=rate_hz):
        yield Frame(f.t_s, f.records, pipeline, f.names, f.kinds, f.truth_enu_m)


def run(scenario: Scenario, *, duration_s: float, seed: int, **config: Any) -> tuple[Pipeline, list[Frame]]:
    """A fresh pipeline (``pipeline_config(**config)``, ManualClock) run over the scenario;
    the frames are kept (their ``pipeline`` is the same object, in its final state, so
    read per-frame state inside a loop over :func:`frames` instead)."""
    pipeline = Pipeline(pipeline_config(**config), ManualClock())
    return pipeline, list(frames(scenario, pipeline, duration_s=duration_s, seed=seed))
