"""RF noise floor: learnt from one sweep even with wide emitters on, converges to the true
level and shape, follows a step with its time constant, keeps emitters out, relearns
after a change of the whole band's level."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from rf_synth import Emitter, Scene, db, noise
from towerd.rf.cfar import Cfar, CfarSettings
from towerd.rf.floor import NoiseFloor, NoiseFloorSettings
from towerd.rf.processor import BandDetector


@pytest.mark.parametrize("looks", [1, 8])
def test_floor_converges_to_the_noise_mean_and_keeps_its_shape(looks):
    rng = np.random.default_rng(looks)
    n = 400
    shape = 2.0 * 10 ** ((2.0 * np.sin(np.linspace(0, 3 * np.pi, n)) + np.linspace(-2, 2, n)) / 10)  # ripple + slope
    fl = NoiseFloor(NoiseFloorSettings(time_constant_s=30.0), n, 0.25, looks)
    for k in range(120):
        fl.update(noise(rng, n, looks) * shape, None, k * 0.5)
    assert fl.ready
    err_db = 10 * np.log10(fl.floor_mw / shape)
    # The first sweep's level is smooth (a 100 MHz window) and misses the ripple; its
    # weight fades as sweeps come in. 120 sweeps x 9 cells x K looks leave about 0.15 dB
    # (K=1) / 0.05 dB (K=8) of noise.
    assert abs(np.median(err_db)) < 0.2
    assert np.max(np.abs(err_db)) < (1.0 if looks == 1 else 0.4)


def test_floor_follows_a_step_with_its_time_constant():
    rng = np.random.default_rng(2)
    tau, dt = 10.0, 0.1
    fl = NoiseFloor(NoiseFloorSettings(time_constant_s=tau), 2000, 0.25, 1)
    t = 0.0
    for _ in range(300):  # 3 tau at level 1
        fl.update(noise(rng, 2000, 1), None, t)
        t += dt
    assert_allclose(fl.floor_mw.mean(), 1.0, rtol=0.02)
    t_step = t
    while t < t_step + tau - 1e-9:
        fl.update(noise(rng, 2000, 1, mean=2.0), None, t)
        t += dt
    # 1 + (1 - exp(-1)) after one time constant (the first update comes at t_step)
    expected = 1.0 + (1.0 - np.exp(-(tau - dt) / tau))
    assert_allclose(fl.floor_mw.mean(), expected, rtol=0.03)
    while t < t_step + 6 * tau:
        fl.update(noise(rng, 2000, 1, mean=2.0), None, t)
        t += dt
    assert_allclose(fl.floor_mw.mean(), 2.0, rtol=0.03)


def test_excluded_cells_do_not_enter_the_floor():
    rng = np.random.default_rng(3)
    fl = NoiseFloor(NoiseFloorSettings(), 400, 0.25, 1)
    fl.update(noise(rng, 400, 1), None, 0.0)
    wide = np.zeros(400, dtype=bool)
    wide[100:300] = True  # 50 MHz emitter
    for k in range(1, 100):
        p = noise(rng, 400, 1) + np.where(wide, 100.0, 0.0)
        fl.update(p, wide, k * 1.0)
    # Under the emitter the floor is interpolated from the noise on both sides.
    assert np.all(np.abs(10 * np.log10(fl.floor_mw)) < 0.6)


def test_learning_from_one_sweep_leaves_a_quarter_of_the_band_of_noise_enough():
    # 20 and 40 MHz links on from the start fill 72 % of the 2.4 GHz band.
    rng = np.random.default_rng(4)
    scene = Scene(2400.0, 0.25, 335, looks=1, emitters=[Emitter(2415.0, 20.0, 12.0), Emitter(2460.0, 40.0, 12.0)])
    det = BandDetector(Cfar(CfarSettings()), NoiseFloorSettings(), scene.n, scene.step_mhz)
    p = 10 ** (scene.sweep(0, rng).power_dbm.astype(float) / 10)
    naive = NoiseFloor(NoiseFloorSettings(), scene.n, scene.step_mhz, 1)
    naive.learn(p, 0.0)
    det._learn(p, 0.0)
    naive_db = np.median(10 * np.log10(naive.floor_mw)) + 100
    learnt_db = 10 * np.log10(det.floor.floor_mw) + 100
    print(f"one-sweep floor error: plain quantile {naive_db:+.1f} dB, with exclusion rounds "
          f"{np.median(learnt_db):+.1f} dB")
    assert naive_db > 3.0  # the mixture pulls a plain quantile up
    assert np.all(np.abs(learnt_db) < 1.5)


@pytest.mark.parametrize("looks", [1, 8])
def test_wide_links_on_from_the_first_sweep_stay_detected_and_out_of_the_floor(looks):
    # Two OFDM downlinks (20 and 40 MHz, 12 dB) already on at start-up, filling 72 % of the
    # band; after 150 sweeps they are still detected over their width and the floor
    # under them is still the noise.
    rng = np.random.default_rng(5 + looks)
    scene = Scene(2400.0, 0.25, 335, looks=looks, emitters=[Emitter(2415.0, 20.0, 12.0), Emitter(2460.0, 40.0, 12.0)])
    det = BandDetector(Cfar(CfarSettings(looks=looks)), NoiseFloorSettings(time_constant_s=10.0), scene.n,
                       scene.step_mhz)
    f = scene.freq
    inside = (np.abs(f - 2415.0) <= 9.0) | (np.abs(f - 2460.0) <= 19.0)
    covered = []
    for k in range(150):
        sp = scene.sweep(k, rng)
        detected, threshold, floor = det.detect(10 ** (sp.power_dbm.astype(float) / 10), sp.t_mono)
        covered.append(detected[inside].mean())
    assert min(covered) > 0.9 and np.mean(covered) > 0.98
    assert np.all(np.abs(10 * np.log10(floor / db(-100.0))) < 1.0)


def test_a_jump_of_the_whole_band_relearns_the_floor(caplog):
    rng = np.random.default_rng(6)
    scene = Scene(2400.0, 0.25, 335, looks=1, emitters=[Emitter(2440.0, 20.0, 15.0)])
    det = BandDetector(Cfar(CfarSettings()), NoiseFloorSettings(time_constant_s=60.0), scene.n, scene.step_mhz)
    for k in range(20):
        det.detect(10 ** (scene.sweep(k, rng).power_dbm.astype(float) / 10), k * 0.5)
    assert "relearnt" not in caplog.text
    scene.floor_dbm = -92.0  # the front end's gain or a broadband interferer: +8 dB
    caplog.set_level("INFO")
    for k in range(20, 23):
        detected, _, floor = det.detect(10 ** (scene.sweep(k, rng).power_dbm.astype(float) / 10), k * 0.5)
    assert "relearnt" in caplog.text
    assert np.all(np.abs(10 * np.log10(floor / db(-92.0))) < 1.5)
    on = np.abs(scene.freq - 2440.0) <= 9.0
    assert detected[on].mean() > 0.9 and detected[~np.abs(scene.freq - 2440.0).__le__(12.0)].mean() < 0.01
