"""TI mmWave radar driver (IWR6843/IWR6843AOP/AWR1843 out-of-box demo, SDK 3.x).

Reads the data UART (921600 baud 8N1), decodes frames with
:class:`~towerd.drivers.ti_mmwave.protocol.TiFrameParser` and yields one
:class:`~towerd.drivers.measurements.RadarPlots` per frame in the common plot form.

The device also has a CLI UART (115200 baud) that takes the chirp configuration. Pushing
that configuration is not implemented yet: a sensor whose settings name ``cli_port``
fails to open with :class:`~towerd.errors.DriverInitError` rather than pretending to
configure the radar. Until then the radar must be started by other means (flashed
default configuration or TI's visualiser).

Point conversion (sensor frame x right, y boresight, z up; vectorised over the frame):

    range_m        = sqrt(x² + y² + z²)
    azimuth_deg    = atan2(x, y)            clockwise from boresight, in (-180, 180]
    elevation_deg  = atan2(z, hypot(x, y))
    radial_vel_mps = TI velocity (positive moving away)
    snr_db         = TLV 7 snr / 10, NaN when the frame had no side info
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import serial

from towerd.clock import Clock
from towerd.drivers.base import SensorDriver
from towerd.drivers.measurements import RadarPlots, empty_plots
from towerd.drivers.ti_mmwave.protocol import TiFrame, TiFrameParser
from towerd.errors import ConfigError, DriverInitError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TiMmwaveSettings:
    """YAML ``settings:`` of a ``ti_mmwave`` sensor."""

    port: str  # data UART: device path or pyserial URL
    baudrate: int = 921600
    cli_port: str | None = None  # CLI UART; configuration push not implemented yet
    cli_baudrate: int = 115200
    chirp_config: str | None = None  # path of a TI .cfg file, for the CLI push

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
        if problems:
            raise ConfigError([f"ti_mmwave settings: {p}" for p in problems])


class TiMmwaveDriver(SensorDriver):
    """TI mmWave SDK 3.x demo data stream -> RadarPlots."""

    kind: ClassVar[str] = "ti_mmwave"
    Settings: ClassVar[type] = TiMmwaveSettings

    def __init__(self, name: str, settings: TiMmwaveSettings, *, clock: Clock | None = None) -> None:
        super().__init__(name, settings, clock=clock)
        self.parser = TiFrameParser()
        self.nonfinite_points = 0
        """Points dropped because x, y or z was not finite (only corrupt frames have them)."""
        self._seen = (0, 0, 0, 0)

    def _configure(self, port: serial.SerialBase) -> None:
        if self.settings.cli_port is not None:
            raise DriverInitError(
                f"sensor {self.name}: CLI configuration push is not implemented yet "
                f"(cli_port {self.settings.cli_port!r} is set); remove cli_port and start the radar by other means"
            )

    def _decode(self, buf: bytearray, t_mono: float) -> tuple[int, list[RadarPlots]]:
        consumed, frames = self.parser.feed(buf)
        stats = self.parser.stats
        now = (stats.frames, stats.bad_frames, stats.resyncs, stats.dropped_bytes)
        c = self.counters
        c.frames += now[0] - self._seen[0]
        c.bad_frames += now[1] - self._seen[1]
        c.resyncs += now[2] - self._seen[2]
        c.dropped_bytes += now[3] - self._seen[3]
        self._seen = now
        return consumed, [self._to_plots(frame, t_mono) for frame in frames]

    def _to_plots(self, frame: TiFrame, t_mono: float) -> RadarPlots:
        pts = frame.points
        x = pts["x_m"].astype(np.float64)
        y = pts["y_m"].astype(np.float64)
        z = pts["z_m"].astype(np.float64)
        finite = np.isfinite(x) & np.isfinite(y) & np.isfinite(z)
        if not finite.all():
            bad = int((~finite).sum())
            self.nonfinite_points += bad
            log.debug("sensor %s: frame %d: dropped %d non-finite points", self.name, frame.frame_number, bad)
            pts, x, y, z = pts[finite], x[finite], y[finite], z[finite]
        horiz = np.hypot(x, y)
        azimuth = np.degrees(np.arctan2(x, y))
        plots = empty_plots(len(pts))
        plots["range_m"] = np.hypot(horiz, z)
        plots["azimuth_deg"] = np.where(azimuth <= -180.0, azimuth + 360.0, azimuth)
        plots["elevation_deg"] = np.degrees(np.arctan2(z, horiz))
        plots["radial_vel_mps"] = pts["doppler_mps"]
        plots["snr_db"] = pts["snr_db"]
        return RadarPlots(sensor=self.name, t_mono=t_mono, frame_number=frame.frame_number, plots=plots)
