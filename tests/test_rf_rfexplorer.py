"""The RF chain on what the RF Explorer driver makes of the emulator's bytes: false-alarm
rate on its noise, drone links recognised in a scenario, and a short run over a real pty."""

from __future__ import annotations

import time

import numpy as np

from towerd.drivers.measurements import Spectrum
from towerd.drivers.rfexplorer.driver import Band, RfExplorerDriver, RfExplorerSettings
from towerd.icd import Category
from towerd.rf.cfar import CfarSettings
from towerd.rf.classify import LinkKind, is_drone_link
from towerd.rf.processor import RfProcessor, RfSettings
from towerd.sim.rfexplorer import RfExplorerEmulator
from towerd.sim.scenario import Emitter, Interferer, Scenario, Target, WaypointPath

B2G4 = Band("ism2400", start_mhz=2400.0, end_mhz=2483.5, dwell_s=3600.0)


def driver_sweeps(em: RfExplorerEmulator, driver: RfExplorerDriver, n: int, period_s: float):
    """The driver's Spectrum for each of ``n`` emulator sweeps, fed as bytes at t = k · period."""
    driver.feed(em.model_line() + em.config_line(), 0.0)
    for k in range(n):
        out = driver.feed(em.sweep_bytes(k * period_s), (k + 1) * period_s)
        assert [type(r) for r in out] == [Spectrum]
        yield out[0]


def test_false_alarm_rate_on_the_emulators_noise():
    # 1024-point sweeps of noise averaged over K = 8 looks, quantised to the device's
    # 0.5 dB amplitude steps by the wire format; the detector is told K = 8.
    pfa = 1e-3
    em = RfExplorerEmulator(rng=np.random.default_rng(11), looks=8, points=1024)
    driver = RfExplorerDriver("rfe", RfExplorerSettings(port="loop://", bands=(B2G4,)))
    proc = RfProcessor(RfSettings(cfar=CfarSettings(kind="os", pfa=pfa, looks=8)))
    detected = cells = 0
    for spectrum in driver_sweeps(em, driver, 300, 0.1):
        assert spectrum.band == "ism2400"
        band = proc.process(spectrum).bands[0]
        detected += np.count_nonzero(band.detected)
        cells += band.detected.size
    measured = detected / cells
    print(f"emulator noise, OS K=8, {cells} cells: measured Pfa {measured:.3e} (configured {pfa:.0e})")
    assert cells == 300 * 1024
    assert pfa / 2 < measured < 2 * pfa


def drone_scene() -> Scenario:
    stay = WaypointPath(((0.0, 600.0, 800.0, 80.0), (1e6, 600.0, 800.0, 80.0)))  # 1 km away, hovering
    return Scenario(
        "rf-integration",
        targets=(Target("dji", "uas", -20.0, stay, emitters=(Emitter.of("ocusync", centres_mhz=(2459.5,),
                                                                                   bandwidth_mhz=20.0),)),),
        interferers=(Interferer("ap", 200.0, -300.0, 10.0, Emitter.of("wifi", centres_mhz=(2412.0,))),),
    )


def test_ocusync_and_wifi_from_the_emulator_through_the_driver():
    em = RfExplorerEmulator(drone_scene(), rng=np.random.default_rng(12), looks=8, points=1024)
    driver = RfExplorerDriver("rfe", RfExplorerSettings(port="loop://", bands=(B2G4,)))
    proc = RfProcessor(RfSettings(cfar=CfarSettings(looks=8)))
    for spectrum in driver_sweeps(em, driver, 40, 0.25):
        update = proc.process(spectrum)
    tracks = update.tracks
    link = tracks[np.abs(tracks["centre_mhz"] - 2459.5) < 2.0]
    assert link["kind"].tolist() == [LinkKind.OFDM_VIDEO] and link["category"].tolist() == [Category.UAS]
    assert abs(link["bandwidth_mhz"][0] - 20.0) < 1.5
    others = tracks[np.abs(tracks["centre_mhz"] - 2459.5) >= 2.0]
    assert not np.any(is_drone_link(others["kind"]))
    wifi = others[np.abs(others["centre_mhz"] - 2412.0) < 3.0]
    assert np.all(np.isin(wifi["kind"], [LinkKind.WIFI_LIKE, LinkKind.UNKNOWN]))


def test_live_sweeps_over_a_pty_reach_the_detector(pty_pair):
    em = RfExplorerEmulator(drone_scene(), rng=np.random.default_rng(13), looks=8, sweep_rate_hz=50.0)
    em.start(pty_pair)
    proc = RfProcessor(RfSettings(cfar=CfarSettings(looks=8)))
    results = []
    try:
        settings = RfExplorerSettings(port=pty_pair.path, bands=(B2G4,), command_gap_s=0.0, config_timeout_s=2.0,
                                      stall_timeout_s=600.0)
        with RfExplorerDriver("rfe", settings) as driver:
            deadline = time.monotonic() + 10.0
            while sum(len(u.bands) for u in results) < 20:
                assert time.monotonic() < deadline, f"only {len(results)} sweeps, counters {driver.rf_counters}"
                results += [proc.process(r) for r in driver.read() if isinstance(r, Spectrum)]
            assert driver.counters.bad_frames == 0
    finally:
        em.stop()
    bands = [b for u in results for b in u.bands]
    assert {b.band for b in bands} == {"2g4"}
    # the 112-point sweep (0.75 MHz cells) shows the 20 MHz downlink in nearly every sweep
    hit = [np.any(np.abs(b.emitters["centre_mhz"] - 2459.5) < 2.0) for b in bands[2:]]
    assert np.mean(hit) > 0.8
