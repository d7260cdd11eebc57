"""The contract every sensor driver follows (after python-can's ``BusABC``).

The base class owns the port, the read timeout, the receive buffer and its bound, the
counters and an idempotent :meth:`SensorDriver.close`. A subclass supplies its
``Settings`` dataclass, a parser, and implements one hook, :meth:`SensorDriver._decode`,
which takes bytes and returns how many it consumed and what it decoded, plus
:meth:`SensorDriver.parser_totals`, its parser's running totals under the names every
driver uses (:class:`ParserTotals`): from them the base keeps the same counters for
every driver (:class:`DriverCounters`). Optionally it overrides
:meth:`SensorDriver._configure` to talk to the device after the port opens,
:meth:`SensorDriver.poll` when time alone can complete a reading (a scan that ends when
the line goes quiet), and :meth:`SensorDriver.status` to say what it knows of its device
(HEALTH and ``towerd status`` show it).

Technician tools hook in without touching a driver: ``raw_sink(data, t_mono)``, when
set, receives every chunk of bytes read from the port before it is decoded (``towerd
record``), and :meth:`SensorDriver.feed` takes recorded bytes back (``towerd replay``).

Every settings dataclass has at least ``port`` (a pyserial URL or device path for the
data stream) and ``baudrate``.
"""

from __future__ import annotations

import abc
import logging
import os
import select
import threading
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Any, Callable, ClassVar, Mapping, NamedTuple

import serial

from towerd.clock import Clock, SystemClock
from towerd.drivers.transport import open_port, unstable_name_hint
from towerd.errors import DriverIOError

log = logging.getLogger(__name__)


class ParserTotals(NamedTuple):
    """A parser's running totals (since it was made) in the names every driver uses.

    Each parser counts in its own words (sentences, candidates, sweeps); its driver's
    :meth:`SensorDriver.parser_totals` maps them here. Every byte a parser consumes is
    either part of an accepted frame or dropped, so the base class derives
    ``frame_bytes`` from the bytes consumed. A named tuple: made once per read, it
    costs a third of a frozen dataclass."""

    frames: int  # frames, sentences or lines accepted
    bad_frames: int  # candidates rejected
    resyncs: int  # times alignment was lost
    dropped_bytes: int  # bytes consumed outside accepted frames
    reasons: Mapping[str, int] = MappingProxyType({})
    """What was refused or set aside on the way to readings, by reason, in the parser's
    or driver's own names (bad checksum, unsupported version, sweep without
    configuration, lost target ...); a count per reason since the driver was made."""


