"""Remote ID fusion (towerd.identity): broadcasts built as RemoteIdReading objects,
radar tracks from the real tracker fed with noisy detections, an injected clock.

Geometry: tower at SITE; one radar at 10 m up looking north (120° wide, 400 m reach);
receivers hear 1 km around. North of the tower within 400 m is radar coverage; south of
it only the receivers reach."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from numpy.testing import assert_allclose

from towerd.clock import ManualClock
from towerd.config import parse_config
from towerd.detection.plots import Detections, SensorMount
from towerd.drivers.measurements import RemoteIdReading, RidSource
from towerd.geo import Site, enu_to_geodetic, geodetic_to_enu
from towerd.icd import SOURCE_RADAR, SOURCE_REMOTE_ID, Category, Status, Threat
from towerd.identity import EVENT_MISMATCH, EVENT_NON_COOPERATIVE, ID_ONLY_TRACK_ID_BASE, RemoteIdFusion
from towerd.identity.assign import assign
from towerd.identity.broadcasts import K1, K2, broadcasts
from towerd.identity.coverage import RadarCoverage
from towerd.identity.gating import gates, mahalanobis
from towerd.identity.settings import RadarCoverageSettings, RemoteIdSettings
from towerd.identity.transmitters import TransmitterTable, sanitize
from towerd.reports.identity import IdentityStatus
from towerd.reports.tracks import TrackReporter
from towerd.tracking.associator import GnnAssociator
from towerd.tracking.deleter import MissDeleter
from towerd.tracking.initiator import MofNInitiator
from towerd.tracking.models import ConstantVelocity
from towerd.tracking.predictor import KalmanPredictor
from towerd.tracking.state import TrackTable
from towerd.tracking.tracker import Tracker
from towerd.tracking.updater import KalmanUpdater

SITE = Site(27.5, -99.5, 130.0)
MOUNT = SensorMount((0.0, 0.0, 10.0), 0.0)
SETTINGS = RemoteIdSettings(
    radar_coverage=RadarCoverageSettings(fov_azimuth_deg=120.0, fov_elevation_deg=60.0, max_range_m=400.0),
    receiver_range_m=1000.0, mismatch_after_s=5.0, non_cooperative_after_s=8.0, identity_interval_s=5.0,
)
MAC = "60:60:1f:00:00:01"
SERIAL = "1581F5FJD23A800000A1"
PILOT = (27.4995, -99.5012)


def reading(t: float, enu, vel=(0.0, 0.0, 0.0), *, mac: str = MAC, h_acc: float = 10.0, v_acc: float = 15.0,
            speed_acc: float = 1.0, **fields) -> RemoteIdReading:
    """One F3411 Location message (with Basic ID and System fields) from a drone at ``enu``."""
    lat, lon, h = enu_to_geodetic(SITE, np.asarray(enu, float)[None, :])
    ve, vn, vu = vel
    base = dict(source=RidSource.BLUETOOTH_LEGACY, rssi_dbm=-70.0, uas_id=SERIAL, id_type=1, ua_type=2,
                lat_deg=float(lat[0]), lon_deg=float(lon[0]), alt_geo_m=float(h[0]),
                speed_mps=math.hypot(ve, vn), course_deg=math.degrees(math.atan2(ve, vn)) % 360.0,
                vertical_speed_mps=vu, h_accuracy_m=h_acc, v_accuracy_m=v_acc, speed_accuracy_mps=speed_acc,
                operator_lat_deg=PILOT[0], operator_lon_deg=PILOT[1], operator_alt_m=131.0)
    base.update(fields)
    return RemoteIdReading(sensor="rid0", t_mono=t, transmitter=mac, **base)


class Radar:
    """The real tracker (Kalman CV, gated GNN, 3-of-5, miss deleter) on detections of
    the given truth positions with 2 m noise per axis."""

    def __init__(self, seed: int = 1) -> None:
        self.tracker = Tracker(KalmanPredictor(ConstantVelocity(3.0)), KalmanUpdater(), GnnAssociator(0.999),
                               MofNInitiator(3, 5, initial_velocity_sigma_mps=20.0),
                               MissDeleter(tentative_max_misses=2, confirmed_max_coast_s=3.0, coast_after_s=0.5))
        self.rng = np.random.default_rng(seed)

    def frame(self, t: float, truths) -> object:
        p = np.asarray(truths, dtype=float).reshape(-1, 3)
        n = len(p)
        det = Detections("radar0", t, p + self.rng.normal(0.0, 2.0, p.shape), np.tile(np.eye(3) * 4.0, (n, 1, 1)),
                         np.full(n, 20.0), np.full(n, np.nan))
        return self.tracker.step(det)


class Tower:
    """Radar, reporter and fusion run as the pipeline runs them, every track classed
    ``category`` (the classifier is not under test here)."""

    def __init__(self, settings: RemoteIdSettings = SETTINGS, category: Category = Category.UAS,
                 listening: bool = True) -> None:
        self.clock = ManualClock()
        self.radar = Radar()
        self.reporter = TrackReporter(SITE)
        self.fusion = RemoteIdFusion(settings, SITE, {"radar0": MOUNT}, self.clock, listening=listening)
        self.category = category
        self.records: list[np.ndarray] = []
        self.events: list[tuple] = []
        self.identities: list = []

    def run(self, t0: float, t1: float, drone, broadcast=None, period_s: float = 1.0) -> None:
        """10 Hz radar frames of ``drone(t)`` (None: not seen); every ``period_s`` the
        reading ``broadcast(t)`` (None: silent)."""
        for k in range(round((t1 - t0) * 10)):
            t = t0 + 0.1 * k
            self.clock.advance(t - self.clock.monotonic())
            if broadcast is not None and abs(round(t / period_s) * period_s - t) < 1e-6:
                r = broadcast(t)
                if r is not None:
                    self.records.append(self.fusion.ingest(r))
            truths = drone(t) if drone is not None else None
            update = self.radar.frame(t, [] if truths is None else truths)
            cats = np.full(len(update.tracks), self.category, dtype=np.uint8)
            rec = self.reporter.build(update, self.clock)
            self.records.append(self.fusion.on_radar(update, cats, rec))
            self.records.append(self.fusion.expire(t))
            self.events += self.fusion.pop_events()
            self.identities += self.fusion.pop_identities()

    @property
    def all_records(self) -> np.ndarray:
        return np.concatenate(self.records)


def moving(start, vel):
    start, vel = np.asarray(start, float), np.asarray(vel, float)
    return lambda t: start + vel * t


def test_a_broadcast_is_merged_per_transmitter_from_partial_messages():
    table = TransmitterTable(timeout_s=5.0)
    basic = RemoteIdReading("rid0", 1.0, "AA:BB:CC:DD:EE:01", RidSource.WIFI_NAN, uas_id=SERIAL, id_type=1, ua_type=2)
    loc = reading(1.5, (10.0, 20.0, 30.0), mac="aa:bb:cc:dd:ee:01", uas_id="", id_type=0, ua_type=0,
                  operator_lat_deg=math.nan, operator_lon_deg=math.nan, source=RidSource.UNKNOWN)
    system = RemoteIdReading("rid0", 2.0, "aa:bb:cc:dd:ee:01", operator_lat_deg=PILOT[0], operator_lon_deg=PILOT[1],
                             operator_id="FIN87astrdge12k8")
    for r in (basic, loc, system):
        table.merge(r)
    assert len(table) == 1
    tx = table.by_key["aa:bb:cc:dd:ee:01"]
    m = tx.merged
    assert (m.uas_id, m.id_type, m.ua_type, m.source, m.operator_id) == (SERIAL, 1, 2, RidSource.WIFI_NAN,
                                                                        "FIN87astrdge12k8")
    assert_allclose([m.lat_deg, m.lon_deg, m.operator_lat_deg], [loc.lat_deg, loc.lon_deg, PILOT[0]])
    assert (tx.t_first, tx.t_heard, tx.t_position, tx.positions) == (1.0, 2.0, 1.5, 1)
    # A reading with neither MAC nor UAS ID cannot be merged: counted, dropped.
    assert table.merge(RemoteIdReading("rid0", 2.0, "")) is None and table.unkeyed == 1
    assert table.expire(6.9) == [] and [t.key for t in table.expire(7.0)] == ["aa:bb:cc:dd:ee:01"]
    # What cannot be true is unknown: half a position is none, a reading without one is left as it is.
    half = sanitize(RemoteIdReading("rid0", 3.0, MAC, lat_deg=27.0, alt_geo_m=1e6, h_accuracy_m=-3.0))
    assert math.isnan(half.lat_deg) and math.isnan(half.alt_geo_m) and math.isnan(half.h_accuracy_m)
    assert sanitize(basic) is basic


def test_mahalanobis_distance_combines_track_covariance_and_broadcast_accuracy():
    table = TransmitterTable(10.0)
    tx = table.merge(reading(2.0, (100.0, 200.0, 50.0), (3.0, 4.0, 0.0), h_acc=12.0, v_acc=20.0, speed_acc=2.0))
    bc = broadcasts([tx], SITE, SETTINGS)
    x = np.array([[104.0, 206.0, 45.0, 2.0, 5.5, 0.0]])
    p = np.diag([9.0, 16.0, 25.0, 1.0, 2.0, 1.0])
    p[0, 3] = p[3, 0] = 0.5
    tracks = TrackTable([7], [Status.CONFIRMED], [5], [0], [31], x, p[None], [2.5], [2.5], [0.0])
    dt = 0.5
    z = bc.z[0] + dt * np.array([bc.z[0, 3], bc.z[0, 4], 0.0, 0.0, 0.0])
    sh2 = (12.0 / K2) ** 2 + 5.0**2 * SETTINGS.latency_s**2 / 3.0
    sv2 = (2.0 / K2) ** 2
    r = np.diag([sh2 + dt**2 * sv2, sh2 + dt**2 * sv2, (20.0 / K1) ** 2, sv2, sv2])
    y = z - x[0, :5]
    expected = y @ np.linalg.solve(p[:5, :5] + r, y)
    assert_allclose(bc.z[0, 3:], [3.0, 4.0], atol=1e-9)
    assert_allclose(mahalanobis(bc, tracks), [[expected]], rtol=1e-9)
    assert_allclose(gates(bc, 0.999), [20.515], atol=1e-3)  # χ²₅(0.999)
    # Without altitude or velocity the components drop out and the gate has 2 dof.
    tx2 = table.merge(reading(3.0, (100.0, 200.0, 50.0), mac="aa:00:00:00:00:02", alt_geo_m=math.nan,
                              speed_mps=math.nan))
    bc2 = broadcasts([tx2], SITE, SETTINGS)
    assert bc2.known[0].tolist() == [True, True, False, False, False]
    assert_allclose(gates(bc2, 0.999), [13.8155], atol=1e-3)


def test_assignment_is_global_and_forbids_pairs_outside_the_gate():
    d2 = np.array([[1.0, 2.0], [1.5, 30.0]])
    # Nearest-first would give broadcast 0 track 0 and leave broadcast 1 without; GNN swaps.
    assert assign(d2, np.array([16.0, 16.0])).tolist() == [1, 0]
    assert assign(d2, np.array([16.0, 16.0]), eligible=np.array([True, False])).tolist() in ([0, -1], [-1, 0])
    assert assign(np.array([[20.0]]), np.array([16.0])).tolist() == [-1]


def test_radar_coverage_is_the_field_of_view_shrunk_by_the_accuracy():
    cov = RadarCoverage([(MOUNT, RadarCoverageSettings(fov_azimuth_deg=120.0, fov_elevation_deg=60.0,
                                                         max_range_m=400.0))])
    pts = np.array([[0.0, 200.0, 50.0], [0.0, -200.0, 50.0], [0.0, 395.0, 10.0], [300.0, 100.0, 10.0]])
    assert cov.covers(pts).tolist() == [True, False, True, False]  # ahead, behind, edge, 71° off boresight
    assert cov.covers(pts, margin_m=10.0).tolist() == [True, False, False, False]
    # Two radars, each with its own limits: a rotating one all round to 1 km, behind the first.
    both = RadarCoverage([(MOUNT, RadarCoverageSettings(max_range_m=400.0)),
                          (SensorMount((0.0, 0.0, 15.0), 180.0), RadarCoverageSettings(fov_azimuth_deg=360.0,
                                                                                     max_range_m=1000.0))])
    assert both.covers(np.array([[0.0, -800.0, 60.0], [0.0, -1200.0, 60.0]])).tolist() == [True, False]


def test_matched_radar_track_carries_the_identity():
    tower = Tower()
    drone = moving((50.0, 150.0, 60.0), (4.0, 3.0, 0.0))
    tower.run(0.0, 12.0, lambda t: drone(t), lambda t: reading(t, drone(t), (4.0, 3.0, 0.0)))
    rec = tower.all_records
    radar = rec[rec["track_id"] < ID_ONLY_TRACK_ID_BASE]
    confirmed = radar[radar["status"] == Status.CONFIRMED]
    assert len(confirmed) >= 8 and len(np.unique(confirmed["track_id"])) == 1
    # From the first broadcast after confirmation on, every record says radar + remote id.
    assert np.all(confirmed["sources"][2:] == SOURCE_RADAR | SOURCE_REMOTE_ID), confirmed["sources"]
    assert not np.any(rec["track_id"] >= ID_ONLY_TRACK_ID_BASE)
    tid = int(confirmed["track_id"][0])
    idents = [i for i in tower.identities if i.track_id == tid]
    assert idents and all(i.status == IdentityStatus.COOPERATIVE for i in idents)
    last = idents[-1]
    assert (last.uas_id, last.id_type, last.ua_type, last.source) == (SERIAL, 1, 2, RidSource.BLUETOOTH_LEGACY)
    assert_allclose([last.operator_lat_deg, last.operator_lon_deg], PILOT)
    assert last.last_heard_us <= last.time_us and last.last_heard_us > 0
    # On change (first) and every identity_interval_s (5 s) after it: 2 or 3 in 12 s, not one per frame.
    assert 2 <= len(idents) <= 3
    assert tower.events == []


def test_gate_follows_the_broadcast_accuracy():
    drone = moving((0.0, 200.0, 60.0), (0.0, 0.0, 0.0))
    offset = np.array([30.0, 0.0, 0.0])  # the broadcast is 30 m east of where the radar sees the drone
    for h_acc, matched in ((10.0, False), (150.0, True)):
        tower = Tower()
        tower.run(0.0, 6.0, drone, lambda t: reading(t, drone(t) + offset, h_acc=h_acc))
        rec = tower.all_records
        radar = rec[(rec["track_id"] < ID_ONLY_TRACK_ID_BASE) & (rec["status"] == Status.CONFIRMED)]
        assert bool(np.any(radar["sources"] & SOURCE_REMOTE_ID)) == matched, h_acc


def test_a_drone_heard_but_not_seen_is_an_id_only_track():
    tower = Tower()
    drone = moving((-100.0, -500.0, 80.0), (2.0, 0.0, 0.0))  # south of the tower: behind the radar
    tower.run(0.0, 6.05, None, lambda t: reading(t, drone(t), (2.0, 0.0, 0.0), h_acc=3.0))
    rec = tower.all_records
    assert len(rec) == 6 and np.all(rec["track_id"] == ID_ONLY_TRACK_ID_BASE)
    assert np.all(rec["sources"] == SOURCE_REMOTE_ID) and np.all(rec["category"] == Category.UAS)
    last = rec[-1]
    enu = geodetic_to_enu(SITE, last["lat_e7"] / 1e7, last["lon_e7"] / 1e7, last["alt_m"])[0]
    assert_allclose(enu, drone(5.0), atol=0.05)
    assert_allclose([last["vel_east_mps"], last["vel_north_mps"]], [2.0, 0.0], atol=1e-5)
    assert_allclose(last["pos_sigma_m"], 3.0 / K2, rtol=1e-6)
    assert_allclose(last["range_m"], np.linalg.norm(drone(5.0)), rtol=1e-5)
    assert last["time_us"] == tower.clock.utc_us(5.0)
    idents = tower.identities
    assert idents[0].status == IdentityStatus.ID_ONLY and idents[0].track_id == ID_ONLY_TRACK_ID_BASE
    assert idents[0].uas_id == SERIAL
    # Silent for the timeout: one ENDED record, and the id is not reused.
    tower.run(6.1, 17.0, None, None)
    ended = np.concatenate(tower.records[-200:])
    assert ended["status"].tolist() == [Status.ENDED] and ended["track_id"][0] == ID_ONLY_TRACK_ID_BASE
    tower.run(17.0, 18.05, None, lambda t: reading(t, drone(t)))
    assert tower.all_records["track_id"][-1] == ID_ONLY_TRACK_ID_BASE + 1


def test_a_broadcast_where_the_radar_sees_nothing_raises_rid_mismatch():
    tower = Tower()
    real = moving((100.0, 250.0, 60.0), (0.0, 0.0, 0.0))
    claimed = np.array([-80.0, 150.0, 50.0])  # inside radar coverage, nothing there
    tower.run(0.0, 4.9, real, lambda t: reading(t, claimed, mac="66:66:66:66:66:66", uas_id="SPOOF0001"))
    assert tower.events == [] and not np.any(tower.all_records["track_id"] >= ID_ONLY_TRACK_ID_BASE)
    tower.run(4.9, 7.0, real, lambda t: reading(t, claimed, mac="66:66:66:66:66:66", uas_id="SPOOF0001"))
    mismatch = [e for e in tower.events if e[0] == EVENT_MISMATCH]
    assert len(mismatch) == 1
    code, severity, message, fields = mismatch[0]
    assert severity == "warning" and fields["reason"] == "no_echo" and fields["uas_id"] == "SPOOF0001"
    assert fields["rule"] == "rid_mismatch" and "SPOOF0001" in message
    rec = tower.all_records
    spoof = rec[rec["track_id"] >= ID_ONLY_TRACK_ID_BASE]
    assert len(spoof) and np.all(spoof["threat"] == Threat.HIGH) and np.all(spoof["sources"] == SOURCE_REMOTE_ID)
    ident = [i for i in tower.identities if i.uas_id == "SPOOF0001"]
    assert ident and ident[-1].status == IdentityStatus.MISMATCH and ident[-1].track_id == spoof["track_id"][0]


def test_a_paired_track_elsewhere_raises_rid_mismatch_on_the_radar_track():
    tower = Tower()
    drone = moving((0.0, 200.0, 60.0), (2.0, 0.0, 0.0))
    tower.run(0.0, 6.0, drone, lambda t: reading(t, drone(t), (2.0, 0.0, 0.0)))
    tid = next(i.track_id for i in tower.identities if i.status == IdentityStatus.COOPERATIVE)
    jump = np.array([0.0, -400.0, 0.0])  # the broadcast now says 400 m south: behind the radar
    tower.run(6.0, 13.0, drone, lambda t: reading(t, drone(t) + jump, (2.0, 0.0, 0.0)))
    mismatch = [e for e in tower.events if e[0] == EVENT_MISMATCH]
    assert len(mismatch) == 1 and mismatch[0][3]["reason"] == "track_elsewhere"
    assert mismatch[0][3]["track_id"] == tid
    rec = tower.all_records
    mine = rec[(rec["track_id"] == tid) & (rec["status"] == Status.CONFIRMED)]
    assert mine["threat"][-1] == Threat.HIGH and mine["sources"][-1] & SOURCE_REMOTE_ID
    assert not np.any(rec["track_id"] >= ID_ONLY_TRACK_ID_BASE)  # no second track at the false position
    assert [i.status for i in tower.identities if i.track_id == tid][-1] == IdentityStatus.MISMATCH


def test_a_silent_uas_in_receiver_coverage_becomes_non_cooperative():
    tower = Tower()
    drone = moving((30.0, 180.0, 60.0), (1.0, 1.0, 0.0))
    tower.run(0.0, 8.1, drone)
    assert tower.identities == []  # confirmed on its third frame (0.2 s): 8 s of silence not yet over
    tower.run(8.1, 10.0, drone)
    idents = tower.identities
    assert [i.status for i in idents] == [IdentityStatus.NON_COOPERATIVE]
    assert idents[0].time_us == tower.clock.utc_us(0.2 + 8.0)
    assert idents[0].uas_id == "" and idents[0].last_heard_us == 0
    assert [e[0] for e in tower.events] == [EVENT_NON_COOPERATIVE]
    # A bird, a uas the receivers cannot hear, or any uas of a tower without a receiver is
    # never non-cooperative.
    far = dataclasses.replace(SETTINGS, receiver_range_m=100.0)
    for category, settings, listening in ((Category.BIRD, SETTINGS, True), (Category.UAS, far, True),
                                          (Category.UAS, SETTINGS, False)):
        other = Tower(settings, category, listening)
        other.run(0.0, 12.0, drone)
        assert other.identities == [] and other.events == []
    # Nor while the receiver is down (unplugged, silent): it could not have heard anything.
    down = Tower()
    down.fusion.receivers_up = False
    down.run(0.0, 12.0, drone)
    assert down.identities == [] and down.events == []


def test_a_late_broadcast_clears_non_cooperative():
    tower = Tower()
    drone = moving((30.0, 180.0, 60.0), (1.0, 1.0, 0.0))
    tower.run(0.0, 10.0, drone)
    tower.run(10.0, 13.0, drone, lambda t: reading(t, drone(t), (1.0, 1.0, 0.0)))
    assert [i.status for i in tower.identities] == [IdentityStatus.NON_COOPERATIVE, IdentityStatus.COOPERATIVE]


def test_remote_id_section_is_validated_and_unknown_keys_are_errors():
    from towerd.errors import ConfigError

    base = "version: 1\ntower: {id: t1, latitude_deg: 27.5, longitude_deg: -99.5, height_m: 130}\n"
    cfg = parse_config(base + "remote_id: {receiver_range_m: 2500, radar_coverage: {max_range_m: 800}}\n", "t.yaml")
    assert cfg.remote_id.receiver_range_m == 2500.0 and cfg.remote_id.radar_coverage.max_range_m == 800.0
    with pytest.raises(ConfigError) as err:
        parse_config(base + "remote_id: {reciever_range_m: 2500, mismatch_threat: severe}\n", "t.yaml")
    text = "\n".join(err.value.problems)
    assert "remote_id.reciever_range_m" in text and "remote_id.mismatch_threat" in text
    with pytest.raises(ConfigError):
        parse_config(base + "remote_id: {radar_coverage: {min_range_m: 500, max_range_m: 400}}\n", "t.yaml")
    # A radar of its own coverage must be a sensor with a mount.
    cfg = parse_config(PIPELINE_CONFIG + "  radars: [{sensor: radar0, coverage: {fov_azimuth_deg: 360, "
                                         "max_range_m: 3000}}]\n", "t.yaml")
    assert cfg.remote_id.coverage_of("radar0").max_range_m == 3000.0
    assert cfg.remote_id.coverage_of("other").max_range_m == 400.0
    with pytest.raises(ConfigError) as err:
        parse_config(PIPELINE_CONFIG + "  radars: [{sensor: radar9, coverage: {}}]\n", "t.yaml")
    assert "t.yaml:10:12: remote_id.radars[0].sensor: 'radar9' is not a sensor with a mount (radar0)" in \
        err.value.problems


PIPELINE_CONFIG = """\
version: 1
tower: {id: tx-test-001, latitude_deg: 27.5, longitude_deg: -99.5, height_m: 130}
sensors:
  - name: radar0
    driver: ti_mmwave
    settings: {port: /dev/null}
    mount: {boresight_azimuth_deg: 0, position_enu_m: [0, 0, 10]}
