"""RF noise floor: converges to the true level, follows a step with its time constant,
keeps emitters out (also ones present from the first sweep)."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from rf_synth import Emitter, Scene, db, noise
from towerd.rf.cfar import Cfar, CfarSettings
from towerd.rf.floor import NoiseFloor, NoiseFloorSettings
from towerd.rf.processor import BandDetector


@pytest.mark.parametrize("looks", [1, 8])
def test_floor_converges_to_the_noise_mean(looks):
    rng = np.random.default_rng(looks)
    shape = 2.0 * 10 ** (np.linspace(-2, 2, 400) / 10)  # a 4 dB slope across the band
    fl = NoiseFloor(NoiseFloorSettings(time_constant_s=30.0, window_mhz=20.0), 400, 0.25, looks)
    for k in range(40):
        fl.update(noise(rng, 400, looks) * shape, None, k * 0.5)
    assert fl.ready
    # The window (80 cells) averages the slope's curvature away; well inside the band the
    # estimate is within a few per cent of the true mean.
    assert_allclose(np.median(fl.floor_mw[40:-40] / shape[40:-40]), 1.0, rtol=0.03)
    assert np.all(np.abs(fl.floor_mw[40:-40] / shape[40:-40] - 1) < 0.1)


def test_floor_follows_a_step_with_its_time_constant():
    rng = np.random.default_rng(2)
    tau, dt = 10.0, 0.1
    fl = NoiseFloor(NoiseFloorSettings(time_constant_s=tau, window_mhz=50.0), 2000, 0.25, 1)
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
    fl = NoiseFloor(NoiseFloorSettings(window_mhz=10.0, quantile=0.25), 400, 0.25, 1)
    p = noise(rng, 400, 1)
    fl.update(p, None, 0.0)
    wide = np.zeros(400, dtype=bool)
    wide[100:300] = True  # 50 MHz emitter, five windows wide
    for k in range(1, 50):
        p = noise(rng, 400, 1) + np.where(wide, 100.0, 0.0)
        fl.update(p, wide, k * 1.0)
    # Under the emitter the floor is interpolated from the noise on both sides.
    assert np.all(fl.floor_mw[wide] < 1.3)


def test_wide_emitter_present_from_the_first_sweep_stays_detected_and_out_of_the_floor():
    # A 40 MHz OFDM downlink already on at start-up, in the 83.5 MHz band, 15 dB SNR,
    # single looks; after two minutes of sweeps it is still detected over its whole
    # width and the floor under it is still the noise.
    rng = np.random.default_rng(4)
    scene = Scene(2400.0, 0.25, 335, looks=1, emitters=[Emitter(2440.0, 40.0, 15.0)])
    det = BandDetector(Cfar(CfarSettings(kind="os", pfa=1e-3, looks=1)), NoiseFloorSettings(time_constant_s=10.0),
                       scene.n, scene.step_mhz)
    f = scene.freq
    inside = np.abs(f - 2440.0) <= 19.0
    covered = []
    for k in range(240):
        sp = scene.sweep(k, rng)
        detected, threshold, floor = det.detect(10 ** (sp.power_dbm.astype(float) / 10), sp.t_mono)
        covered.append(detected[inside].mean())
    assert min(covered[1:]) > 0.95
    assert np.all(np.abs(10 * np.log10(floor / db(-100.0))) < 1.0)
