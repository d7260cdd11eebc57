"""Track classification: what each track is (uas, bird, ground vehicle, manned aircraft,
person, or unknown), with a confidence, from its history.

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

Decision (naive Bayes with fuzzy likelihoods): each category c has, per feature f, a
trapezoidal membership band (zero_below, full_from, full_to, zero_above) read as the
likelihood of the feature value under c, floored at ``membership_floor`` so that one
odd feature weakens a category but cannot veto it; a category without a band for a
feature is indifferent to it. Then

    log P(c | features) = log prior_c + Σ_f log max(m_cf(f), floor) [+ log LR_rf if uas and rf_link] + const

normalised over the five categories. The track gets the most probable category and
``confidence`` = round(100 P); it stays ``unknown`` (confidence 0) while it has been
observed for less than ``min_observation_s`` (unless an RF link is associated), when
the top probability is below ``min_probability``, or when the top category's own
likelihood Π_f max(m_cf, floor) is below ``min_likelihood``: the posterior says which
category fits best, this says whether any fits at all.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from towerd.icd import Category
from towerd.schema import spec
from towerd.tracking.state import POS, VEL, match_ids

if TYPE_CHECKING:  # the settings are imported by towerd.config: keep this module light
    from towerd.tracking.tracker import TrackUpdate

log = logging.getLogger(__name__)

Band = tuple[float, float, float, float]
"""Trapezoid (zero_below, full_from, full_to, zero_above): membership 0 at or below the
first, rising linearly to 1 at the second, 1 up to the third, 0 at or above the fourth."""

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

CATEGORIES = (Category.UAS, Category.BIRD, Category.GROUND_VEHICLE, Category.MANNED_AIRCRAFT, Category.PERSON)
"""Classes the classifier chooses among (UNKNOWN is the absence of a decision)."""


def _check_band(name: str, band: Band | None) -> None:
    if band is None:
        return
    if len(band) != 4 or not all(np.isfinite(band)) or list(band) != sorted(band) or band[0] == band[3]:
        raise ValueError(f"{name} must be 4 finite non-decreasing numbers spanning a range, got {band!r}")


@dataclass(frozen=True)
class CategoryModel:
    """Membership bands of one category (None: the category is indifferent to that feature)."""

    prior: float = spec(1.0, doc="prior weight of the category", lo=1e-6, hi=1e6)
    speed_mps: Band | None = spec(None, doc="band of mean horizontal speed", unit="m/s")
    speed_cv: Band | None = spec(None, doc="band of speed std / mean")
    speed_change_mps2: Band | None = spec(None, doc="band of mean |speed change| per second", unit="m/s^2")
    height_m: Band | None = spec(None, doc="band of mean height above ground", unit="m")
    climb_sd_mps: Band | None = spec(None, doc="band of vertical velocity std", unit="m/s")
    hover_fraction: Band | None = spec(None, doc="band of the share of time hovering")
    turn_rate_dps: Band | None = spec(None, doc="band of mean heading change rate", unit="deg/s")
    straightness: Band | None = spec(None, doc="band of |mean velocity| / mean speed")
    rcs_dbsm: Band | None = spec(None, doc="band of radar cross-section", unit="dBsm")
    doppler_spread_mps: Band | None = spec(None, doc="band of Doppler spread", unit="m/s")

    def __post_init__(self) -> None:
        for name in FEATURE_NAMES:
            _check_band(name, getattr(self, name))


UAS_MODEL = CategoryModel(
    speed_mps=(-1.0, 0.0, 22.0, 40.0),
    speed_change_mps2=(-1.0, 0.0, 0.8, 1.6),
    height_m=(0.5, 3.0, 600.0, 1500.0),
    rcs_dbsm=(-45.0, -35.0, -8.0, 0.0),
)
BIRD_MODEL = CategoryModel(
    speed_mps=(1.0, 3.0, 20.0, 30.0),
    speed_change_mps2=(0.4, 1.2, 50.0, 100.0),
    height_m=(0.5, 2.0, 1500.0, 3000.0),
    hover_fraction=(-1.0, 0.0, 0.05, 0.2),
    turn_rate_dps=(1.0, 6.0, 360.0, 720.0),
    rcs_dbsm=(-60.0, -45.0, -10.0, 0.0),
)
GROUND_VEHICLE_MODEL = CategoryModel(
    speed_mps=(0.5, 2.5, 40.0, 60.0),
    height_m=(-40.0, -20.0, 3.0, 6.0),
    straightness=(0.3, 0.7, 1.0, 2.0),
    rcs_dbsm=(-15.0, -5.0, 40.0, 50.0),
)
MANNED_AIRCRAFT_MODEL = CategoryModel(
    prior=0.5,
    speed_mps=(20.0, 35.0, 350.0, 400.0),
    height_m=(20.0, 60.0, 15000.0, 20000.0),
    rcs_dbsm=(-10.0, 0.0, 60.0, 70.0),
)
PERSON_MODEL = CategoryModel(
    speed_mps=(-1.0, 0.2, 2.5, 4.0),
    height_m=(-40.0, -20.0, 3.0, 6.0),
    rcs_dbsm=(-25.0, -15.0, 0.0, 10.0),
)


@dataclass(frozen=True)
class ClassificationSettings:
    """``classification``: features, decision thresholds and the category models."""

    enabled: bool = spec(True, doc="classify tracks (otherwise every track is unknown)")
    feature_time_constant_s: float = spec(
        5.0, doc="time constant of the feature averages", unit="s", lo=0.1, hi=600.0
    )
    velocity_settle_s: float = spec(
        1.5, doc="velocity-derived samples start this long after a track's first (while the filter converges "
        "its velocity is no feature of the target)", unit="s", lo=0.0, hi=60.0,
    )
    min_observation_s: float = spec(
        3.0, doc="observe a track this long before naming its category", unit="s", lo=0.0, hi=600.0
    )
    min_feature_time_s: float = spec(
        1.0, doc="a feature average counts only when it rests on at least this much recent observation time",
        unit="s", lo=0.0, hi=600.0,
    )
    min_probability: float = spec(0.5, doc="top category probability needed to name it", lo=0.0, hi=1.0)
    min_likelihood: float = spec(
        0.1, doc="least product of the top category's memberships: below it the track fits no category well "
        "(a lamp post is no better a drone for being a worse bird)", lo=0.0, hi=1.0,
    )
    membership_floor: float = spec(0.05, doc="least likelihood one feature can give a category", lo=1e-6, hi=1.0)
    ground_up_m: float = spec(
        0.0, doc="ENU up coordinate of the ground around the tower (0: reference point on the ground)", unit="m",
        lo=-1000.0, hi=1000.0,
    )
    hover_speed_mps: float = spec(1.0, doc="slower than this a sample counts as hovering", unit="m/s", lo=0.0, hi=10.0)
    hover_time_constant_s: float = spec(
        30.0, doc="time constant of hover_fraction (longer: a drone that hovered stays drone-like)", unit="s",
        lo=0.1, hi=3600.0,
    )
    speed_floor_mps: float = spec(
        2.0, doc="speed_cv divides by at least this (a hovering track's speed is noise)", unit="m/s",
        lo=0.01, hi=50.0,
    )
    heading_min_speed_mps: float = spec(
        2.0, doc="heading changes count only above this speed", unit="m/s", lo=0.1, hi=50.0
    )
    sample_interval_s: float = spec(
        1.0, doc="least time between the samples of speed change and turn rate", unit="s", lo=0.05, hi=60.0
    )
    rcs_reference_snr_db: float = spec(
        35.0, doc="radar calibration: SNR of a 1 m^2 target at 100 m", unit="dB", lo=-50.0, hi=150.0
    )
    rf_link_likelihood_ratio: float = spec(
        20.0, doc="how much more likely a uas is than anything else when an RF drone link is associated",
        lo=1.0, hi=1e6,
    )
    uas: CategoryModel = spec(UAS_MODEL)
    bird: CategoryModel = spec(BIRD_MODEL)
    ground_vehicle: CategoryModel = spec(GROUND_VEHICLE_MODEL)
    manned_aircraft: CategoryModel = spec(MANNED_AIRCRAFT_MODEL)
    person: CategoryModel = spec(PERSON_MODEL)

    def models(self) -> tuple[CategoryModel, ...]:
        """The category models in the order of :data:`CATEGORIES`."""
        return (self.uas, self.bird, self.ground_vehicle, self.manned_aircraft, self.person)


def membership(x: np.ndarray, band: Band) -> np.ndarray:
    """Trapezoidal membership (see :data:`Band`) of x (K,) -> (K,) in [0, 1]; NaN stays NaN."""
    a, b, c, d = band
    x = np.asarray(x, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        up = np.where(b > a, (x - a) / (b - a if b > a else 1.0), (x >= a).astype(float))
        down = np.where(d > c, (d - x) / (d - c if d > c else 1.0), (x <= c).astype(float))
    m = np.clip(np.minimum(up, down), 0.0, 1.0)
    return np.where(np.isnan(x), np.nan, m)


@functools.lru_cache(maxsize=8)
def _bands(settings: "ClassificationSettings") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The four corners of every category's band for every feature, each (C, F); NaN
    where a category is indifferent to a feature."""
    table = np.full((4, len(CATEGORIES), len(FEATURE_NAMES)), np.nan)
    for ci, model in enumerate(settings.models()):
        for fi, name in enumerate(FEATURE_NAMES):
            band = getattr(model, name)
            if band is not None:
                table[:, ci, fi] = band
    return table[0], table[1], table[2], table[3]


