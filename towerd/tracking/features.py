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

from towerd.tracking.carry import RowCarry
from towerd.tracking.linalg import norm_rows
from towerd.tracking.state import POS, VEL

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

COLUMN = {name: i for i, name in enumerate(FEATURE_DTYPE.names)}
"""Column of each FEATURE_DTYPE field in a feature matrix (:func:`feature_matrix`)."""


def feature_matrix(f: np.ndarray) -> np.ndarray:
    """FEATURE_DTYPE rows (K,) -> (K, len(COLUMN)) float matrix, the same fields in the same
    order (samples and rf_link as numbers): the form the decision reads and the labeller
    keeps."""
    return np.stack([f[name] for name in FEATURE_DTYPE.names], axis=-1).astype(float)


def feature_records(x: np.ndarray) -> np.ndarray:
    """The inverse of :func:`feature_matrix`."""
    f = np.zeros(len(x), dtype=FEATURE_DTYPE)
    for name, i in COLUMN.items():
        f[name] = x[:, i]
    return f


# Columns of the per-track state: the weighted sums (_NUM + q) and weights (_DEN + q) of
# each averaged quantity q, the last speed/heading sample (time, speed, heading or NaN when
# too slow), the first and last sample times and the sample count. Quantities are ordered
# so that those sampled only from measured heights, and those derived from the velocity,
# are each one slice.
_RCS, _DSPREAD, _HEIGHT, _VUP, _VUP2, _VE, _VN, _SPEED, _SPEED2, _HOVER, _TURN, _DSPEED = range(12)
_N_ACC = 12
_VERTICAL = slice(_HEIGHT, _VUP2 + 1)  # sampled only from detections whose height was measured
_VELOCITY_DERIVED = slice(_VUP, _N_ACC)
_NUM, _DEN, _PREV, _T_FIRST, _T_LAST, _SAMPLES = 0, _N_ACC, 2 * _N_ACC, 2 * _N_ACC + 3, 2 * _N_ACC + 4, 2 * _N_ACC + 5
_WIDTH = _SAMPLES + 1
_NEW_ROW = np.zeros((1, _WIDTH))
_NEW_ROW[0, _PREV:_T_LAST + 1] = np.nan  # no sample yet
_NEW_ROW.flags.writeable = False
# Feature matrix columns copied from an average as they are, and the averages.
_PLAIN_COLS = np.array([COLUMN[n] for n in ("speed_mps", "speed_change_mps2", "height_m", "hover_fraction",
                                            "turn_rate_dps", "rcs_dbsm", "doppler_spread_mps")])
_PLAIN_ACC = np.array([_SPEED, _DSPEED, _HEIGHT, _HOVER, _TURN, _RCS, _DSPREAD])
_SQUARED, _SQUARED_OF = slice(_VUP2, _SPEED2 + 1, _SPEED2 - _VUP2), slice(_VUP, _SPEED + 1, _SPEED - _VUP)
for _a in (_PLAIN_COLS, _PLAIN_ACC):
    _a.flags.writeable = False


@functools.lru_cache(maxsize=8)
def _time_constants(feature_s: float, hover_s: float) -> np.ndarray:
    """(_N_ACC,) time constant of each accumulator (read-only: shared between calls)."""
    tau = np.full(_N_ACC, feature_s)
    tau[_HOVER] = hover_s
    tau.flags.writeable = False
    return tau


