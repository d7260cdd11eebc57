"""The daemon avoids importing scipy.stats (tens of MiB resident): its own quantile
helpers must agree with scipy.stats exactly, and the daemon must really not import it."""

from __future__ import annotations

import subprocess
import sys

import pytest
from numpy.testing import assert_allclose
from scipy import stats

from towerd.gates import chi2_quantile
from towerd.rf.tracker import poisson_isf


@pytest.mark.parametrize("dof", [1, 2, 3, 4, 6])
@pytest.mark.parametrize("p", [0.5, 0.9, 0.99, 0.999, 0.9999])
def test_chi2_quantile_matches_scipy_stats(p, dof):
    assert_allclose(chi2_quantile(p, dof), stats.chi2.ppf(p, dof), rtol=1e-12)


def test_chi2_quantile_known_gates():
    # the notes' table: 2 dof 9.21 / 13.82, 3 dof 11.34 / 16.27, 4 dof 13.28 / 18.47
    assert_allclose([chi2_quantile(0.99, 2), chi2_quantile(0.999, 2), chi2_quantile(0.99, 3),
                     chi2_quantile(0.999, 3), chi2_quantile(0.99, 4), chi2_quantile(0.999, 4)],
                    [9.21, 13.82, 11.34, 16.27, 13.28, 18.47], atol=0.005)


@pytest.mark.parametrize("q", [1e-9, 1e-6, 1e-3, 0.1, 0.5])
@pytest.mark.parametrize("mu", [1e-5, 0.01, 0.5, 3.0, 20.0, 500.0])
def test_poisson_isf_matches_scipy_stats(q, mu):
    assert poisson_isf(q, mu) == stats.poisson.isf(q, mu)


def test_the_daemon_does_not_import_scipy_stats():
    code = "import sys, towerd.daemon, towerd.cli; print('scipy.stats' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
