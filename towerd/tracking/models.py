"""Motion models: the transition matrix F(dt) and process noise Q(dt) of the state
[east_m, north_m, up_m, vel_east_mps, vel_north_mps, vel_up_mps]."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from towerd.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConstantVelocity:
    """Nearly-constant-velocity model driven by continuous white-noise acceleration
    (Bar-Shalom, Li & Kirubarajan, *Estimation with Applications to Tracking and
    Navigation*, §6.2.2), the same in each of east, north and up:

        F(dt) = [[I₃, dt I₃],
                 [0,  I₃   ]]

        Q(dt) = q [[dt³/3 I₃, dt²/2 I₃],
                   [dt²/2 I₃, dt    I₃]]

    Units: q is the power spectral density of the acceleration noise, in m²/s³
    ((m/s²)² per Hz). ``accel_noise_mps2`` is √q, so q = accel_noise_mps2². Read it as
    "the acceleration standard deviation that, held over one second, gives the velocity
    uncertainty added per second": over dt the velocity variance grows by
    accel_noise_mps2² · dt (m/s)². Strictly its unit is m/s^1.5; it is named mps2
    because that is how it is tuned (typ. 1–5 for small drones, more for FPV racers).
    """

    accel_noise_mps2: float

    def __post_init__(self) -> None:
        if not np.isfinite(self.accel_noise_mps2) or self.accel_noise_mps2 < 0:
            raise ConfigError(f"accel_noise_mps2 must be finite and >= 0, got {self.accel_noise_mps2!r}")

    @property
    def q(self) -> float:
        """Acceleration noise power spectral density, m²/s³."""
        return self.accel_noise_mps2**2

    def F(self, dt: float | np.ndarray) -> np.ndarray:
        """Transition matrix; dt (seconds) scalar -> (6, 6), or shape (K,) -> (K, 6, 6)."""
        dt = np.asarray(dt, dtype=float)
        f = np.broadcast_to(np.eye(6), dt.shape + (6, 6)).copy()
        idx = np.arange(3)
        f[..., idx, idx + 3] = dt[..., None]
        return f

    def Q(self, dt: float | np.ndarray) -> np.ndarray:
        """Process noise covariance; dt (seconds) scalar -> (6, 6), or (K,) -> (K, 6, 6)."""
        dt = np.asarray(dt, dtype=float)
        q = np.zeros(dt.shape + (6, 6))
        pos, vel = np.arange(3), np.arange(3, 6)
        q[..., pos, pos] = (self.q * (dt * dt * dt / 3.0))[..., None]
        q[..., pos, vel] = q[..., vel, pos] = (self.q * (dt**2 / 2.0))[..., None]
        q[..., vel, vel] = (self.q * dt)[..., None]
        return q  # [[dt³/3, dt²/2], [dt²/2, dt]] · q, each entry times I₃


@dataclass(frozen=True)
class ConstantTurn:
    """Coordinated horizontal turn at a known rate ω, constant vertical velocity
    (Bar-Shalom, Li & Kirubarajan §11.7.1, the turn rate fixed rather than estimated, so
    the model stays linear in the same 6-state as :class:`ConstantVelocity` and the two
    can be mixed in an IMM). ω > 0 turns anticlockwise seen from above (towards north
    when flying east). With a = ω dt, in (east, north):

        e' = e + (sin a / ω) vₑ − ((1 − cos a) / ω) vₙ
        n' = n + ((1 − cos a) / ω) vₑ + (sin a / ω) vₙ
        vₑ' = cos a vₑ − sin a vₙ
        vₙ' = sin a vₑ + cos a vₙ
        u' = u + dt v_u,  v_u' = v_u

    sin a / ω and (1 − cos a) / ω are evaluated as dt·sinc and (ω dt²/2)·sinc², exact
    and continuous at ω = 0 (where the model is CV). Process noise: the CV white-noise
    acceleration Q(dt) with q = ``accel_noise_mps2``², the usual approximation for a
    fixed-rate turn model.
    """

    turn_rate_dps: float
    accel_noise_mps2: float

    def __post_init__(self) -> None:
        if not np.isfinite(self.turn_rate_dps):
            raise ConfigError(f"turn_rate_dps must be finite, got {self.turn_rate_dps!r}")
        ConstantVelocity(self.accel_noise_mps2)  # same validation of the noise

    @property
    def omega(self) -> float:
        """Turn rate, rad/s."""
        return float(np.radians(self.turn_rate_dps))

    def F(self, dt: float | np.ndarray) -> np.ndarray:
        """Transition matrix; dt (seconds) scalar -> (6, 6), or shape (K,) -> (K, 6, 6)."""
        dt = np.asarray(dt, dtype=float)
        w = self.omega
        a = w * dt
        s_w = dt * np.sinc(a / np.pi)  # sin(a) / ω
        c_w = 0.5 * w * dt**2 * np.sinc(a / (2.0 * np.pi)) ** 2  # (1 − cos a) / ω
        ca, sa = np.cos(a), np.sin(a)
        f = np.broadcast_to(np.eye(6), dt.shape + (6, 6)).copy()
        f[..., 0, 3], f[..., 0, 4] = s_w, -c_w
        f[..., 1, 3], f[..., 1, 4] = c_w, s_w
        f[..., 2, 5] = dt
        f[..., 3, 3], f[..., 3, 4] = ca, -sa
        f[..., 4, 3], f[..., 4, 4] = sa, ca
        return f

    def Q(self, dt: float | np.ndarray) -> np.ndarray:
        """Process noise covariance, as :meth:`ConstantVelocity.Q`."""
        return self._cv.Q(dt)

    @cached_property
    def _cv(self) -> ConstantVelocity:
        """The CV model whose Q this one uses (made once, not per prediction)."""
        return ConstantVelocity(self.accel_noise_mps2)


MotionModel = ConstantVelocity | ConstantTurn
"""Linear models of the 6-state that the predictors accept."""
