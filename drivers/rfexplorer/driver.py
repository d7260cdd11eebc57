"""RF Explorer spectrum analyser driver: a scan plan of bands, one Spectrum per sweep.

Wire format and sources: :mod:`towerd.drivers.rfexplorer.protocol` (vendor libraries
RFExplorer-for-Python and RFExplorer-for-.NET, and the vendor's UART API specification;
the disagreements with the project notes are listed there).

Conversation (USB CP210x serial, 500000 baud 8N1, or 2400 when so set on the device):

1. open: send ``Request_Config`` (``#\\x04C0``) and wait up to ``config_timeout_s`` for a
   ``#C2-F:`` line (:class:`~towerd.errors.DriverTimeoutError` if none: wrong port, wrong
   baud rate, or not an RF Explorer). Its min/max frequency and max span (the active RF
   module's limits) decide which bands of the scan plan the device can tune; the others
   are skipped with a warning, and no band left is a :class:`~towerd.errors.DriverInitError`.
2. set up: the sweep-points command when ``sweep_points`` is set and the device differs
   (before the retune: users of the vendor library report that changing the points
   resets start/stop),
   then ``AnalyzerConfig`` for the current band (``#\\x20C2-F:Sssssss,Eeeeeee,tttt,bbbb``,
   start and END in kHz). Commands are at least ``command_gap_s`` apart (the vendor's
   client waits 0.5 s after a reconfiguration "otherwise may get a different command too
   soon").
3. running, from the reader thread (the base class's loop calls :meth:`read` again and
   again; this driver overrides it to run :meth:`_tick` after each wait, on the injected
   clock): a band is "active" from the first configuration line that matches it; after
   its ``dwell_s`` the next band is requested. A request not confirmed within
   ``retune_timeout_s`` is sent again, up to ``retune_attempts`` times, then the band is
   skipped for this cycle. No sweep for ``stall_timeout_s`` -> ``Request_Config`` again.
4. the reset banner (``(C) Ariel Rocholl ...``) means the device restarted with its own
   defaults and stopped sending: request the configuration again, then set up again. A
   configuration that matches no band of the plan while nothing is pending (reset seen
   or not, front-panel change) also triggers the set-up.

Each accepted sweep becomes a :class:`~towerd.drivers.measurements.Spectrum`: start and
step from the configuration the sweep was decoded against, power = -b/2 + offset dBm,
``band`` = name of the plan band that configuration matches ("" when none), RBW and
calculator mode from the configuration. Matching is done on every configuration line, so
a replayed recording is labelled the same way as the live stream.

The RF Explorer antenna is not directional; ``mount`` in the sensor's YAML only places
it. Switching between main and expansion modules (``CM`` command) is not done: bands
outside the active module are skipped.
"""

from __future__ import annotations

import collections
import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import serial

from towerd.clock import Clock
from towerd.drivers.base import SensorDriver
from towerd.drivers.measurements import Spectrum
from towerd.drivers.rfexplorer.protocol import (
    MODE_SPECTRUM_ANALYZER,
    RfeConfig,
    RfeLine,
    RfeModel,
    RfeParser,
    RfeReset,
    RfeSweep,
    cmd_analyzer_config,
    cmd_hold,
    cmd_request_config,
    cmd_sweep_points,
)
from towerd.errors import DriverInitError, DriverIOError, DriverTimeoutError
from towerd.schema import spec

log = logging.getLogger(__name__)

BAND_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}"
BAUD_RATES = (2400, 500000)
"""The rates the vendor calls reliable ("2400bps and 500Kbps only")."""


