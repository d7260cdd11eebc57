"""Detected cells -> emitters: extent, centre, bandwidth, powers; bridging of dips."""

from __future__ import annotations

import numpy as np
from numpy.testing import assert_allclose

from rf_synth import Emitter, Scene, db
from towerd.rf.emitters import EmitterSettings, bridge_occupied, merge_cells
from towerd.rf.processor import RfProcessor, RfSettings


def test_a_20_mhz_plateau_becomes_one_emitter_with_its_centre_and_bandwidth():
    step = 0.25
    f = 2400.0 + step * np.arange(400)
    floor = np.full(400, db(-100.0))
    on = np.abs(f - 2440.5) <= 10.0  # 81 cells: 2430.5 .. 2450.5
    p = floor + np.where(on, db(-80.0), 0.0)
    p[on.nonzero()[0][40]] = db(-75.0)  # one hot cell
    em = merge_cells(on, f, p, floor)
    assert em.shape == (1,)
    e = em[0]
    assert_allclose(e["centre_mhz"], 2440.5, atol=step / 2)
    assert_allclose(e["bandwidth_mhz"], 20.0, atol=step)
    assert_allclose([e["low_mhz"], e["high_mhz"]], [2430.5, 2450.5], atol=step / 2)
    assert e["cells"] == 81
    assert_allclose(e["peak_dbm"], -75.0, atol=1e-9)
    assert_allclose(e["peak_mhz"], f[on.nonzero()[0][40]])
    expected_mean = 10 * np.log10(np.mean(p[on]))
    assert_allclose(e["mean_dbm"], expected_mean, atol=1e-9)
    assert_allclose(e["snr_db"], expected_mean + 100.0, atol=1e-9)
    assert abs(e["centre_excess_db"]) < 0.5  # flat


def test_runs_split_by_small_gaps_merge_and_short_runs_can_be_dropped():
    det = np.zeros(30, dtype=bool)
    det[[2, 3, 5, 6]] = True  # gap of 1 -> one emitter with gap 1
    det[[10, 13]] = True  # gap of 2 -> two emitters
    det[20] = True
    f = np.arange(30.0)
    p = np.ones(30)
    em = merge_cells(det, f, p, p, EmitterSettings(merge_gap_cells=1))
    assert em["first_cell"].tolist() == [2, 10, 13, 20]
    assert em["cells"].tolist() == [5, 1, 1, 1]
    em = merge_cells(det, f, p, p, EmitterSettings(merge_gap_cells=2, min_cells=2))
    assert em["first_cell"].tolist() == [2, 10]
    assert em["cells"].tolist() == [5, 4]
    assert merge_cells(np.zeros(30, dtype=bool), f, p, p).shape == (0,)


def test_bridging_fills_dips_inside_an_occupied_run_but_never_widens():
    det = np.zeros(40, dtype=bool)
    occ = np.zeros(40, dtype=bool)
    occ[5:30] = True  # the occupancy test sees one run (wider than the emitter: smoothing)
    det[[8, 9, 14, 20, 27]] = True
    occ[33:40] = True
    det[36] = True  # a strong carrier: occupancy spreads around it, detection does not
    out = bridge_occupied(det, occ)
    assert np.all(out[8:28]) and not out[7] and not out[28]
    assert out[33:40].tolist() == [False, False, False, True, False, False, False]
    # nothing detected in a run: nothing filled
    assert not np.any(bridge_occupied(np.zeros(40, dtype=bool), occ))


def test_peaked_spectrum_has_centre_excess():
    f = np.arange(0.0, 40.0, 0.5)
    p = 1.0 + 100 * np.exp(-0.5 * ((f - 20) / 4) ** 2)
    det = p > 4
    e = merge_cells(det, f, p, np.ones_like(p))[0]
    assert e["centre_excess_db"] > 4.0


def test_synthetic_ofdm_plateau_through_the_whole_chain():
    # 20 MHz at 2440.5 MHz, 15 dB, single looks (each cell exponential: a quarter of the
    # plateau's cells fall below the CFAR threshold): one emitter, centre and width right
    # to a couple of cells, every sweep.
    rng = np.random.default_rng(21)
    scene = Scene(2400.0, 0.25, 335, looks=1, emitters=[Emitter(2440.5, 20.0, 15.0)], band="2g4")
    proc = RfProcessor(RfSettings())
    for k in range(20):
        update = proc.process(scene.sweep(k, rng))
        em = update.bands[0].emitters
        wide = em[em["bandwidth_mhz"] > 5]
        assert wide.shape == (1,)
        assert abs(wide["centre_mhz"][0] - 2440.5) <= 0.5
        assert abs(wide["bandwidth_mhz"][0] - 20.0) <= 1.0
        assert abs(wide["mean_dbm"][0] - 10 * np.log10(db(-100) + db(-85))) < 1.5  # 81 exponential cells: sd 0.5 dB


def test_hole_excess_tells_an_on_off_plateau_from_a_steady_one():
    """A 40-cell plateau at 15 dB in 2-look noise: steady, its inner cells near the floor
    are about what the gamma model expects (excess ~0); on only 80 % of the cells (802.11
    off the air while the rest were swept) about 0.2 x 0.91 more; under 5 cells, NaN."""
    rng = np.random.default_rng(7)
    n, looks = 60, 2
    freq = 2400.0 + 0.75 * np.arange(n)
    floor = np.full(n, 1e-10)
    det = np.zeros(n, dtype=bool)
    det[10:50] = True
    steady, on_off = [], []
    for _ in range(200):
        for on_frac, out in ((1.0, steady), (0.8, on_off)):
            on = np.zeros(n, dtype=bool)
            on[10:50] = rng.random(40) < on_frac
            on[[10, 49]] = True  # the extent's ends are detected cells
            mean = floor * (1.0 + 10 ** 1.5 * on)
            p = rng.gamma(looks, mean / looks)
            em = merge_cells(det, freq, p, floor, looks=looks)
            out.append(em["hole_excess"][0])
    assert abs(np.mean(steady)) < 0.01
    assert 0.15 < np.mean(on_off) < 0.22
    narrow = det & (np.arange(n) < 14)
    assert np.isnan(merge_cells(narrow, freq, p, floor, looks=looks)["hole_excess"][0])
