"""Hopping sets told apart by their hop grid: Bluetooth (2402 + k MHz) is not a drone
link, ExpressLRS 2.4 (2400.4 + k MHz) is; through the emulator's bytes, the RF Explorer
parser and the RF processor with the shipped thresholds (towerd.rf.evaluate.link_trial)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from towerd.config import load_config
from towerd.rf.classify import ClassifierSettings, LinkKind, classify
from towerd.rf.evaluate import link_trial
from towerd.rf.tracker import empty_rf_tracks
from towerd.sim.rfexplorer import RfExplorerEmulator
from towerd.sim.scenario import ELRS_ISM2G4_MHZ, Emitter, Interferer, Scenario

REPO = Path(__file__).resolve().parent.parent
SHIPPED = load_config(REPO / "config" / "towerd.yaml").config.rf
BAND_2G4 = (2400.0, 2483.5)
ELRS_2G4 = Emitter.of("elrs", centres_mhz=ELRS_ISM2G4_MHZ, bandwidth_mhz=0.8125, duty_cycle=0.75)  # 500 Hz


def comb(offset_mhz: float, resultant: float, hops: int, centre_mhz: float = 2441.0) -> np.ndarray:
    t = empty_rf_tracks(1)
    t["comb"] = True
    t["sweeps"] = 50
    t["channels"] = 20
    t["centre_mhz"] = centre_mhz
    t["bandwidth_mhz"] = 78.0
    t["grid_offset_mhz"] = offset_mhz
    t["grid_resultant"] = resultant
    t["grid_hops"] = hops
    return t


def test_classifier_uses_the_hop_grid_offset_in_the_shared_band():
    s = ClassifierSettings()
    # on the Bluetooth grid, decided (60 x 0.6^2 = 21.6 >= ln 1000 = 6.9): not a drone
    kind, conf = classify(comb(0.03, 0.6, 60), s)
    assert (kind[0], conf[0]) == (LinkKind.BLUETOOTH_LIKE, 0)
    # 0.4 MHz off it (ELRS 2.4): a drone control link, no shared-band penalty
    kind, conf = classify(comb(0.41, 0.6, 60), s)
    assert kind[0] == LinkKind.FHSS_CONTROL and conf[0] >= s.fhss_confidence
    # undecided (60 x 0.2^2 = 2.4): no alarm yet
    kind, conf = classify(comb(0.41, 0.2, 60), s)
    assert (kind[0], conf[0]) == (LinkKind.UNKNOWN, 0)
    # outside the shared band the grid does not matter
    kind, _ = classify(comb(0.0, 0.9, 60, centre_mhz=915.0), s)
    assert kind[0] == LinkKind.FHSS_CONTROL


def test_emulator_dwelling_hops_light_their_cells_together_one_channel_at_a_time():
    bt = Interferer("phone", east_m=10.0, north_m=0.0, up_m=0.0, emitter=Emitter.of("bluetooth"))
    em = RfExplorerEmulator(Scenario("bt", interferers=(bt,)), rng=np.random.default_rng(4), hops="dwell")
    f = em.state.freqs_mhz()
    noise = em.noise_floor_dbm_per_mhz + 10 * np.log10(em.state.rbw_khz / 1e3)
    runs = []
    for k in range(300):
        on = np.concatenate(([0], (em.sweep_dbm(k * 0.1) > noise + 15.0).astype(np.int8), [0]))
        edges = np.diff(on)
        runs += (np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).tolist()
    runs = np.asarray(runs)
    # a 1 MHz hop over 0.75 MHz cells (600 kHz RBW) lights 2 or 3 cells together
    assert np.mean(runs >= 2) > 0.7 and runs.max() <= 3
    # about duty (0.6) hops per sweep, not duty times the cells per channel
    assert 0.3 < runs.size / 300 < 0.8
    assert f[0] == 2400.0


def run_lengths(em: RfExplorerEmulator, sweeps: int, over_db: float = 15.0) -> np.ndarray:
    """Lengths of the runs of points over the noise by ``over_db`` in ``sweeps`` sweeps 0.1 s apart."""
    noise = em.noise_floor_dbm_per_mhz + 10 * np.log10(em.state.rbw_khz / 1e3)
    runs = []
    for k in range(sweeps):
        on = np.concatenate(([0], (em.sweep_dbm(k * 0.1) > noise + over_db).astype(np.int8), [0]))
        edges = np.diff(on)
        runs += (np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).tolist()
    return np.asarray(runs)


def test_emulator_renders_elrs_in_time_hops_whole_about_duty_per_sweep():
    """Timed (the default): the sweep passes a channel in ~0.5 ms, within an 8 ms ELRS
    dwell, so a hop lights its cells together (an 812.5 kHz channel over 0.75 MHz cells:
    one or two); the radio is on one channel at a time, so about duty (0.75) hops show
    per sweep over the 80 channels."""
    drone = Interferer("drone", east_m=10.0, north_m=0.0, up_m=0.0, emitter=ELRS_2G4)
    em = RfExplorerEmulator(Scenario("elrs", interferers=(drone,)), rng=np.random.default_rng(5))
    runs = run_lengths(em, 400)
    assert 0.5 < runs.size / 400 < 1.0 and runs.max() <= 3
    assert np.mean(runs >= 2) > 0.2


def test_emulator_renders_bluetooth_in_time_one_slot_per_hop():
    """Bluetooth changes channel every 625 us slot, about one point's time, so its 1 MHz
    channels light a cell at a time far more often than ELRS's do."""
    bt = Interferer("phone", east_m=10.0, north_m=0.0, up_m=0.0, emitter=Emitter.of("bluetooth"))
    drone = Interferer("drone", east_m=10.0, north_m=0.0, up_m=0.0, emitter=ELRS_2G4)
    bt_runs = run_lengths(RfExplorerEmulator(Scenario("bt", interferers=(bt,)), rng=np.random.default_rng(4)), 400)
    elrs_runs = run_lengths(RfExplorerEmulator(Scenario("e", interferers=(drone,)), rng=np.random.default_rng(4)), 400)
    assert bt_runs.max() <= 3 and np.mean(bt_runs == 1) > np.mean(elrs_runs == 1) + 0.1


def test_bluetooth_gives_no_drone_link():
    """Bluetooth was a drone link (fhss-control, 45-53) in 10-50 % of trials at 10-25 dB
    (per-look model); none in any of the three emulator models now."""
    for snr in (15.0, 25.0):
        for seed in range(3):
            for hops in ("timed", "dwell", "look"):
                links, _ = link_trial(None, 0.0, BAND_2G4, rng=np.random.default_rng(seed), settings=SHIPPED,
                                      sweeps=150, others=((Emitter.of("bluetooth"), snr),), hops=hops)
                assert links == [], (snr, seed, hops, links)


def test_elrs_2g4_is_found_off_the_bluetooth_grid():
    """ELRS 2.4 at 500 Hz rendered in time, 15 dB: fhss-control within 15 s in at least 3
    of 4 seeds, at full confidence (off the Bluetooth grid). Before this change: with hops
    dwelling and duty 0.25, Pd 0.20-0.30 at 20-25 dB and 0 below."""
    found = 0
    for seed in range(4):
        links, _ = link_trial(ELRS_2G4, 15.0, BAND_2G4, rng=np.random.default_rng(1001 + seed), settings=SHIPPED,
                              sweeps=150)
        assert {lk.kind for lk in links} <= {"fhss-control"} and len(links) <= 1, links
        found += bool(links)
        assert all(lk.confidence >= SHIPPED.classify.fhss_confidence for lk in links)
    assert found >= 3
