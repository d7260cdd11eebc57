"""The tracker's small-matrix algebra (towerd.tracking.linalg) against NumPy's, and the
gating the tracker reuses (GnnAssociator.gate_pairs / assign) against the answer of
``associate`` and of a direct computation."""

from __future__ import annotations

import numpy as np
from numpy.testing import assert_allclose

from towerd.tracking.associator import GnnAssociator, solve_gated, solve_gated_pairs
from towerd.tracking.doppler import DopplerGate, RadialSpeeds, position_update
from towerd.tracking.imm import ImmPredictor, ImmSettings, combine, combine_vech, imm_models
from towerd.tracking.linalg import VECH_OF_FULL, congruence_vech, inv3, norm_rows, quad


def _spd(rng: np.random.Generator, n: int, dim: int, scale: float = 1.0) -> np.ndarray:
    a = rng.normal(0.0, scale, (n, dim, dim))
    return a @ np.swapaxes(a, 1, 2) + 0.1 * np.eye(dim)


def test_congruence_vech_gives_f_p_ft_exactly_symmetric():
    rng = np.random.default_rng(4)
    F, P = rng.normal(size=(3, 6, 6)), _spd(rng, 3 * 20, 6, 5.0).reshape(20, 3, 6, 6)
    Pv = (P.reshape(20, 3, 36).swapaxes(0, 1) @ congruence_vech(F)).swapaxes(0, 1)  # (20, 3, 21)
    full = np.zeros((20, 3, 6, 6))
    iu = np.triu_indices(6)
    full[..., iu[0], iu[1]] = Pv
    full[..., iu[1], iu[0]] = Pv
    assert_allclose(full, F @ P @ np.swapaxes(F, -1, -2), rtol=1e-12, atol=1e-12)


def test_congruence_vech_entries_are_the_products_of_f_entries_bit_for_bit():
    """G[(c, d), t] = F[a_t, c] F[b_t, d], each one rounded product (no other arithmetic)."""
    F = np.random.default_rng(7).normal(size=(3, 6, 6))
    a, b = np.triu_indices(6)
    want = (F[:, a, :, None] * F[:, b, None, :]).reshape(3, 21, 36).swapaxes(-1, -2)
    got = congruence_vech(F)
    assert got.shape == (3, 36, 21) and got.flags.c_contiguous
    assert got.tobytes() == np.ascontiguousarray(want).tobytes()


def test_imm_matrices_of_one_dt_are_the_models_own_bit_for_bit():
    """π, F, Q (and Q's upper triangles) of one shared dt, made once a dt for all models
    on Python floats, are the bits of the models' own F(dt), Q(dt) and of transition()."""
    rng = np.random.default_rng(8)
    dts = [0.0, 1e-12, 0.05, 0.1, 0.09999999999999964, 0.1 + 1e-9, 1.0, 3.7, 600.0, *rng.uniform(0.0, 0.5, 200)]
    for settings in (ImmSettings(), ImmSettings(turn_rate_dps=3.3, cv_accel_noise_mps2=0.37,
                                                turn_accel_noise_mps2=7.1, mode_sojourn_s=0.77)):
        pred = ImmPredictor(imm_models(settings), mode_sojourn_s=settings.mode_sojourn_s,
                            initial_prob=(0.8, 0.1, 0.1))
        for dt in dts:
            d = np.array([float(dt)])
            pi, F, FT, Q = pred.matrices(float(dt))
            F_own = np.stack([m.F(d)[0] for m in pred.models])
            Q_own = np.stack([m.Q(d)[0] for m in pred.models])
            assert pi.tobytes() == pred.transition(d)[0].tobytes()
            assert F.tobytes() == F_own.tobytes() and FT.tobytes() == np.ascontiguousarray(F_own.swapaxes(1, 2)).tobytes()
            assert Q.tobytes() == Q_own.tobytes()
            Qv = pred._shared_matrices(float(dt))[5]
            assert Qv.tobytes() == Q_own.reshape(3, 1, 36)[..., VECH_OF_FULL].tobytes()


def test_combine_on_upper_triangles_is_the_full_sum_and_exactly_symmetric():
    rng = np.random.default_rng(5)
    mu = rng.dirichlet(np.ones(3), 40)
    x, P = rng.normal(0.0, 50.0, (40, 3, 6)), _spd(rng, 120, 6, 3.0).reshape(40, 3, 6, 6)
    P = 0.5 * (P + np.swapaxes(P, -1, -2))
    xm, Pm = combine_vech(mu, x, P.reshape(40, 3, 36)[..., VECH_OF_FULL])
    d = x - xm[:, None, :]
    full = (mu[:, None, :] @ (P + d[..., :, None] * d[..., None, :]).reshape(40, 3, 36)).reshape(40, 6, 6)
    assert_allclose(Pm, full, rtol=0, atol=1e-14 * np.abs(full).max())
    assert np.array_equal(Pm, np.swapaxes(Pm, -1, -2))
    assert np.array_equal(combine(mu, x, P)[1], Pm)


def test_inv3_is_numpys_inverse_and_determinant():
    rng = np.random.default_rng(1)
    for scale in (1e-2, 1.0, 30.0):
        S = _spd(rng, 200, 3, scale)
        S_inv, det = inv3(S)
        assert_allclose(S_inv @ S, np.broadcast_to(np.eye(3), S.shape), atol=1e-9)
        assert_allclose(det, np.linalg.det(S), rtol=1e-12)
        y = rng.normal(0.0, scale, (200, 3))
        assert_allclose(quad(S_inv, y), np.einsum("mi,mi->m", y, np.linalg.solve(S, y[..., None])[..., 0]),
                        rtol=1e-10)
    S_inv, det = inv3(_spd(rng, 12, 3).reshape(4, 3, 3, 3))  # leading axes kept
    assert S_inv.shape == (4, 3, 3, 3) and det.shape == (4, 3)


