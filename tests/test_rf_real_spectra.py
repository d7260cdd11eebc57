"""RF false-alarm budget on real spectra, and the emulated drone links still found.

Real recordings (tests/captures/rfexplorer/real_*.bin: the RF Explorer vendor's public
sample recordings, re-encoded into the device's serial stream, origin in each .json) are
played through the RF Explorer driver over a real pty, looped until they last twice the
longest time a drone link takes to confirm, and run through the RF processor with the
shipped config/towerd.yaml thresholds: no drone link may come out. The emulated links
(OFDM video, analog FPV, ELRS control) must still be found at the stated SNRs, with
Wi-Fi and Bluetooth rendered by the emulator as real sweeps show them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from towerd.config import load_config
from towerd.rf.classify import LINK_NAMES
from towerd.rf.evaluate import drone_links, false_alarms_on_quiet_cells, link_trial, play_capture, trial_spectra
from towerd.rf.processor import RfProcessor
from towerd.sim.rfexplorer import RfExplorerEmulator
from towerd.sim.scenario import ELRS_EU868_MHZ, Emitter, Interferer, Scenario

REPO = Path(__file__).resolve().parent.parent
CAPTURES = REPO / "tests" / "captures" / "rfexplorer"
REAL = sorted(p.stem for p in CAPTURES.glob("real_*.bin"))
SHIPPED = load_config(REPO / "config" / "towerd.yaml").config.rf
BAND_2G4 = (2400.0, 2483.5)


def needed_seconds(period_s: float) -> float:
    """Twice the longest confirmation: a hopping set needs its hop window plus M-of-N,
    a single emitter min_sweeps of history plus M-of-N."""
    t, c = SHIPPED.tracking, SHIPPED.classify
    return 2.0 * (t.hop_window_s + (c.min_sweeps + t.confirm_window) * period_s)


def test_real_recordings_are_there_with_their_origin():
    assert {"real_wifi_2g4", "real_ism433_ook", "real_dtv_ch55", "real_fm_93m9", "real_siggen_cw_1400",
            "real_siggen_fm_1400"} <= set(REAL)
    for name in REAL:
        meta = json.loads((CAPTURES / f"{name}.json").read_text())
        assert meta["origin"]["repository"] and len(meta["origin"]["commit"]) == 40 and meta["origin"]["licence"]
        assert meta["sweep_period_s"] > 0 and (CAPTURES / f"{name}.bin").stat().st_size < 200_000


@pytest.mark.parametrize("name", REAL)
def test_real_non_drone_recording_gives_no_drone_link(name):
    meta = json.loads((CAPTURES / f"{name}.json").read_text())
    period = meta["sweep_period_s"]
    sweeps = meta["stats"]["sweeps"]
    loops = max(1, math.ceil(needed_seconds(period) / (sweeps * period)))
    spectra, driver = play_capture((CAPTURES / f"{name}.bin").read_bytes(), period, loops=loops)
    assert len(spectra) == sweeps * loops and len(spectra) * period >= needed_seconds(period)
    c = driver.counters
    assert (c.bad_frames, c.resyncs, c.dropped_bytes) == (0, 0, 0)
    # The shipped band plan where it covers the recording (the 2.4 GHz band: the
    # issue's case); elsewhere the shipped thresholds over the recording's whole span.
    covered = name == "real_wifi_2g4"
    settings = SHIPPED if covered else dataclasses.replace(SHIPPED, bands=())
    assert drone_links(spectra, settings) == []


def test_wifi_recording_is_still_detected_as_bursts_not_hops():
    """The fix must not blind the band: 802.11 pieces are still detected, they just make
    no hopping set."""
    meta = json.loads((CAPTURES / "real_wifi_2g4.json").read_text())
    spectra, _ = play_capture((CAPTURES / "real_wifi_2g4.bin").read_bytes(), meta["sweep_period_s"])
    rf = RfProcessor(SHIPPED)
    in_ch6 = 0
    for s in spectra[:300]:
        for band in rf.process(s).bands:
            e = band.emitters
            in_ch6 += bool(np.any((e["centre_mhz"] > 2427) & (e["centre_mhz"] < 2447)))
    assert in_ch6 > 100  # channel 6 is busy in most sweeps
    assert not np.any(rf.tracks["comb"])


# ----------------------------------------------------------------------------- emulated links


ELRS_915 = (Emitter.of("elrs"), (902.0, 928.0))  # FCC, 200 Hz: 4.38 ms on the air every 5 ms
ELRS_868 = (Emitter.of("elrs", centres_mhz=ELRS_EU868_MHZ), (863.0, 870.0))
OCUSYNC = (Emitter.of("ocusync"), BAND_2G4)
ANALOG = (Emitter.of("analog_video"), (5725.0, 5875.0))


@pytest.mark.parametrize(
    ("link", "snr_db", "kinds", "within_s", "min_found"),
    [
        (OCUSYNC, 15.0, {"ofdm-video"}, 3.0, 4),
        (ANALOG, 15.0, {"analog-video"}, 1.5, 4),
        (ELRS_915, 10.0, {"fhss-control"}, 10.0, 4),  # was 25 dB within 15 s (per-look hops, duty 0.25)
        (ELRS_868, 10.0, {"fhss-control"}, 5.0, 4),
    ],
    ids=["ofdm-video", "analog-fpv", "elrs-915", "elrs-868"],
)
def test_emulated_drone_links_are_found_at_the_stated_snr(link, snr_db, kinds, within_s, min_found):
    emitter, band = link
    found = 0
    for seed in range(5):
        links, _ = link_trial(emitter, snr_db, band, rng=np.random.default_rng(seed), settings=SHIPPED, sweeps=150)
        assert {lk.kind for lk in links} <= kinds and len(links) <= 2, links
        found += any(lk.t_confirmed_s <= within_s for lk in links)
    assert found >= min_found


def test_emulated_drone_links_found_beside_busy_wifi():
    """OFDM video at 2459.5 MHz and no false hopping set with a busy 802.11 channel 6."""
    for seed in range(3):
        links, _ = link_trial(OCUSYNC[0], 15.0, BAND_2G4, rng=np.random.default_rng(seed), settings=SHIPPED,
                              sweeps=150, others=((Emitter.of("wifi", duty_cycle=0.5), 25.0),))
        assert [lk.kind for lk in links] == ["ofdm-video"] and abs(links[0].centre_mhz - 2459.5) < 1.5


@pytest.mark.parametrize(("duty", "snr_db"), [(0.1, 20.0), (0.3, 10.0), (0.3, 20.0), (0.5, 30.0)])
def test_emulated_wifi_gives_no_drone_link(duty, snr_db):
    """802.11 busy up to half the time. (Busier: see the test below; busy nearly all the
    time, its channel is a plateau a swept analyser cannot tell from a video link:
    ofdm-video less the Wi-Fi penalty, see classify.)"""
    for seed in range(2):
        links, _ = link_trial(None, 0.0, BAND_2G4, rng=np.random.default_rng(seed), settings=SHIPPED, sweeps=150,
                              others=((Emitter.of("wifi", duty_cycle=duty), snr_db),))
        assert links == []


@pytest.mark.parametrize(("duty", "snr_db"), [(0.5, 15.0), (0.5, 20.0), (0.8, 10.0), (0.8, 15.0), (0.8, 20.0),
                                           (0.9, 10.0), (0.9, 15.0)])
def test_busy_wifi_plateau_gives_no_drone_link(duty, snr_db):
    """802.11 channel 6 busy 50 %, 80 % and 90 % at 10-20 dB, where its plateau is as wide
    and as filled as a 20 MHz video link's (before the hole test: ofdm-video 50 in every
    trial at 50 % / 15 dB; before cfar.looks 2 and the hole hysteresis, at 80 % / 10 dB
    and 90 % / 10-20 dB, see docs/benchmarks.md): no drone link in any of three seeds,
    and the channel is tracked and called wifi-like (not merely missed)."""
    wifi = ((Emitter.of("wifi", duty_cycle=duty), snr_db),)
    for seed in range(3):
        spectra, _ = trial_spectra(None, 0.0, BAND_2G4, rng=np.random.default_rng(2000 + seed), sweeps=150,
                                   others=wifi)
        links = drone_links(spectra, SHIPPED)
        assert links == [], (duty, snr_db, seed, links)
        if seed == 0:
            rf = RfProcessor(SHIPPED)
            seen = []
            for sp in spectra:
                tracks = rf.process(sp).tracks
                seen += [LINK_NAMES[int(k)] for k in tracks["kind"][tracks["bandwidth_mhz"] > 15.0]]
    assert seen.count("wifi-like") >= 50, seen.count("wifi-like")


@pytest.mark.parametrize("snr_db", [10.0, 15.0, 20.0, 25.0])
def test_video_link_on_a_wifi_channel_is_still_found(snr_db):
    """A 20 MHz OcuSync link on channel 6 (inside the Wi-Fi channel the hole test looks at)
    is ofdm-video (less the Wi-Fi penalty) within 3 s in every seed."""
    link = Emitter.of("ocusync", centres_mhz=(2437.0,), bandwidth_mhz=20.0)
    for seed in range(3):
        links, _ = link_trial(link, snr_db, BAND_2G4, rng=np.random.default_rng(2000 + seed), settings=SHIPPED,
                              sweeps=40)
        assert [lk.kind for lk in links] == ["ofdm-video"], (snr_db, seed, links)
        assert links[0].t_confirmed_s <= 3.0


@pytest.mark.slow
def test_cfar_looks_is_what_the_real_device_noise_gives():
    """cfar.looks from the real recordings: the CFAR's false alarms per cell and sweep on
    the cells that held noise alone (quiet_cells), pooled over the six recordings played
    once, come near the configured 1e-3 at the shipped 2 looks (7.2e-4 measured); at 1
    look the threshold sits far above the noise (9.7e-5), at 3 below it (2.2e-3)."""
    assert SHIPPED.cfar.looks == 2 and SHIPPED.cfar.pfa == 1e-3
    pooled = {1: [0, 0], 2: [0, 0], 3: [0, 0]}
    for name in REAL:
        meta = json.loads((CAPTURES / f"{name}.json").read_text())
        spectra, _ = play_capture((CAPTURES / f"{name}.bin").read_bytes(), meta["sweep_period_s"])
        own = SHIPPED if name == "real_wifi_2g4" else dataclasses.replace(SHIPPED, bands=())
        for looks, acc in pooled.items():
            hits, cells = false_alarms_on_quiet_cells(
                spectra, dataclasses.replace(own, cfar=dataclasses.replace(own.cfar, looks=looks)))
            acc[0] += hits
            acc[1] += cells
    rate = {k: h / c for k, (h, c) in pooled.items()}
    assert pooled[2][1] > 30_000  # enough quiet cell-sweeps to tell 1e-4 from 1e-3
    assert rate[1] < 2.5e-4 < rate[2] < 1.5e-3 < rate[3], rate


def wifi_emulator(rng, duty: float, **kw) -> RfExplorerEmulator:
    ap = Interferer("ap", east_m=50.0, north_m=0.0, up_m=0.0,
                    emitter=Emitter.of("wifi", tx_power_dbm=10.0, duty_cycle=duty))
    return RfExplorerEmulator(Scenario("wifi", interferers=(ap,)), rng=rng, **kw)


def runs_of(mask: np.ndarray) -> np.ndarray:
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)


def test_emulator_renders_wifi_as_real_sweeps_show_it():
    """A burst is a run of neighbouring cells inside the 20 MHz channel (as many as the
    sweep crosses while it lasts): mostly one cell, some two, a few more (the vendor's
    real recording: 80 % / 15 % / 5 % at 10 dB over the floor); never a cell outside."""
    em = wifi_emulator(np.random.default_rng(3), 0.1, sweep_rate_hz=10.0)
    f = em.state.freqs_mhz()
    noise = em.noise_floor_dbm_per_mhz + 10 * np.log10(em.state.rbw_khz / 1e3)
    lengths = []
    for k in range(400):
        on = em.sweep_dbm(k * 0.1) > noise + 15.0
        assert not np.any(on & ((f < 2426.0) | (f > 2448.0)))
        lengths += runs_of(on).tolist()
    lengths = np.asarray(lengths)
    ch = int(np.count_nonzero((f >= 2427.0) & (f <= 2447.0)))
    assert np.mean(lengths == 1) > 0.5 and np.mean(lengths <= 2) > 0.8 and np.max(lengths) >= 4
    # Duty: the fraction of channel cells on matches the emitter's (0.1) within sampling error.
    assert abs(lengths.sum() / (400 * ch) - 0.1) < 0.03


def test_emulator_renders_bluetooth_as_single_cell_hits_over_79_channels():
    """1,600 hops/s outpace the sweep's pass over a channel: each look at a cell is
    independent, so hits are one or two cells anywhere in 2402-2480 MHz."""
    bt = Interferer("phone", east_m=10.0, north_m=0.0, up_m=0.0, emitter=Emitter.of("bluetooth"))
    em = RfExplorerEmulator(Scenario("bt", interferers=(bt,)), rng=np.random.default_rng(4))
    f = em.state.freqs_mhz()
    noise = em.noise_floor_dbm_per_mhz + 10 * np.log10(em.state.rbw_khz / 1e3)
    hits = np.zeros(len(f))
    lengths = []
    for k in range(400):
        on = em.sweep_dbm(k * 0.1) > noise + 15.0
        hits += on
        lengths += runs_of(on).tolist()
    assert not np.any(hits[(f < 2401.0) | (f > 2481.0)])
    inside = hits[(f > 2403.0) & (f < 2479.0)]
    assert np.mean(inside > 0) > 0.9 and np.max(lengths) <= 3  # all over the band, never wide
