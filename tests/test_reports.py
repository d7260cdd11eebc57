"""Track reports: TrackUpdate -> ICD v1 TRACKS records, and the reporting policy."""

from __future__ import annotations

import numpy as np
from numpy.testing import assert_allclose

from towerd import geo
from towerd.clock import ManualClock
from towerd.icd import LAT_LON_UNKNOWN, SOURCE_RADAR, SOURCE_RF, TRACK_RECORD_DTYPE, Category, Status, Threat
from towerd.reports.tracks import TrackReporter
from towerd.tracking.labels import RfLink, TrackLabels
from towerd.tracking.state import TrackTable
from towerd.tracking.tracker import TrackUpdate

SITE = geo.Site(latitude_deg=31.7619, longitude_deg=-106.4850, height_m=1150.0)


def table(ids, statuses, t, *, states=None, hits=None, pos_var=(4.0, 9.0)) -> TrackTable:
    k = len(ids)
    if states is None:
        states = np.array([[100.0 * (i + 1), -50.0 * i, 30.0 + i, 1.0, 2.0, 0.5] for i in range(k)])
    cov = np.broadcast_to(np.diag([pos_var[0], pos_var[1], 16.0, 1.0, 1.0, 1.0]), (k, 6, 6)).copy()
    tt = np.full(k, float(t))
    return TrackTable(
        track_id=np.asarray(ids),
        status=np.asarray([int(s) for s in statuses]),
        hits=np.full(k, 5) if hits is None else np.asarray(hits),
        misses=np.zeros(k),
        hit_history=np.full(k, 0b11111),
        state=np.asarray(states, dtype=float),
        cov=cov,
        t_mono=tt,
        t_last_update=tt,
        t_created=np.zeros(k),
    )


def update(t, live, ended=None) -> TrackUpdate:
    return TrackUpdate(t_mono=t, tracks=live, ended=TrackTable.empty() if ended is None else ended)


def test_record_fields_and_position_round_trip():
    clock = ManualClock(start_mono=100.0)
    rep = TrackReporter(SITE)
    states = np.array(
        [
            [1234.5, -2345.6, 87.3, 10.0, -4.0, 0.5],
            [-3000.0, 150.0, 400.0, -20.0, 1.0, -1.5],
            [0.0, -800.0, 5.0, 0.0, 0.0, 0.0],  # due south: azimuth 180
        ]
    )
    live = table([7, 8, 9], [Status.CONFIRMED, Status.COASTING, Status.CONFIRMED], 100.25, states=states,
                 hits=[3, 70000, 12])
    rec = rep.build(update(100.25, live), clock)
    assert rec.dtype == TRACK_RECORD_DTYPE and rec.dtype.itemsize == 80
    assert rec["track_id"].tolist() == [7, 8, 9]
    assert rec["status"].tolist() == [Status.CONFIRMED, Status.COASTING, Status.CONFIRMED]
    assert np.all(rec["seq"] == 0)
    assert np.all(rec["time_us"] == clock.utc_us(100.25))
    assert np.all(rec["category"] == Category.UNKNOWN) and np.all(rec["confidence"] == 0)
    assert np.all(rec["threat"] == Threat.NONE) and np.all(rec["sources"] == SOURCE_RADAR)
    assert np.all(rec["reserved"] == 0)
    assert rec["hits"].tolist() == [3, 65535, 12]  # saturating

    # lat/lon/alt convert back to the track position within 5 cm.
    back = geo.geodetic_to_enu(SITE, rec["lat_e7"] / 1e7, rec["lon_e7"] / 1e7, rec["alt_m"].astype(float))
    assert np.max(np.linalg.norm(back - states[:, :3], axis=1)) < 0.05
    assert_allclose(rec["lat_e7"], np.round(geo.enu_to_geodetic(SITE, states[:, :3])[0] * 1e7), atol=0)

    # Range / azimuth (true north, clockwise) / elevation from the reference point.
    assert_allclose(rec["range_m"], np.linalg.norm(states[:, :3], axis=1), rtol=1e-6)
    horiz = np.hypot(states[:, 0], states[:, 1])
    assert_allclose(rec["azimuth_deg"], np.degrees(np.arctan2(states[:, 0], states[:, 1])) % 360.0, rtol=1e-6)
    assert_allclose(rec["azimuth_deg"][2], 180.0, rtol=1e-7)
    assert_allclose(rec["elevation_deg"], np.degrees(np.arctan2(states[:, 2], horiz)), rtol=1e-6)
    assert_allclose(rec["vel_east_mps"], states[:, 3])
    assert_allclose(rec["vel_north_mps"], states[:, 4])
    assert_allclose(rec["vel_up_mps"], states[:, 5])
    assert_allclose(rec["pos_sigma_m"], np.sqrt((4.0 + 9.0) / 2.0), rtol=1e-6)
    for name in ("rf_freq_mhz", "rf_bw_mhz", "rf_power_dbm"):
        assert np.all(np.isnan(rec[name]))


