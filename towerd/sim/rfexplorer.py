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

The measurement model (what a sweep measures) is :mod:`towerd.sim.rfe_model`.

Pacing is on monotonic deadlines like the TI emulator: slots missed while the thread was
late are skipped and counted, never sent in a burst.
"""

from __future__ import annotations

import logging
import math
import select
import threading
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from towerd.clock import Clock, SystemClock
from towerd.sim.pty import PtyPair
from towerd.sim.rfe_model import (  # re-exported: importers use this module
    BLUETOOTH_TIMING,
    ELRS_900_TIMING,
    ELRS_2G4_TIMING,
    HOP_MODELS,
    HopTiming,
    SweepModel,
    fspl_db,
    hop_timing,
)
from towerd.sim.rfe_player import RfExplorerPlayer  # re-exported: importers use this module
from towerd.sim.writer import EmulatorThread
from towerd.sim.scenario import Scenario

__all__ = [
    "BLUETOOTH_TIMING",
    "DeviceState",
    "EEOT_BYTES",
    "ELRS_2G4_TIMING",
    "ELRS_900_TIMING",
    "HOP_MODELS",
    "HopTiming",
    "MAX_RBW_KHZ",
    "MIN_RBW_KHZ",
    "RESET_BANNER",
    "RfExplorerEmulator",
    "RfExplorerPlayer",
    "fspl_db",
    "hop_timing",
]

log = logging.getLogger(__name__)

EEOT_BYTES = bytes([0xFF, 0xFE, 0xFF, 0xFE, 0x00])
RESET_BANNER = b"(C) Ariel Rocholl 2010-2024\r\nRF Explorer emulated by towerd\r\n"
"""Only the 18-character prefix is documented (RFE_Common.CONST_RESETSTRING); the rest
of these lines is made up."""
MAX_RBW_KHZ = 600
MIN_RBW_KHZ = 3


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


class RfExplorerEmulator(SweepModel, EmulatorThread):
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