@dataclass(frozen=True)
class Band:
    """One band of the scan plan: start/end, or centre/span, and how long to stay."""

    name: str = spec(doc="label carried by every sweep of this band", pattern=BAND_NAME_PATTERN)
    start_mhz: float | None = spec(None, doc="lowest frequency (with end_mhz)", unit="MHz", lo=0.0, hi=9999.999)
    end_mhz: float | None = spec(None, doc="highest frequency (with start_mhz)", unit="MHz", lo=0.0, hi=9999.999)
    centre_mhz: float | None = spec(None, doc="centre frequency (with span_mhz)", unit="MHz", lo=0.0, hi=9999.999)
    span_mhz: float | None = spec(None, doc="width around centre_mhz", unit="MHz", lo=0.001, hi=9999.999)
    dwell_s: float = spec(2.0, doc="time on this band before retuning to the next", unit="s", lo=0.05, hi=3600.0)

    def __post_init__(self) -> None:
        by_edges = self.start_mhz is not None or self.end_mhz is not None
        by_centre = self.centre_mhz is not None or self.span_mhz is not None
        if by_edges == by_centre:
            raise ValueError(f"band {self.name!r}: give start_mhz and end_mhz, or centre_mhz and span_mhz")
        if by_edges and (self.start_mhz is None or self.end_mhz is None):
            raise ValueError(f"band {self.name!r}: start_mhz and end_mhz go together")
        if by_centre and (self.centre_mhz is None or self.span_mhz is None):
            raise ValueError(f"band {self.name!r}: centre_mhz and span_mhz go together")
        lo, hi = self.lo_mhz, self.hi_mhz
        if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 <= lo < hi <= 9999.999):
            raise ValueError(f"band {self.name!r}: {lo:g}-{hi:g} MHz is not an increasing range in 0-9999.999 MHz")
        if not self.dwell_s > 0:
            raise ValueError(f"band {self.name!r}: dwell_s must be > 0")

    @property
    def lo_mhz(self) -> float:
        if self.start_mhz is not None:
            return float(self.start_mhz)
        return float(self.centre_mhz) - float(self.span_mhz) / 2

    @property
    def hi_mhz(self) -> float:
        if self.end_mhz is not None:
            return float(self.end_mhz)
        return float(self.centre_mhz) + float(self.span_mhz) / 2

    @property
    def start_khz(self) -> int:
        return int(round(self.lo_mhz * 1000.0))

    @property
    def end_khz(self) -> int:
        return int(round(self.hi_mhz * 1000.0))


DEFAULT_BANDS: tuple[Band, ...] = (
    Band("ism433", start_mhz=433.05, end_mhz=434.79, dwell_s=1.0),
    Band("srd868", start_mhz=863.0, end_mhz=870.0, dwell_s=2.0),
    Band("ism915", start_mhz=902.0, end_mhz=928.0, dwell_s=2.0),
    Band("ism2400", start_mhz=2400.0, end_mhz=2483.5, dwell_s=2.0),
    Band("ism5800", start_mhz=5725.0, end_mhz=5875.0, dwell_s=2.0),
)
"""ISM/SRD bands drone links use."""


@dataclass(frozen=True)
class RfExplorerSettings:
    """YAML ``settings:`` of an ``rfexplorer`` sensor."""

    port: str = spec(doc="device path (/dev/serial/by-id/usb-Silicon_Labs_CP2102...) or pyserial URL")
    baudrate: int = spec(500000, doc="500000, or 2400 when the device is set so", unit="baud", lo=2400, hi=500000)
    bands: tuple[Band, ...] = spec(DEFAULT_BANDS, doc="scan plan, visited in order and repeated")
    sweep_points: int | None = spec(None, doc="points per sweep (Plus models); null keeps the device's",
                                    lo=112, hi=65535)
    amp_top_dbm: int = spec(-10, doc="top of the device's display scale", unit="dBm", lo=-110, hi=35)
    amp_bottom_dbm: int = spec(-120, doc="bottom of the device's display scale", unit="dBm", lo=-120, hi=25)
    config_timeout_s: float = spec(3.0, doc="wait for the configuration line at open", unit="s", lo=0.2, hi=60.0)
    retune_timeout_s: float = spec(2.0, doc="resend a retune not confirmed within this", unit="s", lo=0.2, hi=60.0)
    retune_attempts: int = spec(3, doc="retunes of one band before skipping it this cycle", lo=1, hi=10)
    stall_timeout_s: float = spec(5.0, doc="no sweep this long: request the configuration again", unit="s",
                                  lo=0.5, hi=3600.0)
    command_gap_s: float = spec(0.5, doc="minimum time between two commands", unit="s", lo=0.0, hi=5.0)

    def __post_init__(self) -> None:
        if not isinstance(self.port, str) or not self.port:
            raise ValueError(f"port must be a non-empty string, got {self.port!r}")
        if self.baudrate not in BAUD_RATES:
            raise ValueError(f"baudrate must be 500000 or 2400 (the rates the vendor supports), got {self.baudrate!r}")
        if not self.bands:
            raise ValueError("bands must list at least one band")
        names = [b.name for b in self.bands]
        if len(set(names)) != len(names):
            raise ValueError(f"band names must be unique, got {names}")
        if not self.amp_bottom_dbm < self.amp_top_dbm:
            raise ValueError(f"amp_bottom_dbm ({self.amp_bottom_dbm}) must be below amp_top_dbm ({self.amp_top_dbm})")
        if self.sweep_points is not None and self.sweep_points <= 4096 and self.sweep_points % 16:
            raise ValueError(f"sweep_points up to 4096 must be a multiple of 16, got {self.sweep_points}")


