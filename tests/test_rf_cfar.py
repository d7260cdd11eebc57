"""RF CFAR across frequency: multipliers from the formulas, measured false-alarm and
detection probabilities against theory, explicit edges, exclusions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose

from rf_synth import noise
from towerd.rf.cfar import (
    Cfar,
    CfarSettings,
    ca_alpha,
    ca_pd_swerling1,
    ca_pfa,
    estimate_looks,
    known_level_alpha,
    os_alpha,
    os_pd_swerling1,
    os_pfa,
)


def test_multipliers_match_the_notes():
    assert_allclose(ca_alpha(1e-3, 16), 8.6388, atol=1e-4)
    assert_allclose(ca_alpha(1e-4, 32), 10.6727, atol=1e-4)
    assert_allclose(ca_alpha(1e-2, 24), 5.0767, atol=1e-4)
    assert_allclose(ca_alpha(1e-3, 16, looks=8), 2.5767, atol=1e-4)  # averaged spectra
    assert_allclose(10 * np.log10(ca_alpha(1e-3, 16, looks=8)), 4.11, atol=0.005)
    assert_allclose(os_pfa(6.857, 20, 15), 1e-3, rtol=2e-3)
    assert_allclose(os_alpha(1e-3, 20, 15), 6.857, atol=2e-3)
    assert_allclose(ca_pd_swerling1(ca_alpha(1e-3, 16), 16, 10 ** (np.array([10, 13, 16]) / 10)),
                    [0.4646, 0.6656, 0.8103], atol=1e-4)
    # The averaged-spectra formula reduces to the single-look one at K = 1, and every
    # solved multiplier gives back its Pfa.
    assert_allclose(ca_pfa(8.6388, 16, looks=1), 1e-3, rtol=1e-4)
    for pfa in (1e-12, 1e-6, 1e-2):
        assert_allclose(ca_pfa(ca_alpha(pfa, 16, 8), 16, 8), pfa, rtol=1e-8)
        assert_allclose(os_pfa(os_alpha(pfa, 16, 12, 8), 16, 12, 8), pfa, rtol=1e-6)
    # Known level: P(Gamma(K, 1/K) > alpha) = Pfa; K = 1: alpha = ln(1/Pfa).
    assert_allclose(known_level_alpha(1e-3, 1), np.log(1e3), rtol=1e-12)


def test_os_averaged_formula_reduces_to_the_single_look_product():
    # looks=1 uses the product; the integral with looks=1 must agree with it.
    from scipy import integrate, special, stats

    n, k, a = 20, 15, 6.857
    order = stats.beta(k, n - k + 1)
    value, _ = integrate.quad(lambda u: order.pdf(u) * special.gammaincc(1, a * special.gammaincinv(1, u)), 0, 1,
                              epsabs=0, epsrel=1e-10, limit=200)
    assert_allclose(value, os_pfa(a, n, k, 1), rtol=1e-7)


def test_averaged_os_pfa_equals_adaptive_quadrature():
    """The fixed Gauss-Legendre rule (no scipy.integrate in towerd) gives what adaptive
    quadrature gives, across N, k, K and multipliers from 1e-12 to 1e-2 false alarms."""
    from scipy import integrate, special, stats

    for n, k, looks, pfa in ((16, 12, 2, 1e-3), (16, 12, 8, 1e-3), (8, 6, 8, 1e-6), (32, 24, 4, 1e-12),
                             (24, 24, 8, 1e-2), (64, 32, 32, 1e-6), (12, 1, 2, 1e-3)):
        alpha = os_alpha(pfa, n, k, looks)
        order = stats.beta(k, n - k + 1)
        want, _ = integrate.quad(lambda u: order.pdf(u) * special.gammaincc(looks, alpha * special.gammaincinv(looks, u)),
                                 0, 1, points=[(k - 1) / (n - 1)], epsabs=0, epsrel=1e-11, limit=400)
        assert_allclose(os_pfa(alpha, n, k, looks), want, rtol=1e-9)
        assert_allclose(want, pfa, rtol=1e-9)  # so the bisection found the multiplier too


def test_multipliers_equal_brentqs():
    """The bisection finds the root brentq finds (the multipliers before it), to 1e-11."""
    from scipy.optimize import brentq

    for pfa, n, looks in ((1e-3, 16, 2), (1e-3, 16, 8), (1e-6, 32, 4), (1e-12, 8, 2)):
        want = brentq(lambda a: np.log(ca_pfa(a, n, looks)) - np.log(pfa), 1e-9, 1e3, xtol=1e-12, rtol=1e-12)
        assert_allclose(ca_alpha(pfa, n, looks), want, rtol=1e-11)


def test_the_shipped_rf_chain_loads_no_scipy_solver_or_linear_algebra():
    """Building the RF chain computes its CFAR multipliers (OS-CFAR, averaged looks: the
    shipped configuration); that must not load scipy.optimize, scipy.integrate or
    scipy.linalg (tens of MiB of a tower computer's memory). Fresh interpreter."""
    code = (
        "import sys, json\n"
        "from towerd.rf.cfar import CfarSettings\n"
        "from towerd.rf.processor import RfProcessor, RfSettings\n"
        "for looks in (2, 8):\n"
        "    RfProcessor(RfSettings(cfar=CfarSettings(kind='os', looks=looks)))\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('scipy.'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert "scipy.special" in loaded  # the probe sees scipy modules
    assert [m for m in loaded if m.split(".")[1] in ("optimize", "integrate", "linalg", "spatial")] == []


def measured_pfa(cfar: Cfar, rng: np.random.Generator, sweeps: int, cells: int, looks: int) -> float:
    hits = 0
    for _ in range(sweeps):
        hits += np.count_nonzero(cfar.detect(noise(rng, cells, looks)).detected)
    return hits / (sweeps * cells)


@pytest.mark.parametrize("kind", ["ca", "os"])
@pytest.mark.parametrize("looks", [1, 8])
def test_false_alarm_rate_on_noise_matches_the_configured_probability(kind, looks):
    pfa = 1e-3
    cfar = Cfar(CfarSettings(kind=kind, pfa=pfa, reference_cells=16, guard_cells=2, looks=looks))
    rng = np.random.default_rng(100 + looks + (kind == "os"))
    p = measured_pfa(cfar, rng, sweeps=200, cells=2048, looks=looks)  # 409,600 cells, ~410 expected
    print(f"{kind} K={looks}: measured Pfa {p:.3e} (configured {pfa:.0e}), alpha {cfar.alpha:.4f}")
    # The issue asks for a factor of two; 5 sigma of the count is +-25 %.
    assert 0.75 * pfa < p < 1.25 * pfa


def test_a_single_look_multiplier_on_averaged_spectra_would_be_far_off():
    # What the notes warn about: the K = 1 alpha on K = 8 data detects almost nothing,
    # so the Pfa test above is sensitive to using the right formula.
    rng = np.random.default_rng(5)
    wrong = Cfar(CfarSettings(kind="ca", pfa=1e-3, looks=1))
    z = noise(rng, 200_000, looks=8)
    assert np.count_nonzero(z > wrong.alpha * 1.0) == 0


def test_edge_cells_keep_the_false_alarm_rate():
    # A 40-cell band: with N=16 and G=2 a window needs 21 cells, so most cells are near an
    # edge and take their references from one side. Zero padding would count zeros as
    # references and flood the edges with detections.
    pfa = 1e-3
    cfar = Cfar(CfarSettings(kind="ca", pfa=pfa, reference_cells=16, guard_cells=2))
    rng = np.random.default_rng(7)
    z = noise(rng, (10_000, 40), 1)
    hits = np.zeros(40)
    for row in z:
        out = cfar.detect(row)
        hits += out.detected
        assert np.all(out.n_ref == 16)
    edge = np.r_[0:10, 30:40]
    p_edge = hits[edge].sum() / (10_000 * edge.size)  # 200,000 cells
    print(f"edge cells: measured Pfa {p_edge:.3e}")
    assert 0.75 * pfa < p_edge < 1.25 * pfa


@pytest.mark.parametrize("snr_db,expected", [(10.0, 0.4646), (13.0, 0.6656), (16.0, 0.8103)])
def test_detection_probability_matches_swerling1_theory(snr_db, expected):
    pfa, n_ref = 1e-3, 16
    cfar = Cfar(CfarSettings(kind="ca", pfa=pfa, reference_cells=n_ref, guard_cells=2, looks=1))
    rng = np.random.default_rng(int(snr_db))
    snr = 10 ** (snr_db / 10)
    cells, spacing, sweeps = 4096, 32, 160  # targets 32 cells apart: windows span 21
    targets = np.arange(16, cells, spacing)
    detected = 0
    for _ in range(sweeps):
        mean = np.ones(cells)
        mean[targets] += snr
        z = rng.exponential(mean)  # Swerling 1: target + noise power exponential
        detected += np.count_nonzero(cfar.detect(z).detected[targets])
    pd = detected / (sweeps * targets.size)  # 20,480 trials
    theory = float(ca_pd_swerling1(cfar.alpha, n_ref, snr))
    assert_allclose(theory, expected, atol=1e-4)
    print(f"SNR {snr_db} dB: measured Pd {pd:.4f}, theory {theory:.4f}")
    tol = 0.015  # ~4.5 sigma of the estimate
    assert abs(pd - theory) < tol
    # ...and a multiplier only 0.5 dB off would be caught:
    for wrong in (cfar.alpha * 10 ** 0.05, cfar.alpha / 10 ** 0.05):
        assert abs(pd - float(ca_pd_swerling1(wrong, n_ref, snr))) > tol


def test_os_detection_probability_matches_theory():
    pfa, n_ref = 1e-3, 16
    cfar = Cfar(CfarSettings(kind="os", pfa=pfa, reference_cells=n_ref, guard_cells=2, looks=1, os_rank=0.75))
    k = cfar.settings.os_k
    rng = np.random.default_rng(13)
    snr = 10 ** 1.3
    targets = np.arange(16, 4096, 32)
    detected = 0
    for _ in range(160):
        mean = np.ones(4096)
        mean[targets] += snr
        detected += np.count_nonzero(cfar.detect(rng.exponential(mean)).detected[targets])
    pd = detected / (160 * targets.size)
    theory = float(os_pd_swerling1(cfar.alpha, n_ref, k, snr))
    print(f"OS k={k} SNR 13 dB: measured Pd {pd:.4f}, theory {theory:.4f}")
    assert abs(pd - theory) < 0.015


def test_excluded_cells_are_skipped_so_a_wide_plateau_is_detected_inside():
    # A 30-cell plateau at 20 dB: its inner cells' windows lie on the plateau, which masks
    # them; once the plateau is excluded from the references, the window reaches past
    # its edges to the noise and every plateau cell is detected.
    rng = np.random.default_rng(3)
    cfar = Cfar(CfarSettings(kind="os", pfa=1e-3, looks=8))
    plateau = np.zeros(200, dtype=bool)
    plateau[80:110] = True
    z = noise(rng, 200, 8, 1.0) + np.where(plateau, 100.0, 0.0)
    masked = cfar.detect(z)
    assert np.count_nonzero(masked.detected[85:105]) == 0
    out = cfar.detect(z, excluded=plateau)
    assert np.all(out.detected[plateau])
    assert np.count_nonzero(out.detected[~plateau]) <= 1
    assert np.all(out.n_ref == 16)


def test_occupancy_test_marks_emitters_not_noise():
    rng = np.random.default_rng(4)
    cfar = Cfar(CfarSettings(looks=1, occupancy_cells=5, occupancy_pfa=1e-6))
    z = noise(rng, 500_000, 1)
    assert np.count_nonzero(cfar.occupied(z)) == 0
    z[1000:1040] += 10.0  # 10 dB plateau
    assert np.all(cfar.occupied(z)[1002:1038])


def test_floor_is_the_reference_when_too_few_cells_remain():
    cfar = Cfar(CfarSettings(kind="ca", pfa=1e-3, reference_cells=16, guard_cells=2, min_reference_fraction=0.5))
    z = np.ones(10)
    z[5] = 7.5  # above ln(1000) = 6.9, the known-level multiplier for K=1
    out = cfar.detect(z)  # 10 cells: at most 10 - 1 - 2 = 7 references < 8
    assert np.all(out.n_ref == 0)
    assert_allclose(out.threshold, np.log(1e3))
    assert out.detected.tolist() == [i == 5 for i in range(10)]


def test_estimate_looks_recovers_the_averaging():
    rng = np.random.default_rng(9)
    shape_db = np.linspace(-3, 3, 300)  # a sloped floor must not matter
    p = noise(rng, (400, 300), 8) * 10 ** (shape_db / 10)
    assert_allclose(estimate_looks(p), 8.0, rtol=0.05)


def test_settings_reject_an_odd_reference_count():
    with pytest.raises(ValueError, match="even"):
        CfarSettings(reference_cells=15)


@pytest.mark.parametrize("kind", ["ca", "os"])
@pytest.mark.parametrize("looks", [1, 8])
def test_whole_band_detector_on_noise_keeps_the_configured_probability(kind, looks):
    # The detector as the processor runs it: noise floor learnt from the first sweep on,
    # whitening, occupancy and previous-sweep exclusions, bridging, CFAR. The floor slopes
    # 6 dB across the band (a real front end's ripple); CFAR does not care.
    from towerd.rf.floor import NoiseFloorSettings
    from towerd.rf.processor import BandDetector

    pfa = 1e-3
    det = BandDetector(Cfar(CfarSettings(kind=kind, pfa=pfa, looks=looks)), NoiseFloorSettings(), 2048, 0.05)
    rng = np.random.default_rng(17 + looks)
    shape = 1e-10 * 10 ** (np.linspace(-3, 3, 2048) / 10)
    hits = 0
    for k in range(200):
        detected, _, _ = det.detect(noise(rng, 2048, looks) * shape, k * 0.5)
        hits += np.count_nonzero(detected)
    p = hits / (200 * 2048)
    print(f"band detector {kind} K={looks}: measured Pfa {p:.3e}")
    assert 0.75 * pfa < p < 1.25 * pfa
