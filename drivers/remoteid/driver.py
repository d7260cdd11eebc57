"""Remote ID receiver driver: ESP32-class receivers printing one broadcast per line.

Reads the receiver's serial output (115200 baud 8N1 on every firmware found), decodes it
with :class:`~towerd.drivers.remoteid.protocol.RidParser` (JSON dialects and F3411 hex
lines, see there) and yields one :class:`~towerd.drivers.measurements.RemoteIdReading`
per broadcast line, ``t_mono`` the time its last byte was read. A reading holds only
what its line carried; the consumer merges them per ``transmitter``.

Counters: ``frames`` lines accepted, ``bad_frames`` lines refused (by reason in
``driver.parser.stats``), ``resyncs`` over-long lines cut, ``dropped_bytes`` bytes of
refused lines and of firmware chatter.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

from towerd.clock import Clock
from towerd.drivers.base import SensorDriver
from towerd.drivers.measurements import RemoteIdReading
from towerd.drivers.remoteid.protocol import MAX_LINE_BYTES, RidParser
from towerd.schema import spec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemoteIdSettings:
    """YAML ``settings:`` of a ``remoteid`` sensor."""

    port: str = spec(doc="the receiver's serial output: device path or pyserial URL")
    baudrate: int = spec(115200, doc="line speed (the ESP32 firmwares use 115200)", unit="baud", lo=300, hi=3000000)
    max_line_bytes: int = spec(MAX_LINE_BYTES, doc="longest line accepted, LF included; longer ones are dropped "
                               "and counted", lo=64, hi=65536)

    def __post_init__(self) -> None:
        if not isinstance(self.port, str) or not self.port:
            raise ValueError(f"port must be a non-empty string, got {self.port!r}")
        for name, lo, hi in (("baudrate", 300, 3000000), ("max_line_bytes", 64, 65536)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ValueError(f"{name} must be an integer in {lo}..{hi}, got {value!r}")


class RemoteIdDriver(SensorDriver):
    """Remote ID receiver lines -> RemoteIdReading, one per broadcast line."""

    kind: ClassVar[str] = "remoteid"
    Settings: ClassVar[type] = RemoteIdSettings
    needs_mount: ClassVar[bool] = False
    max_buffer_bytes: ClassVar[int] = 64 * 1024

    def __init__(self, name: str, settings: RemoteIdSettings, *, clock: Clock | None = None) -> None:
        super().__init__(name, settings, clock=clock)
        self.parser = RidParser(settings.max_line_bytes)

    def _decode(self, buf: bytearray, t_mono: float) -> tuple[int, list[Any]]:
        consumed, items = self.parser.feed(buf)
        stats = self.parser.stats
        self._count_parser(stats.frames, stats.bad_lines, stats.resyncs, stats.dropped_bytes)
        return consumed, [RemoteIdReading(sensor=self.name, t_mono=t_mono, **fields) for fields in items]