# Indices of the averaged quantities in the per-track accumulators.
_SPEED, _SPEED2, _VUP, _VUP2, _HEIGHT, _HOVER, _VE, _VN, _TURN, _RCS, _DSPREAD, _DSPEED = range(12)
_N_ACC = 12
_VELOCITY_DERIVED = np.array([_SPEED, _SPEED2, _VUP, _VUP2, _HOVER, _VE, _VN, _TURN, _DSPEED])


def _carry(old: np.ndarray, found: np.ndarray, pos: np.ndarray, fill: float) -> np.ndarray:
    """Rows of ``old`` at ``pos`` where ``found``, ``fill`` elsewhere (a new array)."""
    out = np.full((len(found),) + old.shape[1:], fill, dtype=old.dtype)
    out[found] = old[pos[found]]
    return out


@dataclass(frozen=True, eq=False)
class Classification:
    """The classifier's answer for the rows of one TrackUpdate's ``tracks``.

    category (K,) u1 (:class:`~towerd.icd.Category`); confidence (K,) u1, 0–100;
    probability (K, 5) over :data:`CATEGORIES`; features (K,) FEATURE_DTYPE."""

    category: np.ndarray
    confidence: np.ndarray
    probability: np.ndarray
    features: np.ndarray


class Classifier:
    """Keeps per-track features and classifies every live track; see the module docstring.

    State per track id (sorted arrays, pruned to the live tracks on every call, so it is
    bounded by the number of live tracks): the weighted sums and weights of each
    average; the last speed/heading sample (time, speed, heading or NaN when too slow);
    the first and last sample times and the sample count.
    """

    def __init__(self, settings: ClassificationSettings | None = None) -> None:
        self.settings = settings or ClassificationSettings()
        self._ids = np.zeros(0, dtype=np.uint32)
        self._num = np.zeros((0, _N_ACC))
        self._den = np.zeros((0, _N_ACC))
        self._prev = np.zeros((0, 3))  # (t_s, speed_mps, heading_rad) of the last sample
        self._t_first = np.zeros(0)
        self._t_last = np.zeros(0)
        self._samples = np.zeros(0, dtype=np.uint32)

    def update(self, update: TrackUpdate, rf_link: np.ndarray | None = None) -> Classification:
        """Fold the measurements of ``update`` into the features and classify its live
        tracks. ``rf_link`` (K,) bool, aligned with ``update.tracks``: the RF fusion found
        a drone link for the track (None: no RF information)."""
        tr = update.tracks
        k = len(tr)
        rf = np.zeros(k, dtype=bool) if rf_link is None else np.asarray(rf_link, dtype=bool)
        if rf.shape != (k,):
            raise ValueError(f"rf_link has shape {rf.shape} for {k} tracks")

        found, pos = match_ids(self._ids, tr.track_id)
        num = _carry(self._num, found, pos, 0.0)
        den = _carry(self._den, found, pos, 0.0)
        prev = _carry(self._prev, found, pos, np.nan)
        t_first = _carry(self._t_first, found, pos, np.nan)
        t_last = _carry(self._t_last, found, pos, np.nan)
        samples = _carry(self._samples, found, pos, 0)

        rows = np.flatnonzero(update.det_of_track >= 0)
        if len(rows):
            self._accumulate(update, rows, num, den, prev, t_first, t_last, samples)

        order = np.argsort(tr.track_id, kind="stable")
        self._ids = tr.track_id[order].copy()
        self._num, self._den, self._prev = num[order], den[order], prev[order]
        self._t_first, self._t_last, self._samples = t_first[order], t_last[order], samples[order]

        features = self._features(num, den, t_first, t_last, samples, rf)
        return self._decide(features)

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
        pos = tr.state[rows][:, POS]
        vel = tr.state[rows][:, VEL]
        speed = np.hypot(vel[:, 0], vel[:, 1])
        t_first[rows] = np.where(np.isnan(t_first[rows]), t, t_first[rows])
        settled = t - t_first[rows] >= s.velocity_settle_s - 1e-9

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
        t_prev, s_prev, h_prev = prev[rows, 0], prev[rows, 1], prev[rows, 2]
        due = settled & (np.isnan(t_prev) | (t - t_prev >= s.sample_interval_s - 1e-9))
        have_prev = due & np.isfinite(t_prev)
        with np.errstate(invalid="ignore", divide="ignore"):
            span = t - t_prev
            x[:, _DSPEED] = np.where(have_prev, np.abs(speed - s_prev) / span, np.nan)
            dh = np.abs(np.angle(np.exp(1j * (heading - h_prev))))
            x[:, _TURN] = np.where(have_prev, np.degrees(dh) / span, np.nan)  # NaN unless both moved
        prev[rows] = np.where(due[:, None], np.column_stack([np.full(len(rows), t), speed, heading]), prev[rows])

        det = update.detections
        if det is not None and len(det):
            di = update.det_of_track[rows]
            rng = np.maximum(np.linalg.norm(pos, axis=1), 1.0)
            x[:, _RCS] = det.snr_db[di] - s.rcs_reference_snr_db + 40.0 * np.log10(rng / 100.0)
            x[:, _DSPREAD] = det.doppler_spread_mps[di]
        x[np.ix_(~settled, _VELOCITY_DERIVED)] = np.nan

        # Debiased EWMA: decay the sums by e^(−Δt/τ) since the track's last sample; a
        # sample weighs the time it stands for.
        dt = np.maximum(np.where(np.isfinite(t_last[rows]), t - t_last[rows], 0.0), 0.0)
        tau = np.full(_N_ACC, s.feature_time_constant_s)
        tau[_HOVER] = s.hover_time_constant_s
        decay = np.exp(-dt[:, None] / tau)
        w = np.repeat(np.minimum(dt, s.sample_interval_s)[:, None], _N_ACC, axis=1)
        w[:, _TURN] = w[:, _DSPEED] = np.minimum(np.nan_to_num(span, nan=0.0), 2.0 * s.sample_interval_s)
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

    def _decide(self, f: np.ndarray) -> Classification:
        """Posterior over the categories and the decision; see the module docstring."""
        s = self.settings
        k = len(f)
        floor = np.log(s.membership_floor)
        # All categories and features at once: (K, C, F) memberships, as membership()
        # computes one band at a time; a missing band or an unknown feature adds nothing.
        a, b, c, d = _bands(s)  # each (C, F), NaN where a category has no band
        x = np.stack([np.asarray(f[name], dtype=float) for name in FEATURE_NAMES], axis=-1)[:, None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            up = np.where(b > a, (x - a) / np.where(b > a, b - a, 1.0), (x >= a).astype(float))
            down = np.where(d > c, (d - x) / np.where(d > c, d - c, 1.0), (x <= c).astype(float))
            m = np.clip(np.minimum(up, down), 0.0, 1.0)
            term = np.maximum(np.log(np.maximum(m, 1e-300)), floor)
        log_lik = np.where(np.isnan(x) | np.isnan(a), 0.0, term).sum(axis=2)
        log_p = log_lik + np.log([m.prior for m in s.models()])
        log_p[:, 0] += np.where(f["rf_link"], np.log(s.rf_link_likelihood_ratio), 0.0)
        log_p -= log_p.max(axis=1, keepdims=True) if k else 0.0
        prob = np.exp(log_p)
        prob /= prob.sum(axis=1, keepdims=True) if k else 1.0

        top = np.argmax(prob, axis=1) if k else np.zeros(0, dtype=np.intp)
        p_top = prob[np.arange(k), top]
        mature = (f["observed_s"] >= s.min_observation_s) | f["rf_link"]
        fits = log_lik[np.arange(k), top] >= np.log(max(s.min_likelihood, 1e-300))
        named = s.enabled & mature & fits & (p_top >= s.min_probability) & (f["samples"] > 0)
        cats = np.asarray([int(c) for c in CATEGORIES], dtype=np.uint8)
        category = np.where(named, cats[top], np.uint8(Category.UNKNOWN)).astype(np.uint8)
        confidence = np.where(named, np.clip(np.round(100.0 * p_top), 0, 100), 0).astype(np.uint8)
        return Classification(category=category, confidence=confidence, probability=prob, features=f)
