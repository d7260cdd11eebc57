"""A hovering drone that broadcasts Remote ID is no static clutter: the labeller's static
clutter exemption asks Remote ID fusion which radar tracks are paired with an airborne
drone's broadcast. Run through the whole pipeline (detection, tracking, labels, fusion)."""

from __future__ import annotations

import math

import numpy as np

from test_rid_fusion import PIPELINE_CONFIG
from towerd.clock import ManualClock
from towerd.config import parse_config
from towerd.drivers.measurements import RadarPlots, RemoteIdReading, RidSource, empty_plots
from towerd.geo import Site, enu_to_geodetic
from towerd.icd import SOURCE_REMOTE_ID
from towerd.pipeline import Pipeline

CONFIG = PIPELINE_CONFIG.replace("remote_id:", "  - {name: rid0, driver: remoteid, settings: {port: /dev/null}}\n"
                                                "remote_id:")
SITE = Site(27.5, -99.5, 130.0)
HOVER_ENU = np.array([20.0, 120.0, 60.0])  # still from the radar's first sight of it
SNR_DB = 30.0
"""A large drone (an agricultural or survey multirotor): the classifier does not call it a
confident uas, so only its broadcast can keep it from being taken for a mast."""


def plots(t: float, rng: np.random.Generator) -> RadarPlots:
    """One radar frame: the hovering drone (0.5 m noise per axis, no Doppler, ``SNR_DB``)."""
    rel = HOVER_ENU - (0.0, 0.0, 10.0) + rng.normal(0.0, 0.5, 3)
    p = empty_plots(1)
    p["range_m"] = np.linalg.norm(rel)
    p["azimuth_deg"] = math.degrees(math.atan2(rel[0], rel[1]))
    p["elevation_deg"] = math.degrees(math.asin(rel[2] / p["range_m"][0]))
    p["radial_vel_mps"], p["snr_db"] = 0.0, SNR_DB
    return RadarPlots("radar0", t, int(t * 10), plots=p)


def broadcast(t: float, status: int) -> RemoteIdReading:
    lat, lon, h = enu_to_geodetic(SITE, HOVER_ENU[None, :])
    return RemoteIdReading("rid0", t, "60:60:1f:00:00:01", RidSource.BLUETOOTH_LEGACY, rssi_dbm=-70.0,
                           uas_id="1581F5FJD23A800000A1", id_type=1, ua_type=2, status=status,
                           lat_deg=float(lat[0]), lon_deg=float(lon[0]), alt_geo_m=float(h[0]), speed_mps=0.0,
                           course_deg=0.0, vertical_speed_mps=0.0, h_accuracy_m=10.0, v_accuracy_m=15.0,
                           speed_accuracy_mps=1.0)


def run(status: int | None, seconds: float = 20.0) -> tuple[np.ndarray, Pipeline]:
    """10 Hz radar frames of the hovering drone; a broadcast every second with operational
    ``status`` (None: silent). The records sent, and the pipeline."""
    clock = ManualClock()
    pipeline = Pipeline(parse_config(CONFIG, "t.yaml").pipeline, clock)
    rng = np.random.default_rng(3)
    out = []
    for k in range(round(seconds * 10)):
        t = 0.1 * k
        clock.advance(t - clock.monotonic())
        if status is not None and k % 10 == 0:
            out.append(pipeline.process(broadcast(t, status)))
        out.append(pipeline.process(plots(t, rng)))
        out.append(pipeline.expire(t))
    return np.concatenate(out), pipeline


def test_a_hovering_drone_paired_with_its_airborne_broadcast_is_not_withheld_as_clutter():
    records, pipeline = run(status=2)  # F3411: airborne
    radar = records[records["track_id"] < 0x80000000]
    assert len(radar) >= 15, "the paired hovering track is reported"
    assert len(np.unique(radar["track_id"])) == 1
    assert (radar["sources"][-10:] & SOURCE_REMOTE_ID).all()
    assert pipeline.labeller.exempt_tracks().tolist() == [int(radar["track_id"][0])]
    # The clutter map did not learn the drone's cell (a new track there would be refused).
    assert pipeline.static_filter.clutter_map.dwell(HOVER_ENU[None, :], 20.0, neighbours=True)[0] < 1.0


def test_the_same_hover_without_broadcast_or_declared_on_the_ground_is_withheld():
    for status in (None, 1):  # silent; F3411 "ground"
        records, pipeline = run(status=status)
        radar = records[records["track_id"] < 0x80000000]
        assert len(radar) == 0, status
        assert pipeline.labeller.exempt_tracks().tolist() == []
        assert pipeline.static_filter.clutter_map.dwell(HOVER_ENU[None, :], 20.0, neighbours=True)[0] > 5.0
