"""RF/radar association by timing, radar records annotated with the link, RF-only ICD
records (unknown position, sources RF) and their report policy."""

from __future__ import annotations

import numpy as np
from numpy.testing import assert_allclose

from towerd.clock import ManualClock
from towerd.icd import (
    LAT_LON_UNKNOWN,
    SOURCE_RADAR,
    SOURCE_RF,
    Category,
    MsgType,
    Status,
    decode,
    decode_tracks,
    empty_track_records,
    encode_tracks,
)
from towerd.rf.classify import LinkKind
from towerd.rf.fusion import (
    RULE_NONE,
    RULE_SOLE_CANDIDATE,
    RULE_TIMING,
    FusionSettings,
    RfReportSettings,
    RfTrackReporter,
    annotate_radar_records,
    associate,
    lifetime_jaccard,
    rf_track_records,
)
from towerd.rf.processor import RF_TRACK_ID_BASE
from towerd.rf.tracker import empty_rf_tracks
from towerd.tracking.state import TrackTable


def radar(ids, created, last, status=Status.CONFIRMED) -> TrackTable:
    k = len(ids)
    z = np.zeros(k)
    return TrackTable(
        track_id=np.asarray(ids), status=np.full(k, status), hits=np.full(k, 10), misses=z, hit_history=z,
        state=np.zeros((k, 6)), cov=np.tile(np.eye(6), (k, 1, 1)), t_mono=np.asarray(last, float),
        t_last_update=np.asarray(last, float), t_created=np.asarray(created, float),
    )


def rf(first, last, kind=LinkKind.OFDM_VIDEO, status=Status.CONFIRMED, power=-70.0) -> np.ndarray:
    n = len(first)
    t = empty_rf_tracks(n)
    t["rf_track_id"] = RF_TRACK_ID_BASE + np.arange(n)
    t["status"] = status
    t["kind"] = kind
    t["category"] = Category.UAS
    t["confidence"] = 75
    t["centre_mhz"] = 2445.5 + 20 * np.arange(n)
    t["bandwidth_mhz"] = 20.0
    t["power_dbm"] = power
    t["hits"] = 40
    t["first_seen_mono"] = first
    t["last_seen_mono"] = last
    t["t_mono"] = last
    return t


def test_jaccard_of_lifetimes():
    j, ov = lifetime_jaccard(np.array([0.0, 0.0]), np.array([10.0, 10.0]), np.array([0.0, 5.0]), np.array([10.0, 20.0]))
    assert_allclose(j, [[1.0, 0.25], [1.0, 0.25]])
    assert_allclose(ov, [[10.0, 5.0], [10.0, 5.0]])


def test_a_link_born_with_a_radar_track_is_associated_by_timing():
    r = radar([7, 8], created=[20.0, 100.0], last=[140.0, 140.0])
    f = rf([101.0], [140.0])
    res = associate(r, f, FusionSettings())
    assert res.rf_track_id.tolist() == [0, RF_TRACK_ID_BASE]
    assert res.rule.tolist() == [RULE_NONE, RULE_TIMING]
    assert_allclose(res.rf_freq_mhz[1], 2445.5) and np.isnan(res.rf_freq_mhz[0])
    assert_allclose([res.rf_bw_mhz[1], res.rf_power_dbm[1]], [20.0, -70.0])
    assert res.associated_rf_ids.tolist() == [RF_TRACK_ID_BASE]
    assert len(res.rf_only) == 0


def test_two_radar_tracks_born_together_are_ambiguous():
    r = radar([7, 8], created=[100.0, 101.0], last=[140.0, 140.0])
    res = associate(r, rf([100.5], [140.0]), FusionSettings(ambiguity_margin=0.1))
    assert res.rf_track_id.tolist() == [0, 0]
    assert len(res.rf_only) == 1


def test_too_short_an_overlap_or_a_non_drone_emitter_is_not_associated():
    r = radar([7], created=[100.0], last=[105.0])
    assert associate(r, rf([100.0], [105.0]), FusionSettings(min_overlap_s=10.0)).rf_track_id.tolist() == [0]
    r = radar([7], created=[100.0], last=[140.0])
    for kind in (LinkKind.WIFI_LIKE, LinkKind.CARRIER, LinkKind.UNKNOWN):
        assert associate(r, rf([100.0], [140.0], kind=kind), FusionSettings()).rf_track_id.tolist() == [0]
    assert associate(r, rf([100.0], [140.0], status=Status.TENTATIVE), FusionSettings()).rf_track_id.tolist() == [0]


