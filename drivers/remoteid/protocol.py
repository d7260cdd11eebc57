"""Remote ID receiver output: JSON lines of ESP32 firmwares and F3411 messages as hex lines.

Pure and incremental: no ``serial`` import, no I/O. :meth:`RidParser.feed` takes the
caller's receive buffer and returns how many bytes to delete from its front plus one
field dict per broadcast line (the keyword arguments of
:class:`~towerd.drivers.measurements.RemoteIdReading` other than ``sensor`` and
``t_mono``; fields a line did not carry are absent). Merging broadcasts per transmitter is
the consumer's job: each line is one reading with only what it carried.

Framing: one line per broadcast, ended by LF (a CR before it is dropped), at most
``max_line_bytes`` bytes; a longer line is dropped up to its line end and counted
(``too_long``). Each line is, by its first character:

``{`` one JSON object (UTF-8), in one of the receiver firmwares' dialects
   (:mod:`.dialects`, where each is cited); unknown keys are ignored, a known key with a
   wrong type or an impossible value refuses the line (``out_of_range``), an object
   naming no drone (heartbeat, banner) is counted as ``no_drone``.

hex F3411 messages, one broadcast per line, as the hex-string input of tuupola's librid
   CLI (github.com/tuupola/librid, ``examples/cli/README.md``: "25 bytes: Remote ID
   message; 27 bytes: Application Code + Counter + Remote ID message"), extended to a
   Message Pack (3 + 25 n bytes, optionally after the same 2-byte BLE prefix 0x0D +
   counter). No public receiver firmware was found that prints one message per line in
   hex (Steve Jack's id_scanner dumps whole frames as a multi-line table), so this is
   the minimal format towerd defines: up to three optional prefix tokens, separated by
   spaces or commas, before the hex, each recognised by its form:

       [aa:bb:cc:dd:ee:ff] [RSSI dBm, e.g. -67] [source: ble|bt4|bt5|beacon|nan] HEX

   e.g. ``60:60:1f:aa:bb:cc -71 ble 0D0C12202d3e...``. Decoding: :mod:`.f3411`.

anything else: firmware chatter (boot banners, ``[REMOTE] ...``): counted as ``text``,
   its bytes as dropped, never an error.

Never raises on input. Counters (:class:`RidStats`): ``frames`` lines accepted (JSON
objects, hex broadcasts), ``readings`` produced, and per refusal reason ``not_json``
(starts with ``{`` or ``[`` but is not JSON, or not UTF-8), ``not_object`` (JSON but not
an object), ``out_of_range``, ``too_long``, ``bad_hex`` (odd digits, bad prefix token,
wrong length), ``bad_message`` / ``bad_text`` (F3411 content refused); ``bad_lines`` is
their sum; ``dropped_bytes`` the bytes of refused lines and text.
"""

from __future__ import annotations

import binascii
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from towerd.drivers.remoteid import f3411
from towerd.drivers.remoteid.dialects import SOURCES, LineRefused, decode_json_object

MAX_LINE_BYTES = 1024
"""Default longest line, LF included (the firmwares' JSON lines are under 300 bytes; a
9-message pack in hex with a prefix is about 500)."""

_HEX = re.compile(rb"(0[xX])?[0-9a-fA-F]+")
_HEX_LINE = re.compile(
    rb"(?:(?P<mac>[0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}(?:\2[0-9A-Fa-f]{2}){4})[ \t,]+)?"
    rb"(?:(?P<rssi>[-+]?\d{1,3}(?:\.\d+)?)(?:dBm)?[ \t,]+)?"
    rb"(?:(?P<source>[A-Za-z][A-Za-z0-9_]*)[ \t,]+)?"
    rb"(?:0[xX])?(?P<hex>[0-9A-Fa-f]{50,})")
