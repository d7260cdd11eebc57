"""Raw captures of a sensor's serial bytes with their timing (``towerd record``/``replay``).

File format "towerd raw capture", version 1 (also in docs/raw-capture-format.md):

    line 1   the ASCII magic  ``TOWERD-RAW 1`` and LF
    line 2   one JSON object (UTF-8, no newline inside) and LF — the header:
               format "towerd-raw", version 1, sensor (name), driver (registry name),
               settings (the driver's settings as recorded), mount (the sensor's mount
               from the configuration, or null), started_utc (ISO 8601), started_utc_us
               (µs since the epoch), started_mono (monotonic s of the recorder), host,
               towerd_version, note (free text)
    then     records to the end of the file, each
               offset_s  float64 little-endian: seconds from started_mono to when the
                         chunk was read from the port
               length    uint32 little-endian: byte count of the chunk
               data      the bytes exactly as read (no framing applied)

Records are appended as the port delivers them, so a capture cut short (power loss, a
killed process) loses at most its last, incomplete record: :func:`read_recording`
stops there and says so. Offsets never decrease.
"""

from __future__ import annotations

import json
import logging
import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from towerd import __version__
from towerd.errors import TowerdError

log = logging.getLogger(__name__)

MAGIC = b"TOWERD-RAW 1\n"
RECORD = struct.Struct("<dI")
MAX_HEADER_BYTES = 1 << 20
MAX_CHUNK_BYTES = 1 << 24


class RecordingError(TowerdError):
    """A capture file cannot be read or written."""


@dataclass
class RecordingHeader:
    sensor: str
    driver: str
    settings: dict[str, Any]
    started_utc_us: int
    started_mono: float
    mount: dict[str, Any] | None = None
    started_utc: str = ""
    host: str = field(default_factory=socket.gethostname)
    towerd_version: str = __version__
    note: str = ""

    def to_json(self) -> str:
        return json.dumps({"format": "towerd-raw", "version": 1, **self.__dict__}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "RecordingHeader":
        raw = json.loads(text)
        if not isinstance(raw, dict) or raw.get("format") != "towerd-raw" or raw.get("version") != 1:
            raise ValueError("not a towerd-raw version 1 header")
        known = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw}
        return cls(**known)


class RawWriter:
    """Appends timed chunks to a capture file; :meth:`write` is safe to call from the
    sensor's reading thread. Each record is flushed to the OS as it is written."""

    def __init__(self, path: str | Path, header: RecordingHeader) -> None:
        self.path = Path(path)
        self.header = header
        self.chunks = 0
        self.bytes = 0
        try:
            self._fh: BinaryIO | None = open(self.path, "wb")
            self._fh.write(MAGIC + header.to_json().encode("utf-8") + b"\n")
            self._fh.flush()
        except OSError as exc:
            raise RecordingError(f"{self.path}: cannot write: {exc}") from exc
        self._last = 0.0

    def write(self, data: bytes, t_mono: float) -> None:
        """Append ``data`` read at monotonic ``t_mono`` (the signature of a driver's raw_sink)."""
        fh = self._fh
        if fh is None or not data:
            return
        offset = max(self._last, t_mono - self.header.started_mono)
        self._last = offset
        fh.write(RECORD.pack(offset, len(data)) + data)
        fh.flush()
        self.chunks += 1
        self.bytes += len(data)

    def close(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            fh.close()


@dataclass
class Recording:
    """A capture read back: its header and its (offset_s, data) records."""

    header: RecordingHeader
    records: list[tuple[float, bytes]]
    truncated: bool  # the file ended inside a record (that record is left out)

    @property
    def duration_s(self) -> float:
        return self.records[-1][0] if self.records else 0.0

    @property
    def total_bytes(self) -> int:
        return sum(len(d) for _, d in self.records)


def _records(fh: BinaryIO) -> Iterator[tuple[float, bytes] | None]:
    """(offset, data) per record; a final None when the file ends inside a record."""
    while True:
        head = fh.read(RECORD.size)
        if not head:
            return
        if len(head) < RECORD.size:
            yield None
            return
        offset, length = RECORD.unpack(head)
        if length > MAX_CHUNK_BYTES or offset != offset:
            raise RecordingError(f"corrupt record header at byte {fh.tell() - RECORD.size}")
        data = fh.read(length)
        if len(data) < length:
            yield None
            return
        yield offset, data


def read_recording(path: str | Path) -> Recording:
    """Read a whole capture; RecordingError when it is not one."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            if fh.read(len(MAGIC)) != MAGIC:
                raise RecordingError(f"{path}: not a towerd raw capture (no '{MAGIC.decode().strip()}' line)")
            line = fh.readline(MAX_HEADER_BYTES)
            try:
                header = RecordingHeader.from_json(line.decode("utf-8"))
            except (ValueError, TypeError) as exc:
                raise RecordingError(f"{path}: bad header: {exc}") from exc
            records: list[tuple[float, bytes]] = []
            truncated = False
            for item in _records(fh):
                if item is None:
                    truncated = True
                    log.warning("%s: the capture ends inside a record (cut short); %d records kept", path,
                                len(records))
                    break
                records.append(item)
    except OSError as exc:
        raise RecordingError(f"{path}: cannot read: {exc}") from exc
    return Recording(header, records, truncated)
