"""RowCarry: per-track state follows its track id when tracks come and go, whatever the
order of the previous ids, and one carry serves every component that holds them."""

from __future__ import annotations

import numpy as np
import pytest

from towerd.tracking.carry import RowCarry


def by_dict(known: np.ndarray, state: np.ndarray, ids: np.ndarray, new_row: np.ndarray) -> np.ndarray:
    rows = {int(t): state[i] for i, t in enumerate(known)}
    return np.array([rows.get(int(t), new_row[0]) for t in ids]).reshape(len(ids), state.shape[1])


@pytest.mark.parametrize("sort_known", [True, False])
def test_gather_keeps_each_row_with_its_track_id(sort_known):
    rng = np.random.default_rng(3)
    new_row = np.full((1, 2), -1.0)
    for _ in range(300):
        known = rng.choice(60, size=rng.integers(0, 30), replace=False).astype(np.uint32)
        if sort_known:
            known.sort()
        ids = rng.choice(60, size=rng.integers(0, 30), replace=False).astype(np.uint32)
        ids.sort()
        state = rng.normal(size=(len(known), 2))
        carry = RowCarry(known, ids)
        np.testing.assert_array_equal(carry.gather(state, new_row), by_dict(known, state, ids, new_row))
        new = carry.new()
        want_new = ~np.isin(ids, known)
        if want_new.any():
            np.testing.assert_array_equal(new, want_new)
        else:
            assert new is None


def test_same_rows_gather_nothing_and_the_ids_are_kept_safe_from_the_caller():
    ids = np.array([3, 5, 9], dtype=np.uint32)
    state = np.arange(6.0).reshape(3, 2)
    carry = RowCarry(ids.copy(), ids)
    assert carry.index is None and carry.new() is None
    assert carry.gather(state, np.zeros((1, 2))) is state
    ids[0] = 4  # a writable array the caller may change: the carry holds a copy
    assert carry.ids.tolist() == [3, 5, 9]
    frozen = np.array([3, 5], dtype=np.uint32)
    frozen.flags.writeable = False
    assert RowCarry(carry.ids, frozen).ids is frozen  # read-only: kept as it is
    assert carry.fits(carry.known) and not carry.fits(carry.ids.copy())
    assert RowCarry(np.zeros(0, np.uint32), ids).fits(np.zeros(0, np.uint32))  # empty is empty
