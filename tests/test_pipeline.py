"""The pipeline routes every reading type: TLL targets (WGS84) from an NMEA radar are
tracked like radar plots; spectra go to RF processing."""

from __future__ import annotations

import numpy as np
from numpy.testing import assert_allclose

from towerd.clock import ManualClock
from towerd.config import parse_config
from towerd.drivers.measurements import GEO_PLOT_DTYPE, GeoPlots, Spectrum
from towerd.geo import Site, enu_to_geodetic, geodetic_to_enu
from towerd.icd import LAT_LON_UNKNOWN, Status
from towerd.pipeline import Pipeline

CONFIG = """\
version: 1
tower: {id: tx-test-001, latitude_deg: 27.5, longitude_deg: -99.5, height_m: 130}
sensors:
  - name: arpa0
    driver: nmea_radar
    settings: {port: /dev/null}
    mount: {boresight_azimuth_deg: 0, position_enu_m: [0, 0, 15]}
    noise: {range_sigma_m: 5.0, azimuth_sigma_deg: 1.0, elevation_sigma_deg: 10.0}
  - name: rf0
    driver: rfexplorer
    settings: {port: /dev/null}
tracking:
  static_clutter: {enabled: false}
"""
SITE = Site(27.5, -99.5, 130.0)


def test_tll_targets_are_tracked_at_the_antenna_height():
    clock = ManualClock()
    pipeline = Pipeline(parse_config(CONFIG, "t.yaml"), clock)
    rng = np.random.default_rng(4)
    records = []
    for k in range(12):  # a 2D surface radar: one scan every 2.5 s, no height
        t = 2.5 * k
        truth = np.array([[-300.0 + 8.0 * t, 600.0, 15.0]])
        lat, lon, _ = enu_to_geodetic(SITE, truth + [[*rng.normal(0.0, 5.0, 2), 0.0]])
        plots = np.zeros(1, dtype=GEO_PLOT_DTYPE)
        plots["latitude_deg"], plots["longitude_deg"], plots["height_m"] = lat, lon, np.nan
        plots["speed_mps"], plots["course_deg"], plots["target_id"] = 8.0, 90.0, 7
        clock.advance(2.5 if k else 0.0)
        records.append(pipeline.process(GeoPlots("arpa0", t, k + 1, plots)))
    rec = np.concatenate(records)
    confirmed = rec[rec["status"] == Status.CONFIRMED]
    assert len(confirmed), "the TLL target was never confirmed"
    last = confirmed[-1]
    enu = geodetic_to_enu(SITE, last["lat_e7"] / 1e7, last["lon_e7"] / 1e7, last["alt_m"])[0]
    assert_allclose(enu[:2], [-300.0 + 8.0 * 27.5, 600.0], atol=15.0)
    assert_allclose(enu[2], 15.0, atol=2.0)  # no height given: the antenna's
    assert_allclose(last["vel_east_mps"], 8.0, atol=2.0)


def test_spectra_go_to_rf_processing():
    pipeline = Pipeline(parse_config(CONFIG, "t.yaml"), ManualClock())
    rng = np.random.default_rng(1)
    out = []
    for k in range(20):  # noise plus a steady 10 MHz wide emitter: RF, never a position
        power_mw = rng.exponential(1e-10, 400)
        power_mw[180:220] += 1e-8
        spectrum = Spectrum("rf0", 0.1 * k, k, 2400.0, 0.25, (10 * np.log10(power_mw)).astype(np.float32))
        out.append(pipeline.process(spectrum))
    rec = np.concatenate(out)
    assert len(pipeline.rf.tracks) >= 1
    assert np.all(rec["lat_e7"] == LAT_LON_UNKNOWN) and np.all(np.isnan(rec["range_m"]))