def test_norm_rows_is_numpys_norm_bit_for_bit():
    d = np.random.default_rng(2).normal(0.0, 100.0, (500, 3))
    assert norm_rows(d).tobytes() == np.linalg.norm(d, axis=1).tobytes()


def test_solve_gated_pairs_points_at_solve_gateds_answer():
    rng = np.random.default_rng(3)
    for _ in range(200):
        k, n = int(rng.integers(1, 12)), int(rng.integers(1, 12))
        flat = rng.choice(k * n, size=int(rng.integers(1, k * n + 1)), replace=False)
        ti, di = np.divmod(np.sort(flat), n)
        d2 = rng.uniform(0.0, 16.0, len(ti))
        miss = np.where(rng.random(k) < 0.5, 16.27, 32.54)
        chosen = solve_gated_pairs(ti, di, d2, miss)
        t_out, d_out = solve_gated(ti, di, d2, miss)
        assert np.array_equal(ti[chosen], t_out) and np.array_equal(di[chosen], d_out)
        assert np.all(np.diff(t_out) > 0)


def test_gate_pairs_hold_what_gating_and_scoring_compute():
    rng = np.random.default_rng(4)
    doppler = DopplerGate()
    assoc = GnnAssociator(0.999, doppler=doppler)
    k, n = 15, 25
    x = np.zeros((k, 6))
    x[:, :3] = rng.uniform(-40.0, 40.0, (k, 3))
    x[:, 3:] = rng.normal(0.0, 5.0, (k, 3))
    P = _spd(rng, k, 6, 2.0)
    z = np.concatenate([x[:, :3] + rng.normal(0.0, 1.0, (k, 3)), rng.uniform(-40.0, 40.0, (n - k, 3))])
    R = _spd(rng, n, 3, 0.5)
    speed = rng.normal(0.0, 8.0, n)
    speed[::7] = np.nan  # some points without a radial speed
    radial = RadialSpeeds(speed, np.full(n, 0.04), np.zeros(3))
    initiating = rng.random(k) < 0.3
    established = ~initiating & (rng.random(k) < 0.6)

    g = assoc.gate_pairs(x, P, z, R, radial=radial, initiating=initiating)
    all_t, all_d = np.divmod(np.arange(k * n), n)
    d2_all = assoc.mahalanobis2(x, P, z, R, all_t, all_d)
    inside = d2_all <= assoc.gate
    want = set(zip(all_t[inside].tolist(), all_d[inside].tolist()))
    assert set(zip(g.track_idx.tolist(), g.det_idx.tolist())) == want
    assert_allclose(g.d2, assoc.mahalanobis2(x, P, z, R, g.track_idx, g.det_idx), rtol=1e-12)
    S = P[g.track_idx][:, :3, :3] + R[g.det_idx]
    assert_allclose(g.det_S, np.linalg.det(S), rtol=1e-12)

    first = initiating[g.track_idx]
    xs, Ps = x[g.track_idx].copy(), P[g.track_idx].copy()
    xs[first], Ps[first] = position_update(xs[first], Ps[first], z[g.det_idx[first]], R[g.det_idx[first]])
    e, s2 = doppler.residual(xs, Ps, radial, g.det_idx)
    assert_allclose(g.e_r, e, rtol=1e-12)
    assert_allclose(g.s2_r, s2, rtol=1e-12)
    eps = e**2 / (s2 + np.where(first, 0.0, doppler.manoeuvre_sigma_mps**2))
    assert np.array_equal(g.doppler_ok, ~(eps > doppler.gate))
    assert np.isnan(g.e_r[np.isnan(speed[g.det_idx])]).all()

    ti, di, pair = assoc.assign(g, k, established)
    assert np.array_equal(g.track_idx[pair], ti) and np.array_equal(g.det_idx[pair], di)
    at, ad = assoc.associate(x, P, z, R, established=established, radial=radial, initiating=initiating)
    assert np.array_equal(ti, at) and np.array_equal(di, ad)


def test_imm_prediction_with_one_dt_equals_prediction_per_track():
    """The cached π, F, Q of one shared dt give what the per-track matrices give."""
    from towerd.tracking.state import TrackTable

    rng = np.random.default_rng(5)
    pred = ImmPredictor(imm_models(ImmSettings()), mode_sojourn_s=4.0, initial_prob=(0.8, 0.1, 0.1))
    k = 10
    x = np.zeros((k, 6))
    x[:, :3] = rng.uniform(-50.0, 50.0, (k, 3))
    x[:, 3:] = rng.normal(0.0, 5.0, (k, 3))

    def table() -> TrackTable:
        t = np.zeros(k)
        tab = TrackTable(np.arange(k), np.zeros(k), np.ones(k), np.zeros(k), np.ones(k), x.copy(),
                         _spd(np.random.default_rng(6), k, 6, 2.0), t, t, t)
        return pred.attach(tab)

    shared, mixed = table(), table()
    pred.predict_tracks(shared, np.full(k, 0.1))
    dt = np.full(k, 0.1)
    dt[-1] = 0.1 + 1e-12  # one track off the shared dt: every track takes the per-track path
    pred.predict_tracks(mixed, dt)
    assert_allclose(shared.mode_state[:-1], mixed.mode_state[:-1], rtol=1e-12, atol=1e-12)
    assert_allclose(shared.mode_cov[:-1], mixed.mode_cov[:-1], rtol=1e-12, atol=1e-12)
    assert_allclose(shared.mode_prob[:-1], mixed.mode_prob[:-1], rtol=1e-12)
    assert_allclose(shared.cov, mixed.cov, rtol=1e-9, atol=1e-9)
