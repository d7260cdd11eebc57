"""Emulated RF Explorer spectrum analyser answering its commands over a pty.

The device side of the conversation described in
:mod:`towerd.drivers.rfexplorer.protocol`, written here from the vendor layout with
string formatting and NumPy, independently of that module, so tests cross-check two
implementations:

- host commands ``#`` + size byte (counting the whole command) + ASCII, at most 64 bytes:
  ``C0`` -> ``#C2-M:`` and ``#C2-F:`` lines, then sweeps; ``CH`` -> sweeps stop;
  ``C2-F:Sssssss,Eeeeeee,tttt,bbbb`` -> retune and a ``#C2-F:`` reply; ``CJ`` + byte
  (points = 16 b, 0 -> 4096) and ``Cj`` + big-endian u16 -> points, and the frequencies
  go back to the boot band (a quirk users report: "setting the number of data points
  causes the Start and Stop frequencies to be reset"); ``r`` -> reset banner, boot band
  and points, silence until ``C0``. Anything else is recorded and ignored.
- refusals: a ``C2-F`` outside the active module (below min, above max, wider than max
  span, narrower than ``min_span_mhz``, end not above start) or with a malformed field is
  recorded in :attr:`refused` and ignored without a reply. The vendor documents no error
  reply; its clients check limits before sending. Sweep points outside 112..4096 (``CJ``)
  or 112..65535 (``Cj``) are clamped, as users report the device does below 112.
- sweeps: ``$S`` + count when points <= 255, ``$s`` + points/16 (0 for 4096) for
  multiples of 16 up to 4096, ``$z`` + big-endian u16 otherwise (or the variant forced by
  ``variant``), each followed by CR LF; amplitude byte b = round(-2 P), P in dBm.
- retune while streaming: the sweep in progress is cut and ended with
  ``FF FE FF FE 00`` (firmware > 1.27) before the new configuration line.

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
Pacing is on monotonic deadlines like the TI emulator: slots missed while the thread was
late are skipped and counted, never sent in a burst.
"""

from __future__ import annotations

import logging
import math
import os
import select
import threading
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from scipy import special

from towerd.clock import Clock, SystemClock
from towerd.sim.pty import PtyPair
from towerd.sim.writer import EmulatorThread
from towerd.sim.scenario import Emitter, Scenario

log = logging.getLogger(__name__)

EEOT_BYTES = bytes([0xFF, 0xFE, 0xFF, 0xFE, 0x00])
RESET_BANNER = b"(C) Ariel Rocholl 2010-2024\r\nRF Explorer emulated by towerd\r\n"
"""Only the 18-character prefix is documented (RFE_Common.CONST_RESETSTRING); the rest
of these lines is made up."""
MAX_RBW_KHZ = 600
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


MIN_RBW_KHZ = 3


def fspl_db(distance_m: np.ndarray | float, freq_mhz: np.ndarray | float) -> np.ndarray:
    """Free-space path loss, dB: 20 log10(d / 1 km) + 20 log10(f / 1 MHz) + 32.44 (d >= 1 m)."""
    d_km = np.maximum(np.asarray(distance_m, dtype=float), 1.0) / 1000.0
    return 20.0 * np.log10(d_km) + 20.0 * np.log10(np.asarray(freq_mhz, dtype=float)) + 32.44


@dataclass
class DeviceState:
    """What the emulated analyser is set to."""

    start_khz: int
    end_khz: int  # as last requested; the reported step is floor((end - start) / (points - 1)) Hz
    points: int
    amp_top_dbm: int
    amp_bottom_dbm: int
    streaming: bool

    @property
    def step_hz(self) -> int:
        return ((self.end_khz - self.start_khz) * 1000) // max(self.points - 1, 1)

    @property
    def rbw_khz(self) -> int:
        """The device's RBW follows the step (200 kHz for a 196 kHz step on a 6G Combo)."""
        return int(min(MAX_RBW_KHZ, max(MIN_RBW_KHZ, 10 * math.ceil(self.step_hz / 10_000))))

    def freqs_mhz(self) -> np.ndarray:
        """(points,) frequency of each point, MHz."""
        return self.start_khz / 1e3 + self.step_hz / 1e6 * np.arange(self.points)