def test_a_radar_track_classed_as_bird_or_vehicle_never_takes_a_link():
    r = radar([7], created=[100.0], last=[140.0])
    f = rf([100.0], [140.0])
    for cat in (Category.BIRD, Category.GROUND_VEHICLE, Category.PERSON, Category.MANNED_AIRCRAFT):
        assert associate(r, f, FusionSettings(), radar_category=np.array([cat])).rf_track_id.tolist() == [0]
    assert associate(r, f, FusionSettings(), radar_category=np.array([Category.UAS])).rf_track_id.tolist() == [
        RF_TRACK_ID_BASE
    ]


def test_sole_uas_track_and_sole_drone_link_are_associated():
    # The link was heard long before the drone came into radar cover: timing says
    # nothing, but it is the only link and the only uas track.
    r = radar([7, 8], created=[200.0, 300.0], last=[400.0, 400.0])
    f = rf([0.0], [400.0])
    cats = np.array([Category.GROUND_VEHICLE, Category.UAS])
    res = associate(r, f, FusionSettings(), radar_category=cats)
    assert res.rf_track_id.tolist() == [0, RF_TRACK_ID_BASE]
    assert res.rule.tolist() == [RULE_NONE, RULE_SOLE_CANDIDATE]
    # ...not without categories, not with the rule off, not with two uas tracks or two links
    assert associate(r, f, FusionSettings()).rf_track_id.tolist() == [0, 0]
    assert associate(r, f, FusionSettings(sole_candidate=False), radar_category=cats).rf_track_id.tolist() == [0, 0]
    two_uas = np.array([Category.UAS, Category.UAS])
    assert associate(r, f, FusionSettings(), radar_category=two_uas).rf_track_id.tolist() == [0, 0]
    two_links = rf([0.0, 5.0], [400.0, 400.0])
    assert associate(r, two_links, FusionSettings(), radar_category=cats).rf_track_id.tolist() == [0, 0]


def test_video_and_control_link_of_one_drone_go_to_one_radar_track_the_strongest_reported():
    r = radar([7], created=[100.0], last=[160.0])
    f = rf([100.5, 101.0], [160.0, 160.0], power=np.array([-75.0, -62.0]))
    f["kind"][1] = LinkKind.FHSS_CONTROL
    res = associate(r, f, FusionSettings())
    assert res.rf_track_id.tolist() == [RF_TRACK_ID_BASE + 1]
    assert_allclose(res.rf_power_dbm, [-62.0])
    assert res.associated_rf_ids.tolist() == [RF_TRACK_ID_BASE, RF_TRACK_ID_BASE + 1]
    assert len(res.rf_only) == 0


def test_radar_records_get_the_link_and_sources_radar_plus_rf():
    r = radar([7, 8], created=[20.0, 100.0], last=[140.0, 140.0])
    res = associate(r, rf([101.0], [140.0]), FusionSettings())
    rec = empty_track_records(3)
    rec["track_id"] = [8, 7, 99]
    rec["sources"] = SOURCE_RADAR
    annotate_radar_records(rec, res)
    assert rec["sources"].tolist() == [SOURCE_RADAR | SOURCE_RF, SOURCE_RADAR, SOURCE_RADAR]
    assert_allclose(rec["rf_freq_mhz"][0], 2445.5)
    assert_allclose(rec["rf_bw_mhz"][0], 20.0)
    assert_allclose(rec["rf_power_dbm"][0], -70.0)
    assert np.all(np.isnan(rec["rf_freq_mhz"][1:]))


def test_rf_only_records_have_unknown_position_and_sources_rf():
    clock = ManualClock(start_mono=1000.0)
    f = rf([100.0, 110.0], [140.0, 140.0])
    f["kind"][1] = LinkKind.WIFI_LIKE
    f["confidence"][1] = 0
    rec = rf_track_records(f, clock)
    assert rec["sources"].tolist() == [SOURCE_RF, SOURCE_RF]
    assert rec["category"].tolist() == [Category.UAS, Category.UNKNOWN]
    assert rec["confidence"].tolist() == [75, 0]
    assert rec["track_id"].tolist() == [RF_TRACK_ID_BASE, RF_TRACK_ID_BASE + 1]
    assert np.all(rec["lat_e7"] == LAT_LON_UNKNOWN) and np.all(rec["lon_e7"] == LAT_LON_UNKNOWN)
    for name in ("alt_m", "range_m", "azimuth_deg", "elevation_deg", "vel_east_mps", "vel_north_mps",
                 "vel_up_mps", "pos_sigma_m"):
        assert np.all(np.isnan(rec[name])), name
    assert_allclose(rec["rf_freq_mhz"], [2445.5, 2465.5])
    assert_allclose(rec["time_us"], clock.utc_us(140.0))
    # and they survive the ICD codec byte for byte
    rec["seq"] = [1, 2]
    msg = decode(encode_tracks(5, rec))
    assert msg.type == MsgType.TRACKS
    back = decode_tracks(msg)
    assert back.tobytes() == rec.tobytes()


