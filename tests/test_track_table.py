"""TrackTable as one structured array: columns are views of its rows, rows move as bytes,
and what the tracker hands out stays read-only; plus the scipy-free pieces of the
tracker (radius pregate, per-dt IMM matrices) against what they replace."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from towerd.icd import Status
from towerd.tracking.associator import radius_pairs
from towerd.tracking.imm import ImmSettings, build_imm
from towerd.tracking.state import TrackTable, row_dtype


def table(k: int, m: int = 0, seed: int = 0) -> TrackTable:
    rng = np.random.default_rng(seed)
    prob = rng.dirichlet(np.ones(m), k) if m else None
    return TrackTable(
        np.arange(10, 10 + k), np.full(k, Status.CONFIRMED), rng.integers(1, 9, k), rng.integers(0, 3, k),
        rng.integers(0, 2**40, k).astype(np.uint64), rng.normal(size=(k, 6)), rng.normal(size=(k, 6, 6)),
        rng.random(k), rng.random(k), rng.random(k), mode_prob=prob,
        mode_state=rng.normal(size=(k, m, 6)) if m else None, mode_cov=rng.normal(size=(k, m, 6, 6)) if m else None,
        score=rng.normal(size=k),
    )


def columns(t: TrackTable) -> dict[str, np.ndarray]:
    names = ("track_id", "status", "hits", "misses", "hit_history", "state", "cov", "t_mono", "t_last_update",
             "t_created", "mode_prob", "mode_state", "mode_cov", "doppler_score", "doppler_hits", "score")
    return {n: np.array(getattr(t, n)) for n in names}


@pytest.mark.parametrize("m", [0, 3])
def test_select_concatenate_copy_keep_every_column(m: int) -> None:
    a, b = table(5, m, 1), table(3, m, 2)
    ca, cb = columns(a), columns(b)
    assert a.state.dtype == np.float64 and a.status.dtype == np.uint8 and a.hit_history.dtype == np.uint64
    assert a.n_modes == m and np.isnan(a.doppler_score).all() and (a.doppler_hits == 0).all()
    both = TrackTable.concatenate([a, b])
    picked = both.select(np.array([6, 0, 2]))
    for name, col in ca.items():
        assert_array_equal(getattr(both, name), np.concatenate([col, cb[name]]))
        assert_array_equal(getattr(picked, name), np.concatenate([col, cb[name]])[[6, 0, 2]])
        assert_array_equal(getattr(a.copy(), name), col)
        assert_array_equal(getattr(a.remove(np.arange(5) == 1), name), np.delete(col, 1, axis=0))


def test_kept_and_joined_is_select_then_concatenate() -> None:
    a, new = table(7, 3, seed=1), table(3, 3, seed=2)
    keep = np.array([True, False, True, True, False, True, True])
    both = a.kept_and_joined(keep, new)
    assert_array_equal(both.rows.view(np.uint8), TrackTable.concatenate([a.select(keep), new]).rows.view(np.uint8))
    assert_array_equal(a.kept_and_joined(keep, None).rows.view(np.uint8), a.select(keep).rows.view(np.uint8))
    assert_array_equal(a.kept_and_joined(None, new).track_id, np.r_[a.track_id, new.track_id])
    assert a.kept_and_joined(None, None) is a  # nothing dropped or added: no copy
    with pytest.raises(ValueError, match="IMM modes"):
        a.kept_and_joined(None, table(2, 0))


def test_columns_are_views_and_assignment_writes_the_rows() -> None:
    t = table(4, 3)
    t.hits[1] = 77
    t.state = np.ones((4, 6))
    t.mode_prob[:, 0] = 0.5
    assert t.rows["hits"][1] == 77 and (t.rows["state"] == 1).all() and (t.rows["mode_prob"][:, 0] == 0.5).all()
    copy = t.copy()
    copy.score[:] = 9.0
    assert not (t.score == 9.0).any()


def test_freeze_makes_columns_read_only_even_views_made_before() -> None:
    t = table(3)
    state = t.state
    t.freeze()
    for col in (state, t.state, t.status, t.rows):
        with pytest.raises(ValueError):
            col[...] = 0
    assert t.copy().state.flags.writeable


def test_with_modes_changes_m_and_keeps_the_rest() -> None:
    t = table(4, 0, 5)
    before = columns(t)
    u = t.with_modes(np.full((4, 3), 1 / 3), np.ones((4, 3, 6)), np.ones((4, 3, 6, 6)))
    assert u.n_modes == 3 and u.rows.dtype == row_dtype(3)
    for name, col in before.items():
        if not name.startswith("mode_"):
            assert_array_equal(getattr(u, name), col)
    assert_array_equal(u.mode_prob, 1 / 3)
    with pytest.raises(ValueError, match="modes"):
        TrackTable.concatenate([u, table(2, 0)])


def test_radius_pairs_are_all_pairs_within_each_radius() -> None:
    rng = np.random.default_rng(4)
    for _ in range(50):
        k, n = (int(x) for x in rng.integers(0, 60, 2))
        centres = rng.uniform(-500, 500, (k, 3))
        z = np.vstack([centres[: k // 2] + rng.normal(0, 10, (k // 2, 3)), rng.uniform(-500, 500, (n, 3))])
        radius = rng.uniform(1, 80, k)
        ti, di = radius_pairs(centres, radius, z)
        dist = np.linalg.norm(z[None, :, :] - centres[:, None, :], axis=2) if k else np.zeros((0, len(z)))
        want_t, want_d = np.nonzero(dist <= radius[:, None])
        assert_array_equal(ti, want_t)
        assert_array_equal(di, want_d)


def test_imm_matrices_per_dt_are_the_models_own_bit_for_bit() -> None:
    predictor, _ = build_imm(ImmSettings(turn_rate_dps=20.0))
    for dt in np.concatenate([[0.0, 0.1, 1e-9, 3.0], np.random.default_rng(3).uniform(0, 2, 200)]):
        d = np.array([float(dt)])
        F = np.stack([m.F(d)[0] for m in predictor.models])
        Q = np.stack([m.Q(d)[0] for m in predictor.models])
        _, F2, FT2, Q2 = predictor.matrices(float(dt))
        assert F2.tobytes() == F.tobytes() and Q2.tobytes() == Q.tobytes()
        assert FT2.tobytes() == np.ascontiguousarray(F.swapaxes(-1, -2)).tobytes()


def test_pickle_and_deepcopy_keep_rows_and_their_byte_view_together() -> None:
    import copy
    import pickle

    t = table(3, 3).freeze()
    for u in (pickle.loads(pickle.dumps(t)), copy.deepcopy(t)):
        u.hits[0] = 99  # a writable copy: moves of its rows must see the change
        assert u.copy().hits[0] == 99 and u.select(np.array([0])).hits[0] == 99
        assert_array_equal(u.mode_cov, t.mode_cov)
