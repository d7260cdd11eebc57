"""RF Explorer scan plan: which band to tune, when to retune, what to send next.

A pure state machine, no port: the driver hands it what the device said (configuration
lines, reset banners, sweeps) with their monotonic times, calls :meth:`ScanPlan.tick`
after every read, and writes to the port whatever :meth:`ScanPlan.next_command` gives
it. The rules (the conversation itself is described in
:mod:`towerd.drivers.rfexplorer.driver`):

- at open: ``Request_Config``; once the configuration line comes, bands the active RF
  module cannot tune are dropped (:meth:`ScanPlan.fit`), then the set-up: the
  sweep-points command when ``sweep_points`` is set and the device differs (once per
  session, before the retune), then ``AnalyzerConfig`` for the current band;
- a band is active from the first configuration line that matches it; after its
  ``dwell_s`` the next band is requested; a request not confirmed within
  ``retune_timeout_s`` is sent again, up to ``retune_attempts`` times, then the band is
  skipped for this cycle; no sweep for ``stall_timeout_s``: ``Request_Config`` again;
- a reset banner: request the configuration again, then set up again; a configuration
  that matches no band while nothing is pending (front-panel change) sets up again;
- commands are at least ``command_gap_s`` apart.

Its settings (:class:`RfExplorerSettings`, the sensor's YAML ``settings:``) live here,
beside the component they mostly configure.
"""

from __future__ import annotations

import collections
import logging
import math
from dataclasses import asdict, dataclass

from towerd.drivers.rfexplorer.protocol import (
    MODE_SPECTRUM_ANALYZER,
    RfeConfig,
    cmd_analyzer_config,
    cmd_request_config,
    cmd_sweep_points,
)
from towerd.errors import DriverInitError
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


@dataclass(frozen=True)
class Command:
    """Bytes for the device and what they are (``request-config``, ``sweep-points``,
    ``retune``)."""

    data: bytes
    kind: str


