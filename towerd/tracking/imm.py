"""Interacting multiple model (IMM) filter: a nearly-constant-velocity model and two
fixed-rate coordinated turns (left and right), mixed by mode probabilities.

A single constant-velocity filter must choose its process noise: low and it lags a
turning drone (the gate may lose it), high and straight flight is tracked noisily. The
IMM runs one Kalman filter per motion model and weighs them by how well each explained
the recent measurements, so straight legs are filtered as CV and turns as CT. All three
models are linear in the same 6-state, so prediction and update stay batched NumPy.

Equations (Bar-Shalom, Li & Kirubarajan, *Estimation with Applications to Tracking and
Navigation*, §11.6.6), per track, M models, mode probabilities μ, per-model estimates
(x_i, P_i):

    mode switching over dt:  π_ij = e^(−dt/τ) δ_ij + (1 − e^(−dt/τ)) (1 − δ_ij) / (M − 1)
    predicted mode prob.:    c̄_j = Σ_i π_ij μ_i
    mixing weights:          μ_i|j = π_ij μ_i / c̄_j
    mixed initial estimate:  x0_j = Σ_i μ_i|j x_i
                             P0_j = Σ_i μ_i|j [P_i + (x_i − x0_j)(x_i − x0_j)ᵀ]
    model-matched predict:   x_j⁻ = F_j x0_j,  P_j⁻ = F_j P0_j F_jᵀ + Q_j
    update (a measurement):  per model the Kalman update of
                             :class:`~towerd.tracking.updater.KalmanUpdater`, with
                             likelihood Λ_j = N(y_j; 0, S_j);  μ_j = Λ_j c̄_j / Σ_l Λ_l c̄_l
    no measurement:          μ_j = c̄_j, x_j = x_j⁻
    output (gating, reports): x = Σ_j μ_j x_j,  P = Σ_j μ_j [P_j + (x_j − x)(x_j − x)ᵀ]

τ (``mode_sojourn_s``) is the mean time a target stays in one mode; a per-second
switching rate rather than a per-scan matrix keeps the filter right when frames come at
irregular intervals or from several sensors. Mode probabilities are kept at or above
``MIN_MODE_PROB`` so that no model is ever ruled out for good.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from towerd.errors import ConfigError
from towerd.schema import spec
from towerd.tracking.linalg import FULL_OF_VECH, VECH_A, VECH_B, VECH_OF_FULL, congruence_vech, inv3, quad, sym
from towerd.tracking.models import ConstantTurn, ConstantVelocity, MotionModel
from towerd.tracking.state import STATE_DIM, TrackTable
from towerd.tracking.updater import KalmanUpdater

log = logging.getLogger(__name__)

MIN_MODE_PROB = 1e-6
_LOG_2PI_3 = 3.0 * float(np.log(2.0 * np.pi))
_EYE_FLAT = np.eye(STATE_DIM).reshape(-1)
_EYE_FLAT.flags.writeable = False
_F_VARIES = np.array([3, 4, 9, 10, 17, 21, 22, 27, 28])
"""The flat entries of a turn's F that depend on dt: [0, 3], [0, 4], [1, 3], [1, 4], [2, 5],
[3, 3], [3, 4], [4, 3], [4, 4] (:meth:`ImmPredictor._stacked`)."""
_MAX_CACHED_DT = 64
"""Distinct dt whose π, F and Q an IMM predictor keeps (the cache starts again beyond)."""


@dataclass(frozen=True)
class ImmSettings:
    """``tracking.imm``: the interacting-multiple-model option (CV + left/right turns)."""

    enabled: bool = spec(
        True, doc="use the IMM (CV + two constant turns); false: one CV filter with tracking.accel_noise_mps2"
    )
    cv_accel_noise_mps2: float = spec(
        1.0, doc="process noise of the IMM's constant-velocity model, 1-sigma acceleration", unit="m/s^2",
        lo=0.01, hi=100.0,
    )
    turn_rate_dps: float = spec(
        15.0, doc="turn rate of the two constant-turn models (one left, one right)", unit="deg/s", lo=1.0, hi=180.0
    )
    turn_accel_noise_mps2: float = spec(
        2.0, doc="process noise of the constant-turn models, 1-sigma acceleration", unit="m/s^2", lo=0.01, hi=100.0
    )
    mode_sojourn_s: float = spec(4.0, doc="mean time a target keeps one motion mode", unit="s", lo=0.1, hi=600.0)
    initial_cv_probability: float = spec(
        0.8, doc="probability of the CV mode for a new track (the turns share the rest)", lo=0.01, hi=0.99
    )


def logsumexp_rows(a: np.ndarray) -> np.ndarray:
    """log Σ_j exp(a_kj) of a (K, M) as a (K, 1) column: the arithmetic of
    ``scipy.special.logsumexp(a, axis=1, keepdims=True)`` for real input, step by step
    (every maximum taken out of the sum and counted, log1p of the rest), so the mode
    probabilities keep every bit, without its array-API dispatch (most of the IMM update's
    CPU at ~20 tracks)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        a_max = a.max(axis=1, keepdims=True)
        at_max = a == a_max
        m = at_max.astype(a.dtype).sum(axis=1, keepdims=True, dtype=a.dtype)
        s = np.exp(np.where(at_max, -np.inf, a) - a_max).sum(axis=1, keepdims=True, dtype=a.dtype)
        s = np.where(s == 0, s, s / m)
        out = np.log1p(s) + np.log(m) + a_max
        finite = np.isfinite(out)
        if finite.all():
            return out
        out_inf = np.log(np.sum(np.exp(a), axis=1, keepdims=True))
    return np.where(finite, out, out_inf)