@dataclass
class DriverCounters:
    """Per-sensor counters, the same for every driver, shown by status and HEALTH."""

    bytes_in: int = 0  # bytes read from the port
    frames: int = 0
    frame_bytes: int = 0  # bytes in accepted frames
    bad_frames: int = 0
    resyncs: int = 0
    dropped_bytes: int = 0  # by the parser, and beyond the receive buffer's bound
    reconnects: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    """Since the driver was made, by reason (:attr:`ParserTotals.reasons`); a reason is
    listed once it happened."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class SensorDriver(abc.ABC):
    """One sensor: opens its port, reads bytes, yields decoded readings."""

    kind: ClassVar[str]
    """Registry name, as written in YAML ``driver:``."""
    Settings: ClassVar[type]
    """Frozen dataclass of this driver's YAML ``settings:`` keys."""
    needs_mount: ClassVar[bool] = True
    """Whether readings are positions relative to the antenna (a radar): then the YAML
    must say where the antenna is and where it looks (``mount:``)."""

    read_timeout_s: ClassVar[float] = 0.2
    max_buffer_bytes: ClassVar[int] = 256 * 1024
    """Hard bound on undecoded bytes kept; the parser should never get near it."""

    def __init__(self, name: str, settings: Any, *, clock: Clock | None = None) -> None:
        self.name = name
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.counters = DriverCounters()
        self._port: serial.SerialBase | None = None
        self._buf = bytearray()
        self._lock = threading.Lock()
        self._parser_seen = ParserTotals(0, 0, 0, 0)
        self._consumed = 0  # bytes the parser consumed since the driver was made
        self._reason_counts: tuple[int, ...] = ()
        self._reasons: dict[str, int] = {}
        self._warned_names: set[str] = set()
        self.raw_sink: Callable[[bytes, float], None] | None = None
        """Called with every chunk read from the port and its monotonic time (recording)."""

    @property
    def is_open(self) -> bool:
        return self._port is not None

    def fileno(self) -> int | None:
        """The descriptor a caller's own poll can wait on before :meth:`read_ready` (a
        POSIX serial port or pty); None when the port is closed or has none (pyserial's
        loop://, rfc2217://...: those are read with :meth:`read`)."""
        port = self._port
        return None if port is None else _fileno(port)

    def open(self) -> None:
        """Open the data port and configure the device; no-op when already open."""
        with self._lock:
            if self._port is not None:
                return
            self._warn_unstable_name(self.settings.port)
            port = open_port(self.settings.port, self.settings.baudrate, self.read_timeout_s)
            self._buf.clear()
            try:
                self._configure(port)
            except BaseException:
                port.close()
                raise
            self._port = port
        log.info("sensor %s: opened %s at %d baud", self.name, self.settings.port, self.settings.baudrate)

    def read(self) -> list[Any]:
        """Wait up to ``read_timeout_s`` for bytes and return what they complete.

        Raises DriverIOError when the port fails (unplugged, EIO, closed under us).
        """
        port = self._port
        if port is None:
            raise DriverIOError(f"sensor {self.name}: port is not open")
        try:
            fd = _fileno(port)
            if fd is None:
                data = port.read(1)
                if data:
                    waiting = port.in_waiting
                    if waiting:
                        data += port.read(waiting)
            elif select.select([fd], [], [], self.wait_s(self.clock.monotonic()))[0]:
                # One wait, then all that came in one read(2) of the (non-blocking) descriptor:
                # pyserial's read(in_waiting) would add an ioctl and a second select.
                data = _read_ready(fd)
            else:
                data = b""
        except (serial.SerialException, OSError, TypeError, AttributeError, ValueError) as exc:
            # pyserial raises TypeError/AttributeError when the fd is closed concurrently.
            raise DriverIOError(f"sensor {self.name}: read failed: {exc}") from exc
        return self._take(data, self.clock.monotonic())

    def read_ready(self, readable: bool = True) -> list[Any]:
        """:meth:`read` without the wait, for a caller that polls :meth:`fileno` itself
        (the daemon's loop, one wake-up for all its sensors): with ``readable`` (the poll
        said so) all that the descriptor holds, else nothing; in both cases what time
        completes (:meth:`poll`; the caller comes back :meth:`wait_s` after the last read
        for it). Raises DriverIOError as :meth:`read` does."""
        port = self._port
        if port is None:
            raise DriverIOError(f"sensor {self.name}: port is not open")
        data = b""
        if readable:
            try:
                fd = _fileno(port)
                data = _read_ready(fd) if fd is not None else b""
            except (serial.SerialException, OSError, TypeError, ValueError) as exc:
                raise DriverIOError(f"sensor {self.name}: read failed: {exc}") from exc
        return self._take(data, self.clock.monotonic())

    def _take(self, data: bytes, t_mono: float) -> list[Any]:
        """The readings ``data`` (read at ``t_mono``; may be empty) and the passage of time
        complete, after the counters and the raw sink saw the bytes."""
        if not data:
            return self.poll(t_mono)
        self.counters.bytes_in += len(data)
        sink = self.raw_sink
        if sink is not None:
            sink(data, t_mono)
        return self.feed(data, t_mono) + self.poll(t_mono)

    def feed(self, data: bytes, t_mono: float) -> list[Any]:
        """Decode ``data`` received at ``t_mono`` (used by read and by replay)."""
        self._buf += data
        return self._decode_buffer(t_mono)

    def _decode_buffer(self, t_mono: float, **options: Any) -> list[Any]:
        """Run :meth:`_decode` (with ``options``) on the receive buffer, drop what it
        consumed, bring the counters up to date and keep the buffer within its bound."""
        buf = self._buf
        consumed, readings = self._decode(buf, t_mono, **options)
        del buf[:consumed]
        self._consumed += consumed
        self._count_parser()
        if len(buf) > self.max_buffer_bytes:
            excess = len(buf) - self.max_buffer_bytes
            del buf[:excess]
            self.counters.dropped_bytes += excess
            log.warning("sensor %s: receive buffer over %d bytes, dropped %d", self.name, self.max_buffer_bytes, excess)
        return readings

    @abc.abstractmethod
    def _decode(self, buf: bytearray, t_mono: float) -> tuple[int, list[Any]]:
        """Decode as much of ``buf`` as possible: return (bytes consumed, readings).

        Must never raise on any input. The counters follow from :meth:`parser_totals`."""

    @abc.abstractmethod
    def parser_totals(self) -> ParserTotals:
        """The parser's running totals in the common names (see :class:`ParserTotals`)."""

    def status(self) -> dict[str, Any]:
        """What the driver knows of its device beyond the counters (TI: the CLI push;
        RF Explorer: model, band, scan plan; NMEA: talkers heard), for HEALTH
        (``sensors.<name>.device``) and ``towerd status``. JSON-ready and small (a
        central bounds HEALTH); None for what is not known yet. Called from another
        thread than the reader's: read attributes, change nothing."""
        return {}

    def wait_s(self, t_mono: float) -> float:
        """How long :meth:`read` may wait for bytes at ``t_mono`` (a driver whose
        :meth:`poll` releases something at a given time answers less until then)."""
        return self.read_timeout_s

    def poll(self, t_mono: float) -> list[Any]:
        """Readings that the passage of time completes (none by default).

        :meth:`read` calls it after every wait, with or without data; replay calls it as
        recorded time advances, so a reading held back until the line goes quiet comes
        out the same way live and in replay. Must never raise."""
        return []

    def _count_parser(self) -> None:
        """Add to the counters what the parser counted since the last call (a parser
        keeps running totals; the driver's counters also count reconnects and the bytes
        dropped beyond the buffer's bound)."""
        now, seen = self.parser_totals(), self._parser_seen
        c = self.counters
        c.frames += now.frames - seen.frames
        c.bad_frames += now.bad_frames - seen.bad_frames
        c.resyncs += now.resyncs - seen.resyncs
        c.dropped_bytes += now.dropped_bytes - seen.dropped_bytes
        c.frame_bytes = self._consumed - now.dropped_bytes
        if now.reasons is not seen.reasons and now.reasons != seen.reasons:
            # A new dict, never changed in place: status readers in other threads copy it.
            c.reasons = {**c.reasons, **{reason: c.reasons.get(reason, 0) + count - seen.reasons.get(reason, 0)
                                         for reason, count in now.reasons.items() if count}}
        self._parser_seen = now

    def _reason_dict(self, names: tuple[str, ...], counts: tuple[int, ...]) -> dict[str, int]:
        """``dict(zip(names, counts))`` for :attr:`ParserTotals.reasons`, the same dict until a
        count changes (then :meth:`_count_parser` has nothing to compare)."""
        if counts != self._reason_counts:
            self._reason_counts = counts
            self._reasons = dict(zip(names, counts))
        return self._reasons

    def _configure(self, port: serial.SerialBase) -> None:
        """Talk to the device after its port opened (send configuration, etc.)."""

    def _warn_unstable_name(self, path: str) -> None:
        """Warn once per path when it is a bare /dev/ttyUSBn or /dev/ttyACMn."""
        if path in self._warned_names:
            return
        self._warned_names.add(path)
        hint = unstable_name_hint(path)
        if hint:
            log.warning("sensor %s: %s", self.name, hint)

    def close(self) -> None:
        """Close the port; safe to call any number of times, from any thread."""
        with self._lock:
            port, self._port = self._port, None
        if port is not None:
            try:
                port.close()
            except (serial.SerialException, OSError) as exc:
                log.debug("sensor %s: close: %s", self.name, exc)

    def __enter__(self) -> "SensorDriver":
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


READ_CHUNK_BYTES = 1 << 16
"""Most bytes one :meth:`SensorDriver.read` takes from a descriptor (more wait for the next)."""


def _read_ready(fd: int) -> bytes:
    """What the descriptor ``fd`` that select() found readable holds, up to
    READ_CHUNK_BYTES. pyserial opens ports non-blocking, so this never waits; nothing at
    all after readiness means the device went away, as pyserial's read says too."""
    try:
        data = os.read(fd, READ_CHUNK_BYTES)
    except BlockingIOError:  # another reader was faster, or a spurious wake-up
        return b""
    if not data:
        raise OSError("device reports readiness to read but returned no data (device disconnected?)")
    return data


def _fileno(port: serial.SerialBase) -> int | None:
    """The descriptor :meth:`SensorDriver.read` can wait on (a POSIX serial port or pty),
    None for a port without one (pyserial's loop://, rfc2217://...)."""
    try:
        return port.fileno() if isinstance(port, serial.Serial) else None
    except (AttributeError, serial.SerialException, OSError):
        return None
