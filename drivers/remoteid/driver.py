"""Remote ID receiver driver: ESP32-class receivers printing one broadcast per line.

Reads the receiver's serial output (115200 baud 8N1 on every firmware found), decodes it
with :class:`~towerd.drivers.remoteid.protocol.RidParser` (JSON dialects and F3411 hex
lines, see there) and yields one :class:`~towerd.drivers.measurements.RemoteIdReading`
per broadcast line, ``t_mono`` the time its last byte was read. A reading holds only
what its line carried; the consumer merges them per ``transmitter``.

Counters: ``frames`` lines accepted, ``bad_frames`` lines refused (by reason in
``driver.parser.stats``), ``resyncs`` over-long lines cut, ``dropped_bytes`` bytes of
refused lines and of firmware chatter. :meth:`silent_s`: how long the receiver has sent
nothing at all (a receiver whose port is open but that prints nothing hears nothing:
Remote ID fusion does not take its silence for the absence of broadcasts).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

from towerd.clock import Clock
from towerd.drivers.base import ParserTotals, SensorDriver
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
        self._last_byte_mono: float | None = None  # when the receiver last sent a byte, or its port opened

    def open(self) -> None:
        """Open the port; the receiver's silence is counted from here."""
        was_open = self.is_open
        super().open()
        if not was_open:
            self._last_byte_mono = self.clock.monotonic()

    def feed(self, data: bytes, t_mono: float) -> list[Any]:
        if data:
            self._last_byte_mono = t_mono
        return super().feed(data, t_mono)

    def silent_s(self, t_mono: float) -> float:
        """Seconds since the receiver last sent anything (a broadcast, heartbeat, banner
        or refused line), counted from the port's opening; inf before it ever opened."""
        last = self._last_byte_mono
        return float("inf") if last is None else max(0.0, t_mono - last)

    def _decode(self, buf: bytearray, t_mono: float) -> tuple[int, list[Any]]:
        consumed, items = self.parser.feed(buf)
        return consumed, [RemoteIdReading(sensor=self.name, t_mono=t_mono, **fields) for fields in items]

    def parser_totals(self) -> ParserTotals:
        st = self.parser.stats
        return ParserTotals(st.frames, st.bad_lines, st.resyncs, st.dropped_bytes, {
            "not_json": st.not_json, "not_object": st.not_object, "out_of_range": st.out_of_range,
            "too_long": st.too_long, "bad_hex": st.bad_hex, "bad_message": st.bad_message,
            "bad_text": st.bad_text, "firmware_text": st.text, "no_drone": st.no_drone})

    def status(self) -> dict[str, Any]:
        """What the receiver has sent: JSON and F3411 hex lines, readings, the last refusal."""
        st = self.parser.stats
        silent = self.silent_s(self.clock.monotonic())
        return {"json_lines": st.json_lines, "hex_lines": st.hex_lines, "readings": st.readings,
                "last_error": st.last_error, "silent_s": round(silent, 1) if silent != float("inf") else None}