remote_id:
  radar_coverage: {max_range_m: 400}
"""


def test_the_pipeline_sends_readings_to_fusion_and_counts_id_only_tracks():
    from towerd.pipeline import Pipeline

    clock = ManualClock()
    pipeline = Pipeline(parse_config(PIPELINE_CONFIG, "t.yaml").pipeline, clock)
    assert pipeline.identity.receiver.range_m == 0.0  # no remoteid sensor: no track is non-cooperative
    receiver = "  - {name: rid0, driver: remoteid, settings: {port: /dev/null}}\n"
    with_receiver = PIPELINE_CONFIG.replace("remote_id:", receiver + "remote_id:")
    assert Pipeline(parse_config(with_receiver, "t.yaml").pipeline, clock).identity.receiver.range_m == 1000.0
    rec = pipeline.process(reading(0.0, (0.0, -300.0, 50.0)))  # behind the radar
    assert rec["track_id"].tolist() == [ID_ONLY_TRACK_ID_BASE] and rec["sources"][0] == SOURCE_REMOTE_ID
    assert pipeline.tracks_active == 1
    assert [i.status for i in pipeline.identity.pop_identities()] == [IdentityStatus.ID_ONLY]
    assert pipeline.identity.pop_identities() == []
    clock.advance(11.0)
    ended = pipeline.expire(11.0)
    assert ended["status"].tolist() == [Status.ENDED] and pipeline.tracks_active == 0
    # A stopping daemon ends the ID-only tracks still live.
    pipeline.process(reading(12.0, (0.0, -300.0, 50.0)))
    final = pipeline.end_all(12.5)
    assert final["status"].tolist() == [Status.ENDED] and final["track_id"][0] == ID_ONLY_TRACK_ID_BASE + 1


def test_rules_hold_mismatch_until_the_radar_agrees_again():
    from towerd.identity.rules import NO_ECHO, Evidence, Verdict, judge

    v = Verdict()
    no_echo = Evidence(matched_track=0, paired_in_gate=None, covered=True, any_in_gate=False)
    assert not judge(v, no_echo, 0.0, 5.0) and v.status is None and v.reason == NO_ECHO
    assert not judge(v, no_echo, 4.9, 5.0) and v.status is None
    assert judge(v, no_echo, 5.0, 5.0) and v.status == IdentityStatus.MISMATCH
    # Out of radar coverage later, or near some track it does not get: still MISMATCH, raised once.
    outside = Evidence(matched_track=0, paired_in_gate=None, covered=False, any_in_gate=False)
    near = Evidence(matched_track=0, paired_in_gate=None, covered=True, any_in_gate=True)
    for ev in (outside, near, no_echo):
        assert not judge(v, ev, 6.0, 5.0) and v.status == IdentityStatus.MISMATCH and v.reason == NO_ECHO
    # Matched with a track: cooperative again, paired with it.
    assert not judge(v, Evidence(7, None, True, True), 7.0, 5.0)
    assert (v.status, v.paired_track, v.reason) == (IdentityStatus.COOPERATIVE, 7, "")


def test_assignment_of_unshared_pairs_equals_the_solver():
    from scipy.optimize import linear_sum_assignment

    rng = np.random.default_rng(5)
    checked = 0
    for _ in range(200):
        d2 = rng.uniform(0.0, 200.0, (4, 6))
        gate = np.full(4, 16.0)
        ok = d2 <= 16.0
        if ok.any() and ok.sum(axis=1).max() <= 1 and ok.sum(axis=0).max() <= 1:
            cost = np.hstack([np.where(ok, d2, np.inf), np.where(np.eye(4, dtype=bool), 16.0, np.inf)])
            rows, cols = linear_sum_assignment(cost)
            expected = np.full(4, -1)
            expected[rows[cols < 6]] = cols[cols < 6]
            assert assign(d2, gate).tolist() == expected.tolist()
            checked += 1
    assert checked >= 20
    # One track in two gates: the solver decides, globally.
    assert assign(np.array([[4.0], [1.0]]), np.array([16.0, 16.0])).tolist() == [-1, 0]


def test_a_reload_keeps_transmitters_pairs_and_ids():
    tower = Tower()
    drone = moving((50.0, 150.0, 60.0), (4.0, 3.0, 0.0))
    tower.run(0.0, 3.0, drone, lambda t: reading(t, drone(t), (4.0, 3.0, 0.0)))
    paired = {k: v.paired_track for k, v in tower.fusion.verdicts.items()}
    assert paired == {MAC: 1}
    tower.fusion.reconfigure(dataclasses.replace(SETTINGS, mismatch_threat="medium", receiver_range_m=500.0), SITE,
                             {"radar0": MOUNT})
    assert {k: v.paired_track for k, v in tower.fusion.verdicts.items()} == paired
    assert tower.fusion.receiver.range_m == 500.0 and len(tower.fusion.transmitters) == 1


def test_id_only_tracks_get_the_threat_of_the_zones_they_are_in():
    from towerd.threat import ThreatAssessor, ThreatSettings, ZoneRule, ZoneSettings

    corners = enu_to_geodetic(SITE, np.array([[-200.0, -700.0, 0.0], [200.0, -700.0, 0.0], [200.0, -300.0, 0.0],
                                              [-200.0, -300.0, 0.0]]))
    zone = ZoneSettings(name="port", polygon=tuple(zip(corners[0].tolist(), corners[1].tolist())),
                        rules=(ZoneRule(categories=("uas",), level="medium", where="inside"),))
    clock = ManualClock()
    threat = ThreatAssessor(ThreatSettings(zones=(zone,)), SITE)
    fusion = RemoteIdFusion(SETTINGS, SITE, {"radar0": MOUNT}, clock, threat)
    inside = fusion.ingest(reading(0.0, (0.0, -500.0, 50.0)))
    outside = fusion.ingest(reading(0.5, (0.0, -900.0, 50.0), mac="60:60:1f:00:00:02"))
    assert inside["threat"].tolist() == [Threat.MEDIUM] and outside["threat"].tolist() == [Threat.LOW]


def test_fusion_survives_odd_readings():
    """Seeded fuzz: readings with any field unknown, zero, extreme or not finite never stop
    fusion; its records hold no infinity and valid coordinates, and the outbox takes every
    identity it gives (the ICD encoder refuses what it cannot carry)."""
    from towerd.icd import LAT_LON_UNKNOWN
    from towerd.outbox.identity import identity_records

    rng = np.random.default_rng(11)
    tower = Tower()
    drone = moving((0.0, 150.0, 40.0), (3.0, 0.0, 0.0))
    odd = [math.nan, math.inf, -math.inf, 0.0, -1.0, 1e9]
    names = ("lat_deg", "lon_deg", "alt_geo_m", "alt_baro_m", "speed_mps", "course_deg", "h_accuracy_m",
             "v_accuracy_m", "speed_accuracy_mps", "operator_lat_deg", "vertical_speed_mps")

    def fuzzed(t: float) -> RemoteIdReading:
        r = reading(t, drone(t) + rng.normal(0.0, 50.0, 3), mac=f"02:00:00:00:00:{rng.integers(0, 4):02x}")
        changes = {n: float(rng.choice(odd)) for n in names if rng.random() < 0.3}
        return dataclasses.replace(r, **changes)

    tower.run(0.0, 20.0, drone, fuzzed, period_s=0.1)
    rec = tower.all_records
    ids = rec[rec["track_id"] >= ID_ONLY_TRACK_ID_BASE]
    assert len(rec) > 0 and len(ids) > 0
    for name in ("alt_m", "range_m", "azimuth_deg", "elevation_deg", "vel_east_mps", "vel_north_mps", "vel_up_mps",
                 "pos_sigma_m"):
        assert not np.any(np.isinf(rec[name])), name
    known = rec["lat_e7"] != LAT_LON_UNKNOWN
    assert np.all(np.abs(rec["lat_e7"][known]) <= 900_000_000) and np.all(np.abs(rec["lon_e7"][known]) <= 1_800_000_000)
    assert len(identity_records(tower.identities)) == len(tower.identities) > 0


def test_identity_text_is_made_icd_safe_not_dropped():
    """A receiver's non-ASCII text (a JSON dialect accepts any printable Unicode) must not
    make the outbox refuse the whole batch of identities: it goes out with "?" for each
    character the ICD cannot carry, cut to the field's size."""
    from towerd.identity.fusion import _icd_text

    assert _icd_text("Полёт 1", 23) == "????? 1"
    assert _icd_text("A" * 30, 20) == "A" * 20
    assert _icd_text("tab\there", 23) == "tab?here"