class ScanPlan:
    """The scan plan's state for one device (see the module docstring). ``name`` is the
    sensor's, for log lines. Not thread-safe: the driver's reader thread owns it."""

    def __init__(self, name: str, settings: RfExplorerSettings) -> None:
        self.name = name
        self.settings = settings
        self.counters = RfExplorerCounters()
        self.bands: tuple[Band, ...] = settings.bands
        """The plan as fitted to the device (all of ``settings.bands`` before the first fit)."""
        self.config: RfeConfig | None = None
        """The device's last configuration line (None before one, and after a reset)."""
        self.label = ""
        """Name of the band the device is now tuned to ("" when none): every sweep carries it."""
        self.live = False
        """True once fitted to the device: timers run and commands are queued."""
        self._warned_mode = False
        self._clear(-math.inf)
        self._awaiting_config = False

    # ------------------------------------------------------------------ session

    def restart(self, now: float) -> None:
        """Forget the device (the port was just opened) and queue ``Request_Config``."""
        self._clear(now)
        self._commands.append(Command(cmd_request_config(), "request-config"))
        self._awaiting_config = True

    def _clear(self, now: float) -> None:
        self.bands = self.settings.bands
        self.config = None
        self.label = ""
        self.live = False  # no set-up until the plan is fitted to the device's limits
        self._band_index = 0
        self._active_since: float | None = None
        self._pending: _Pending | None = None
        self._points_sent = False
        self._commands: collections.deque[Command] = collections.deque()
        self._announced: set[str] = set()  # bands whose tuning was logged at info this session
        self._last_command_t = -math.inf
        self._last_query_t = now
        self._last_sweep_t: float | None = None

    def fit(self, cfg: RfeConfig) -> None:
        """Keep the bands the active RF module can tune (min/max frequency, max span);
        DriverInitError when none is left."""
        lo, hi, span = cfg.min_khz / 1e3, cfg.max_khz / 1e3, cfg.max_span_khz / 1e3
        kept = []
        for band in self.settings.bands:
            if band.lo_mhz < lo or band.hi_mhz > hi or band.hi_mhz - band.lo_mhz > span:
                log.warning("sensor %s: band %s (%.3f-%.3f MHz) is outside what the device can tune "
                            "(%.3f-%.3f MHz, span up to %.3f MHz): skipped",
                            self.name, band.name, band.lo_mhz, band.hi_mhz, lo, hi, span)
            else:
                kept.append(band)
        self.counters.bands_skipped = len(self.settings.bands) - len(kept)
        if not kept:
            raise DriverInitError(
                f"sensor {self.name}: no band of the scan plan fits the device ({lo:.3f}-{hi:.3f} MHz, "
                f"span up to {span:.3f} MHz)"
            )
        self.bands = tuple(kept)
        self._band_index = 0

    def go_live(self, now: float) -> None:
        """Fit the plan to the configuration received at open and start following it."""
        cfg = self.config
        if cfg is None:
            raise ValueError("go_live needs the device's configuration")
        self.fit(cfg)
        self.live = True
        index = self._match(cfg)
        self.label = self.bands[index].name if index is not None else ""
        self._follow(cfg, index, now)

    # ------------------------------------------------------------------ what the device said

    def on_config(self, cfg: RfeConfig, t_mono: float) -> None:
        self.config = cfg
        self._awaiting_config = False
        if cfg.mode != MODE_SPECTRUM_ANALYZER and not self._warned_mode:
            self._warned_mode = True
            log.warning("sensor %s: device is in mode %d, not spectrum analyser (0)", self.name, cfg.mode)
        index = self._match(cfg)
        self.label = self.bands[index].name if index is not None else ""
        if self.live:
            self._follow(cfg, index, t_mono)

    def on_sweep(self, t_mono: float, count: int = 1) -> None:
        """``count`` sweeps emitted, the last at ``t_mono``."""
        self.counters.sweeps_emitted += count
        self._last_sweep_t = t_mono

    def on_reset(self, line: str, t_mono: float) -> None:
        if self.config is None and self._awaiting_config:
            log.debug("sensor %s: further restart line %r", self.name, line)
            return  # the banner has several lines: one restart
        self.counters.resets += 1
        log.warning("sensor %s: device restarted (%r): configuring it again", self.name, line)
        self.config = None
        self.label = ""
        self._pending = None
        self._active_since = None
        self._points_sent = False
        if not self.live:
            return
        self._commands.clear()
        self._commands.append(Command(cmd_request_config(), "request-config"))
        self._awaiting_config = True

    def _match(self, cfg: RfeConfig) -> int | None:
        """Index of the plan band ``cfg`` is tuned to: start within one step (at least
        1 kHz) and end within two steps plus the per-point rounding of the step to 1 Hz;
        the pending and the current band are tried first."""
        step = max(cfg.step_mhz, 0.001)
        tol_end = 2 * step + max(cfg.points - 1, 0) * 1e-6
        order = [self._pending.index] if self._pending is not None else []
        order += [self._band_index] + list(range(len(self.bands)))
        for i in order:
            if 0 <= i < len(self.bands):
                band = self.bands[i]
                if abs(cfg.start_mhz - band.lo_mhz) <= step and abs(cfg.end_mhz - band.hi_mhz) <= tol_end:
                    return i
        return None

    def _follow(self, cfg: RfeConfig, index: int | None, t_mono: float) -> None:
        """Confirm a pending retune, or set the device up when it is off the plan."""
        pending = self._pending
        if pending is not None:
            if index == pending.index:
                self._pending = None
                self._band_index = index
                self._active_since = t_mono
                # Info once per band and session (what the device really sweeps there);
                # the routine retunes of the scan plan after that are debug.
                first = self.label not in self._announced
                self._announced.add(self.label)
                log.log(logging.INFO if first else logging.DEBUG,
                        "sensor %s: tuned to band %s (%.3f-%.3f MHz, %d points, step %.1f kHz, RBW %s kHz)",
                        self.name, self.label, cfg.start_mhz, cfg.end_mhz, cfg.points, cfg.step_hz / 1e3,
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
            self._commands.append(Command(cmd_sweep_points(wanted), "sweep-points"))
        self._queue_retune(self._band_index, attempts=1)

    def _queue_retune(self, index: int, attempts: int) -> None:
        band = self.bands[index]
        data = cmd_analyzer_config(band.start_khz, band.end_khz, self.settings.amp_top_dbm,
                                   self.settings.amp_bottom_dbm)
        self._commands = collections.deque(c for c in self._commands if c.kind != "retune")
        self._commands.append(Command(data, "retune"))
        self._pending = _Pending(index, attempts)

    # ------------------------------------------------------------------ time

    def tick(self, now: float) -> None:
        """Run the timers (dwell, retune timeout, stall); call after every read."""
        if not self.live:
            return
        s = self.settings
        queued = {c.kind for c in self._commands}
        if "request-config" not in queued:
            if self._awaiting_config and now - self._last_query_t >= s.config_timeout_s:
                self._requery("no configuration after the last request")
            elif (not self._awaiting_config and self._pending is None
                  and now - max(self._last_sweep_t or -math.inf, self._last_query_t,
                                self._active_since or -math.inf) >= s.stall_timeout_s):
                self._requery(f"no sweep for {s.stall_timeout_s:g} s")
        pending = self._pending
        if pending is not None and pending.sent_at is not None and now - pending.sent_at >= s.retune_timeout_s:
            band = self.bands[pending.index]
            self.counters.retune_timeouts += 1
            if pending.attempts >= s.retune_attempts:
                self.counters.bands_failed += 1
                log.error("sensor %s: band %s not confirmed after %d attempts: skipped this cycle",
                          self.name, band.name, pending.attempts)
                self._band_index = (pending.index + 1) % len(self.bands)
                self._queue_retune(self._band_index, attempts=1)
            else:
                log.warning("sensor %s: band %s not confirmed within %.1f s: asking again",
                            self.name, band.name, s.retune_timeout_s)
                self._queue_retune(pending.index, attempts=pending.attempts + 1)
        elif (pending is None and self._active_since is not None and len(self.bands) > 1
              and now - self._active_since >= self.bands[self._band_index].dwell_s):
            self._active_since = None
            self._queue_retune((self._band_index + 1) % len(self.bands), attempts=1)

    def _requery(self, why: str) -> None:
        self.counters.requeries += 1
        log.warning("sensor %s: %s: requesting the configuration", self.name, why)
        self._commands.append(Command(cmd_request_config(), "request-config"))
        self._awaiting_config = True

    def next_command(self, now: float) -> Command | None:
        """The next command to write at ``now`` (None when none is due: nothing queued, or
        the last one went out less than ``command_gap_s`` ago); taken as sent at ``now``
        (a write that fails takes the port down, and the next open starts over)."""
        if not self._commands or now - self._last_command_t < self.settings.command_gap_s:
            return None
        command = self._commands.popleft()
        self._last_command_t = now
        self.counters.commands += 1
        if command.kind == "retune":
            self.counters.retunes += 1
            if self._pending is not None:
                self._pending.sent_at = now
        elif command.kind == "request-config":
            self._last_query_t = now
        return command