def test_rf_report_policy_first_interval_status_takeover_and_end():
    clock = ManualClock()
    rep = RfTrackReporter(RfReportSettings(interval_s=1.0))
    none = np.zeros(0, dtype=np.uint32)
    f = rf([0.0, 0.0], [0.0, 0.0])
    f["kind"][1] = LinkKind.WIFI_LIKE  # not a drone link: not reported (non_drone off)
    f["status"] = Status.TENTATIVE
    assert len(rep.build(f, empty_rf_tracks(), none, clock)) == 0
    f["status"] = Status.CONFIRMED
    out = rep.build(f, empty_rf_tracks(), none, clock)
    assert out["track_id"].tolist() == [RF_TRACK_ID_BASE]
    f["t_mono"] = 0.5
    assert len(rep.build(f, empty_rf_tracks(), none, clock)) == 0
    f["t_mono"] = 1.0
    assert rep.build(f, empty_rf_tracks(), none, clock)["track_id"].tolist() == [RF_TRACK_ID_BASE]
    f["t_mono"] = 1.2
    f["status"] = Status.COASTING
    assert rep.build(f, empty_rf_tracks(), none, clock)["status"].tolist() == [Status.COASTING]
    # a radar track takes the link over: one ENDED record, then never again
    f["t_mono"] = 5.0
    taken = np.array([RF_TRACK_ID_BASE], dtype=np.uint32)
    out = rep.build(f, empty_rf_tracks(), taken, clock)
    assert out["track_id"].tolist() == [RF_TRACK_ID_BASE] and out["status"].tolist() == [Status.ENDED]
    f["t_mono"] = 9.0
    assert len(rep.build(f, empty_rf_tracks(), none, clock)) == 0
    ended = f[:1].copy()
    ended["status"] = Status.ENDED
    assert len(rep.build(f[1:], ended, none, clock)) == 0


def test_rf_report_policy_ends_a_reported_track_once():
    clock = ManualClock()
    rep = RfTrackReporter(RfReportSettings(interval_s=1.0, non_drone=True))
    none = np.zeros(0, dtype=np.uint32)
    f = rf([0.0], [0.0], kind=LinkKind.CARRIER)
    assert len(rep.build(f, empty_rf_tracks(), none, clock)) == 1  # non_drone: reported
    ended = f.copy()
    ended["status"] = Status.ENDED
    out = rep.build(empty_rf_tracks(), ended, none, clock)
    assert out["status"].tolist() == [Status.ENDED] and out["category"].tolist() == [Category.UNKNOWN]
    assert len(rep.build(empty_rf_tracks(), empty_rf_tracks(), none, clock)) == 0