def softmax_rows(a: np.ndarray) -> np.ndarray:
    """exp(a_kj) / Σ_j exp(a_kj) of a (K, M), each row shifted by its maximum first (no
    overflow; the largest term is exp(0) = 1, so the sum is >= 1). The mode
    probabilities' normalisation: what exp(a − logsumexp(a)) gives, to within rounding,
    in five whole-array operations rather than :func:`logsumexp_rows`' fifteen. When a
    row's maximum is not finite (every model ruled out, or an infinite likelihood), the
    whole array is taken as exp(a − logsumexp(a)), as before."""
    a_max = a.max(axis=1, keepdims=True)
    if not np.isfinite(a_max).all():
        with np.errstate(invalid="ignore"):
            return np.exp(a - logsumexp_rows(a))
    e = np.exp(a - a_max)
    return e / np.add.reduce(e, axis=1, keepdims=True)


def combine(mu: np.ndarray, x: np.ndarray, P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Moment-matched mixture: mu (K, M), x (K, M, 6), P (K, M, 6, 6) symmetric -> x̄ (K, 6),
    P̄ (K, 6, 6): x̄ = Σ_j μ_j x_j, P̄ = Σ_j μ_j [P_j + (x_j − x̄)(x_j − x̄)ᵀ]."""
    k, m = mu.shape
    return combine_vech(mu, x, P.reshape(k, m, STATE_DIM * STATE_DIM)[..., VECH_OF_FULL])


def combine_vech(mu: np.ndarray, x: np.ndarray, Pv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`combine` of covariances given by their upper triangles, Pv (K, M, 21)
    (:data:`~towerd.tracking.linalg.VECH_OF_FULL`). Only the 21 distinct entries of each
    P_j + d_j d_jᵀ are formed and weighed (one product for all of them), then copied to
    both halves, so P̄ is exactly symmetric; it is the full 6x6 sum to rounding (the
    product's kernel may add the M terms in another order)."""
    xm = (mu[:, None, :] @ x)[:, 0, :]
    d = x - xm[:, None, :]
    spread = Pv + d[..., VECH_A] * d[..., VECH_B]  # P_j + d_j d_jᵀ, upper triangle (K, M, 21)
    Pm = (mu[:, None, :] @ spread)[:, 0, :]
    return xm, Pm[:, FULL_OF_VECH].reshape(len(mu), STATE_DIM, STATE_DIM)


def _models_predict(FT: np.ndarray, G: np.ndarray, Qv: np.ndarray, x0: np.ndarray,
                    P0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x_j⁻ = F_j x0_j and P_j⁻ = F_j P0_j F_jᵀ + Q_j for K tracks whose model j has one
    F_j (a shared dt): FT (M, 6, 6) = F_jᵀ, G (M, 36, 21) = :func:`congruence_vech` of F,
    Qv (M, 1, 21) the upper triangles of Q_j, x0 (K, M, 6), P0 (K, M, 6, 6) -> x⁻
    (K, M, 6), P⁻ as upper triangles (K, M, 21). Mode-major: for each model one product
    over all K tracks, x0 Fᵀ as (K, 6) @ (6, 6) and vec(P0) G as (K, 36) @ (36, 21),
    instead of K·M products of 6x6 matrices; each entry of F P0 Fᵀ is one sum over P0's
    36 entries, so the result is symmetric as it stands (no ½ (P + Pᵀ) pass)."""
    k, m = x0.shape[:2]
    x_new = (x0.swapaxes(0, 1) @ FT).swapaxes(0, 1)
    P_new = P0.reshape(k, m, STATE_DIM * STATE_DIM).swapaxes(0, 1) @ G
    P_new += Qv
    return x_new, P_new.swapaxes(0, 1)


@dataclass(frozen=True)
class ImmPredictor:
    """IMM mixing and model-matched prediction, batched over K tracks and M models; see
    the module docstring. ``initial_prob`` (M,) is given to every new track."""

    models: tuple[MotionModel, ...]
    mode_sojourn_s: float
    initial_prob: tuple[float, ...]
    _matrices: dict[float, tuple[np.ndarray, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        m = len(self.models)
        if m < 1 or len(self.initial_prob) != m:
            raise ConfigError(
                f"IMM needs >= 1 model and one initial probability each, got {m} / {len(self.initial_prob)}"
            )
        p = np.asarray(self.initial_prob, dtype=float)
        if np.any(p <= 0) or not np.isclose(p.sum(), 1.0):
            raise ConfigError(f"IMM initial probabilities must be > 0 and sum to 1, got {self.initial_prob!r}")
        if not np.isfinite(self.mode_sojourn_s) or self.mode_sojourn_s <= 0:
            raise ConfigError(f"mode_sojourn_s must be > 0, got {self.mode_sojourn_s!r}")

    @property
    def n_modes(self) -> int:
        return len(self.models)

    def transition(self, dt: np.ndarray) -> np.ndarray:
        """Mode transition matrices π (K, M, M) for dt (K,) seconds; rows sum to 1: the
        stay probability exp(−dt / sojourn) on the diagonal, (1 − stay) / (M − 1) elsewhere
        (filled in, not ``stay·I + (1 − stay)(1 − I)/(M − 1)``: the same bits, since x·1 + 0
        and x·0 + y are exact, for a fraction of the arithmetic)."""
        m = self.n_modes
        stay = np.exp(-np.asarray(dt, dtype=float) / self.mode_sojourn_s)
        if m == 1:
            return np.ones((len(stay), 1, 1))
        pi = np.empty((len(stay), m, m))
        pi[...] = ((1.0 - stay) / (m - 1))[:, None, None]
        diagonal = np.arange(m)
        pi[:, diagonal, diagonal] = stay[:, None]
        return pi

    def attach(self, tracks: TrackTable) -> TrackTable:
        """Tracks without modes (new ones) get M copies of their state and the initial
        mode probabilities (a new table; the same one when it has this IMM's modes)."""
        if tracks.n_modes == self.n_modes:
            return tracks
        if tracks.n_modes != 0:
            raise ValueError(f"tracks have {tracks.n_modes} modes, this IMM {self.n_modes}")
        return tracks.with_modes(self._initial_prob_row, tracks.state[:, None, :], tracks.cov[:, None, :, :])

    @cached_property
    def _initial_prob_row(self) -> np.ndarray:
        """(1, M) the initial mode probabilities, broadcast over new tracks."""
        row = np.asarray(self.initial_prob, dtype=float)[None, :]
        row.flags.writeable = False
        return row

    def matrices(self, dt: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(π (M, M), F (M, 6, 6), Fᵀ (M, 6, 6), Q (M, 6, 6)) of one dt (seconds), each
        model's F and Q stacked on the first axis, read-only. Frame times come from the
        sensors' clocks, so dt is rarely the same twice: the models' matrices are filled
        in for all M models at once (:meth:`_stacked`, the same arithmetic as their
        ``F``/``Q``), and kept for a repeated dt."""
        got = self._matrices.get(dt)
        if got is None:
            if len(self._matrices) >= _MAX_CACHED_DT:
                self._matrices.clear()
            stacked = self._stacked(dt)
            if stacked is None:
                d = np.array([dt])
                F = np.stack([model.F(d)[0] for model in self.models])
                Q = np.stack([model.Q(d)[0] for model in self.models])
                Qv = Q.reshape(len(Q), 1, -1)[..., VECH_OF_FULL]
            else:
                F, Q, Qv = stacked
            got = (self.transition(np.array([dt]))[0], F, np.ascontiguousarray(np.swapaxes(F, -1, -2)), Q, congruence_vech(F), Qv)
            for a in got:
                a.flags.writeable = False
            self._matrices[dt] = got
        return got[:4]

    def _shared_matrices(self, dt: float) -> tuple[np.ndarray, ...]:
        """:meth:`matrices` of dt with, after them, :func:`congruence_vech` of F (M, 36, 21)
        and the upper triangles of Q (M, 1, 21)."""
        got = self._matrices.get(dt)
        if got is None:
            self.matrices(dt)
            got = self._matrices[dt]
        return got

    def _stacked(self, dt: float) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(F (M, 6, 6), Q (M, 6, 6), Q's upper triangles (M, 1, 21)) at dt when every model is a CV or a constant turn
        (None otherwise): :meth:`ConstantTurn.F` for all models at once, a CV being the
        turn of rate 0 (entries that are 0 for it stay +0), and the CV white-noise Q
        scaled per model by its q. In the daemon dt differs every frame (frame times are
        the host's reception times), so this runs once a frame: the M-element arithmetic
        is done on Python floats (the same IEEE operations, in the same order, as
        whole-array NumPy), only sin and cos go through NumPy (on the arrays of M
        arguments that ``ConstantTurn.F`` gives them), and F is filled by one assignment."""
        params = self._turns
        if params is None:
            return None
        w, q, neg = params
        a = [w_j * dt for w_j in w]
        y1 = [np.pi * (x if x != 0 else 1.0e-20) for x in (a_j / np.pi for a_j in a)]  # _sinc(a / π)'s argument
        y2 = [np.pi * (x if x != 0 else 1.0e-20) for x in (a_j / (2.0 * np.pi) for a_j in a)]
        a_arr = np.array(a)
        sin1, sin2 = np.sin(np.array(y1)).tolist(), np.sin(np.array(y2)).tolist()
        ca, sa = np.cos(a_arr).tolist(), np.sin(a_arr).tolist()
        dt2, vals = dt * dt, []
        for j in range(len(w)):  # F's entries _F_VARIES, model by model
            s_w = dt * (sin1[j] / y1[j])
            sinc2 = sin2[j] / y2[j]
            c_w = 0.5 * w[j] * dt2 * (sinc2 * sinc2)
            vals += (s_w, c_w * neg[j], c_w, s_w, dt, ca[j], sa[j] * neg[j], sa[j], ca[j])
        F = np.tile(_EYE_FLAT, (len(w), 1))
        F[:, _F_VARIES] = np.array(vals).reshape(len(w), len(_F_VARIES))
        p3, p2 = dt2 * dt / 3.0, dt2 / 2.0  # the CV white-noise Q of unit q, [[dt³/3, dt²/2], [dt²/2, dt]] ⊗ I₃
        unit = np.array([p3, 0.0, 0.0, p2, 0.0, 0.0, 0.0, p3, 0.0, 0.0, p2, 0.0, 0.0, 0.0, p3, 0.0, 0.0, p2,
                         p2, 0.0, 0.0, dt, 0.0, 0.0, 0.0, p2, 0.0, 0.0, dt, 0.0, 0.0, 0.0, p2, 0.0, 0.0, dt])
        Q = q[:, None] * unit  # q_j times each entry, as q[:, None, None] * unit (6, 6)
        return F.reshape(-1, STATE_DIM, STATE_DIM), Q.reshape(-1, STATE_DIM, STATE_DIM), Q[:, None, VECH_OF_FULL]

    @cached_property
    def _turns(self) -> tuple[tuple[float, ...], np.ndarray, tuple[float, ...]] | None:
        """(ω (M,) rad/s, q (M,) m²/s³ (an array), sign (M,)) of the models (a CV's ω is 0; sign −1
        negates a turn's entries, +1 keeps a CV's zeros +0 as in its F), None when one
        is neither a CV nor a constant turn."""
        if not all(isinstance(m, (ConstantVelocity, ConstantTurn)) for m in self.models):
            return None
        w = tuple(m.omega if isinstance(m, ConstantTurn) else 0.0 for m in self.models)
        q = np.array([m.accel_noise_mps2**2 for m in self.models])
        return w, q, tuple(-1.0 if isinstance(m, ConstantTurn) else 1.0 for m in self.models)

    def predict_tracks(self, tracks: TrackTable, dt: np.ndarray | float) -> None:
        """Mix and predict every row of ``tracks`` (writable) by its dt (K,) s (a float: the
        same for every row), in place:
        mode_prob becomes c̄, mode_state/mode_cov the model-matched predictions, and
        state/cov their combination:

            c̄_j = Σ_i π_ij μ_i,   μ_i|j = π_ij μ_i / c̄_j,   x0_j = Σ_i μ_i|j x_i,
            P0_j = Σ_i μ_i|j [P_i + (x_i − x0_j)(x_i − x0_j)ᵀ],
            x_j⁻ = F_j x0_j,   P_j⁻ = F_j P0_j F_jᵀ + Q_j

        All K tracks and M models in one batch; π, F and Q are taken once per distinct dt
        (normally one per frame: every track is predicted to the frame time)."""
        k = len(tracks)
        if k == 0:
            return
        if isinstance(dt, float):  # one dt for every track (the tracker's usual frame)
            d0, shared = dt, True
        else:
            dt = np.asarray(dt, dtype=float)
            if dt.shape != (k,):
                dt = np.full(k, dt)
            d0 = float(dt[0])
            shared = bool((dt == d0).all())
        mu, x, P = tracks.mode_prob, tracks.mode_state, tracks.mode_cov
        m = self.n_modes
        if shared:
            pi, F, FT, Q, G, Qv = self._shared_matrices(d0)
            c_bar = mu @ pi  # (K, M): one product for all tracks
        else:
            pi = self.transition(dt)  # (K, M, M)
            F = np.stack([model.F(dt) for model in self.models], axis=1)  # (K, M, 6, 6)
            FT = np.swapaxes(F, -1, -2)
            Q = np.stack([model.Q(dt) for model in self.models], axis=1)
            c_bar = (mu[:, None, :] @ pi)[:, 0, :]  # (K, M)
        w = mu[:, :, None] * pi / c_bar[:, None, :]  # μ_i|j, (K, i, j)
        wT = w.swapaxes(1, 2)  # (K, j, i)
        x0 = wT @ x  # Σ_i μ_i|j x_i, (K, M, 6)
        d = x[:, None, :, :] - x0[:, :, None, :]  # x_i − x0_j, (K, j, i, 6)
        spread = (d * wT[..., None]).swapaxes(-1, -2) @ d  # Σ_i μ_i|j d d^T, (K, j, 6, 6)
        P0 = (wT @ P.reshape(k, m, STATE_DIM * STATE_DIM)).reshape(k, m, STATE_DIM, STATE_DIM) + spread
        if shared:
            x_new, Pv = _models_predict(FT, G, Qv, x0, P0)
            P_new = Pv[..., FULL_OF_VECH].reshape(k, m, STATE_DIM, STATE_DIM)
        else:
            x_new = (F @ x0[..., None])[..., 0]
            P_new = sym(F @ P0 @ FT + Q)
            Pv = P_new.reshape(k, m, STATE_DIM * STATE_DIM)[..., VECH_OF_FULL]
        mu_new = c_bar / np.add.reduce(c_bar, axis=1, keepdims=True)
        tracks.mode_prob, tracks.mode_state, tracks.mode_cov = mu_new, x_new, P_new
        tracks.state, tracks.cov = combine_vech(mu_new, x_new, Pv)


@dataclass(frozen=True)
class ImmUpdater:
    """IMM measurement update: a Kalman update per model (the same equations as
    :class:`~towerd.tracking.updater.KalmanUpdater`), mode probabilities re-weighed by
    each model's measurement likelihood, then combined; see the module docstring."""

    kalman: KalmanUpdater = KalmanUpdater()

    def update_tracks(self, tracks: TrackTable, rows: np.ndarray, z: np.ndarray, R: np.ndarray) -> None:
        """Update the rows ``rows`` (N,) of ``tracks`` (writable) with z (N, 3) m and R
        (N, 3, 3) m², in place."""
        n = len(rows)
        if n == 0:
            return
        x, P = tracks.mode_state[rows], tracks.mode_cov[rows]  # (N, M, 6), (N, M, 6, 6)
        prior = tracks.mode_prob[rows]  # (N, M)
        R = R[:, None]  # each track's measurement for all its modes
        y, S = self.kalman.innovation(x, P, z[:, None], R)
        S_inv, det = inv3(S)
        log_lik = -0.5 * (quad(S_inv, y) + np.log(det) + _LOG_2PI_3)  # ln N(y; 0, S), (N, M)
        x_up, P_up = self.kalman.update_given(x, P, y, R, S_inv)

        log_post = log_lik + np.log(prior)
        mu = softmax_rows(log_post)
        mu = np.maximum(mu, MIN_MODE_PROB)
        mu /= np.add.reduce(mu, axis=1, keepdims=True)
        tracks.mode_prob[rows], tracks.mode_state[rows], tracks.mode_cov[rows] = mu, x_up, P_up
        tracks.state[rows], tracks.cov[rows] = combine(mu, x_up, P_up)


def imm_models(settings: ImmSettings) -> tuple[MotionModel, ...]:
    """(CV, left turn, right turn) from the settings."""
    return (
        ConstantVelocity(settings.cv_accel_noise_mps2),
        ConstantTurn(settings.turn_rate_dps, settings.turn_accel_noise_mps2),
        ConstantTurn(-settings.turn_rate_dps, settings.turn_accel_noise_mps2),
    )


def build_imm(settings: ImmSettings) -> tuple[ImmPredictor, ImmUpdater]:
    """The predictor/updater pair of the IMM described by ``settings``."""
    p_cv = settings.initial_cv_probability
    predictor = ImmPredictor(
        models=imm_models(settings),
        mode_sojourn_s=settings.mode_sojourn_s,
        initial_prob=(p_cv, (1.0 - p_cv) / 2.0, (1.0 - p_cv) / 2.0),
    )
    return predictor, ImmUpdater()