class FeatureTracker:
    """Keeps the per-track feature averages; see the module docstring.

    State per track: one row of floats per live track (the columns above), in the rows of
    the latest update's ``tracks``, so it is bounded by the number of live tracks and
    re-aligned by one gather when tracks come and go (:class:`~towerd.tracking.carry.RowCarry`).
    """

    def __init__(self, settings: ClassificationSettings) -> None:
        self.settings = settings
        self._ids = np.zeros(0, dtype=np.uint32)
        self._state = np.zeros((0, _WIDTH))

    def update(self, update: TrackUpdate, carry: RowCarry | None = None) -> np.ndarray:
        """Fold the measurements of ``update`` into the averages; return the rows of
        ``update.tracks`` whose features changed (a detection updated them). ``carry``:
        where the update's tracks were in the previous call's (made here when not given,
        or not from the ids this tracker holds)."""
        if carry is None or not carry.fits(self._ids):
            carry = RowCarry(self._ids, update.tracks.track_id)
        self._state = carry.gather(self._state, _NEW_ROW)
        self._ids = carry.ids
        rows = (update.det_of_track >= 0).nonzero()[0]
        if len(rows):
            self._accumulate(update, rows)
        return rows

    def features(self, rows: np.ndarray, rf_link: np.ndarray) -> np.ndarray:
        """Feature rows (FEATURE_DTYPE) of the rows ``rows`` of the latest update's
        tracks, with their RF link flags ``rf_link`` (same length)."""
        return feature_records(self.matrix(rows, rf_link))

    def matrix(self, rows: np.ndarray, rf_link: np.ndarray | float, out: np.ndarray | None = None) -> np.ndarray:
        """:meth:`features` as a feature matrix (:func:`feature_matrix`); written into
        ``out`` (len(rows), len(COLUMN)) when given."""
        s = self.settings
        state = self._state[rows]
        num, den = state[:, _NUM:_NUM + _N_ACC], state[:, _DEN:_DEN + _N_ACC]
        counted = den >= s.min_feature_time_s  # a positive minimum implies den > 0 (den is never NaN)
        if s.min_feature_time_s <= 0.0:
            counted &= den > 0
        # den >= 0 and num finite: no 0/0 (NaN means only propagate, without a warning)
        mean = np.where(counted, num / np.maximum(den, 1e-300), np.nan)
        x = np.empty((len(state), len(COLUMN))) if out is None else out
        x[:, _PLAIN_COLS] = mean[:, _PLAIN_ACC]
        speed = mean[:, _SPEED]
        m1 = mean[:, _SQUARED_OF]  # climb, speed
        sd = np.sqrt(np.maximum(mean[:, _SQUARED] - m1 * m1, 0.0))
        x[:, COLUMN["climb_sd_mps"]] = sd[:, 0]
        x[:, COLUMN["speed_cv"]] = sd[:, 1] / np.maximum(speed, s.speed_floor_mps)
        # |mean velocity| / mean speed where it moved (a still track would be 0/0), else NaN
        straightness = x[:, COLUMN["straightness"]]
        straightness[:] = np.nan
        np.divide(np.hypot(mean[:, _VE], mean[:, _VN]), speed, out=straightness, where=speed > 0)
        t_first = state[:, _T_FIRST]  # NaN before the first sample, and then the last's too
        observed = np.subtract(state[:, _T_LAST], t_first, out=x[:, COLUMN["observed_s"]])
        np.copyto(observed, 0.0, where=np.isnan(t_first))
        x[:, COLUMN["samples"]] = state[:, _SAMPLES]
        x[:, COLUMN["rf_link"]] = rf_link
        return x

    def _accumulate(self, update: TrackUpdate, rows: np.ndarray) -> None:
        """Add this frame's sample of the tracks ``rows`` (those a detection updated) to
        their averages."""
        s = self.settings
        tr = update.tracks
        t = float(update.t_mono)
        st = self._state[rows]  # (n, _WIDTH) copy, written back at the end
        xs = tr.state[rows]
        vel = xs[:, VEL]
        x = np.empty((len(rows), _N_ACC))
        speed = np.hypot(vel[:, 0], vel[:, 1], out=x[:, _SPEED])  # a view of x's column
        tf = st[:, _T_FIRST]  # a view: the first sample's time set in st
        tf[np.isnan(tf)] = t
        settled = t - tf >= s.velocity_settle_s - 1e-9

        x[:, _VE:_VN + 1] = vel[:, :2]
        x[:, _VUP] = vel[:, 2]
        x[:, _HEIGHT] = xs[:, 2] - s.ground_up_m
        x[:, _SQUARED] = x[:, _SQUARED_OF] ** 2  # vertical velocity and speed
        x[:, _HOVER] = speed < s.hover_speed_mps

        # Speed change and turn rate between samples at least sample_interval_s apart.
        heading = np.where(speed >= s.heading_min_speed_mps, np.arctan2(vel[:, 0], vel[:, 1]), np.nan)
        t_prev, s_prev, h_prev = st[:, _PREV], st[:, _PREV + 1], st[:, _PREV + 2]
        span = t - t_prev  # NaN before the first sample
        first = np.isnan(span)
        due = settled & (first | (span >= s.sample_interval_s - 1e-9))
        have_prev = due & ~first
        # Divided only where there is a previous sample (span >= sample_interval_s > 0): no
        # division by zero to silence; NaN elsewhere, and NaN headings only propagate.
        x[:, _TURN:_DSPEED + 1] = np.nan
        np.divide(np.abs(speed - s_prev), span, out=x[:, _DSPEED], where=have_prev)
        turn = np.exp(1j * (heading - h_prev))
        dh = np.abs(np.arctan2(turn.imag, turn.real))  # |wrapped heading change|: np.angle's own arctan2
        np.divide(np.degrees(dh), span, out=x[:, _TURN], where=have_prev)  # NaN unless both moved
        sample = np.empty((len(rows), 3))  # this sample's time, speed and heading, kept where due
        sample[:, 0], sample[:, 1], sample[:, 2] = t, speed, heading
        np.copyto(st[:, _PREV:_PREV + 3], sample, where=due[:, None])

        det = update.detections
        if det is not None and len(det):
            di = update.det_of_track[rows]
            rng = np.maximum(norm_rows(xs[:, POS]), 1.0)
            x[:, _RCS] = det.snr_db[di] - s.rcs_reference_snr_db + 40.0 * np.log10(rng / 100.0)
            x[:, _DSPREAD] = det.doppler_spread_mps[di]
            np.copyto(x[:, _VERTICAL], np.nan, where=~det.height_measured[di][:, None])  # a 2D radar's assumed height
        else:
            x[:, _RCS:_DSPREAD + 1] = np.nan
        np.copyto(x[:, _VELOCITY_DERIVED], np.nan, where=~settled[:, None])  # a masked copy: cheaper than x[mask, cols]

        # Debiased EWMA: decay the sums by e^(−Δt/τ) since the track's last sample; a
        # sample weighs the time it stands for.
        dt = np.fmax(t - st[:, _T_LAST], 0.0)  # 0 for the first sample (NaN last time)
        decay = np.exp(-dt[:, None] / _time_constants(s.feature_time_constant_s, s.hover_time_constant_s))
        w = np.empty((len(rows), _N_ACC))
        w[:, :_TURN] = np.minimum(dt, s.sample_interval_s)[:, None]
        w[:, _TURN:] = np.minimum(span, 2.0 * s.sample_interval_s)[:, None]  # NaN (unknown) for a first sample
        known = np.isfinite(x)
        known &= w > 0
        add = np.zeros((len(rows), 2, _N_ACC))  # the sample's w·x and w, 0 where unknown
        np.multiply(w, x, out=add[:, 0], where=known)
        np.copyto(add[:, 1], w, where=known)
        sums = st[:, _NUM:_DEN + _N_ACC].reshape(len(rows), 2, _N_ACC)  # a view of st
        sums *= decay[:, None, :]
        sums += add
        st[:, _T_LAST] = t
        st[:, _SAMPLES] += 1.0
        self._state[rows] = st
