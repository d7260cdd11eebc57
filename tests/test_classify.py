"""Classification: memberships, bounded per-track features from track histories, the
decision and its confidence, the RF-link hook, and the settings through the schema."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml
from numpy.testing import assert_allclose

from towerd.detection.plots import Detections
from towerd.icd import Category, Status
from towerd.schema import INVALID, Validator, compose
from towerd.tracking.classify import (
    CATEGORIES,
    CategoryModel,
    ClassificationSettings,
    Classifier,
    FEATURE_DTYPE,
    FEATURE_NAMES,
    membership,
)
from towerd.tracking.state import TrackTable
from towerd.tracking.tracker import TrackUpdate


def test_membership_trapezoid():
    band = (0.0, 2.0, 4.0, 8.0)
    x = np.array([-1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 9.0, np.nan])
    assert_allclose(membership(x, band), [0, 0, 0.5, 1, 1, 1, 0.5, 0, 0, np.nan])
    # A vertical edge (zero_below == full_from) is a step.
    assert_allclose(membership(np.array([-0.1, 0.0, 5.0]), (0.0, 0.0, 1.0, 10.0)), [0.0, 1.0, 5 / 9])


REF_SNR_DB = ClassificationSettings().rcs_reference_snr_db


def update_at(t: float, ids, states, *, rcs_dbsm=None, hit=None) -> TrackUpdate:
    """A TrackUpdate at t with tracks ``ids`` in ``states`` (k, 6); each hit track was
    updated by detection i, whose SNR is what a target of rcs_dbsm[i] gives at its range
    by the radar equation."""
    states = np.asarray(states, dtype=float).reshape(-1, 6)
    k = len(states)
    r = np.linalg.norm(states[:, :3], axis=1)
    snr_db = None if rcs_dbsm is None else REF_SNR_DB + np.asarray(rcs_dbsm) - 40.0 * np.log10(r / 100.0)
    tt = np.full(k, t)
    tracks = TrackTable(np.asarray(ids), np.full(k, Status.CONFIRMED), np.full(k, 10), np.zeros(k),
                        np.full(k, 0b11111), states, np.broadcast_to(np.eye(6), (k, 6, 6)).copy(), tt, tt,
                        np.zeros(k))
    snr = np.full(k, np.nan) if snr_db is None else np.asarray(snr_db, dtype=float)
    det = Detections("radar0", t, states[:, :3].copy(), np.broadcast_to(np.eye(3), (k, 3, 3)).copy(), snr,
                     np.full(k, np.nan))
    det_of = np.arange(k) if hit is None else np.where(hit, np.arange(k), -1)
    return TrackUpdate(t, tracks, TrackTable.empty(), det, det_of)


def test_features_of_a_steady_straight_flight():
    clf = Classifier()
    for k in range(100):  # 10 s at 10 Hz, 10 m/s east, 30 m up, 150 m away
        t = 0.1 * k
        x = [100.0 + 10.0 * t, 110.0, 30.0, 10.0, 0.0, 0.0]
        out = clf.update(update_at(t, [7], [x], rcs_dbsm=[-21.0]))
    f = out.features[0]
    assert_allclose(f["speed_mps"], 10.0)
    assert_allclose([f["speed_cv"], f["speed_change_mps2"], f["turn_rate_dps"], f["climb_sd_mps"]], 0.0, atol=1e-6)
    assert_allclose(f["straightness"], 1.0)
    assert_allclose(f["height_m"], 30.0)
    assert_allclose(f["hover_fraction"], 0.0)
    assert_allclose(f["rcs_dbsm"], -21.0)
    assert np.isnan(f["doppler_spread_mps"])
    assert_allclose(f["observed_s"], 9.9)
    assert f["samples"] == 100 and not f["rf_link"]


def test_turn_rate_speed_change_and_hover_are_measured():
    clf = Classifier()
    w = math.radians(20.0)  # 20 deg/s left turn at 8 m/s
    for k in range(100):
        t = 0.1 * k
        h = w * t
        turning = [0.0, 0.0, 40.0, 8.0 * math.cos(h), 8.0 * math.sin(h), 0.0]
        speed = 6.0 + 3.0 * (k // 10 % 2)  # 6 and 9 m/s in alternate seconds
        surging = [0.0, 0.0, 40.0, speed, 0.0, 0.0]
        hovering = [50.0, 50.0, 30.0, 0.1, -0.2, 0.0]
        out = clf.update(update_at(t, [1, 2, 3], [turning, surging, hovering]))
    f = out.features
    assert_allclose(f["turn_rate_dps"][0], 20.0, rtol=1e-6)
    assert f["straightness"][0] < 0.75  # 100 deg of heading per time constant (5 s)
    assert_allclose(f["speed_change_mps2"][1], 3.0, rtol=1e-6)  # |±3 m/s| every 1 s sample
    assert_allclose(f["hover_fraction"], [0.0, 0.0, 1.0])
    assert np.isnan(f["turn_rate_dps"][2])  # no heading while hovering


def test_feature_averages_do_not_depend_on_the_frame_rate():
    out = {}
    for rate in (5.0, 20.0):
        clf = Classifier()
        for k in range(int(20 * rate)):
            t = k / rate
            x = [0.0, 0.0, 20.0 + 10.0 * (t > 10.0), 5.0 + 0.5 * math.sin(t), 0.0, 0.0]
            out[rate] = clf.update(update_at(t, [1], [x])).features[0]
    for name in ("speed_mps", "height_m", "hover_fraction"):
        assert_allclose(out[5.0][name], out[20.0][name], rtol=0.03, atol=0.05)


def test_state_is_bounded_by_the_live_tracks():
    clf = Classifier()
    for k in range(50):
        ids = np.arange(k, k + 20)  # 20 live tracks, one new and one gone each frame
        clf.update(update_at(0.1 * k, ids, np.tile([0, 0, 10, 1, 0, 0], (20, 1))))
        assert len(clf.features._ids) == 20 and len(clf.features._state) == 20


def classify_after(states_fn, seconds=8.0, *, rcs_dbsm=-20.0, rf=False, settings=None):
    """Run one track for ``seconds`` at 10 Hz with states_fn(t) -> (6,), return (category, confidence)."""
    clf = Classifier(settings)
    for k in range(int(seconds * 10)):
        t = 0.1 * k
        out = clf.update(update_at(t, [1], [states_fn(t)], rcs_dbsm=[rcs_dbsm]), rf_link=np.array([rf]))
    return Category(int(out.category[0])), int(out.confidence[0])


def drone_cruise(t):  # 12 m/s steady at 60 m
    return [100.0 + 12.0 * t, 100.0, 60.0, 12.0, 0.0, 0.0]


def bird(t):  # speed 4-12 m/s changing every 0.5 s, heading wandering, 30 m up
    s = 8.0 + 4.0 * math.sin(7.0 * math.floor(2 * t))
    h = 0.8 * math.sin(1.3 * t) + 0.5 * math.sin(3.1 * t)
    return [100.0, 100.0, 30.0, s * math.sin(h), s * math.cos(h), 0.3 * math.sin(2 * t)]


def car(t):  # 15 m/s on the ground, bright
    return [-100.0 + 15.0 * t, 80.0, 0.5, 15.0, 0.0, 0.0]


def walker(t):
    return [30.0 + 1.4 * t, 40.0, 0.0, 1.4, 0.0, 0.0]


def airliner(t):
    return [0.0, 2000.0 + 70 * t, 900.0, 0.0, 70.0, 0.0]


def hover(t):
    return [40.0, 120.0, 25.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    "states, rcs_dbsm, expected",
    [
        (drone_cruise, -20.0, Category.UAS),
        (hover, -18.0, Category.UAS),  # hovering 25 m up: birds cannot hover
        (bird, -25.0, Category.BIRD),
        (car, 10.0, Category.GROUND_VEHICLE),
        (walker, -3.0, Category.PERSON),
        (airliner, 30.0, Category.MANNED_AIRCRAFT),
    ],
)
def test_categories_from_kinematics_and_rcs(states, rcs_dbsm, expected):
    category, confidence = classify_after(states, rcs_dbsm=rcs_dbsm)
    assert category == expected, (category, confidence)
    assert 50 <= confidence <= 100


def test_unknown_while_young_or_fitting_nothing_and_rf_link_decides():
    # Too young: unknown, confidence 0.
    assert classify_after(drone_cruise, seconds=2.0) == (Category.UNKNOWN, 0)
    # An RF drone link names it at once, even young.
    category, confidence = classify_after(drone_cruise, seconds=1.0, rf=True)
    assert category == Category.UAS and confidence >= 80
    # A lamp post: still, bright (+10 dBsm), 8 m up: fits no category well.
    assert classify_after(lambda t: [15.0, 40.0, 8.0, 0.0, 0.0, 0.0], rcs_dbsm=10.0)[0] == Category.UNKNOWN
    # A slow steady flyer is ambiguous between a drone and a bird; an RF link tips it.
    slow = lambda t: [0.0, 100.0 + 4.0 * t, 30.0, 0.0, 4.0, 0.0]  # noqa: E731
    plain = classify_after(slow, rcs_dbsm=-22.0)
    linked = classify_after(slow, rcs_dbsm=-22.0, rf=True)
    assert linked[0] == Category.UAS and linked[1] > max(plain[1], 50)
    # Classification disabled: unknown.
    assert classify_after(drone_cruise, settings=ClassificationSettings(enabled=False)) == (Category.UNKNOWN, 0)


def test_classification_is_vectorised_over_tracks():
    clf = Classifier()
    fns = (drone_cruise, bird, car)
    for k in range(80):
        t = 0.1 * k
        out = clf.update(update_at(t, [3, 5, 9], [f(t) for f in fns], rcs_dbsm=[-20.0, -25.0, 10.0]))
    assert [Category(c) for c in out.category] == [Category.UAS, Category.BIRD, Category.GROUND_VEHICLE]
    assert out.probability.shape == (3, len(CATEGORIES))
    assert_allclose(out.probability.sum(axis=1), 1.0)
    with pytest.raises(ValueError):
        clf.update(update_at(8.0, [3], [drone_cruise(8.0)]), rf_link=np.array([True, False]))


def build(cls, text):
    root, problems = compose(text, "test.yaml")
    assert not problems
    v = Validator()
    return v.build(root, cls), [p.format("test.yaml") for p in v.problems]


def test_settings_through_the_schema():
    value, problems = build(ClassificationSettings, yaml.safe_dump({
        "min_observation_s": 2.0,
        "bird": {"speed_mps": [1, 3, 18, 25], "hover_fraction": None},
        "uas": {"prior": 2.0},
    }))
    assert problems == []
    assert value.bird.speed_mps == (1.0, 3.0, 18.0, 25.0) and value.bird.hover_fraction is None
    assert value.uas.prior == 2.0 and value.uas.speed_mps is None  # a section given replaces the defaults
    _, problems = build(ClassificationSettings, "bird:\n  speed_mps: [5, 3, 18, 25]\n")
    assert problems and "non-decreasing" in problems[0]
    value, problems = build(ClassificationSettings, "min_probability: 1.5\n")
    assert value is INVALID and "out of range" in problems[0]
    with pytest.raises(ValueError):
        CategoryModel(speed_mps=(1.0, 1.0, 1.0, 1.0))


def test_vectorised_decision_equals_band_by_band_memberships():
    """_decide computes every category's bands at once; its log-likelihoods must equal
    the sum of membership() over the bands one by one (the definition)."""
    settings = ClassificationSettings()
    rng = np.random.default_rng(0)
    f = np.zeros(300, dtype=FEATURE_DTYPE)
    for name in FEATURE_DTYPE.names:
        if f[name].dtype.kind == "f":
            values = rng.uniform(-50.0, 100.0, len(f))
            values[rng.random(len(f)) < 0.2] = np.nan
            f[name] = values
    f["samples"], f["observed_s"] = 3, 10.0
    floor = math.log(settings.membership_floor)
    log_lik = np.zeros((len(f), len(settings.models())))
    for c, model in enumerate(settings.models()):
        for name in FEATURE_NAMES:
            band = getattr(model, name)
            if band is not None:
                m = membership(f[name], band)
                log_lik[:, c] += np.where(np.isnan(m), 0.0, np.maximum(np.log(np.maximum(m, 1e-300)), floor))
    log_p = log_lik + np.log([m.prior for m in settings.models()])
    expected = np.exp(log_p - log_p.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    assert_allclose(Classifier(settings)._decide(f).probability, expected, rtol=1e-12, atol=1e-15)
