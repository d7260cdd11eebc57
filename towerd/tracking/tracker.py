"""The multi-target tracker: composes predictor, updater, associator, initiator and
deleter (each injected, each doing one thing) into a scan-by-scan loop. Which components
the settings ask for is decided in one place, :mod:`towerd.tracking.compose`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from towerd.detection.plots import Detections
from towerd.icd import Status
from towerd.tracking.associator import GatedPairs, GnnAssociator
from towerd.tracking.deleter import MissDeleter
from towerd.tracking.doppler import DopplerGate, RadialSpeeds
from towerd.tracking.initiator import MofNInitiator
from towerd.tracking.score import TrackScorer, ranges
from towerd.tracking.state import TrackTable

log = logging.getLogger(__name__)

_CONFIRMED, _COASTING = int(Status.CONFIRMED), int(Status.COASTING)  # plain ints: see TrackTable.rows_with_status


@dataclass(frozen=True, eq=False)
class TrackUpdate:
    """What one tracker call produced.

    t_mono: the time of the call (detection time for step, the given time for expire);
    tracks: the live tracks after the call (read-only arrays);
    ended: every track removed in this call, status set to ENDED, with its last state:
    confirmed/coasting tracks that were not updated for too long, and tentative tracks
    that were dropped (the reporter sends ENDED only for tracks it had reported);
    detections: the frame that :meth:`Tracker.step` processed (None for expire/end_all);
    det_of_track (K,) intp: for each row of ``tracks``, the index in ``detections`` of
    the detection that updated (or started) it in this call, −1 when none. Consumers
    such as the classifier read the measurement's own features (SNR, Doppler) this way.
    """

    t_mono: float
    tracks: TrackTable
    ended: TrackTable
    detections: Detections | None = None
    det_of_track: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.det_of_track is None:
            object.__setattr__(self, "det_of_track", np.full(len(self.tracks), -1, dtype=np.intp))
        elif len(self.det_of_track) != len(self.tracks):
            raise ValueError(f"det_of_track has {len(self.det_of_track)} rows for {len(self.tracks)} tracks")


class Predictor(Protocol):
    """What the tracker needs of a predictor (KalmanPredictor, ImmPredictor)."""

    def attach(self, tracks: TrackTable) -> TrackTable: ...

    def predict_tracks(self, tracks: TrackTable, dt: np.ndarray | float) -> None: ...


class Updater(Protocol):
    """What the tracker needs of an updater (KalmanUpdater, ImmUpdater)."""

    def update_tracks(self, tracks: TrackTable, rows: np.ndarray, z: np.ndarray, R: np.ndarray) -> None: ...


class Tracker:
    """Scan-by-scan multi-target tracker.

    :meth:`step` per detections frame: predict every track to the frame time, associate
    (confirmed and coasting tracks take precedence over tentative ones),
    update the hit tracks, fold each hit's radial-speed error into the track's consistency
    (:mod:`towerd.tracking.doppler`, when the associator has a Doppler gate), count
    misses (an established track without a measurement for the deleter's
    ``coast_after_s`` is COASTING, CONFIRMED again on its next hit),
    delete, start TENTATIVE tracks from the detections no track took, confirm by M-of-N.
    With a ``scorer`` (:mod:`towerd.tracking.score`), each frame also measures the
    false-plot density on the detections no established track took, and adds to every
    track's score its hit's log-likelihood ratio (taken with the prediction, before the
    update) or the miss term; the initiator's ``min_score`` reads it.
    A leftover detection inside the gate of an established track starts nothing: it is
    another return of that target (or clutter beside it), and a track started on it
    would be confirmed as a duplicate. :meth:`expire` applies the time-based rules
    alone, for when no detections arrive. Track ids come from a monotonic counter and
    are never reused.

    A frame older than a track's state (an out-of-order frame from another sensor) is
    applied as if it were at the track's time (dt clamped to 0): a small error rather
    than a retrodiction this linear filter cannot do.

    Every frame counts as a scan for every track: with several sensors of different
    coverage, a track outside one sensor's field of view counts that sensor's frames as
    misses. (Coverage-aware miss counting comes with multi-sensor fusion.)
    """

    def __init__(
        self,
        predictor: Predictor,
        updater: Updater,
        associator: GnnAssociator,
        initiator: MofNInitiator,
        deleter: MissDeleter,
        *,
        scorer: TrackScorer | None = None,
        first_track_id: int = 1,
    ) -> None:
        self.predictor = predictor
        self.updater = updater
        self.associator = associator
        self.initiator = initiator
        self.deleter = deleter
        self.scorer = scorer
        self._next_id = int(first_track_id)
        self._empty: dict[int, TrackTable] = {}
        self._quiet: tuple[TrackTable | None, MissDeleter | None, tuple[float, float, float] | None] = (None, None, None)
        """(table, deleter, the deleter's quiet_bounds of the table) for :meth:`expire`."""
        self._tracks = predictor.attach(TrackTable.empty()).freeze()

    @property
    def tracks(self) -> TrackTable:
        """The live tracks (read-only arrays)."""
        return self._tracks

    def replace_components(
        self,
        *,
        predictor: Predictor,
        updater: Updater,
        associator: GnnAssociator,
        initiator: MofNInitiator,
        deleter: MissDeleter,
        scorer: TrackScorer | None = None,
    ) -> None:
        """Swap every component (new settings), keeping the live tracks and the id
        counter, and the scorer's measured plot density. When the new predictor keeps a
        different number of IMM modes (IMM switched on or off), each track restarts its
        modes from its combined estimate."""
        tr = self._tracks.copy()
        if tr.n_modes != predictor.attach(TrackTable.empty()).n_modes:
            k = len(tr)
            tr = predictor.attach(tr.with_modes(np.zeros((k, 0)), np.zeros((k, 0, 6)), np.zeros((k, 0, 6, 6))))
        self.predictor, self.updater, self.associator = predictor, updater, associator
        self.initiator, self.deleter = initiator, deleter
        if scorer is not None and self.scorer is not None:
            self.scorer.density.reconfigure(scorer.density)
            scorer.density = self.scorer.density
        self.scorer = scorer
        self._tracks = tr.freeze()

    @property
    def next_track_id(self) -> int:
        """The id the next new track will get."""
        return self._next_id

    def step(self, det: Detections) -> TrackUpdate:
        """Process one frame of detections; see the class docstring."""
        t = float(det.t_mono)
        tr = self._tracks.copy()

        t_mono = tr.t_mono
        t_min = t_max = t
        if len(t_mono):
            t_min, t_max = float(t_mono.min()), float(t_mono.max())
        if t_min == t_max and t_min <= t:  # the usual frame: every track at one time, moved to t by one dt
            self.predictor.predict_tracks(tr, t - t_min)
            tr.t_mono = t
        else:
            dt = t - t_mono
            late = dt < 0
            if late.any():
                log.debug(
                    "%s: frame at %.6f is older than %d track states; dt clamped to 0",
                    det.sensor, t, np.count_nonzero(late),
                )
                self.predictor.predict_tracks(tr, np.maximum(dt, 0.0))
                tr.t_mono = np.maximum(tr.t_mono, t)
            else:  # every track moves to t
                self.predictor.predict_tracks(tr, dt)
                tr.t_mono = t

        established = tr.rows_with_status(Status.CONFIRMED, Status.COASTING)
        radial = RadialSpeeds.of(det)
        gated = self.associator.gate_pairs(tr.state, tr.cov, det.pos_enu_m, det.cov_enu_m2, radial=radial,
                                           initiating=tr.hits == 1)
        ti, di, pair = self.associator.assign(gated, len(tr), established)
        doppler = getattr(self.associator, "doppler", None)
        if self.scorer is not None:
            self._score(tr, det, ti, di, pair, gated, established, doppler)
        self.updater.update_tracks(tr, ti, det.pos_enu_m[di], det.cov_enu_m2[di])
        if doppler is not None and len(ti):
            eps = doppler.nis(tr.state[ti], tr.cov[ti], radial, di)  # every hit is a track's second point or later
            tr.doppler_score[ti], tr.doppler_hits[ti] = doppler.consistency(
                tr.doppler_score[ti], tr.doppler_hits[ti], eps)

        det_of = np.empty(len(tr), dtype=np.intp)  # empty + fill: np.full's Python layer costs more here
        det_of.fill(-1)
        det_of[ti] = di
        hits, misses, history = tr.hits, tr.misses, tr.hit_history  # views: updated in place (ti are unique)
        hits[ti] += np.uint32(1)
        misses += np.uint32(1)
        misses[ti] = 0
        history <<= np.uint64(1)
        history[ti] |= np.uint64(1)
        tr.t_last_update[ti] = t
        coasting, gone = self.deleter.judge(tr, t)
        self._set_coasting(tr, coasting, established)

        ended = self._ended(tr, gone)
        keep = ~gone if len(ended) else None
        if keep is not None:
            det_of = det_of[keep]

        # A leftover detection inside the position gate of an established track starts nothing.
        taken = np.zeros(len(det), dtype=bool)
        taken[di] = True
        taken[gated.det_idx[established[gated.track_idx]]] = True
        unassociated = (~taken).nonzero()[0]
        start = np.asarray(self.initiator.select(det, unassociated), dtype=np.intp)
        new = None
        if len(start):
            new = self.predictor.attach(self.initiator.initiate(det, start, self._next_id))
            self._next_id += len(new)
            det_of = np.concatenate([det_of, start])
        tr = tr.kept_and_joined(keep, new)  # the removed rows dropped, the new ones added: one copy

        confirm = self.initiator.to_confirm(tr)
        tr.status[confirm] = Status.CONFIRMED
        if confirm.any():
            log.debug("confirmed tracks %s", tr.track_id[confirm].tolist())

        self._tracks = tr.freeze()
        det_of.flags.writeable = False
        return TrackUpdate(t_mono=t, tracks=self._tracks, ended=ended, detections=det, det_of_track=det_of)

    def expire(self, t_mono: float) -> TrackUpdate:
        """End confirmed tracks and drop tentative ones not updated for too long before
        ``t_mono``, without predicting or counting misses. Call it periodically so tracks
        end even while no detections arrive."""
        t = float(t_mono)
        table, deleter, bounds = self._quiet
        if table is not self._tracks or deleter is not self.deleter:  # the deleter's bounds, once per table
            bounds = self.deleter.quiet_bounds(self._tracks)
            self._quiet = (self._tracks, self.deleter, bounds)
        if self.deleter.is_quiet(bounds, t):  # nothing can have gone stale: what the steps below give
            return TrackUpdate(t_mono=t, tracks=self._tracks, ended=self._none(self._tracks.n_modes))
        tr = self._tracks.copy()
        coasting, gone = self.deleter.judge(tr, t)
        changed = self._set_coasting(tr, coasting)
        tr, ended = self._delete(tr, gone)
        if changed or len(ended):
            self._tracks = tr.freeze()
        return TrackUpdate(t_mono=t, tracks=self._tracks, ended=ended)

    def end_all(self, t_mono: float) -> TrackUpdate:
        """End every live track (the daemon is stopping: nothing will update them)."""
        ended = self._tracks.copy()
        ended.status[:] = Status.ENDED
        self._tracks = self.predictor.attach(TrackTable.empty()).freeze()
        return TrackUpdate(t_mono=float(t_mono), tracks=self._tracks, ended=ended.freeze())

    @staticmethod
    def _set_coasting(tr: TrackTable, coasting: np.ndarray, established: np.ndarray | None = None) -> bool:
        """Set CONFIRMED / COASTING on established tracks by ``coasting`` (K,) (the
        deleter's verdict on the time since their last measurement); True when any
        status changed. ``established`` (K,): the confirmed and coasting rows, when the
        caller has them."""
        status = tr.status
        if established is None:
            established = tr.rows_with_status(Status.CONFIRMED, Status.COASTING)
        flip = established & (coasting != (status == _COASTING))  # coasting now, or confirmed again
        if not flip.any():
            return False
        status[flip] = np.where(coasting[flip], _COASTING, _CONFIRMED)
        return True

    def _score(self, tr: TrackTable, det: Detections, ti: np.ndarray, di: np.ndarray, pair: np.ndarray,
               gated: GatedPairs, established: np.ndarray, doppler: DopplerGate | None) -> None:
        """Measure the plot density on ``det`` and add each track's score increment;
        ``tr`` holds the predictions (before the update); the hits' innovations are the
        ones gating computed (``pair``: each hit's row in ``gated``)."""
        assert self.scorer is not None
        free = np.ones(len(det), dtype=bool)
        free[di[established[ti]]] = False
        rho = ranges(det)
        self.scorer.observe(det, free, rho)
        inc = np.empty(len(tr))
        inc.fill(self.scorer.miss_increment)
        if len(ti):
            e_r = s2_r = None
            if doppler is not None:
                e_r, s2_r = gated.e_r[pair], gated.s2_r[pair] + doppler.manoeuvre_sigma_mps**2
            inc[ti] = self.scorer.increments(det, di, gated.d2[pair], gated.det_S[pair], e_r, s2_r, rho)
        tr.score += inc

    def _none(self, n_modes: int) -> TrackTable:
        """An empty read-only table of ``n_modes`` modes (made once: most calls end no track)."""
        table = self._empty.get(n_modes)
        if table is None:
            table = self._empty[n_modes] = TrackTable.empty(n_modes).freeze()
        return table

    def _ended(self, tr: TrackTable, gone: np.ndarray) -> TrackTable:
        """The rows of ``tr`` that the mask ``gone`` (K,) of the deleter's
        :meth:`~towerd.tracking.deleter.MissDeleter.judge` removes, as a read-only table
        with status ENDED (the shared empty one when none)."""
        if not gone.any():
            return self._none(tr.n_modes)
        ended = tr.select(gone)
        ended.status[:] = Status.ENDED
        if log.isEnabledFor(logging.DEBUG):
            log.debug("removed tracks %s", ended.track_id.tolist())
        return ended.freeze()

    def _delete(self, tr: TrackTable, gone: np.ndarray) -> tuple[TrackTable, TrackTable]:
        """Split ``tr`` into (kept, removed with status ENDED) by the mask ``gone`` (K,)."""
        ended = self._ended(tr, gone)
        return (tr.remove(gone) if len(ended) else tr), ended