@dataclass
class RfExplorerCounters:
    """What the scan plan did, beside the byte/frame counters of the base class."""

    commands: int = 0
    retunes: int = 0  # AnalyzerConfig commands sent
    retune_timeouts: int = 0
    bands_failed: int = 0  # bands given up for a cycle after retune_attempts
    bands_skipped: int = 0  # plan bands outside the device's limits (at the last open)
    requeries: int = 0  # Request_Config sent after a stall or a reset
    resets: int = 0
    sweeps_emitted: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class _Pending:
    index: int
    attempts: int
    sent_at: float | None = None


class RfExplorerDriver(SensorDriver):
    """RF Explorer sweeps -> Spectrum, retuning through a scan plan."""

    kind: ClassVar[str] = "rfexplorer"
    needs_mount: ClassVar[bool] = False  # an omnidirectional receiver: no bearing, no position
    Settings: ClassVar[type] = RfExplorerSettings

    def __init__(self, name: str, settings: RfExplorerSettings, *, clock: Clock | None = None) -> None:
        super().__init__(name, settings, clock=clock)
        self.parser = RfeParser()
        self.rf_counters = RfExplorerCounters()
        self.device_config: RfeConfig | None = None
        self.device_model: RfeModel | None = None
        self.plan: tuple[Band, ...] = settings.bands
        self.sweep_number = 0
        self._live = False  # True once _configure ran: commands may be sent
        self._label = ""
        self._band_index = 0
        self._active_since: float | None = None
        self._pending: _Pending | None = None
        self._awaiting_config = False
        self._points_sent = False
        self._warned_mode = False
        self._commands: collections.deque[tuple[bytes, str]] = collections.deque()
        self._last_command_t = -math.inf
        self._last_query_t = -math.inf
        self._last_sweep_t: float | None = None
        self._early: list[Spectrum] = []
        self._announced: set[str] = set()  # bands whose tuning was logged at info this session

    # ------------------------------------------------------------------ status

    @property
    def current_band(self) -> Band | None:
        """The band sweeps are now labelled with (None between bands or off-plan)."""
        return next((b for b in self.plan if b.name == self._label), None) if self._label else None

    def status(self) -> dict[str, Any]:
        """Device and scan-plan state for status pages."""
        cfg, model = self.device_config, self.device_model
        return {
            "model": f"{model.main_name}/{model.expansion_name} fw {model.firmware}" if model else None,
            "band": self._label or None,
            "start_mhz": cfg.start_mhz if cfg else None,
            "end_mhz": cfg.end_mhz if cfg else None,
            "points": cfg.points if cfg else None,
            "rbw_khz": cfg.rbw_khz if cfg else None,
            **self.rf_counters.as_dict(),
            **{f"parser_{k}": v for k, v in asdict(self.parser.stats).items() if k != "last_error"},
        }

    # ------------------------------------------------------------------ open

    def _configure(self, port: serial.SerialBase) -> None:
        self.parser.reset()
        self.device_config = None
        self.device_model = None
        self.plan = self.settings.bands
        self.sweep_number = 0
        self._label = ""
        self._band_index = 0
        self._active_since = None
        self._pending = None
        self._points_sent = False
        self._commands.clear()
        self._early = []
        self._announced = set()
        self._last_command_t = -math.inf
        self._last_sweep_t = None
        self._live = False  # no set-up until the plan is fitted to the device's limits
        self._awaiting_config = True
        now = self.clock.monotonic()
        self._send(port, cmd_request_config(), "request-config", now)
        self._last_query_t = now
        deadline = time.monotonic() + self.settings.config_timeout_s  # a real I/O wait: wall time
        while self.device_config is None:
            if time.monotonic() >= deadline:
                raise DriverTimeoutError(
                    f"sensor {self.name}: no configuration from {self.settings.port} within "
                    f"{self.settings.config_timeout_s:g} s "
                    f"(not an RF Explorer, or not at {self.settings.baudrate} baud?)"
                )
            try:
                data = port.read(max(1, port.in_waiting))
            except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
                raise DriverIOError(f"sensor {self.name}: read failed: {exc}") from exc
            if data:
                t = self.clock.monotonic()
                self.counters.bytes_in += len(data)
                sink = getattr(self, "raw_sink", None)
                if sink is not None:
                    sink(data, t)
                self._early += self.feed(data, t)
        cfg = self.device_config
        self._fit_plan(cfg)
        self._live = True
        now = self.clock.monotonic()
        index = self._match(cfg)
        self._label = self.plan[index].name if index is not None else ""
        self._follow_plan(cfg, index, now)
        self._flush(port, now)

    def _fit_plan(self, cfg: RfeConfig) -> None:
        """Keep the bands the active RF module can tune (min/max frequency, max span)."""
        lo, hi, span = cfg.min_khz / 1e3, cfg.max_khz / 1e3, cfg.max_span_khz / 1e3
        kept = []
        for band in self.settings.bands:
            if band.lo_mhz < lo or band.hi_mhz > hi or band.hi_mhz - band.lo_mhz > span:
                log.warning("sensor %s: band %s (%.3f-%.3f MHz) is outside what the device can tune "
                            "(%.3f-%.3f MHz, span up to %.3f MHz): skipped",
                            self.name, band.name, band.lo_mhz, band.hi_mhz, lo, hi, span)
            else:
                kept.append(band)
        self.rf_counters.bands_skipped = len(self.settings.bands) - len(kept)
        if not kept:
            raise DriverInitError(
                f"sensor {self.name}: no band of the scan plan fits the device ({lo:.3f}-{hi:.3f} MHz, "
                f"span up to {span:.3f} MHz)"
            )
        self.plan = tuple(kept)
        self._band_index = 0

    # ------------------------------------------------------------------ reading

    def read(self) -> list[Any]:
        """Read and decode as the base class does, then run the scan plan (:meth:`_tick`)."""
        readings: list[Any] = self._early
        self._early = []
        readings += super().read()
        self._tick(self.clock.monotonic())
        return readings

    def _decode(self, buf: bytearray, t_mono: float) -> tuple[int, list[Spectrum]]:
        consumed, messages = self.parser.feed(buf)
        stats = self.parser.stats
        self._count_parser(stats.frames, stats.bad_frames, stats.resyncs, stats.dropped_bytes)
        readings: list[Spectrum] = []
        for msg in messages:
            if isinstance(msg, RfeSweep):
                readings.append(self._to_spectrum(msg, t_mono))
            elif isinstance(msg, RfeConfig):
                self._on_config(msg, t_mono)
            elif isinstance(msg, RfeModel):
                self.device_model = msg
                log.info("sensor %s: RF Explorer %s, expansion %s, firmware %s",
                         self.name, msg.main_name, msg.expansion_name, msg.firmware)
            elif isinstance(msg, RfeReset):
                self._on_reset(msg, t_mono)
            elif isinstance(msg, RfeLine):
                log.debug("sensor %s: device says %r", self.name, msg.text)
        return consumed, readings

    def _to_spectrum(self, sweep: RfeSweep, t_mono: float) -> Spectrum:
        cfg = sweep.config
        self.sweep_number += 1
        self.rf_counters.sweeps_emitted += 1
        self._last_sweep_t = t_mono
        return Spectrum(
            sensor=self.name,
            t_mono=t_mono,
            sweep_number=self.sweep_number,
            start_freq_mhz=cfg.start_mhz,
            step_freq_mhz=cfg.step_mhz,
            power_dbm=sweep.power_dbm,
            band=self._label,
            rbw_khz=float(cfg.rbw_khz) if cfg.rbw_khz is not None else float("nan"),
            calculator=cfg.calculator_name,
        )

    def _match(self, cfg: RfeConfig) -> int | None:
        """Index of the plan band ``cfg`` is tuned to: start within one step (at least
        1 kHz) and end within two steps plus the per-point rounding of the step to 1 Hz;
        the pending and the current band are tried first."""
        step = max(cfg.step_mhz, 0.001)
        tol_end = 2 * step + max(cfg.points - 1, 0) * 1e-6
        order = [self._pending.index] if self._pending is not None else []
        order += [self._band_index] + list(range(len(self.plan)))
        for i in order:
            if 0 <= i < len(self.plan):
                band = self.plan[i]
                if abs(cfg.start_mhz - band.lo_mhz) <= step and abs(cfg.end_mhz - band.hi_mhz) <= tol_end:
                    return i
        return None

    def _on_config(self, cfg: RfeConfig, t_mono: float) -> None:
        self.device_config = cfg
        self._awaiting_config = False
        if cfg.mode != MODE_SPECTRUM_ANALYZER and not self._warned_mode:
            self._warned_mode = True
            log.warning("sensor %s: device is in mode %d, not spectrum analyser (0)", self.name, cfg.mode)
        index = self._match(cfg)
        self._label = self.plan[index].name if index is not None else ""
        if self._live:
            self._follow_plan(cfg, index, t_mono)

    def _follow_plan(self, cfg: RfeConfig, index: int | None, t_mono: float) -> None:
        """Confirm a pending retune, or set the device up when it is off the plan."""
        pending = self._pending
        if pending is not None:
            if index == pending.index:
                self._pending = None
                self._band_index = index
                self._active_since = t_mono
                # Info once per band and session (what the device really sweeps there);
                # the routine retunes of the scan plan after that are debug.
                first = self._label not in self._announced
                self._announced.add(self._label)
                log.log(logging.INFO if first else logging.DEBUG,
                        "sensor %s: tuned to band %s (%.3f-%.3f MHz, %d points, step %.1f kHz, RBW %s kHz)",
                        self.name, self._label, cfg.start_mhz, cfg.end_mhz, cfg.points, cfg.step_hz / 1e3,
                        cfg.rbw_khz)
                wanted = self.settings.sweep_points
                if wanted is not None and cfg.points != wanted:
                    log.warning("sensor %s: asked for %d sweep points, device uses %d", self.name, wanted, cfg.points)
            return
        if index == self._band_index and self._points_ok(cfg):
            if self._active_since is None:
                self._active_since = t_mono
            return
        # At open the device is expected to be elsewhere (debug); later it means someone
        # changed it from the front panel or it restarted (info).
        log.log(logging.INFO if self._announced else logging.DEBUG,
                "sensor %s: device configuration %.3f-%.3f MHz / %d points is not the plan's: setting it up",
                self.name, cfg.start_mhz, cfg.end_mhz, cfg.points)
        self._setup(cfg)

    def _points_ok(self, cfg: RfeConfig) -> bool:
        wanted = self.settings.sweep_points
        return wanted is None or cfg.points == wanted or self._points_sent

    def _setup(self, cfg: RfeConfig | None) -> None:
        """Queue sweep points (when needed, once per session) and the current band."""
        self._commands.clear()
        self._active_since = None
        wanted = self.settings.sweep_points
        if wanted is not None and not self._points_sent and (cfg is None or cfg.points != wanted):
            self._points_sent = True
            self._commands.append((cmd_sweep_points(wanted), "sweep-points"))
        self._queue_retune(self._band_index, attempts=1)

    def _queue_retune(self, index: int, attempts: int) -> None:
        band = self.plan[index]
        data = cmd_analyzer_config(band.start_khz, band.end_khz, self.settings.amp_top_dbm,
                                   self.settings.amp_bottom_dbm)
        self._commands = collections.deque(c for c in self._commands if c[1] != "retune")
        self._commands.append((data, "retune"))
        self._pending = _Pending(index, attempts)

    def _on_reset(self, msg: RfeReset, t_mono: float) -> None:
        if self.device_config is None and self._awaiting_config:
            log.debug("sensor %s: further restart line %r", self.name, msg.line)
            return  # the banner has several lines: one restart
        self.rf_counters.resets += 1
        log.warning("sensor %s: device restarted (%r): configuring it again", self.name, msg.line)
        self.device_config = None
        self._label = ""
        self._pending = None
        self._active_since = None
        self._points_sent = False
        if not self._live:
            return
        self._commands.clear()
        self._commands.append((cmd_request_config(), "request-config"))
        self._awaiting_config = True

    # ------------------------------------------------------------------ scan plan

    def _tick(self, now: float) -> None:
        """Scan-plan timers, run from the reader thread after every read."""
        port = self._port
        if port is None or not self._live:
            return
        s = self.settings
        queued = {kind for _, kind in self._commands}
        if "request-config" not in queued:
            if self._awaiting_config and now - self._last_query_t >= s.config_timeout_s:
                self._requery("no configuration after the last request")
            elif (not self._awaiting_config and self._pending is None
                  and now - max(self._last_sweep_t or -math.inf, self._last_query_t,
                                self._active_since or -math.inf) >= s.stall_timeout_s):
                self._requery(f"no sweep for {s.stall_timeout_s:g} s")
        pending = self._pending
        if pending is not None and pending.sent_at is not None and now - pending.sent_at >= s.retune_timeout_s:
            band = self.plan[pending.index]
            self.rf_counters.retune_timeouts += 1
            if pending.attempts >= s.retune_attempts:
                self.rf_counters.bands_failed += 1
                log.error("sensor %s: band %s not confirmed after %d attempts: skipped this cycle",
                          self.name, band.name, pending.attempts)
                self._band_index = (pending.index + 1) % len(self.plan)
                self._queue_retune(self._band_index, attempts=1)
            else:
                log.warning("sensor %s: band %s not confirmed within %.1f s: asking again",
                            self.name, band.name, s.retune_timeout_s)
                self._queue_retune(pending.index, attempts=pending.attempts + 1)
        elif (pending is None and self._active_since is not None and len(self.plan) > 1
              and now - self._active_since >= self.plan[self._band_index].dwell_s):
            self._active_since = None
            self._queue_retune((self._band_index + 1) % len(self.plan), attempts=1)
        self._flush(port, now)

    def _requery(self, why: str) -> None:
        self.rf_counters.requeries += 1
        log.warning("sensor %s: %s: requesting the configuration", self.name, why)
        self._commands.append((cmd_request_config(), "request-config"))
        self._awaiting_config = True

    def _flush(self, port: serial.SerialBase, now: float) -> None:
        while self._commands and now - self._last_command_t >= self.settings.command_gap_s:
            data, kind = self._commands.popleft()
            self._send(port, data, kind, now)

    def _send(self, port: serial.SerialBase, data: bytes, kind: str, now: float) -> None:
        try:
            port.write(data)
        except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
            raise DriverIOError(f"sensor {self.name}: write failed: {exc}") from exc
        self._last_command_t = now
        self.rf_counters.commands += 1
        if kind == "retune":
            self.rf_counters.retunes += 1
            if self._pending is not None:
                self._pending.sent_at = now
        elif kind == "request-config":
            self._last_query_t = now
        log.debug("sensor %s: sent %s %r", self.name, kind, data)

    def close(self) -> None:
        """Ask the device to stop its sweep dump (as the vendor client does), then close."""
        port = self._port
        if port is not None:
            try:
                port.write(cmd_hold())
            except (serial.SerialException, OSError, TypeError, AttributeError, ValueError) as exc:
                log.debug("sensor %s: hold on close: %s", self.name, exc)
        super().close()