"""A hex line: optional MAC, RSSI and source word, then at least one message of hex."""
@dataclass
class RidStats:
    """Running counts of one parser (see the module docstring)."""

    frames: int = 0
    readings: int = 0
    json_lines: int = 0
    hex_lines: int = 0
    text: int = 0
    no_drone: int = 0
    not_json: int = 0
    not_object: int = 0
    out_of_range: int = 0
    too_long: int = 0
    bad_hex: int = 0
    bad_message: int = 0
    bad_text: int = 0
    dropped_bytes: int = 0
    resyncs: int = 0  # lines cut because too long (alignment lost until the next LF)
    f3411: f3411.F3411Stats = field(default_factory=f3411.F3411Stats)
    last_error: str = ""

    @property
    def bad_lines(self) -> int:
        """Lines refused for any reason (text lines are not refusals)."""
        return (self.not_json + self.not_object + self.out_of_range + self.too_long + self.bad_hex
                + self.bad_message + self.bad_text)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["bad_lines"] = self.bad_lines
        return out


# ----------------------------------------------------------------------------- hex lines


def decode_hex_line(line: bytes) -> tuple[dict[str, Any], bytes] | None:
    """``[mac] [rssi] [source] HEX`` -> (prefix fields, the message or pack bytes); None
    when the line is not a hex line at all (text); LineRefused when it is a refused one."""
    m = _HEX_LINE.fullmatch(line)
    if m is None:
        if _looks_hex(line):
            raise LineRefused("bad_hex", "prefix before the hex is not [MAC] [RSSI] [source]")
        return None
    digits = m["hex"]
    if len(digits) % 2:
        raise LineRefused("bad_hex", f"odd number of hex digits ({len(digits)})")
    data = binascii.unhexlify(digits)
    mac = m["mac"]
    out: dict[str, Any] = {"transmitter": mac.decode("ascii").replace("-", ":").lower() if mac else ""}
    if m["rssi"] is not None:
        rssi = float(m["rssi"])
        if not -150 <= rssi <= 20:
            raise LineRefused("out_of_range", f"RSSI {rssi} dBm")
        out["rssi_dbm"] = rssi
    if m["source"] is not None:
        source = SOURCES.get(m["source"].decode("ascii").lower())
        if source is None:
            raise LineRefused("bad_hex", f"prefix token {m['source']!r} is not a MAC, an RSSI or a source")
        out["source"] = source
    if data[0] == 0x0D and (len(data) == 2 + f3411.MESSAGE_SIZE or data[2] >> 4 == f3411.PACK):
        data = data[2:]  # BLE service data: application code 0x0D, message counter
    if len(data) != f3411.MESSAGE_SIZE and data[0] >> 4 != f3411.PACK:
        raise LineRefused("bad_hex", f"{len(data)} bytes: neither a 25-byte message nor a message pack")
    return out, data


def _looks_hex(line: bytes) -> bool:
    tokens = line.replace(b",", b" ").split()
    return bool(tokens) and len(tokens[-1]) >= 2 * f3411.MESSAGE_SIZE and _HEX.fullmatch(tokens[-1]) is not None


# ----------------------------------------------------------------------------- the parser


