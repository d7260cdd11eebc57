"""The emulated RF Explorer's measurement model: what a sweep measures, from the scenario's
emitters, for :class:`towerd.sim.rfexplorer.RfExplorerEmulator` (the device side of the
conversation is there).

Measurement model (per sweep at elapsed time t; f_i = start + i step, RBW from the step):

    noise per point      N = noise_floor_dbm_per_mhz + 10 log10(RBW / 1 MHz)        dBm
    emitter at distance d, carrier c, bandwidth B, EIRP P_tx:
        received          P_rx = P_tx - FSPL(d, c),  FSPL = 20 log10(d/km) + 20 log10(c/MHz) + 32.44
        in point i        S_i  = P_rx * overlap([f_i +- RBW/2], [c +- B/2]) / B     (flat spectrum;
                          analog_video: FM, Gaussian about the carrier, sigma = B / 4)
        on the air: hoppers (ELRS, Bluetooth: :func:`hop_timing`) by default in time (``hops="timed"``):
                          the device measures point i at t + i * sweep_time_s / points, and
                          the point sees the hopper only if at that instant it is on a channel
                          covering the point and transmitting (ELRS: a packet of duty * period
                          every period, a hop every few packets; Bluetooth: a hop every 625 us
                          slot, each slot on the air with probability duty; see
                          :class:`HopTiming`, :meth:`_timed`). A 50 ms sweep of 83.5 MHz
                          passes a 1 MHz channel in about 0.6 ms, well within an ELRS
                          dwell (8 ms at 2.4 GHz / 500 Hz, 20 ms at 900 MHz / 200 Hz), so an
                          ELRS hop lights all its cells together and about duty hops show per
                          sweep; Bluetooth changes channel every 625 us, so its cells light one
                          at a time. ``hops="dwell"``: each channel on or off for the whole
                          pass with probability duty / len(centres) (the earlier model);
                          ``hops="look"``: each point on or off on its own with that
                          probability (the historic model: hits per sweep grow with the
                          cells per channel). Other emitters with several centres (DroneID
                          bursts, shorter than a pass) stay per look.
        802.11 (kind wifi, duty < 1): bursts in time across the sweep, so a burst is a run
                          of neighbouring points (see ``_bursts``; ``sweep_time_s``, ``wifi_burst_s``)
    measured power       X_i = (1/K) sum_{k=1..K} E_k,  E_k ~ Exponential(mean N + sum S_i)
                         i.e. X_i ~ Gamma(K, (N + S_i) / K)  in mW, K = ``looks``

An exponential look is the square-law detector output of complex Gaussian noise (and of
noise-like OFDM/FM signals); averaging K of them gives CFAR detectors the statistics a
real swept analyser's video averaging gives (10 log10 X spreads about 5.6 / sqrt(K) dB).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special

from towerd.sim.scenario import Emitter

HOP_MODELS = ("timed", "dwell", "look")


@dataclass(frozen=True)
class HopTiming:
    """How a frequency hopper is on the air over time, as the emulator renders it.

    ``hop_s``: time on one channel before the next hop; ``period_s``: one packet starts
    every period_s and lasts ``duty_cycle`` * period_s (the emitter's duty is its packet
    airtime over its packet interval); ``slot_draw``: instead, each hop slot is on the air
    as a whole with probability duty (Bluetooth: a packet in some slots, not others)."""

    hop_s: float
    period_s: float
    slot_draw: bool = False


ELRS_2G4_TIMING = HopTiming(hop_s=4 * 2.0e-3, period_s=2.0e-3)
"""ExpressLRS 2.4 GHz at 500 Hz (SX1280 LoRa SF5, 812.5 kHz): a packet every 2000 us
with 1507 us time on air (duty 0.75), a hop every 4 packets (ExpressLRS
``src/src/common.cpp``, ISM_2400 ``ExpressLRS_AirRateConfig`` / ``AirRateRFperf``:
interval 2000 us, FHSShopInterval 4, TOA 1507 us; 250/150/50 Hz: 4000/6666/20000 us with
3300/5871/18443 us on air)."""
ELRS_900_TIMING = HopTiming(hop_s=4 * 5.0e-3, period_s=5.0e-3)
"""ExpressLRS 900 MHz at 200 Hz (SX127x LoRa SF6, 500 kHz): a packet every 5000 us with
4380 us on air (duty 0.876), a hop every 4 packets (same source: 100/50 Hz: 10000/20000
us with 8770/17540 us on air)."""
BLUETOOTH_TIMING = HopTiming(hop_s=625e-6, period_s=625e-6, slot_draw=True)
"""Bluetooth BR/EDR: one hop per 625 us slot (1,600 hops/s), 79 channels of 1 MHz."""


def hop_timing(kind: str, centres_mhz: tuple[float, ...]) -> HopTiming | None:
    """The timing the emulator gives a hopper of ``kind`` (None: not rendered in time)."""
    if len(centres_mhz) < 2:
        return None
    if kind == "elrs":
        return ELRS_2G4_TIMING if min(centres_mhz) > 2000.0 else ELRS_900_TIMING
    if kind == "bluetooth":
        return BLUETOOTH_TIMING
    return None


def fspl_db(distance_m: np.ndarray | float, freq_mhz: np.ndarray | float) -> np.ndarray:
    """Free-space path loss, dB: 20 log10(d / 1 km) + 20 log10(f / 1 MHz) + 32.44 (d >= 1 m)."""
    d_km = np.maximum(np.asarray(distance_m, dtype=float), 1.0) / 1000.0
    return 20.0 * np.log10(d_km) + 20.0 * np.log10(np.asarray(freq_mhz, dtype=float)) + 32.44


class SweepModel:
    """The measurement model as methods of the emulator (a mixin of
    :class:`~towerd.sim.rfexplorer.RfExplorerEmulator`): they read its ``state`` (a
    :class:`~towerd.sim.rfexplorer.DeviceState`), ``scenario``, ``rng``, ``position_enu_m``,
    ``noise_floor_dbm_per_mhz``, ``looks``, ``sweep_time_s``, ``wifi_burst_s``, ``hops`` and
    ``_hop_order``."""

    def mean_power_mw(self, t_s: float) -> tuple[np.ndarray, np.ndarray]:
        """(noise (points,), signal (points,)) mean linear power per point in mW at elapsed
        time ``t_s``, the signal weighted by each emitter's on-air probability."""
        noise, contributions = self._contributions(t_s)
        signal = np.zeros(self.state.points)
        for power, p_on in contributions:
            signal += power * p_on
        return noise, signal

    def _contributions(self, t_s: float) -> tuple[np.ndarray, list[tuple[np.ndarray, float]]]:
        """Noise (points,) mW and, per emitter channel, (power when on (points,) mW, p_on)."""
        noise, out = self._channels(t_s)
        return noise, [(power, p_on) for power, p_on, _, _, _ in out]

    def _channels(self, t_s: float) -> tuple[np.ndarray, list[tuple[np.ndarray, float, str, int, int]]]:
        """As :meth:`_contributions`, each channel also saying how it is on the air: steady,
        bursty (802.11: on and off in time across the sweep, see :meth:`_bursts`), timed (a
        hopper rendered in time, see :meth:`_timed`), dwell (a hop: on or off for all the
        points it covers) or look (each point on or off on its own), and the indices of
        its emitter and of its centre in the emitter's list."""
        s = self.state
        f = s.freqs_mhz()
        rbw = s.rbw_khz / 1e3
        noise_dbm = self.noise_floor_dbm_per_mhz + 10.0 * math.log10(rbw)
        noise = np.full(s.points, 10.0 ** (noise_dbm / 10.0))
        out: list[tuple[np.ndarray, float, str, int, int]] = []
        lo, hi = f - rbw / 2, f + rbw / 2
        for k, (emitter, pos) in enumerate(self.scenario.emitters_at(t_s)):
            d = float(np.linalg.norm(pos - self.position_enu_m))
            half = emitter.bandwidth_mhz / 2
            p_on = emitter.duty_cycle / len(emitter.centres_mhz)
            timing = hop_timing(emitter.kind, emitter.centres_mhz)
            for j, c in enumerate(emitter.centres_mhz):
                if c + half < lo[0] or c - half > hi[-1]:
                    continue
                p_rx_mw = 10.0 ** ((emitter.tx_power_dbm - float(fspl_db(d, c))) / 10.0)
                if emitter.kind == "analog_video":
                    # FM video: power peaked at the carrier, Gaussian with +-2 sigma in the bandwidth
                    sigma = emitter.bandwidth_mhz / 4
                    share = special.ndtr((hi - c) / sigma) - special.ndtr((lo - c) / sigma)
                else:
                    overlap = np.clip(np.minimum(hi, c + half) - np.maximum(lo, c - half), 0.0, None)
                    share = overlap / emitter.bandwidth_mhz
                if p_on >= 1.0:
                    mode = "steady"
                elif emitter.kind == "wifi":
                    mode = "bursty"
                elif timing is not None and self.hops == "timed":
                    mode = "timed"
                elif timing is not None and self.hops == "dwell":
                    mode = "dwell"
                else:
                    mode = "look"
                out.append((p_rx_mw * share, p_on, mode, k, j))
        return noise, out

    def sweep_dbm(self, t_s: float) -> np.ndarray:
        """One measured sweep (points,) in dBm at the antenna port (see the model). Draws
        from ``rng``; callers hold the lock."""
        noise, channels = self._channels(t_s)
        mean = noise.copy()
        timed: dict[int, dict[int, np.ndarray]] = {}  # emitter index -> {centre index: power when on}
        last_on = None  # (emitter, list index) of the latest dwelling channel drawn on
        for i, (power, p_on, mode, k, j) in enumerate(channels):
            if mode == "timed":
                timed.setdefault(k, {})[j] = power
                continue
            if mode == "steady":
                on = power
            elif mode == "bursty":
                on = np.where(self._bursts(len(power), p_on), power, 0.0)
            elif mode == "dwell":
                # one radio: while the sweep passes the next two channels (about 2 MHz,
                # ~1.2 ms: within a dwell) it is on one of them at most
                hit = self.rng.random() < p_on and last_on not in ((k, i - 1), (k, i - 2))
                on = power if hit else np.zeros_like(power)
                last_on = (k, i) if hit else last_on
            else:  # each look independent (DroneID: bursts shorter than the pass)
                on = np.where(self.rng.random(len(power)) < p_on, power, 0.0)
            mean += on
        if timed:
            emitters = self.scenario.emitters_at(t_s)
            for k, powers in timed.items():
                mean += self._timed(k, emitters[k][0], powers, t_s)
        measured = self.rng.gamma(self.looks, mean / self.looks)
        return 10.0 * np.log10(measured)

    def _timed(self, k: int, emitter: Emitter, powers: dict[int, np.ndarray], t_s: float) -> np.ndarray:
        """(points,) mW a hopper (``emitter``, index ``k``) puts into each point of the
        sweep that starts at ``t_s``: point i is measured at t_s + i * sweep_time_s /
        points and sees the channel the hopper is on at that instant, if it transmits
        then. ``powers``: {centre index: (points,) mW when on there} for the centres that
        reach the sweep. ELRS: the channel order a pseudorandom cycle through every centre
        drawn once per emitter, the sweep's place in it drawn per sweep; Bluetooth: a
        channel drawn per slot."""
        timing = hop_timing(emitter.kind, emitter.centres_mhz)
        assert timing is not None
        n_ch = len(emitter.centres_mhz)
        key = (k, emitter)
        order = self._hop_order.get(key)
        if order is None:
            order = self._hop_order[key] = self.rng.permutation(n_ch)
        points = self.state.points
        # Where in its sequence the hopper is when a sweep starts: drawn per sweep over the
        # whole cycle. The device's sweep period follows its own PLL settling and is not
        # locked to the hopper's packet timer; an emulated period of exactly 100 ms
        # against a cycle of 40 x 20 ms would alias, showing the same few hops forever.
        phase = float(self.rng.uniform(0.0, n_ch * timing.hop_s))
        u = t_s + phase + np.arange(points) * (self.sweep_time_s / points)
        hop = np.floor(u / timing.hop_s).astype(np.int64)
        if timing.slot_draw:
            # Bluetooth: the channel of each slot follows the piconet clock through a
            # long pseudorandom selection: drawn per slot; a packet in a slot or not.
            slots, inverse = np.unique(hop, return_inverse=True)
            channel = self.rng.integers(0, n_ch, slots.size)[inverse]
            on = (self.rng.random(slots.size) < emitter.duty_cycle)[inverse]
        else:
            channel = order[hop % n_ch]
            on = np.mod(u, timing.period_s) < emitter.duty_cycle * timing.period_s
        table = np.zeros((n_ch, points))
        for j, power in powers.items():
            table[j] = power
        return np.where(on, table[channel, np.arange(points)], 0.0)

    def _bursts(self, points: int, duty: float) -> np.ndarray:
        """(points,) bool: an 802.11 channel on the air while the analyser sweeps point i.

        The device measures its points one after another over ``sweep_time_s``; the
        channel alternates bursts (exponential, mean ``wifi_burst_s``) and gaps
        (exponential, mean ``wifi_burst_s (1 - duty) / duty``), starting in the state
        its duty gives. A burst therefore shows as a run of neighbouring points inside
        the channel, as wide as the points swept while it lasted. The default 0.3 ms
        with a 50 ms sweep gives what the vendor's real Wi-Fi recording
        (tests/captures/rfexplorer/real_wifi_2g4) shows at 0.76 MHz cells: about 80 %
        one-cell pieces, 15 % two, a few of three to six."""
        t_point = np.arange(points) * (self.sweep_time_s / points)
        mean_on = self.wifi_burst_s
        mean_off = mean_on * (1.0 - duty) / duty
        on = bool(self.rng.random() < duty)
        edges = [0.0]
        state = [on]
        t = 0.0
        while t < self.sweep_time_s:
            t += float(self.rng.exponential(mean_on if on else mean_off))
            on = not on
            edges.append(t)
            state.append(on)
        idx = np.searchsorted(np.asarray(edges), t_point, side="right") - 1
        return np.asarray(state)[idx]
