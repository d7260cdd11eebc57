"""Track features for classification: bounded per-track averages of what a track's
history says about the target, kept by track id across tracker calls.

Features (bounded per track: exponentially weighted averages, no sample history), kept
by track id across tracker calls and updated, vectorised over tracks, on every frame
that gave a track a measurement:

- ``speed_mps``: mean horizontal speed of the filtered track;
- ``speed_cv``: its standard deviation over max(mean, ``speed_floor_mps``) (slow
  variation: includes a drone's change of speed between legs);
- ``speed_change_mps2``: mean |change of speed| per second between samples taken every
  ``sample_interval_s`` — flapping and gliding birds change speed all the time, drones
  and vehicles hold it for whole legs;
- ``height_m``: mean height above ground (ENU up − ``ground_up_m``);
- ``climb_sd_mps``: standard deviation of the vertical velocity;
- ``hover_fraction``: share of samples slower than ``hover_speed_mps`` (birds cannot
  hover, multirotors do), averaged over the longer ``hover_time_constant_s``;
- ``turn_rate_dps``: mean |heading change| per second between the same samples, when
  both are faster than ``heading_min_speed_mps`` (below it a heading is noise);
- ``straightness``: |mean horizontal velocity vector| / mean horizontal speed, 1 for a
  straight path, near 0 for wandering or circling;
- ``rcs_dbsm``: radar cross-section from the detection's SNR by the radar equation,
  rcs = snr − ``rcs_reference_snr_db`` + 40 log10(range / 100 m);
- ``doppler_spread_mps``: spread of the radial velocities of the target's points
  (micro-Doppler of rotors and wings), where the radar gives several points;
- ``rf_link``: the RF fusion associated a drone control/video link with the track (an
  input, see :meth:`Classifier.update`).

Height and climb are sampled only on frames whose detection measured the target's height
(``Detections.height_measured``): a 2D radar places its targets at the antenna's height,
which says nothing of the target, so a track seen only by such a sensor has no height
and no climb (NaN), and every category model is indifferent to them for that track.

Velocity-derived samples (all but height, RCS and Doppler spread) start
``velocity_settle_s`` after a track's first detection: a new track's velocity is the
filter converging from zero, and its swings would read as a bird's.

Every average is an exponentially weighted mean with time constant τ =
``feature_time_constant_s`` (``hover_time_constant_s`` for hovering), debiased (mean =
Σ wᵢ xᵢ / Σ wᵢ, weights decaying as e^(−Δt/τ)), so it is unbiased from the first sample
and skips samples where a feature is unknown (NaN SNR, one point). Each sample weighs the time it stands for (the time
since the track's previous sample, at most ``sample_interval_s``; for speed change and
turn rate, the span they were measured over), so the averages do not depend on the
frame rate and Σ wᵢ is the (decayed) observation time behind an average. An average
resting on less than ``min_feature_time_s`` is reported as unknown: one odd sample is
not a feature.

:class:`FeatureTracker` folds each tracker call's measurements into the averages (every
call, for the tracks a detection updated: the averages are state) and gives the feature
rows of the tracks asked for (on demand: the decision in
:mod:`towerd.tracking.classify` reads them only when a label is needed).
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING

import numpy as np

from towerd.tracking.state import POS, VEL, match_ids

if TYPE_CHECKING:  # the settings are imported by towerd.config: keep this module light
    from towerd.tracking.classify import ClassificationSettings
    from towerd.tracking.tracker import TrackUpdate

log = logging.getLogger(__name__)

FEATURE_NAMES = (
    "speed_mps",
    "speed_cv",
    "speed_change_mps2",
    "height_m",
    "climb_sd_mps",
    "hover_fraction",
    "turn_rate_dps",
    "straightness",
    "rcs_dbsm",
    "doppler_spread_mps",
)
"""The features a :class:`CategoryModel` can constrain, in FEATURE_DTYPE."""

FEATURE_DTYPE = np.dtype(
    [(name, "<f8") for name in FEATURE_NAMES] + [("observed_s", "<f8"), ("samples", "<u4"), ("rf_link", "?")]
)
"""One row per track: the features above (NaN when unknown), seconds since its first
sample, the number of samples, and the RF link flag used."""

# Indices of the averaged quantities in the per-track accumulators.
_SPEED, _SPEED2, _VUP, _VUP2, _HEIGHT, _HOVER, _VE, _VN, _TURN, _RCS, _DSPREAD, _DSPEED = range(12)
_N_ACC = 12
_VELOCITY_DERIVED = np.array([_SPEED, _SPEED2, _VUP, _VUP2, _HOVER, _VE, _VN, _TURN, _DSPEED])
_VERTICAL = np.array([_HEIGHT, _VUP, _VUP2])  # sampled only from detections whose height was measured


@functools.lru_cache(maxsize=8)
def _time_constants(feature_s: float, hover_s: float) -> np.ndarray:
    """(_N_ACC,) time constant of each accumulator (read-only: shared between calls)."""
    tau = np.full(_N_ACC, feature_s)
    tau[_HOVER] = hover_s
    tau.flags.writeable = False
    return tau


def _carry(old: np.ndarray, found: np.ndarray, pos: np.ndarray, fill: float) -> np.ndarray:
    """Rows of ``old`` at ``pos`` where ``found``, ``fill`` elsewhere (a new array)."""
    out = np.full((len(found),) + old.shape[1:], fill, dtype=old.dtype)
    out[found] = old[pos[found]]
    return out


class FeatureTracker:
    """Keeps the per-track feature averages; see the module docstring.

    State per track id (sorted arrays, pruned to the live tracks on every call, so it is
    bounded by the number of live tracks): the weighted sums and weights of each
    average; the last speed/heading sample (time, speed, heading or NaN when too slow);
    the first and last sample times and the sample count. After :meth:`update` the
    state's rows are those of the update's ``tracks`` (sorted by id, as the tracker
    keeps them).
    """

    def __init__(self, settings: ClassificationSettings) -> None:
        self.settings = settings
        self._ids = np.zeros(0, dtype=np.uint32)
        self._num = np.zeros((0, _N_ACC))
        self._den = np.zeros((0, _N_ACC))
        self._prev = np.zeros((0, 3))  # (t_s, speed_mps, heading_rad) of the last sample
        self._t_first = np.zeros(0)
        self._t_last = np.zeros(0)
        self._samples = np.zeros(0, dtype=np.uint32)
        self._order: np.ndarray | None = None  # state row of each row of the last update's tracks

    def update(self, update: TrackUpdate) -> np.ndarray:
        """Fold the measurements of ``update`` into the averages; return the rows of
        ``update.tracks`` whose features changed (a detection updated them)."""
        tr = update.tracks
        if not np.array_equal(self._ids, tr.track_id):
            found, pos = match_ids(self._ids, tr.track_id)
            self._num = _carry(self._num, found, pos, 0.0)
            self._den = _carry(self._den, found, pos, 0.0)
            self._prev = _carry(self._prev, found, pos, np.nan)
            self._t_first = _carry(self._t_first, found, pos, np.nan)
            self._t_last = _carry(self._t_last, found, pos, np.nan)
            self._samples = _carry(self._samples, found, pos, 0)
            self._ids = tr.track_id.copy()
        rows = np.flatnonzero(update.det_of_track >= 0)
        if len(rows):
            self._accumulate(update, rows, self._num, self._den, self._prev, self._t_first, self._t_last,
                             self._samples)
        if len(self._ids) > 1 and not np.all(self._ids[1:] > self._ids[:-1]):  # keep the state sorted by id
            order = np.argsort(self._ids, kind="stable")
            self._order = np.argsort(order, kind="stable")  # row of the update -> state row
            self._ids, self._num, self._den = self._ids[order], self._num[order], self._den[order]
            self._prev, self._t_first = self._prev[order], self._t_first[order]
            self._t_last, self._samples = self._t_last[order], self._samples[order]
        else:
            self._order = None
        return rows

    def features(self, rows: np.ndarray, rf_link: np.ndarray) -> np.ndarray:
        """Feature rows (FEATURE_DTYPE) of the rows ``rows`` of the latest update's
        tracks, with their RF link flags ``rf_link`` (same length)."""
        state = rows if self._order is None else self._order[rows]
        return self._features(self._num[state], self._den[state], self._t_first[state], self._t_last[state],
                              self._samples[state], np.asarray(rf_link, dtype=bool))

    def _accumulate(
        self,
        update: TrackUpdate,
        rows: np.ndarray,
        num: np.ndarray,
        den: np.ndarray,
        prev: np.ndarray,
        t_first: np.ndarray,
        t_last: np.ndarray,
        samples: np.ndarray,
    ) -> None:
        """Add this frame's sample of the tracks ``rows`` (those a detection updated) to
        their averages (arrays modified in place)."""
        s = self.settings
        tr = update.tracks
        t = float(update.t_mono)
        state = tr.state[rows]
        pos = state[:, POS]
        vel = state[:, VEL]
        speed = np.hypot(vel[:, 0], vel[:, 1])
        tf = t_first[rows]
        tf[np.isnan(tf)] = t
        t_first[rows] = tf
        settled = t - tf >= s.velocity_settle_s - 1e-9

        x = np.full((len(rows), _N_ACC), np.nan)
        x[:, _SPEED] = speed
        x[:, _SPEED2] = speed**2
        x[:, _VUP] = vel[:, 2]
        x[:, _VUP2] = vel[:, 2] ** 2
        x[:, _HEIGHT] = pos[:, 2] - s.ground_up_m
        x[:, _HOVER] = (speed < s.hover_speed_mps).astype(float)
        x[:, _VE] = vel[:, 0]
        x[:, _VN] = vel[:, 1]

        # Speed change and turn rate between samples at least sample_interval_s apart.
        heading = np.where(speed >= s.heading_min_speed_mps, np.arctan2(vel[:, 0], vel[:, 1]), np.nan)
        prev_rows = prev[rows]
        t_prev, s_prev, h_prev = prev_rows[:, 0], prev_rows[:, 1], prev_rows[:, 2]
        due = settled & (np.isnan(t_prev) | (t - t_prev >= s.sample_interval_s - 1e-9))
        have_prev = due & np.isfinite(t_prev)
        with np.errstate(invalid="ignore", divide="ignore"):
            span = t - t_prev
            x[:, _DSPEED] = np.where(have_prev, np.abs(speed - s_prev) / span, np.nan)
            dh = np.abs(np.angle(np.exp(1j * (heading - h_prev))))
            x[:, _TURN] = np.where(have_prev, np.degrees(dh) / span, np.nan)  # NaN unless both moved
        prev_rows[due] = np.column_stack([np.full(len(rows), t), speed, heading])[due]
        prev[rows] = prev_rows

        det = update.detections
        if det is not None and len(det):
            di = update.det_of_track[rows]
            rng = np.maximum(np.linalg.norm(pos, axis=1), 1.0)
            x[:, _RCS] = det.snr_db[di] - s.rcs_reference_snr_db + 40.0 * np.log10(rng / 100.0)
            x[:, _DSPREAD] = det.doppler_spread_mps[di]
            x[np.ix_(~det.height_measured[di], _VERTICAL)] = np.nan  # a 2D radar's assumed height
        x[np.ix_(~settled, _VELOCITY_DERIVED)] = np.nan

        # Debiased EWMA: decay the sums by e^(−Δt/τ) since the track's last sample; a
        # sample weighs the time it stands for.
        tl = t_last[rows]
        dt = np.maximum(np.where(np.isfinite(tl), t - tl, 0.0), 0.0)
        decay = np.exp(-dt[:, None] / _time_constants(s.feature_time_constant_s, s.hover_time_constant_s))
        w = np.repeat(np.minimum(dt, s.sample_interval_s)[:, None], _N_ACC, axis=1)
        w[:, _TURN] = w[:, _DSPEED] = np.minimum(np.where(np.isnan(span), 0.0, span), 2.0 * s.sample_interval_s)
        known = np.isfinite(x) & (w > 0)
        num[rows] = num[rows] * decay + np.where(known, w * x, 0.0)
        den[rows] = den[rows] * decay + np.where(known, w, 0.0)
        t_last[rows] = t
        samples[rows] += np.uint32(1)

    def _features(
        self, num: np.ndarray, den: np.ndarray, t_first: np.ndarray, t_last: np.ndarray, samples: np.ndarray,
        rf: np.ndarray,
    ) -> np.ndarray:
        """Feature rows (FEATURE_DTYPE) from the accumulators."""
        s = self.settings
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where((den > 0) & (den >= s.min_feature_time_s), num / np.maximum(den, 1e-300), np.nan)
        f = np.zeros(len(num), dtype=FEATURE_DTYPE)
        speed = mean[:, _SPEED]
        f["speed_mps"] = speed
        f["speed_cv"] = np.sqrt(np.maximum(mean[:, _SPEED2] - speed**2, 0.0)) / np.maximum(speed, s.speed_floor_mps)
        f["speed_change_mps2"] = mean[:, _DSPEED]
        f["height_m"] = mean[:, _HEIGHT]
        f["climb_sd_mps"] = np.sqrt(np.maximum(mean[:, _VUP2] - mean[:, _VUP] ** 2, 0.0))
        f["hover_fraction"] = mean[:, _HOVER]
        f["turn_rate_dps"] = mean[:, _TURN]
        with np.errstate(invalid="ignore", divide="ignore"):
            f["straightness"] = np.where(
                speed > 0, np.hypot(mean[:, _VE], mean[:, _VN]) / speed, np.nan
            )
        f["rcs_dbsm"] = mean[:, _RCS]
        f["doppler_spread_mps"] = mean[:, _DSPREAD]
        f["observed_s"] = np.where(np.isfinite(t_first), t_last - t_first, 0.0)
        f["samples"] = samples
        f["rf_link"] = rf
        return f