def test_azimuth_stays_below_360_after_rounding_to_f32():
    rep = TrackReporter(SITE)
    live = table([1], [Status.CONFIRMED], 0.0, states=[[-1e-9, 1000.0, 0.0, 0, 0, 0]])
    rec = rep.build(update(0.0, live), ManualClock())
    assert 0.0 <= rec["azimuth_deg"][0] < 360.0


def test_a_few_records_are_the_bytes_of_many():
    """Up to 8 records take the plain-Python geometry, more the arrays': the same bytes."""
    rng = np.random.default_rng(11)
    k = 30
    states = np.column_stack([rng.uniform(-8e3, 8e3, k), rng.uniform(-8e3, 8e3, k), rng.uniform(-50.0, 900.0, k),
                              rng.normal(0.0, 10.0, (k, 3))])
    states[0, :3] = [-1e-9, 1000.0, 0.0]  # an azimuth that rounds to 360 in f32
    live = table(list(range(1, k + 1)), [Status.CONFIRMED] * k, 3.0, states=states)
    rep = TrackReporter(SITE)
    many = rep.records(live, ManualClock())
    for rows in (np.arange(8), np.arange(8, 15), np.arange(29, 30)):
        few = rep.records(live.select(rows), ManualClock())
        assert few.tobytes() == many[rows].tobytes()


def test_interval_and_status_change_policy():
    clock = ManualClock()
    rep = TrackReporter(SITE, interval_s=1.0)
    C, K, T = Status.CONFIRMED, Status.COASTING, Status.TENTATIVE

    def ids_at(t, ids, statuses):
        return rep.build(update(t, table(ids, statuses, t)), clock)["track_id"].tolist()

    assert ids_at(0.0, [1, 2], [T, C]) == [2]  # tentative not reported; confirmed at once
    assert ids_at(0.1, [1, 2], [C, C]) == [1]  # 1 just confirmed: reported at once
    assert ids_at(0.5, [1, 2], [C, C]) == []
    # Frame times accumulated in float (0.1 · k) still give a report every 1.0 s.
    t = sum([0.1] * 10)  # 0.9999999999999999
    assert ids_at(t, [1, 2], [C, C]) == [2]
    assert ids_at(1.05, [1, 2], [C, C]) == []
    assert ids_at(1.1, [1, 2], [C, C]) == [1]
    assert ids_at(1.2, [1, 2], [C, K]) == [2]  # status change: at once
    assert ids_at(1.3, [1, 2], [C, C]) == [2]  # and back
    assert ids_at(2.0, [1, 2], [C, C]) == []  # the interval runs from the last report
    assert ids_at(2.1, [1, 2], [C, C]) == [1]
    assert ids_at(2.3, [1, 2], [C, C]) == [2]
    assert ids_at(2.4, [2], [C]) == []  # 1 vanished without an ENDED (not this reporter's business)
    assert ids_at(3.3, [1, 2], [C, C]) == [1, 2]  # ...and is forgotten: reported anew


