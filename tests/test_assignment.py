"""towerd.assignment against SciPy's linear_sum_assignment (the reference it replaces):
same assignment on random dense, rectangular, tied and forbidden-entry matrices; the
sparse gated solver against the dense augmented problem."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment as scipy_lsa

from towerd.assignment import assign_sparse, components, linear_sum_assignment


def _matrix(rng: np.random.Generator, r: int, c: int, kind: int) -> np.ndarray:
    if kind == 0:
        return rng.random((r, c)) * 10.0
    if kind == 1:  # many ties
        return rng.integers(0, 3, (r, c)).astype(float)
    if kind == 2:  # forbidden pairs
        a = rng.random((r, c))
        a[rng.random((r, c)) < 0.5] = np.inf
        return a
    a = rng.integers(-3, 3, (r, c)).astype(float)  # ties, negatives and forbidden pairs
    a[rng.random((r, c)) < 0.3] = np.inf
    return a


def _both(a: np.ndarray, **kw: bool) -> tuple[object, object]:
    out = []
    for solve in (scipy_lsa, linear_sum_assignment):
        try:
            out.append(solve(a, **kw))
        except ValueError as e:
            out.append(e)
    return out[0], out[1]


@pytest.mark.parametrize("kind", range(4))
def test_same_assignment_as_scipy_on_small_matrices(kind: int) -> None:
    rng = np.random.default_rng(100 + kind)
    feasible = 0
    for _ in range(600):
        r, c = (int(x) for x in rng.integers(0, 8, 2))
        a = _matrix(rng, r, c, kind)
        want, got = _both(a)
        if isinstance(want, ValueError):
            assert isinstance(got, ValueError), (a, got)
            continue
        assert not isinstance(got, ValueError), (a, got)
        feasible += 1
        # SciPy's tie-breaking is reproduced: the very same pairs, not only the same total
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        assert got[0].dtype == np.intp and got[1].dtype == np.intp
    assert feasible > 200


@pytest.mark.parametrize("shape", [(70, 90), (90, 70), (66, 66)])
def test_wide_matrices_take_the_numpy_path_with_the_same_answer(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    for kind in (0, 1, 2):
        a = _matrix(rng, *shape, kind)
        if kind == 2:
            a[np.arange(min(shape)), np.arange(min(shape))] = 5.0  # keep it feasible
        want, got = _both(a)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_maximize_empty_and_invalid_entries() -> None:
    a = np.array([[1.0, 5.0, 2.0], [4.0, 3.0, 9.0]])
    want, got = _both(a, maximize=True)
    np.testing.assert_array_equal(got[1], want[1])
    for shape in [(0, 0), (0, 3), (3, 0)]:
        rows, cols = linear_sum_assignment(np.zeros(shape))
        assert rows.shape == cols.shape == (0,)
    for bad in (np.nan, -np.inf):
        with pytest.raises(ValueError, match="invalid"):
            linear_sum_assignment(np.array([[1.0, bad], [2.0, 3.0]]))
    with pytest.raises(ValueError, match="infeasible"):
        linear_sum_assignment(np.array([[1.0, np.inf], [2.0, np.inf]]))
    with pytest.raises(ValueError, match="2-D"):
        linear_sum_assignment(np.zeros(3))


def test_components_label_in_order_of_least_node() -> None:
    count, label = components(np.array([3, 0, 5]), np.array([4, 2, 4]), 7)
    assert count == 4
    np.testing.assert_array_equal(label, [0, 1, 0, 2, 2, 2, 3])


def _dense_optimum(rows: np.ndarray, cols: np.ndarray, cost: np.ndarray, miss: np.ndarray) -> float:
    """Least total of the sparse problem through SciPy on the whole augmented matrix."""
    nr, nc = len(miss), int(cols.max()) + 1 if len(cols) else 0
    dense = np.full((nr, nc + nr), np.inf)
    dense[rows, cols] = cost
    dense[np.arange(nr), nc + np.arange(nr)] = miss
    r, c = scipy_lsa(dense)
    return float(dense[r, c].sum())


def test_sparse_assignment_reaches_the_dense_optimum() -> None:
    rng = np.random.default_rng(7)
    for _ in range(400):
        nr, nc = (int(x) for x in rng.integers(1, 12, 2))
        cand = np.argwhere(rng.random((nr, nc)) < rng.uniform(0.05, 0.5))
        rows, cols = cand[:, 0], cand[:, 1]
        miss = rng.choice([8.0, 16.0], nr)
        cost = rng.random(len(rows)) * 20.0  # some above their row's miss: never worth taking
        chosen = assign_sparse(rows, cols, cost, miss)
        assert len(set(rows[chosen].tolist())) == len(chosen) == len(set(cols[chosen].tolist()))
        assert np.all(np.diff(rows[chosen]) > 0)
        missed = np.ones(nr, dtype=bool)
        missed[rows[chosen]] = False
        total = cost[chosen].sum() + miss[missed].sum()
        assert total == pytest.approx(_dense_optimum(rows, cols, cost, miss), rel=1e-12, abs=1e-12)


def test_sparse_assignment_of_nothing() -> None:
    none = np.zeros(0, dtype=np.intp)
    assert assign_sparse(none, none, np.zeros(0), np.zeros(3)).shape == (0,)
    assert assign_sparse(np.array([0]), np.array([0]), np.array([5.0]), np.array([1.0])).shape == (0,)


def test_component_solvers_in_python_and_numpy_choose_the_same_pairs() -> None:
    from towerd.assignment import _components_in_python, _components_solved

    rng = np.random.default_rng(8)
    for _ in range(300):
        nr, nc = (int(x) for x in rng.integers(2, 10, 2))
        cand = np.argwhere(rng.random((nr, nc)) < 0.4)
        if len(cand) == 0:
            continue
        rows, cols = cand[:, 0], cand[:, 1]
        miss = rng.choice([8.0, 16.0], nr)
        cost = np.minimum(rng.integers(0, 4, len(rows)) * 2.0, miss[rows])  # ties included
        got = _components_in_python(rows, cols, cost, miss)
        want = _components_solved(rows, cols, cost, miss)
        assert sorted(got.tolist()) == sorted(want.tolist())
