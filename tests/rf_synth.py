"""Synthetic spectrum-analyser sweeps for the RF tests.

Noise per cell is the mean of K exponential looks (Gamma(K, floor/K)); an emitter adds
its power to the cell's mean before the looks are drawn, so it fluctuates like a real
noise-like (OFDM, FM) signal seen through the same detector. All power in linear mW,
handed out as float32 dBm in a :class:`Spectrum`, as a driver would.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from towerd.drivers.measurements import Spectrum


def db(x: float) -> float:
    """dB -> linear."""
    return 10.0 ** (x / 10.0)


@dataclass
class Emitter:
    """A continuous or bursty emitter: ``shape`` flat (OFDM plateau), peaked (analog FM
    video: Gaussian in linear power, ``bandwidth_mhz`` = 4 sigma) or cw (one cell)."""

    centre_mhz: float
    bandwidth_mhz: float
    snr_db: float
    shape: str = "flat"
    duty: float = 1.0  # probability of being on in a sweep
    first_sweep: int = 0
    last_sweep: int = 1 << 30

    def power(self, freq: np.ndarray, floor_mw: float) -> np.ndarray:
        s = db(self.snr_db) * floor_mw
        d = np.abs(freq - self.centre_mhz)
        half = self.bandwidth_mhz / 2
        if self.shape == "flat":
            return np.where(d <= half, s, 0.0)
        if self.shape == "peaked":  # Gaussian, +-2 sigma within the bandwidth
            return s * np.exp(-0.5 * (d / (half / 2)) ** 2)
        if self.shape == "cw":
            out = np.zeros(freq.shape)
            out[np.argmin(d)] = s
            return out
        raise ValueError(self.shape)


@dataclass
class Hopper:
    """A frequency-hopping link: each sweep shows ``hops_per_sweep`` hops on random
    channels of ``channels_mhz``, each ``hop_bw_mhz`` wide."""

    channels_mhz: np.ndarray
    hop_bw_mhz: float
    snr_db: float
    hops_per_sweep: int = 3


@dataclass
class Scene:
    """Sweeps of a band from ``start_mhz`` with ``n`` cells ``step_mhz`` apart."""

    start_mhz: float
    step_mhz: float
    n: int
    floor_dbm: float = -100.0
    looks: int = 1
    period_s: float = 0.5
    emitters: list[Emitter] = field(default_factory=list)
    hoppers: list[Hopper] = field(default_factory=list)
    sensor: str = "rfe"
    band: str = ""

    @property
    def freq(self) -> np.ndarray:
        return self.start_mhz + self.step_mhz * np.arange(self.n)

    def mean_mw(self, k: int, rng: np.random.Generator) -> np.ndarray:
        """Mean power per cell (noise + emitters on in sweep k)."""
        floor = db(self.floor_dbm)
        f = self.freq
        mean = np.full(self.n, floor)
        for e in self.emitters:
            if e.first_sweep <= k <= e.last_sweep and rng.random() < e.duty:
                mean += e.power(f, floor)
        for h in self.hoppers:
            for c in rng.choice(h.channels_mhz, size=h.hops_per_sweep, replace=False):
                mean += Emitter(float(c), h.hop_bw_mhz, h.snr_db).power(f, floor)
        return mean

    def sweep(self, k: int, rng: np.random.Generator, t0: float = 0.0) -> Spectrum:
        p = rng.gamma(self.looks, self.mean_mw(k, rng) / self.looks)
        return Spectrum(
            sensor=self.sensor,
            t_mono=t0 + k * self.period_s,
            sweep_number=k,
            start_freq_mhz=self.start_mhz,
            step_freq_mhz=self.step_mhz,
            power_dbm=(10.0 * np.log10(p)).astype(np.float32),
            band=self.band,
        )


def noise(rng: np.random.Generator, shape: int | tuple[int, ...], looks: int, mean: float = 1.0) -> np.ndarray:
    """Noise-only cells: the mean of ``looks`` exponential looks of mean ``mean``."""
    return rng.gamma(looks, mean / looks, size=shape)