class RfExplorerEmulator(EmulatorThread):
    """An RF Explorer in spectrum-analyser mode, driven by a scenario (see module docstring)."""

    def __init__(
        self,
        scenario: Scenario | None = None,
        *,
        rng: np.random.Generator,
        position_enu_m: tuple[float, float, float] = (0.0, 0.0, 0.0),
        sweep_rate_hz: float = 10.0,
        noise_floor_dbm_per_mhz: float = -105.0,
        looks: int = 8,
        min_mhz: float = 15.0,
        max_mhz: float = 6100.0,
        max_span_mhz: float = 600.0,
        min_span_mhz: float = 0.112,
        boot_start_mhz: float = 2400.0,
        boot_end_mhz: float = 2483.5,
        points: int = 112,
        amp_top_dbm: int = -30,
        amp_bottom_dbm: int = -118,
        main_model: int = 5,
        expansion_model: int = 255,
        firmware: str = "01.33",
        amp_offset_db: int = 0,
        calculator: int = 0,
        step_digits: int = 7,
        variant: str | None = None,
        eeot_on_retune: bool = True,
        streaming: bool = False,
        sweep_time_s: float | None = None,
        wifi_burst_s: float = 3e-4,
        hops: str = "timed",
        clock: Clock | None = None,
    ) -> None:
        if not sweep_rate_hz > 0:
            raise ValueError("sweep_rate_hz must be > 0")
        if looks < 1:
            raise ValueError("looks must be >= 1")
        if variant not in (None, "$S", "$s", "$z"):
            raise ValueError("variant must be None, '$S', '$s' or '$z'")
        if step_digits not in (7, 8):
            raise ValueError("step_digits must be 7 or 8")
        if sweep_time_s is not None and not 0 < sweep_time_s <= 1.0 / sweep_rate_hz:
            raise ValueError("sweep_time_s must be in (0, 1 / sweep_rate_hz]")
        if not 0 < wifi_burst_s < 1.0:
            raise ValueError("wifi_burst_s must be in (0, 1) s")
        if hops not in HOP_MODELS:
            raise ValueError(f"hops must be one of {', '.join(HOP_MODELS)}")
        self.sweep_time_s = float(sweep_time_s or min(0.05, 0.9 / sweep_rate_hz))
        self.wifi_burst_s = float(wifi_burst_s)
        self.hops = hops
        self._hop_order: dict[tuple[int, object], np.ndarray] = {}  # (emitter index, emitter) -> its channel cycle
        self.scenario = scenario or Scenario("empty")
        self.rng = rng
        self.position_enu_m = np.asarray(position_enu_m, dtype=float).reshape(3)
        self.sweep_rate_hz = float(sweep_rate_hz)
        self.noise_floor_dbm_per_mhz = float(noise_floor_dbm_per_mhz)
        self.looks = int(looks)
        self.min_khz = int(round(min_mhz * 1000))
        self.max_khz = int(round(max_mhz * 1000))
        self.max_span_khz = int(round(max_span_mhz * 1000))
        self.min_span_khz = int(round(min_span_mhz * 1000))
        self.boot = (int(round(boot_start_mhz * 1000)), int(round(boot_end_mhz * 1000)))
        self.main_model = main_model
        self.expansion_model = expansion_model
        self.firmware = firmware
        self.amp_offset_db = int(amp_offset_db)
        self.calculator = int(calculator)
        self.step_digits = step_digits
        self.variant = variant
        self.eeot_on_retune = eeot_on_retune
        self.clock: Clock = clock or SystemClock()
        self.boot_points = int(points)
        self.state = DeviceState(self.boot[0], self.boot[1], self.boot_points, amp_top_dbm, amp_bottom_dbm, streaming)

        self.commands: list[bytes] = []  # every framed command received, in order
        self.refused: list[tuple[bytes, str]] = []  # (command, why)
        self.unknown: list[bytes] = []  # well-framed commands this emulator does not know
        self.t0_mono: float | None = None
        self.sweeps_sent = 0
        self.sweeps_skipped = 0
        self.bytes_dropped = 0
        self.error: BaseException | None = None
        self._rx = bytearray()
        self._cond = threading.Condition()  # guards state, rng, faults and the command log
        self._pending_garbage = 0
        self._truncate_next = False
        self._bad_crlf_next = False
        self._eeot_next = False
        self._reset_next = False
        self._stall_until = -math.inf
        self._stall_request = 0.0
        self._init_thread()

    # ------------------------------------------------------------------ lines

    def config_line(self) -> bytes:
        """``#C2-F:`` (``#C2-f:`` from 10000 points) for the current state, CR LF ended."""
        s = self.state
        tag, pts = ("#C2-f:", f"{s.points:05d}") if s.points >= 10_000 else ("#C2-F:", f"{s.points:04d}")
        step = f"{s.step_hz:0{self.step_digits}d}"
        fields = [f"{s.start_khz:07d}", step, f"{s.amp_top_dbm:04d}", f"{s.amp_bottom_dbm:04d}", pts, "0", "000",
                  f"{self.min_khz:07d}", f"{self.max_khz:07d}", f"{self.max_span_khz:07d}", f"{s.rbw_khz:05d}",
                  f"{self.amp_offset_db:04d}", f"{self.calculator:03d}"]
        return (tag + ",".join(fields) + "\r\n").encode("ascii")

    def model_line(self) -> bytes:
        return f"#C2-M:{self.main_model:03d},{self.expansion_model:03d},{self.firmware}\r\n".encode("ascii")

    # ------------------------------------------------------------------ sweeps

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

    def encode_sweep(self, power_dbm: np.ndarray) -> bytes:
        """``$S``/``$s``/``$z`` frame of ``power_dbm`` (b = round(-2 P), 0..255) + CR LF."""
        n = len(power_dbm)
        amps = np.clip(np.rint(-2.0 * np.asarray(power_dbm, dtype=float)), 0, 255).astype(np.uint8).tobytes()
        variant = self.variant or ("$S" if n <= 255 else "$s" if n <= 4096 and n % 16 == 0 else "$z")
        if variant == "$S":
            if n > 255:
                raise ValueError(f"$S cannot carry {n} points")
            head = b"$S" + bytes([n])
        elif variant == "$s":
            if n % 16 or not 16 <= n <= 4096:
                raise ValueError(f"$s cannot carry {n} points")
            head = b"$s" + bytes([(n // 16) & 0xFF])
        else:
            head = b"$z" + bytes([n >> 8, n & 0xFF])
        return head + amps + b"\r\n"

    def sweep_bytes(self, t_s: float) -> bytes:
        """One complete sweep frame for elapsed time ``t_s``."""
        with self._cond:
            return self.encode_sweep(self.sweep_dbm(t_s))

    def stream(self, n_sweeps: int, rate_hz: float | None = None) -> bytes:
        """Model and configuration lines then ``n_sweeps`` sweeps, as a device would send
        them after ``C0`` (for benchmarks and replay tests)."""
        period = 1.0 / (rate_hz or self.sweep_rate_hz)
        return self.model_line() + self.config_line() + b"".join(self.sweep_bytes(k * period) for k in range(n_sweeps))

    # ------------------------------------------------------------------ commands

    def handle(self, data: bytes, t_s: float = 0.0) -> bytes:
        """Take bytes the host wrote; return the device's replies (may be b"")."""
        with self._cond:
            self._rx += data
            reply = bytearray()
            while self._rx:
                if self._rx[0] != 0x23:  # '#'
                    del self._rx[0]
                    continue
                if len(self._rx) < 2:
                    break
                size = self._rx[1]
                if not 3 <= size <= 64:
                    del self._rx[0]
                    continue
                if len(self._rx) < size:
                    break
                cmd = bytes(self._rx[:size])
                del self._rx[:size]
                self.commands.append(cmd)
                reply += self._execute(cmd, t_s)
            self._cond.notify_all()
            return bytes(reply)

    def _execute(self, cmd: bytes, t_s: float) -> bytes:
        body = cmd[2:]
        s = self.state
        if body == b"C0":
            s.streaming = True
            return self.model_line() + self.config_line()
        if body == b"CH":
            s.streaming = False
            return b""
        if body == b"r":
            self._reset_state()
            return RESET_BANNER
        if body.startswith(b"C2-F:"):
            return self._analyzer_config(cmd, body[5:], t_s)
        if body[:2] == b"CJ" and len(body) == 3:
            points = 16 * (body[2] or 256)
            return self._set_points(min(max(points, 112), 4096), t_s)
        if body[:2] == b"Cj" and len(body) == 4:
            return self._set_points(max((body[2] << 8) | body[3], 112), t_s)
        self.unknown.append(cmd)
        return b""

    def _cut_sweep(self, t_s: float) -> bytes:
        """The sweep in progress, cut short and closed with the early-end marker."""
        if not (self.state.streaming and self.eeot_on_retune):
            return b""
        frame = self.encode_sweep(self.sweep_dbm(t_s))
        head = 4 if frame[1:2] == b"z" else 3
        return frame[:head + int(self.rng.integers(0, self.state.points))] + EEOT_BYTES

    def _analyzer_config(self, cmd: bytes, args: bytes, t_s: float) -> bytes:
        parts = args.split(b",")
        try:
            if len(parts) < 4 or len(parts[0]) != 7 or len(parts[1]) != 7 or len(parts[2]) != 4 or len(parts[3]) != 4:
                raise ValueError("fields are not 7,7,4,4 characters")
            start, end, top, bottom = (int(p.decode("ascii")) for p in parts[:4])
        except (ValueError, UnicodeDecodeError) as exc:
            self.refused.append((cmd, f"malformed: {exc}"))
            return b""
        span = end - start
        why = ""
        if start < self.min_khz or end > self.max_khz:
            why = f"{start}-{end} kHz outside {self.min_khz}-{self.max_khz} kHz"
        elif span <= 0:
            why = "end not above start"
        elif span > self.max_span_khz:
            why = f"span {span} kHz above {self.max_span_khz} kHz"
        elif span < self.min_span_khz:
            why = f"span {span} kHz below {self.min_span_khz} kHz"
        if why:
            self.refused.append((cmd, why))
            return b""
        cut = self._cut_sweep(t_s)
        s = self.state
        s.start_khz, s.end_khz, s.amp_top_dbm, s.amp_bottom_dbm = start, end, top, bottom
        return cut + self.config_line()

    def _set_points(self, points: int, t_s: float) -> bytes:
        cut = self._cut_sweep(t_s)
        s = self.state
        s.points = points
        s.start_khz, s.end_khz = self.boot
        return cut + self.config_line()

    def _reset_state(self) -> None:
        """A restart forgets what the host set: boot band and points, silent until ``C0``."""
        self.state = DeviceState(self.boot[0], self.boot[1], self.boot_points, self.state.amp_top_dbm,
                                 self.state.amp_bottom_dbm, streaming=False)

    # ------------------------------------------------------------------ faults

    def inject_garbage(self, n_bytes: int) -> None:
        """Send ``n_bytes`` random bytes just before the next sweep."""
        with self._cond:
            self._pending_garbage += max(0, int(n_bytes))

    def inject_truncated(self) -> None:
        """Cut the next sweep short: no CR LF, the following sweep comes right after."""
        with self._cond:
            self._truncate_next = True

    def inject_bad_crlf(self) -> None:
        """End the next sweep with LF CR instead of CR LF."""
        with self._cond:
            self._bad_crlf_next = True

    def inject_eeot(self) -> None:
        """Abort the next sweep with the early-end marker (as a retune does)."""
        with self._cond:
            self._eeot_next = True

    def inject_reset(self) -> None:
        """Restart: the banner, then the boot configuration and silence until ``C0``."""
        with self._cond:
            self._reset_next = True

    def inject_stall(self, seconds: float) -> None:
        """Say nothing and read nothing for ``seconds`` (commands wait in the pty)."""
        with self._cond:
            self._stall_request = max(0.0, float(seconds))

    def next_chunk(self, t_s: float) -> bytes:
        """What goes on the wire at the next sweep slot, faults included (b"" when silent)."""
        with self._cond:
            out = bytearray()
            if self._reset_next:
                self._reset_next = False
                self._reset_state()
                return RESET_BANNER
            if not self.state.streaming:
                return b""
            if self._pending_garbage:
                out += self.rng.integers(0, 256, self._pending_garbage, dtype=np.uint8).tobytes()
                self._pending_garbage = 0
            frame = self.encode_sweep(self.sweep_dbm(t_s))
            head = 4 if frame[1:2] == b"z" else 3
            if self._eeot_next:
                self._eeot_next = False
                frame = frame[:head + int(self.rng.integers(0, self.state.points))] + EEOT_BYTES
            elif self._truncate_next:
                self._truncate_next = False
                frame = frame[:head + int(self.rng.integers(1, self.state.points))]
            elif self._bad_crlf_next:
                self._bad_crlf_next = False
                frame = frame[:-2] + b"\n\r"
            self.sweeps_sent += 1
            self._cond.notify_all()
            return bytes(out + frame)

    # ------------------------------------------------------------------ observing

    def wait_for(self, predicate: Callable[["RfExplorerEmulator"], bool], timeout_s: float) -> bool:
        """Wait until ``predicate(self)`` holds (checked on every command and sweep)."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout_s)

    def commands_like(self, prefix: bytes) -> list[bytes]:
        """Received commands whose body (after ``#`` and size) starts with ``prefix``."""
        with self._cond:
            return [c for c in self.commands if c[2:].startswith(prefix)]

    # ------------------------------------------------------------------ thread

    def start(self, pty: PtyPair) -> None:
        """Serve ``pty``: answer commands as they arrive, one sweep per 1/sweep_rate_hz
        while streaming (sweep k at t0 + k / rate, scenario time k / rate)."""
        self._begin()
        self.t0_mono = self.clock.monotonic()
        self._launch(self._run, (pty,), "rfe-emulator")

    def _write(self, pty: PtyPair, data: bytes) -> bool:
        if not data:
            return True
        try:
            written = pty.write(data)
        except OSError as exc:
            self.error = exc
            log.error("RF Explorer emulator: writing to the pty failed, stopping: %s", exc)
            return False
        self.bytes_dropped += len(data) - written
        return True

    def _run(self, pty: PtyPair) -> None:
        period = 1.0 / self.sweep_rate_hz
        t0 = self.t0_mono
        assert t0 is not None
        k = 0
        while not self._stop.is_set():
            now = self.clock.monotonic()
            with self._cond:
                if self._stall_request:
                    self._stall_until = now + self._stall_request
                    self._stall_request = 0.0
                stall_until = self._stall_until
            if now < stall_until:
                self._stop.wait(min(stall_until - now, 0.05))
                k = max(k, int((self.clock.monotonic() - t0) / period) + 1)
                continue
            wait = max(0.0, min(t0 + k * period - now, 0.05))
            try:
                readable, _, _ = select.select([pty.master_fd], [], [], wait)
            except (OSError, ValueError) as exc:
                self.error = exc
                return
            if readable:
                data = pty.read()
                if data and not self._write(pty, self.handle(data, now - t0)):
                    return
            now = self.clock.monotonic()
            if now < t0 + k * period:
                continue
            behind = int((now - t0) / period) - k
            if behind > 0:
                self.sweeps_skipped += behind
                k += behind
            chunk = self.next_chunk(k * period)
            if chunk and not self._write(pty, chunk):
                return
            k += 1

    # ------------------------------------------------------------------ towerd sim

    @classmethod
    def from_sim_args(cls, scenario: Scenario, args: Any, rng: np.random.Generator) -> "RfExplorerEmulator":
        """The emulator for ``towerd sim``'s options (position, sweep rate)."""
        return cls(scenario, rng=rng, position_enu_m=tuple(args.position), sweep_rate_hz=args.rate)

    def sim_status(self) -> str:
        """One line for ``towerd sim``'s ``status`` command."""
        return f"sweeps sent {self.sweeps_sent}, commands received {len(self.commands)}, refused {len(self.refused)}"

    def __enter__(self) -> "RfExplorerEmulator":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class RfExplorerPlayer(EmulatorThread):
    """An RF Explorer that plays back a recorded device -> host stream over a pty.

    Silent until the host's first command (``#\\x04C0`` when a driver opens the port),
    then the recording ``loops`` times, as fast as the host reads it: the writer waits
    until the pty can take more, so no byte is lost (a recording has no clock of its own;
    give the sweeps their recorded times on the host side). Commands are kept in
    :attr:`commands` and otherwise ignored: a recording cannot retune. :attr:`done` is set
    once everything was written."""

    def __init__(self, data: bytes, *, loops: int = 1, chunk_bytes: int = 4096) -> None:
        if loops < 1 or chunk_bytes < 1:
            raise ValueError("loops and chunk_bytes must be >= 1")
        self.data = bytes(data)
        self.loops = int(loops)
        self.chunk_bytes = int(chunk_bytes)
        self.commands = bytearray()
        self.done = threading.Event()
        self.error: BaseException | None = None
        self._init_thread()

    def start(self, pty: PtyPair) -> None:
        self._begin()
        self._launch(self._run, (pty,), "rfe-player")

    def _run(self, pty: PtyPair) -> None:
        fd = pty.master_fd
        try:
            while not self.commands and not self._stop.is_set():
                if select.select([fd], [], [], 0.05)[0]:
                    self.commands += pty.read()
            view = memoryview(self.data * self.loops)
            sent = 0
            while sent < len(view) and not self._stop.is_set():
                readable, writable, _ = select.select([fd], [fd], [], 0.05)
                if readable:
                    self.commands += pty.read()
                if writable:
                    try:
                        sent += os.write(fd, view[sent:sent + self.chunk_bytes])
                    except BlockingIOError:
                        pass  # the pty filled up between select and write: try again
            self.done.set()
            while not self._stop.is_set():  # keep taking commands (the hold on close)
                if select.select([fd], [], [], 0.05)[0]:
                    self.commands += pty.read()
        except (OSError, ValueError) as exc:
            self.error = exc
            log.error("RF Explorer player: %s", exc)

    def __enter__(self) -> "RfExplorerPlayer":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
