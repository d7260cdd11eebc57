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
   again; this driver overrides it to run the scan plan's timers after each wait, on the
   injected clock): a band is "active" from the first configuration line that matches it; after
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

The scan plan's rules are a pure state machine, :mod:`towerd.drivers.rfexplorer.scanplan`
(with the settings); this class does the I/O: it writes the commands the plan hands it,
waits for the configuration at open and turns sweeps into spectra.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, ClassVar

import serial

from towerd.clock import Clock
from towerd.drivers.base import ParserTotals, SensorDriver
from towerd.drivers.measurements import Spectrum
from towerd.drivers.rfexplorer.protocol import (
    RfeConfig,
    RfeLine,
    RfeModel,
    RfeParser,
    RfeReset,
    RfeSweep,
    RfeSweeps,
    cmd_hold,
)
from towerd.drivers.rfexplorer.scanplan import (
    DEFAULT_BANDS,
    Band,
    RfExplorerCounters,
    RfExplorerSettings,
    ScanPlan,
)
from towerd.errors import DriverIOError, DriverTimeoutError

__all__ = ["DEFAULT_BANDS", "Band", "RfExplorerCounters", "RfExplorerDriver", "RfExplorerSettings"]

log = logging.getLogger(__name__)


class RfExplorerDriver(SensorDriver):
    """RF Explorer sweeps -> Spectrum, retuning through a scan plan."""

    kind: ClassVar[str] = "rfexplorer"
    needs_mount: ClassVar[bool] = False  # an omnidirectional receiver: no bearing, no position
    Settings: ClassVar[type] = RfExplorerSettings

    def __init__(self, name: str, settings: RfExplorerSettings, *, clock: Clock | None = None) -> None:
        super().__init__(name, settings, clock=clock)
        self.parser = RfeParser()
        self.scan = ScanPlan(name, settings)
        self.device_model: RfeModel | None = None
        self.sweep_number = 0
        self._early: list[Spectrum] = []
        self._spectrum_cfg: RfeConfig | None = None  # the configuration _spectrum_fields come from
        self._spectrum_fields: tuple[float, float, float, str] = (math.nan, math.nan, math.nan, "")

    @property
    def rf_counters(self) -> RfExplorerCounters:
        """What the scan plan did, beside the byte/frame counters of the base class."""
        return self.scan.counters

    @property
    def device_config(self) -> RfeConfig | None:
        return self.scan.config

    @property
    def plan(self) -> tuple[Band, ...]:
        """The scan plan's bands, as fitted to the device at the last open."""
        return self.scan.bands

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        """The device, the band it sweeps and what the scan plan did."""
        cfg, model = self.scan.config, self.device_model
        return {
            "model": f"{model.main_name}/{model.expansion_name} fw {model.firmware}" if model else None,
            "band": self.scan.label or None,
            "start_mhz": cfg.start_mhz if cfg else None,
            "end_mhz": cfg.end_mhz if cfg else None,
            "points": cfg.points if cfg else None,
            "rbw_khz": cfg.rbw_khz if cfg else None,
            "plan": [b.name for b in self.scan.bands],
            **self.rf_counters.as_dict(),
        }

    def parser_totals(self) -> ParserTotals:
        st = self.parser.stats
        reasons = self._reason_dict(("sweeps_without_config", "sweeps_wrong_points", "early_ends", "other_frames"),
                                    (st.sweeps_without_config, st.sweeps_wrong_points, st.early_ends, st.other_frames))
        return ParserTotals(st.frames, st.bad_frames, st.resyncs, st.dropped_bytes, reasons)

    # ------------------------------------------------------------------ open

    def _configure(self, port: serial.SerialBase) -> None:
        self.parser.reset()
        self.device_model = None
        self.sweep_number = 0
        self._early = []
        self.scan.restart(self.clock.monotonic())
        self._flush(port, self.clock.monotonic())
        deadline = time.monotonic() + self.settings.config_timeout_s  # a real I/O wait: wall time
        while self.scan.config is None:
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
                sink = self.raw_sink
                if sink is not None:
                    sink(data, t)
                self._early += self.feed(data, t)
        now = self.clock.monotonic()
        self.scan.go_live(now)
        self._flush(port, now)

    # ------------------------------------------------------------------ reading

    def _take(self, data: bytes, t_mono: float) -> list[Any]:
        """Decode as the base class does (after :meth:`read` or :meth:`read_ready`), then
        run the scan plan's timers and send what they queued."""
        readings: list[Any] = self._early
        self._early = []
        readings += super()._take(data, t_mono)
        port = self._port
        if port is not None and self.scan.live:
            now = self.clock.monotonic()
            self.scan.tick(now)
            self._flush(port, now)
        return readings

    def _decode(self, buf: bytearray, t_mono: float) -> tuple[int, list[Spectrum]]:
        consumed, messages = self.parser.feed_runs(buf)
        readings: list[Spectrum] = []
        first = number = self.sweep_number
        name, scan = self.name, self.scan
        for msg in messages:
            kind = type(msg)
            if kind is RfeSweeps or kind is RfeSweep:  # the common case, tens a second: kept short
                cfg = msg.config
                if cfg is not self._spectrum_cfg:  # worked out once per configuration, not per sweep
                    self._spectrum_cfg = cfg
                    self._spectrum_fields = (cfg.start_mhz, cfg.step_mhz,
                                             float(cfg.rbw_khz) if cfg.rbw_khz is not None else math.nan,
                                             cfg.calculator_name)
                start, step, rbw, calculator = self._spectrum_fields
                if kind is RfeSweeps:  # a run of sweeps decoded together: a reading per row
                    readings += Spectrum.sweeps(name, t_mono, number + 1, start, step, msg.power_dbm, scan.label,
                                                rbw, calculator)
                    number += len(msg.power_dbm)
                else:
                    number += 1
                    readings.append(Spectrum.of(name, t_mono, number, start, step, msg.power_dbm, scan.label, rbw,
                                                calculator))
            elif isinstance(msg, RfeConfig):
                scan.on_config(msg, t_mono)
            elif isinstance(msg, RfeModel):
                self.device_model = msg
                log.info("sensor %s: RF Explorer %s, expansion %s, firmware %s",
                         self.name, msg.main_name, msg.expansion_name, msg.firmware)
            elif isinstance(msg, RfeReset):
                scan.on_reset(msg.line, t_mono)
            elif isinstance(msg, RfeLine):
                log.debug("sensor %s: device says %r", self.name, msg.text)
        if number != first:  # the scan plan needs the count and the time of the last one
            self.sweep_number = number
            scan.on_sweep(t_mono, number - first)
        return consumed, readings

    # ------------------------------------------------------------------ writing

    def _flush(self, port: serial.SerialBase, now: float) -> None:
        """Write every command the scan plan has due at ``now``."""
        while (command := self.scan.next_command(now)) is not None:
            try:
                port.write(command.data)
            except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
                raise DriverIOError(f"sensor {self.name}: write failed: {exc}") from exc
            log.debug("sensor %s: sent %s %r", self.name, command.kind, command.data)

    def close(self) -> None:
        """Ask the device to stop its sweep dump (as the vendor client does), then close."""
        port = self._port
        if port is not None:
            try:
                port.write(cmd_hold())
            except (serial.SerialException, OSError, TypeError, AttributeError, ValueError) as exc:
                log.debug("sensor %s: hold on close: %s", self.name, exc)
        super().close()