def test_include_tentative():
    rep = TrackReporter(SITE, include_tentative=True)
    rec = rep.build(update(0.0, table([1], [Status.TENTATIVE], 0.0)), ManualClock())
    assert rec["status"].tolist() == [Status.TENTATIVE]
    # Then dropped: it was reported, so it gets its ENDED record.
    ended = table([1], [Status.ENDED], 0.0)
    rec = rep.build(update(0.3, TrackTable.empty(), ended), ManualClock())
    assert rec["track_id"].tolist() == [1] and rec["status"].tolist() == [Status.ENDED]


def test_ended_record_only_for_reported_tracks():
    clock = ManualClock()
    rep = TrackReporter(SITE)
    rep.build(update(1.0, table([4, 5], [Status.CONFIRMED, Status.TENTATIVE], 1.0)), clock)
    # Track 4 coasted and ended with its last state at t = 2.0; tentative 5 was dropped.
    last = table([4, 5], [Status.ENDED, Status.ENDED], 2.0,
                 states=[[10.0, 20.0, 30.0, 1.0, 1.0, 0.0], [50.0, 50.0, 5.0, 0.0, 0.0, 0.0]])
    rec = rep.build(update(5.5, TrackTable.empty(), last), clock)
    assert rec["track_id"].tolist() == [4]
    assert rec["status"].tolist() == [Status.ENDED]
    assert rec["time_us"].tolist() == [clock.utc_us(2.0)]  # the time of its last state
    back = geo.geodetic_to_enu(SITE, rec["lat_e7"] / 1e7, rec["lon_e7"] / 1e7, rec["alt_m"].astype(float))
    assert np.linalg.norm(back[0] - [10.0, 20.0, 30.0]) < 0.05
    # Nothing is remembered of ended tracks.
    assert len(rep.build(update(6.0, TrackTable.empty(), last), clock)) == 0


def test_records_mix_live_and_ended_with_their_own_times():
    clock = ManualClock(utc_epoch_us=1_750_000_000_000_000)
    rep = TrackReporter(SITE)
    rep.build(update(1.0, table([1, 2], [Status.CONFIRMED, Status.CONFIRMED], 1.0)), clock)
    live = table([1, 3], [Status.CONFIRMED, Status.CONFIRMED], 2.5)
    ended = table([2], [Status.ENDED], 1.75)
    rec = rep.build(update(2.5, live, ended), clock)
    assert rec["track_id"].tolist() == [1, 3, 2]
    assert rec["status"].tolist() == [Status.CONFIRMED, Status.CONFIRMED, Status.ENDED]
    assert rec["time_us"].tolist() == [clock.utc_us(2.5), clock.utc_us(2.5), clock.utc_us(1.75)]
    assert rec["time_us"][2] == 1_750_000_001_750_000


def test_non_finite_position_reported_as_unknown():
    rep = TrackReporter(SITE)
    live = table([1], [Status.CONFIRMED], 0.0, states=[[np.nan, 0.0, 0.0, 1.0, 0.0, 0.0]])
    rec = rep.build(update(0.0, live), ManualClock())
    assert rec["lat_e7"][0] == LAT_LON_UNKNOWN and rec["lon_e7"][0] == LAT_LON_UNKNOWN
    assert np.isnan(rec["alt_m"][0]) and np.isnan(rec["range_m"][0])


def labels(k, *, category=None, confidence=None, threat=None, reportable=None, rf=None) -> TrackLabels:
    base = TrackLabels.unknown(k)
    return TrackLabels(
        category=base.category if category is None else np.asarray(category, dtype=np.uint8),
        confidence=base.confidence if confidence is None else np.asarray(confidence, dtype=np.uint8),
        threat=base.threat if threat is None else np.asarray(threat, dtype=np.uint8),
        reportable=base.reportable if reportable is None else np.asarray(reportable, dtype=bool),
        rf=base.rf if rf is None else rf,
    )


