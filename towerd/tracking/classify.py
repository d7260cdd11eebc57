"""Track classification: what each track is (uas, bird, ground vehicle, manned aircraft,
person, or unknown), with a confidence, from its features
(:mod:`towerd.tracking.features`, which keeps them per track).

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
from towerd.tracking.features import COLUMN, FEATURE_DTYPE, FEATURE_NAMES, FeatureTracker, feature_matrix

__all__ = [
    "Band", "CATEGORIES", "CategoryModel", "Classification", "ClassificationSettings", "Classifier", "FEATURE_DTYPE",
    "FEATURE_NAMES", "decide", "decide_matrix", "membership",
]

if TYPE_CHECKING:  # the settings are imported by towerd.config: keep this module light
    from towerd.tracking.tracker import TrackUpdate

log = logging.getLogger(__name__)

Band = tuple[float, float, float, float]
"""Trapezoid (zero_below, full_from, full_to, zero_above): membership 0 at or below the
first, rising linearly to 1 at the second, 1 up to the third, 0 at or above the fourth."""

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


@dataclass(frozen=True, eq=False)
class _DecisionTables:
    """What :func:`decide` needs of the settings alone, computed once per settings: the
    corners of the B bands the models define (a category indifferent to a feature has
    none, and adds nothing for it), flat over (category, feature)."""

    feature: np.ndarray  # (B,) column of each band's feature in a feature matrix
    cell: np.ndarray  # (B,) its flat index in a (C, F) table
    a: np.ndarray  # (B,) band corners
    c: np.ndarray
    d: np.ndarray
    rising: np.ndarray | None  # (B,) bool: b > a; None: every band rises
    rise: np.ndarray  # (B,) b - a where rising, else 1
    falling: np.ndarray | None  # (B,) bool: d > c; None: every band falls
    fall: np.ndarray  # (B,) d - c where falling, else 1
    log_floor: float
    log_prior: np.ndarray  # (C,)
    log_rf: float
    log_min_likelihood: float


@functools.lru_cache(maxsize=8)
def _tables(s: "ClassificationSettings") -> _DecisionTables:
    a, b, c, d = _bands(s)
    cell = np.flatnonzero(~np.isnan(a))
    a, b, c, d = a.ravel()[cell], b.ravel()[cell], c.ravel()[cell], d.ravel()[cell]
    rising, falling = b > a, d > c
    return _DecisionTables(
        feature=cell % len(FEATURE_NAMES), cell=cell, a=a, c=c, d=d,
        rising=None if rising.all() else rising, rise=np.where(rising, b - a, 1.0),
        falling=None if falling.all() else falling, fall=np.where(falling, d - c, 1.0),
        log_floor=float(np.log(s.membership_floor)), log_prior=np.log([m.prior for m in s.models()]),
        log_rf=float(np.log(s.rf_link_likelihood_ratio)),
        log_min_likelihood=float(np.log(max(s.min_likelihood, 1e-300))),
    )


_last_tables: tuple[ClassificationSettings | None, _DecisionTables | None] = (None, None)


def _tables_of(s: ClassificationSettings) -> _DecisionTables:
    """_tables(s), without hashing the settings again while they are the same object."""
    global _last_tables
    if _last_tables[0] is not s:
        _last_tables = (s, _tables(s))
    return _last_tables[1]


@dataclass(frozen=True, eq=False)
class Classification:
    """The classifier's answer for the rows of one TrackUpdate's ``tracks``.

    category (K,) u1 (:class:`~towerd.icd.Category`); confidence (K,) u1, 0–100;
    probability (K, 5) over :data:`CATEGORIES`; features (K,) FEATURE_DTYPE."""

    category: np.ndarray
    confidence: np.ndarray
    probability: np.ndarray
    features: np.ndarray


def decide(f: np.ndarray, s: ClassificationSettings) -> Classification:
    """Posterior over the categories and the decision for feature rows ``f``
    (FEATURE_DTYPE, K rows); see the module docstring."""
    c = decide_matrix(feature_matrix(f), s)
    return Classification(c.category, c.confidence, c.probability, f)


_OBSERVED, _SAMPLES, _RF_LINK = COLUMN["observed_s"], COLUMN["samples"], COLUMN["rf_link"]


def decide_matrix(x: np.ndarray, s: ClassificationSettings) -> Classification:
    """:func:`decide` of a feature matrix (:func:`feature_matrix`'s form, K rows); its
    ``features`` is that matrix."""
    k = len(x)
    t = _tables_of(s)  # settings-only terms, computed once per settings
    # Every band of every category at once: (K, B) memberships, as membership() computes
    # one band at a time; an unknown feature (NaN) adds nothing.
    # No 0/0 (rise and fall are never 0) and no log(0): an unknown feature's NaN only
    # propagates, quietly, and is zeroed at the end.
    xb = x[:, t.feature]
    up = (xb - t.a) / t.rise
    if t.rising is not None:
        up = np.where(t.rising, up, (xb >= t.a).astype(float))
    down = (t.d - xb) / t.fall
    if t.falling is not None:
        down = np.where(t.falling, down, (xb <= t.c).astype(float))
    # log max(clip(m, 0, 1), 1e-300): the clip's lower bound is below 1e-300's
    term = np.minimum(up, down, out=up)
    np.minimum(term, 1.0, out=term)
    np.maximum(term, 1e-300, out=term)
    np.log(term, out=term)
    np.maximum(term, t.log_floor, out=term)
    term[np.isnan(xb)] = 0.0
    # Summed over the features in a (K, C, F) table with zeros where a category is
    # indifferent: the same additions in the same order as over all features.
    table = np.zeros((k, len(CATEGORIES) * len(FEATURE_NAMES)))
    table[:, t.cell] = term
    log_lik = table.reshape(k, len(CATEGORIES), len(FEATURE_NAMES)).sum(axis=2)
    log_p = log_lik + t.log_prior
    rf = x[:, _RF_LINK] != 0
    if rf.any():
        log_p[rf, 0] += t.log_rf
    if k:
        log_p -= log_p.max(axis=1, keepdims=True)
    prob = np.exp(log_p)
    if k:
        prob /= prob.sum(axis=1, keepdims=True)

    top = np.argmax(prob, axis=1)
    at_top = (np.arange(k), top)
    p_top = prob[at_top]
    named = ((x[:, _OBSERVED] >= s.min_observation_s) | rf) & (log_lik[at_top] >= t.log_min_likelihood)  # mature, fits
    named &= (p_top >= s.min_probability) & (x[:, _SAMPLES] > 0)
    if not s.enabled:
        named[:] = False
    category = np.where(named, _CATEGORY_VALUES[top], _UNKNOWN)
    confidence = np.where(named, np.rint(100.0 * p_top), 0).astype(np.uint8)  # p_top in [0, 1]; rint: np.round's
    return Classification(category=category, confidence=confidence, probability=prob, features=x)


_CATEGORY_VALUES = np.asarray([int(c) for c in CATEGORIES], dtype=np.uint8)
_UNKNOWN = np.uint8(Category.UNKNOWN)


class Classifier:
    """Features and decision together: keeps per-track features
    (:class:`~towerd.tracking.features.FeatureTracker`) and classifies every live track
    on every call. The pipeline uses the two halves apart (features every call, the
    decision when a label is needed: :class:`towerd.labeller.Labeller`)."""

    def __init__(self, settings: ClassificationSettings | None = None) -> None:
        self.features = FeatureTracker(settings or ClassificationSettings())

    @property
    def settings(self) -> ClassificationSettings:
        return self.features.settings

    @settings.setter
    def settings(self, settings: ClassificationSettings) -> None:
        self.features.settings = settings

    def update(self, update: TrackUpdate, rf_link: np.ndarray | None = None) -> Classification:
        """Fold the measurements of ``update`` into the features and classify its live
        tracks. ``rf_link`` (K,) bool, aligned with ``update.tracks``: the RF fusion found
        a drone link for the track (None: no RF information)."""
        k = len(update.tracks)
        rf = np.zeros(k, dtype=bool) if rf_link is None else np.asarray(rf_link, dtype=bool)
        if rf.shape != (k,):
            raise ValueError(f"rf_link has shape {rf.shape} for {k} tracks")
        self.features.update(update)
        return self._decide(self.features.features(np.arange(k), rf))

    def _decide(self, f: np.ndarray) -> Classification:
        return decide(f, self.settings)