class RidParser:
    """Incremental line parser: bytes -> reading field dicts (see the module docstring)."""

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        if max_line_bytes < 64:
            raise ValueError("max_line_bytes must be >= 64")
        self.max_line_bytes = max_line_bytes
        self.stats = RidStats()
        self._skipping = False  # inside an over-long line: drop up to its LF

    def feed(self, buf: bytes | bytearray) -> tuple[int, list[dict[str, Any]]]:
        """Decode the complete lines at the front of ``buf``: (bytes consumed, readings).

        Bytes after the last LF stay (consumed excludes them) unless they already exceed
        the line limit, which drops them and the rest of their line."""
        out: list[dict[str, Any]] = []
        stats = self.stats
        end = len(buf)
        pos = 0
        view = bytes(buf)
        hex_lines: list[tuple[dict[str, Any], bytes, int, int]] = []  # (prefix, data, size, slot)
        while pos < end:
            nl = view.find(b"\n", pos)
            if self._skipping:
                stop = end if nl < 0 else nl + 1
                stats.dropped_bytes += stop - pos
                pos = stop
                if nl >= 0:
                    self._skipping = False
                continue
            if nl < 0:
                if end - pos >= self.max_line_bytes:
                    self._refuse(LineRefused("too_long", f"line over {self.max_line_bytes} bytes"), end - pos)
                    stats.resyncs += 1
                    self._skipping = True
                    pos = end
                break
            size = nl + 1 - pos
            line = view[pos:nl].rstrip(b"\r").strip()
            pos = nl + 1
            if size > self.max_line_bytes:
                self._refuse(LineRefused("too_long", f"line of {size} bytes over {self.max_line_bytes}"), size)
                stats.resyncs += 1
                continue
            if not line:
                continue
            self._line(line, size, out, hex_lines)
        self._flush_hex(hex_lines, out)
        readings = [fields for fields in out if fields is not None]
        stats.readings += len(readings)
        return pos, readings

    def _line(self, line: bytes, size: int, out: list, hex_lines: list) -> None:
        stats = self.stats
        first = line[:1]
        try:
            if first in (b"{", b"["):
                try:
                    obj = json.loads(line.decode("utf-8"))
                except (UnicodeDecodeError, ValueError, RecursionError) as exc:
                    raise LineRefused("not_json", f"not JSON: {exc}") from None
                if not isinstance(obj, dict):
                    raise LineRefused("not_object", f"JSON {type(obj).__name__}, not an object")
                fields = decode_json_object(obj)
                stats.frames += 1
                stats.json_lines += 1
                if fields is None:
                    stats.no_drone += 1
                else:
                    out.append(fields)
                return
            decoded = decode_hex_line(line)
            if decoded is not None:
                hex_lines.append((*decoded, size, len(out)))
                out.append(None)  # the slot its reading takes, in line order
                return
        except LineRefused as exc:
            self._refuse(exc, size)
            return
        stats.text += 1
        stats.dropped_bytes += size

    def _flush_hex(self, hex_lines: list[tuple[dict[str, Any], bytes, int, int]], out: list) -> None:
        """Decode the hex broadcasts of one feed together: every message of every line (single
        messages and packs alike) goes into one (n, 25) array, decoded in one structured-array
        pass per message type (:func:`f3411.decode_rows`), then regrouped per line. One
        refused message refuses its line (a pack is one broadcast)."""
        stats = self.stats
        blocks: list[bytes] = []
        spans: list[tuple[int, int, int]] = []  # (line index, first row, end row)
        rows_so_far = 0
        for i, (_, data, size, _) in enumerate(hex_lines):
            try:
                block = f3411.block_messages(data)
            except f3411.MessageError as exc:
                self._refuse(LineRefused("bad_hex" if exc.reason == "bad_length" else exc.reason, str(exc)), size)
                continue
            blocks.append(block)
            count = len(block) // f3411.MESSAGE_SIZE
            spans.append((i, rows_so_far, rows_so_far + count))
            rows_so_far += count
        if not blocks:
            return
        raw = np.frombuffer(b"".join(blocks), dtype=np.uint8).reshape(-1, f3411.MESSAGE_SIZE)
        rows = f3411.decode_rows(raw, stats.f3411)
        for i, first, stop in spans:
            prefix, _, size, slot = hex_lines[i]
            if stop - first == 1:  # one message: no merging
                kind, fields, error = rows[first]
                if error is None:
                    stats.frames += 1
                    stats.hex_lines += 1
                    if fields is not None:  # an authentication page carries nothing a reading holds
                        out[slot] = {**fields, **prefix}
                    continue
            else:
                part = rows[first:stop]
                error = next((e for _, _, e in part if e is not None), None)
                if error is None:
                    stats.frames += 1
                    stats.hex_lines += 1
                    messages = [(kind, fields) for kind, fields, _ in part if fields is not None]
                    if messages:
                        out[slot] = {**f3411.merge(messages), **prefix}
                    continue
            self._refuse(LineRefused(error.reason, str(error)), size)

    def _refuse(self, exc: LineRefused, size: int) -> None:
        stats = self.stats
        setattr(stats, exc.reason, getattr(stats, exc.reason) + 1)
        stats.dropped_bytes += size
        stats.last_error = str(exc)
