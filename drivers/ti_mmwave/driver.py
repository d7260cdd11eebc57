"""TI mmWave radar driver (IWR6843/IWR6843AOP/AWR1843 out-of-box demo, SDK 3.x; IWR1443/
AWR1642 with SDK 2.x).

Reads the data UART (921600 baud 8N1), decodes frames with
:class:`~towerd.drivers.ti_mmwave.protocol.TiFrameParser` and yields one
:class:`~towerd.drivers.measurements.RadarPlots` per frame in the common plot form.

The device also has a CLI UART (115200 baud) that takes the chirp configuration. When
``cli_port`` is set, :meth:`TiMmwaveDriver.open` (after the data port is open) opens it,
sends every command of ``chirp_config`` (``%`` comments and blank lines skipped) and
waits for each ``Done`` (see :mod:`towerd.drivers.ti_mmwave.cli`); the first ``Error``
or "not recognized" stops the push with a DriverInitError naming the file, the line
number and the radar's answer, and a silent CLI with a DriverTimeoutError. Every reopen
(SensorRunner after an unplug) pushes the file again, since a replugged radar boots
unconfigured. The CLI port stays open, locked, while the sensor is open so that nothing
else (ModemManager probing CDC-ACM ports, a second program) writes into the CLI; it is
closed with the data port. Without ``cli_port`` the radar must be configured by other
means (flashed configuration, TI's visualiser) and only the data port is used.

SDK 2.x frames give Doppler as a bin index: its m/s per bin comes from the chirp profile
(:func:`~towerd.drivers.ti_mmwave.cli.doppler_resolution_mps` of ``chirp_config``, read when
the driver is made and again at each push) or, for a radar configured by other means,
from ``doppler_resolution_mps``; giving both is an error (two sources could disagree).

Points are kept as the radar measures them, Cartesian in the sensor frame (x right, y
boresight, z up), in :data:`~towerd.drivers.measurements.CARTESIAN_PLOT_DTYPE`: the
detection layer places them on the tower as they are. ``RadarPlots.plots`` (range,
azimuth, elevation) is derived from them only when something reads it
(:func:`~towerd.drivers.measurements.spherical_plots`):

    range_m        = sqrt(x² + y² + z²)
    azimuth_deg    = atan2(x, y)            clockwise from boresight, in (-180, 180]
    elevation_deg  = atan2(z, hypot(x, y))
    radial_vel_mps = TI velocity (positive moving away)
    snr_db         = TLV 7 snr / 10, NaN when the frame had no side info
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import serial

from towerd.clock import Clock
from towerd.drivers.base import ParserTotals, SensorDriver
from towerd.drivers.measurements import RadarPlots, cartesian_dtype
from towerd.drivers.ti_mmwave.cli import CfgLine, PushResult, doppler_resolution_mps, load_chirp_config, push_config
from towerd.drivers.ti_mmwave.decode import R_COUNT, R_FRAME_NUMBER, R_PLATFORM, R_VERSION
from towerd.drivers.ti_mmwave.protocol import TI_POINT_DTYPE, TiFrameParser
from towerd.drivers.transport import open_port
from towerd.errors import ConfigError, DriverInitError, DriverIOError

log = logging.getLogger(__name__)


class TiSettingsError(ConfigError, ValueError):
    """Invalid ti_mmwave settings. A ValueError too, so that the configuration validator
    reports it with the file, line and column of the settings block."""


@dataclass(frozen=True)
class TiMmwaveSettings:
    """YAML ``settings:`` of a ``ti_mmwave`` sensor."""

    port: str  # data UART: device path or pyserial URL
    baudrate: int = 921600
    cli_port: str | None = None  # CLI UART: device path or pyserial URL; None: no configuration push
    cli_baudrate: int = 115200
    chirp_config: str | None = None  # path of the TI .cfg file pushed through cli_port (absolute path)
    cli_timeout_s: float = 5.0  # longest wait for the radar's answer to one command, seconds
    doppler_resolution_mps: float | None = None  # SDK 2.x: m/s per Doppler bin when there is no chirp_config

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.port, str) or not self.port:
            problems.append(f"port must be a non-empty string, got {self.port!r}")
        for key in ("baudrate", "cli_baudrate"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                problems.append(f"{key} must be a positive integer, got {value!r}")
        if self.chirp_config is not None and self.cli_port is None:
            problems.append("chirp_config needs cli_port (the configuration goes over the CLI UART)")
        if self.cli_port is not None and self.chirp_config is None:
            problems.append("cli_port needs chirp_config (the .cfg file to push, e.g. iwr6843_demo.cfg)")
        timeout = self.cli_timeout_s
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0.1 <= timeout <= 60.0:
            problems.append(f"cli_timeout_s must be a number of seconds in 0.1..60, got {timeout!r}")
        resolution = self.doppler_resolution_mps
        if resolution is not None:
            if isinstance(resolution, bool) or not isinstance(resolution, (int, float)) or not 0.001 <= resolution <= 50:
                problems.append(f"doppler_resolution_mps must be a number of m/s in 0.001..50, got {resolution!r}")
            elif self.chirp_config is not None:
                problems.append("doppler_resolution_mps is read from chirp_config when the profile is pushed: "
                                "give one or the other")
        if problems:
            raise TiSettingsError([f"ti_mmwave settings: {p}" for p in problems])


class TiMmwaveDriver(SensorDriver):
    """TI mmWave SDK 3.x demo data stream -> RadarPlots."""

    kind: ClassVar[str] = "ti_mmwave"
    Settings: ClassVar[type] = TiMmwaveSettings
    HOLD_RELEASE_S: ClassVar[float] = 0.02
    """Quiet time after which a held frame is whole: 7 bytes take 76 us at 921600 baud."""
    read_timeout_s: ClassVar[float] = 0.025
    """Short, so that :meth:`poll` releases a held frame within ~45 ms of its last byte
    even when the next frame is further away (frames come every 33-1000 ms); a port
    with a descriptor waits as :meth:`wait_s` says instead."""
    IDLE_WAIT_S: ClassVar[float] = 0.2
    """Wait for bytes while no frame is held (nothing for :meth:`poll` to release)."""

    def __init__(self, name: str, settings: TiMmwaveSettings, *, clock: Clock | None = None) -> None:
        super().__init__(name, settings, clock=clock)
        self.parser = TiFrameParser(doppler_resolution_mps=settings.doppler_resolution_mps)
        if settings.chirp_config is not None:
            try:
                self._take_resolution(load_chirp_config(settings.chirp_config))
            except DriverInitError as exc:  # the push at open says it again, loudly
                log.debug("sensor %s: %s", name, exc)
        self._held_t: float | None = None
        """When the frame the parser holds (see TiFrameParser.holding) got its last byte."""
        self.nonfinite_points = 0
        """Points dropped because x, y or z was not finite (only corrupt frames have them)."""
        self._cli: serial.SerialBase | None = None
        self._cli_pushing: serial.SerialBase | None = None
        self.last_push: PushResult | None = None
        """What the most recent configuration push did (None before the first)."""
        self.config_pushes = 0
        """Successful configuration pushes since the driver was made (one per open)."""
        self._device_id: tuple[int, int] | None = None
        """(version, platform) of the last frame's header."""

    def _configure(self, port: serial.SerialBase) -> None:
        """Push ``chirp_config`` over ``cli_port`` (when set); see the module docstring."""
        settings = self.settings
        if settings.cli_port is None:
            return
        lines = load_chirp_config(settings.chirp_config)
        self._take_resolution(lines)
        self._warn_unstable_name(settings.cli_port)
        cli = open_port(settings.cli_port, settings.cli_baudrate, 0.05)
        self._cli_pushing = cli  # close() from another thread aborts the push through it
        try:
            result = push_config(cli, lines, source=settings.chirp_config, timeout_s=settings.cli_timeout_s,
                                 monotonic=self.clock.monotonic)
        except (serial.SerialException, OSError, TypeError, AttributeError, ValueError) as exc:
            # TypeError/AttributeError: pyserial's answer to a port closed under it.
            cli.close()
            raise DriverIOError(f"sensor {self.name}: CLI port {settings.cli_port} failed during the push: {exc}") from exc
        except BaseException:
            cli.close()
            raise
        finally:
            self._cli_pushing = None
        self._cli = cli
        self.last_push = result
        self.config_pushes += 1
        log.info("sensor %s: chirp configuration %s pushed (%d commands, %.2f s)", self.name,
                 settings.chirp_config, len(result.replies), result.seconds)

    def _take_resolution(self, lines: list[CfgLine]) -> None:
        """Give the parser the profile's Doppler resolution (SDK 2.x frames need it)."""
        try:
            self.parser.doppler_resolution_mps = doppler_resolution_mps(lines)
        except ValueError as exc:
            self.parser.doppler_resolution_mps = None
            log.info("sensor %s: %s: no Doppler resolution (%s); SDK 3.x frames do not need it, SDK 2.x points "
                     "will have no radial velocity", self.name, self.settings.chirp_config, exc)

    def close(self) -> None:
        """Close the data port, then the CLI port; idempotent. A configuration push in
        progress in another thread fails at once (its port is closed under it)."""
        pushing = self._cli_pushing
        if pushing is not None:
            pushing.close()
        super().close()
        cli, self._cli = self._cli, None
        if cli is not None:
            try:
                cli.close()
            except (serial.SerialException, OSError) as exc:
                log.debug("sensor %s: closing the CLI port: %s", self.name, exc)

    def _decode(self, buf: bytearray, t_mono: float, quiet: bool = False) -> tuple[int, list[RadarPlots]]:
        held_t = self._held_t
        consumed, records, points = self.parser.feed_records(buf, quiet=quiet)
        plots: list[RadarPlots] = []
        if records:
            last = records[-1]
            self._device_id = (last[R_VERSION], last[R_PLATFORM])
            # One check of all the points: the sum of their squares is finite only when every
            # value is (an overflow only sends them through the exact check, frame by frame).
            flat = np.ndarray((6 * len(points),), np.float32, points)  # points.view, without its checks
            make, name = RadarPlots.of if math.isfinite(flat.dot(flat)) else self._to_plots, self.name
            cartesian, a, t = np.ndarray(points.shape, _CARTESIAN, points), 0, t_mono if held_t is None else held_t
            for record in records:  # the first frame out may be the one held back at held_t
                b = a + record[R_COUNT]
                plots.append(make(name, t, record[R_FRAME_NUMBER], cartesian[a:b]))
                a, t = b, t_mono
        if not self.parser.holding:
            self._held_t = None
        elif plots or held_t is None:
            self._held_t = t_mono
        return consumed, plots

    def wait_s(self, t_mono: float) -> float:
        """Until a held frame's release time (:meth:`poll`), else :data:`IDLE_WAIT_S`."""
        held_t = self._held_t
        if held_t is None:
            return self.IDLE_WAIT_S
        return min(self.read_timeout_s, max(0.0, held_t + self.HOLD_RELEASE_S - t_mono) + 0.001)

    def poll(self, t_mono: float) -> list[RadarPlots]:
        """Release a frame held back because its last bytes could begin a magic, once the
        line has been quiet for ``HOLD_RELEASE_S`` (a cut-short frame's successor would
        have followed in the same burst). Replay calls this as recorded time passes."""
        held_t = self._held_t
        if held_t is None or t_mono - held_t < self.HOLD_RELEASE_S:
            return []
        return self._decode_buffer(t_mono, quiet=True)

    def parser_totals(self) -> ParserTotals:
        st = self.parser.stats
        reasons = self._reason_dict(
            ("unsupported_version", "truncated_frames", "unknown_tlvs", "nonfinite_points"),
            (st.unsupported_version, st.truncated_frames, st.unknown_tlvs, self.nonfinite_points))
        return ParserTotals(st.frames, st.bad_frames, st.resyncs, st.dropped_bytes, reasons)

    def status(self) -> dict[str, Any]:
        """The CLI push (when ``cli_port`` is set) and what the frames say of the device."""
        s, push, device = self.settings, self.last_push, self._device_id
        if s.cli_port is None:
            cli = "not used (configured by other means)"
        elif push is None:
            cli = "not pushed yet"
        else:
            cli = "configured, port held" if self._cli is not None else "pushed, port closed"
        return {
            "cli": cli,
            "chirp_config": s.chirp_config,
            "config_pushes": self.config_pushes,
            "last_push_s": round(push.seconds, 3) if push is not None else None,
            "ignored_commands": len(push.ignored) if push is not None else None,
            "sdk": _sdk_version(device[0]) if device is not None else None,
            "platform": f"{device[1]:#x}" if device is not None else None,
            "doppler_resolution_mps": self.parser.doppler_resolution_mps,
        }

    def _to_plots(self, name: str, t_mono: float, frame_number: int, points: np.ndarray) -> RadarPlots:
        """A frame's reading (``points``: its points seen as _CARTESIAN) without the points
        whose x, y or z is not finite (only corrupt frames have them), counted."""
        xyz = points.view(np.float32).reshape(-1, 6)[:, :3]
        if not np.isfinite(xyz).all():
            finite = np.isfinite(xyz).all(axis=1)
            bad = int((~finite).sum())
            self.nonfinite_points += bad
            log.debug("sensor %s: frame %d: dropped %d non-finite points", name, frame_number, bad)
            points = points[finite]
        return RadarPlots.of(name, t_mono, frame_number, points)


def _sdk_version(version: int) -> str:
    """The header's version word (0xMMmmPPbb) as major.minor.patch.build."""
    return ".".join(str((version >> shift) & 0xFF) for shift in (24, 16, 8, 0))


_CARTESIAN = cartesian_dtype(TI_POINT_DTYPE, {"x_m": "x_m", "y_m": "y_m", "z_m": "z_m",
                                              "radial_vel_mps": "doppler_mps", "snr_db": "snr_db"})
"""TI_POINT_DTYPE's fields seen as the common Cartesian plot's (a view: no copy)."""