def test_category_and_threat_changes_are_reported_at_once_confidence_alone_is_not():
    clock = ManualClock()
    rep = TrackReporter(SITE, interval_s=1.0)
    C = Status.CONFIRMED
    U, B = Category.UAS, Category.BIRD

    def ids_at(t, cat, conf, thr):
        return rep.build(update(t, table([1, 2], [C, C], t)), clock,
                         labels(2, category=cat, confidence=conf, threat=thr))["track_id"].tolist()

    assert ids_at(0.0, [0, 0], [0, 0], [0, 0]) == [1, 2]
    assert ids_at(0.1, [U, 0], [60, 0], [0, 0]) == [1]  # category named
    assert ids_at(0.2, [U, 0], [75, 0], [0, 0]) == []  # confidence alone: at the interval
    assert ids_at(0.3, [U, 0], [75, 0], [0, Threat.LOW]) == [2]  # threat
    assert ids_at(0.4, [B, 0], [55, 0], [0, Threat.LOW]) == [1]  # category changed
    rec = rep.build(update(1.4, table([1, 2], [C, C], 1.4)), clock,
                    labels(2, category=[B, U], confidence=[55, 80], threat=[0, Threat.HIGH]))
    assert rec["track_id"].tolist() == [1, 2]
    assert rec["category"].tolist() == [B, U] and rec["confidence"].tolist() == [55, 80]
    assert rec["threat"].tolist() == [Threat.NONE, Threat.HIGH]


def test_static_clutter_is_never_reported_and_gets_no_ended_record():
    clock = ManualClock()
    rep = TrackReporter(SITE)
    C = Status.CONFIRMED
    for k in range(20):
        t = 0.5 * k
        rec = rep.build(update(t, table([1, 2], [C, C], t)), clock, labels(2, reportable=[False, True]))
        assert set(rec["track_id"].tolist()) <= {2}
    last = table([1, 2], [Status.ENDED, Status.ENDED], 10.0)
    rec = rep.build(update(10.0, TrackTable.empty(), last), clock)
    assert rec["track_id"].tolist() == [2]


def test_a_reported_track_stays_reported_and_its_ended_record_keeps_its_labels():
    clock = ManualClock()
    rep = TrackReporter(SITE)
    C = Status.CONFIRMED
    rf = RfLink(np.array([True]), np.array([2459.5]), np.array([10.0]), np.array([-62.5]))
    rec = rep.build(update(0.0, table([5], [C], 0.0)), clock,
                    labels(1, category=[Category.UAS], confidence=[93], threat=[Threat.HIGH], rf=rf))
    assert rec["sources"].tolist() == [SOURCE_RADAR | SOURCE_RF]
    assert_allclose([rec["rf_freq_mhz"][0], rec["rf_bw_mhz"][0], rec["rf_power_dbm"][0]], [2459.5, 10.0, -62.5])
    # Later marked not reportable: it was reported, so it goes on being reported.
    rec = rep.build(update(1.0, table([5], [C], 1.0)), clock,
                    labels(1, category=[Category.UAS], confidence=[93], threat=[Threat.HIGH], rf=rf,
                           reportable=[False]))
    assert rec["track_id"].tolist() == [5]
    ended = rep.build(update(5.0, TrackTable.empty(), table([5], [Status.ENDED], 2.0)), clock)
    assert ended["status"].tolist() == [Status.ENDED]
    assert (ended["category"][0], ended["confidence"][0], ended["threat"][0]) == (Category.UAS, 93, Threat.HIGH)
    assert ended["sources"][0] == SOURCE_RADAR | SOURCE_RF and ended["rf_freq_mhz"][0] == np.float32(2459.5)