def test_processor_fusion_and_reports_together():
    # Two RF sensors: a 2.4 GHz OcuSync-like link that comes up with a radar track at
    # t = 10 s, and a 5.8 GHz analog FPV link on since t = 0 that the radar never sees.
    from rf_synth import Emitter, Scene
    from towerd.rf.processor import RfProcessor, RfSettings

    rng = np.random.default_rng(99)
    s24 = Scene(2400.0, 0.25, 335, looks=1, sensor="rfe-a", emitters=[Emitter(2445.5, 20.0, 15.0, first_sweep=20)])
    s58 = Scene(5725.0, 0.5, 301, looks=1, sensor="rfe-b",
                emitters=[Emitter(5806.0, 16.0, 20.0, shape="peaked")])
    proc = RfProcessor(RfSettings())
    clock = ManualClock()
    reporter = RfTrackReporter(RfReportSettings())
    r = radar([3], created=[10.1], last=[10.1])
    rf_records = []
    for k in range(80):
        for scene in (s24, s58):
            update = proc.process(scene.sweep(k, rng, t0=0.01 if scene is s58 else 0.0))
            r.t_last_update[:] = update.t_mono
            fusion = associate(r, update.tracks, RfSettings().fusion)
            rf_records.append(reporter.build(update.tracks, update.ended, fusion.associated_rf_ids, clock))
    assert fusion.rule.tolist() == [RULE_TIMING]
    assert_allclose(fusion.rf_freq_mhz, [2445.5], atol=0.5)
    rec = empty_track_records(1)
    rec["track_id"] = 3
    rec["sources"] = SOURCE_RADAR
    annotate_radar_records(rec, fusion)
    assert rec["sources"][0] == SOURCE_RADAR | SOURCE_RF
    rf_records = np.concatenate(rf_records)
    assert np.all(rf_records["category"] == Category.UAS) and np.all(rf_records["sources"] == SOURCE_RF)
    fpv = rf_records[np.abs(rf_records["rf_freq_mhz"] - 5806.0) < 2]
    assert len(set(fpv["track_id"].tolist())) == 1 and np.all(fpv["status"] == Status.CONFIRMED)
    assert np.all(np.diff(fpv["time_us"]) >= 990_000)  # once a second
    # The OcuSync link is RF-only until its lifetime has overlapped the radar track's for
    # min_overlap_s; then the radar track takes it over: one ENDED record, nothing after.
    ocu = rf_records[np.abs(rf_records["rf_freq_mhz"] - 2445.5) < 2]
    assert len(set(ocu["track_id"].tolist())) == 1
    assert ocu["status"][-1] == Status.ENDED and np.all(ocu["status"][:-1] == Status.CONFIRMED)
    assert len(rf_records) == len(fpv) + len(ocu)


def test_radar_link_fusion_answers_the_pipeline_hook():
    from towerd.rf.fusion import RadarLinkFusion
    from towerd.tracking.labels import RfLink

    r = radar([7, 8], created=[200.0, 300.0], last=[400.0, 400.0])
    f = rf([0.0], [400.0])  # heard long before radar cover: only the sole-candidate rule fits
    hook = RadarLinkFusion(lambda: f, FusionSettings())
    link = hook.associate(r, 400.0)
    assert isinstance(link, RfLink) and link.linked.tolist() == [False, False]
    hook.set_categories(np.array([8, 7]), np.array([Category.UAS, Category.GROUND_VEHICLE]))
    link = hook.associate(r, 400.5)
    assert link.linked.tolist() == [False, True]
    assert_allclose(link.freq_mhz[1], 2445.5) and np.isnan(link.freq_mhz[0])
    assert hook.associated_rf_ids.tolist() == [RF_TRACK_ID_BASE]
    assert hook.last.rule.tolist() == [RULE_NONE, RULE_SOLE_CANDIDATE]


def test_a_link_the_radar_lets_go_is_reported_again_under_a_fresh_id():
    from towerd.rf.tracker import TrackIds

    clock = ManualClock()
    ids = TrackIds(RF_TRACK_ID_BASE + 100)
    rep = RfTrackReporter(RfReportSettings(interval_s=1.0), ids=ids)
    none = np.zeros(0, dtype=np.uint32)
    taken = np.array([RF_TRACK_ID_BASE], dtype=np.uint32)
    f = rf([0.0], [0.0])
    assert rep.build(f, empty_rf_tracks(), none, clock)["track_id"].tolist() == [RF_TRACK_ID_BASE]
    f["t_mono"] = 1.0
    out = rep.build(f, empty_rf_tracks(), taken, clock)
    assert out["status"].tolist() == [Status.ENDED] and out["track_id"].tolist() == [RF_TRACK_ID_BASE]
    f["t_mono"] = 2.0
    assert len(rep.build(f, empty_rf_tracks(), taken, clock)) == 0  # still with the radar track
    f["t_mono"] = 3.0
    out = rep.build(f, empty_rf_tracks(), none, clock)  # the radar track is gone, the link is not
    assert out["track_id"].tolist() == [RF_TRACK_ID_BASE + 100] and out["status"].tolist() == [Status.CONFIRMED]
    f["t_mono"] = 4.0
    assert rep.build(f, empty_rf_tracks(), none, clock)["track_id"].tolist() == [RF_TRACK_ID_BASE + 100]
    ended = f.copy()
    ended["status"] = Status.ENDED
    out = rep.build(empty_rf_tracks(), ended, none, clock)
    assert out["track_id"].tolist() == [RF_TRACK_ID_BASE + 100] and out["status"].tolist() == [Status.ENDED]
    assert ids.next == RF_TRACK_ID_BASE + 101
