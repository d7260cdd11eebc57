"""The tracker's one composition root: which predictor, updater, associator, initiator
and deleter the settings ask for, and how they are wired. The pipeline, the tests and the
benchmarks all build their tracker here, so they run the same tracker.

- motion: the IMM of a constant-velocity model and two constant turns
  (``tracking.imm.enabled``), else one constant-velocity Kalman filter with
  ``accel_noise_mps2``;
- association: χ²-gated GNN per connected component, with the radial-speed gate when
  ``tracking.doppler.enabled``;
- initiation: M-of-N (``confirm_hits`` of ``confirm_window``), two-point initiation bounded
  by ``tracking.initiation.max_speed_mps`` (it sets the new tracks' velocity σ through the
  gate: :func:`~towerd.tracking.initiator.velocity_sigma_for`), no new track nearer its
  sensor than ``min_range_m``, confirmation within the speed bound and radial-speed
  consistent and, with ``tracking.score.enabled``, once its log-likelihood-ratio score
  passes the threshold (:mod:`~towerd.tracking.score`); with a clutter map, no new track
  on known static clutter;
- deletion: tentative tracks after ``tentative_max_misses`` misses, established ones after
  ``confirmed_max_coast_s`` without a measurement (coasting after ``coast_after_s``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from towerd.tracking.associator import GnnAssociator
from towerd.tracking.clutter import ClutterMap, ClutterMapInitiator
from towerd.tracking.deleter import MissDeleter
from towerd.tracking.doppler import DopplerGate
from towerd.tracking.imm import build_imm
from towerd.tracking.initiator import velocity_sigma_for
from towerd.tracking.models import ConstantVelocity
from towerd.tracking.predictor import KalmanPredictor
from towerd.tracking.score import TrackScorer
from towerd.tracking.tracker import Tracker
from towerd.tracking.updater import KalmanUpdater

if TYPE_CHECKING:  # towerd.config imports the tracking settings: no import back at run time
    from towerd.config import TrackingConfig


def tracker_parts(t: TrackingConfig, *, clutter_map: ClutterMap | None = None) -> dict[str, Any]:
    """The components for settings ``t`` (keyword arguments of :class:`Tracker` and of
    :meth:`Tracker.replace_components`); ``clutter_map``: refuse initiation on it."""
    if t.imm.enabled:
        predictor, updater = build_imm(t.imm)
    else:
        predictor, updater = KalmanPredictor(ConstantVelocity(t.accel_noise_mps2)), KalmanUpdater()
    doppler = DopplerGate.from_settings(t.doppler)
    associator = GnnAssociator(t.gate_probability, doppler=doppler)
    scorer = TrackScorer.from_settings(t.score)
    return dict(
        predictor=predictor,
        updater=updater,
        associator=associator,
        initiator=ClutterMapInitiator(
            confirm_hits=t.confirm_hits,
            confirm_window=t.confirm_window,
            initial_velocity_sigma_mps=velocity_sigma_for(t.initiation.max_speed_mps, associator.gate),
            max_speed_mps=t.initiation.max_speed_mps,
            min_range_m=t.initiation.min_range_m,
            max_mean_nis=doppler.max_mean_nis if doppler is not None else float("inf"),
            min_score=scorer.threshold if scorer is not None else float("-inf"),
            clutter_map=clutter_map,
        ),
        deleter=MissDeleter(
            tentative_max_misses=t.tentative_max_misses,
            confirmed_max_coast_s=t.confirmed_max_coast_s,
            coast_after_s=t.coast_after_s,
        ),
        scorer=scorer,
    )


def build_tracker(t: TrackingConfig, *, clutter_map: ClutterMap | None = None, first_track_id: int = 1) -> Tracker:
    """A tracker for settings ``t``; see the module docstring."""
    return Tracker(**tracker_parts(t, clutter_map=clutter_map), first_track_id=first_track_id)
