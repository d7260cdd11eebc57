"""GOSPA and OSPA against the notes' test vector and a brute-force definition."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from numpy.testing import assert_allclose

from towerd.metrics import gospa, ospa

TRACKS = np.array([[0.0, 0.0], [10.0, 0.0]])
TRUTHS = np.array([[1.0, 0.0], [50.0, 50.0], [20.0, 20.0]])


def test_gospa_test_vector():
    g = gospa(TRACKS, TRUTHS, c=10.0, p=2)
    assert_allclose(g.distance, 12.288206, atol=5e-7)
    # localisation 1 (the pair at 1 m), 2 missed truths and 1 false track at c²/2 = 50 each.
    assert_allclose(g.localisation, 1.0)
    assert (g.missed, g.false) == (2, 1)
    assert g.assignment.tolist() == [[0, 0]]
    assert_allclose(g.distance**2, 1.0 + 50.0 * 3)


def test_ospa_test_vector():
    assert_allclose(ospa(TRACKS, TRUTHS, c=10.0, p=2), 8.185353, atol=5e-7)


def brute_gospa(x, y, c, p):
    """The definition: minimum over every partial assignment (any pairs, any d)."""
    n, m = len(x), len(y)
    best = np.inf
    for k in range(min(n, m) + 1):
        for xs in itertools.combinations(range(n), k):
            for ys in itertools.permutations(range(m), k):
                cost = sum(np.linalg.norm(x[i] - y[j]) ** p for i, j in zip(xs, ys))
                best = min(best, cost + c**p / 2 * (n + m - 2 * k))
    return best ** (1 / p)


@pytest.mark.parametrize("seed", range(8))
def test_gospa_equals_brute_force_definition(seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 30, size=(rng.integers(0, 5), 3))
    y = rng.uniform(0, 30, size=(rng.integers(0, 5), 3))
    for p in (1.0, 2.0):
        assert_allclose(gospa(x, y, c=12.0, p=p).distance, brute_gospa(x, y, 12.0, p), rtol=1e-12)


def test_gospa_properties_and_empty_sets():
    x = np.array([[1.0, 2.0, 3.0], [40.0, 0.0, 0.0]])
    assert gospa(x, x, c=20.0).distance == 0.0
    assert_allclose(gospa(x, x[::-1] + 0.5, c=20.0).distance, gospa(x[::-1] + 0.5, x, c=20.0).distance)
    empty = np.zeros((0, 3))
    assert gospa(empty, empty, c=20.0).distance == 0.0
    g = gospa(x, empty, c=20.0, p=2)
    assert (g.missed, g.false) == (0, 2)
    assert_allclose(g.distance, np.sqrt(2 * 200.0))
    g = gospa(empty, x, c=20.0, p=2)
    assert (g.missed, g.false) == (2, 0)
    # A pair at exactly c or beyond is never assigned.
    g = gospa([[0.0, 0.0]], [[20.0, 0.0]], c=20.0, p=2)
    assert (g.missed, g.false, len(g.assignment)) == (1, 1, 0)
    with pytest.raises(ValueError):
        gospa(x, x, c=0.0)
    assert ospa(empty, empty, c=5.0) == 0.0 and ospa(x, empty, c=5.0) == 5.0
