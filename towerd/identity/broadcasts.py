"""Transmitters' latest broadcast positions as measurements in local ENU, with the
variances their own accuracy fields give.

A measurement is the 5-vector z = [east_m, north_m, up_m, vel_east_mps, vel_north_mps]
with a diagonal variance (N, 5). F3411 accuracies are 95 % bounds, so (``K2`` = √χ²₂⁻¹(0.95),
``K1`` = √χ²₁⁻¹(0.95)):

    σ_e = σ_n = h_accuracy / K2      σ_u = v_accuracy / K1      σ_ve = σ_vn = speed_accuracy / K2

and a position up to ``latency_s`` old when sent adds speed² · latency² / 3 to each
horizontal variance (the mean square of a uniform delay in [0, latency]). Components a
broadcast does not give are flagged unknown in ``known`` (N, 5): no altitude (neither
geodetic nor pressure), no velocity (no speed, or a non-zero speed without a course).
A pressure altitude stands in for the geodetic one with ``default_v_accuracy_m``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from towerd import geo
from towerd.identity.settings import RemoteIdSettings
from towerd.identity.transmitters import Transmitter

K2 = math.sqrt(-2.0 * math.log(0.05))
"""√χ²₂⁻¹(0.95) = 2.4477: a 2D 95 % radius over the per-axis sigma."""
K1 = 1.959964
"""√χ²₁⁻¹(0.95): a 1D 95 % bound over its sigma."""
MEAS_DIM = 5


@dataclass(frozen=True, eq=False)
class Broadcasts:
    """N transmitters' latest positions. keys (N,) str; t_mono (N,): when the position
    was received; z (N, 5) (unknown components 0); var (N, 5) m², m²/s²; known (N, 5)
    bool; h_accuracy_m (N,) the 95 % horizontal accuracy used."""

    keys: tuple[str, ...]
    t_mono: np.ndarray
    z: np.ndarray
    var: np.ndarray
    known: np.ndarray
    h_accuracy_m: np.ndarray

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def pos_enu_m(self) -> np.ndarray:
        """(N, 3)."""
        return self.z[:, :3]


def _or(value: float, default: float) -> float:
    return default if math.isnan(value) else value


def broadcasts(transmitters: Sequence[Transmitter], site: geo.Site, settings: RemoteIdSettings) -> Broadcasts:
    """The measurements of those ``transmitters`` that have a position."""
    txs = [tx for tx in transmitters if tx.has_position]
    n = len(txs)
    z, var = np.zeros((n, MEAS_DIM)), np.ones((n, MEAS_DIM))
    known = np.ones((n, MEAS_DIM), dtype=bool)
    h_acc = np.zeros(n)
    lat, lon, alt = np.zeros(n), np.zeros(n), np.full(n, site.height_m)
    s = settings
    for i, tx in enumerate(txs):
        r = tx.merged
        lat[i], lon[i] = r.lat_deg, r.lon_deg
        h_acc[i] = _or(r.h_accuracy_m, s.default_h_accuracy_m)
        v_acc = _or(r.v_accuracy_m, s.default_v_accuracy_m)
        if not math.isnan(r.alt_geo_m):
            alt[i] = r.alt_geo_m
        elif not math.isnan(r.alt_baro_m):
            alt[i], v_acc = r.alt_baro_m, max(v_acc, s.default_v_accuracy_m)
        else:
            known[i, 2] = False
        speed = r.speed_mps
        if math.isnan(speed) or (math.isnan(r.course_deg) and speed > 0.0):
            known[i, 3:] = False
            speed = 0.0
        else:
            c = math.radians(_or(r.course_deg, 0.0))
            z[i, 3], z[i, 4] = speed * math.sin(c), speed * math.cos(c)
        sv = _or(r.speed_accuracy_mps, s.default_speed_accuracy_mps) / K2
        sh2 = (h_acc[i] / K2) ** 2 + speed**2 * s.latency_s**2 / 3.0
        var[i] = (sh2, sh2, (v_acc / K1) ** 2, sv**2, sv**2)
    if n:
        z[:, :3] = geo.geodetic_to_enu(site, lat, lon, alt)
    z[:, 2] = np.where(known[:, 2], z[:, 2], 0.0)
    return Broadcasts(tuple(tx.key for tx in txs), np.array([tx.t_position for tx in txs]), z, var, known, h_acc)


class BroadcastCache:
    """:func:`broadcasts` computed once per new position of a transmitter (the geodetic
    conversion costs more than the rest of an evaluation): rows kept per transmitter,
    keyed by its position count, pruned to the transmitters asked for."""

    def __init__(self, site: geo.Site, settings: RemoteIdSettings) -> None:
        self.site, self.settings = site, settings
        self._rows: dict[str, tuple[int, Broadcasts]] = {}

    def measure(self, transmitters: Sequence[Transmitter]) -> Broadcasts:
        """Like :func:`broadcasts` (same rows, same order)."""
        txs = [tx for tx in transmitters if tx.has_position]
        stale = [tx for tx in txs if self._rows.get(tx.key, (-1,))[0] != tx.positions]
        if stale:
            fresh = broadcasts(stale, self.site, self.settings)
            for i, tx in enumerate(stale):
                self._rows[tx.key] = (tx.positions, _row(fresh, i))
        keep = {tx.key for tx in txs}
        self._rows = {k: v for k, v in self._rows.items() if k in keep}
        rows = [self._rows[tx.key][1] for tx in txs]
        if not rows:
            return broadcasts([], self.site, self.settings)
        return Broadcasts(tuple(tx.key for tx in txs), np.concatenate([r.t_mono for r in rows]),
                          np.concatenate([r.z for r in rows]), np.concatenate([r.var for r in rows]),
                          np.concatenate([r.known for r in rows]), np.concatenate([r.h_accuracy_m for r in rows]))


def _row(bc: Broadcasts, i: int) -> Broadcasts:
    return Broadcasts(bc.keys[i:i + 1], bc.t_mono[i:i + 1], bc.z[i:i + 1], bc.var[i:i + 1], bc.known[i:i + 1],
                      bc.h_accuracy_m[i:i + 1])
