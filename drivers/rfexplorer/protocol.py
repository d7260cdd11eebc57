"""RF Explorer spectrum analyser: the serial byte stream and its parser (the messages are in
:mod:`towerd.drivers.rfexplorer.messages`, the host commands in
:mod:`towerd.drivers.rfexplorer.commands`).

Pure and incremental: no ``serial`` import, no I/O. :meth:`RfeParser.feed` takes the
caller's receive buffer and returns how many bytes to delete from its front plus the
messages those bytes completed (the convention of the TI parser), so the parser never
copies or owns the stream and never grows.

Sources (read with the library's search tool; where they disagree with the project's
hardware notes this module follows the vendor, see "Disagreements"):

- RFExplorer-for-Python (RF Explorer Technologies, LGPL-3), ``RFExplorer/ReceiveSerialThread.py``:
  the receive loop this parser re-implements; ``RFExplorer/RFEConfiguration.py``
  (``ProcessReceivedString``: the fixed character positions of ``#C2-F:``);
  ``RFExplorer/RFESweepData.py`` (amplitude byte b -> -b/2 dBm plus the configured
  offset); ``RFExplorer/RFExplorer.py`` (``SendCommand``: ``#`` + size byte + ASCII;
  ``UpdateDeviceConfig``: ``C2-F:Sssssss,Eeeeeee,tttt,bbbb``; ``SendCommand_SweepDataPoints``;
  ``#C2-M:`` positions; the reset string); ``RFExplorer/RFE_Common.py``
  (``CONST_RESETSTRING = "(C) Ariel Rocholl "``, ``CONST_MAX_SPECTRUM_STEPS = 65535``,
  model, mode and calculator codes). The stored copies carry 2010-16/2010-18 headers;
  which of them is tagged v1.33 could not be checked.
- RFExplorer-for-.NET (same vendor, 2010-20), ``RFExplorerCommunicator/RFECommunicator.cs``:
  the same receive loop, newer — ``_EEOT = "\\xFF\\xFE\\xFF\\xFE\\x00"`` ("Early End Of
  Transmission, sent by devices with firmware > 1.27 and 3.10"), ``#C2-f:``, the
  ``$C``/``$q``/``$Q``/``$D`` length rules, and ``"RF Explorer "`` as a second reset
  line; ``RFExplorerCommunicator/RFEConfiguration.cs``: ``#C2-f:`` carries the point count
  in 5 digits ("C2-F for steps < 10000 or C2-f for steps >= 10000").
- "RF Explorer UART API interface specification" (vendor wiki, also
  ``arocholl/rfexplorer/RFExplorerRS232Interface.md``): ``<Size>`` counts the whole
  command, ``Request_Config #<Size>C0`` (4), ``Request_Hold #<Size>CH`` (4),
  ``AnalyzerConfig #<Size>C2-F:<Start_Freq>,<End_Freq>,<Amp_Top>,<Amp_Bottom>`` (32),
  field widths, ``<AdBm>`` "unsigned byte, divide it by two and change sign".

Device -> host stream (bytes; latin-1 maps 1:1):

    line      ``#...`` or text, ended by CR LF        #C2-F: / #C2-f: config, #C2-M: model,
                                                        "(C) Ariel Rocholl ..." reset banner
    $S c      n = c             amplitudes, CR LF     sweep (n <= 255)
    $s c      n = 16 c, c = 0 -> 4096                 sweep ("extended")
    $z hi lo  n = 256 hi + lo                          sweep ("large")
    $q L / $Q lo hi, $Cc L / $Cd L, $Cb . k, $D        other frames, skipped by length

A sweep is accepted only when CR LF sits exactly after its n amplitude bytes (the
vendor's ``bFullStringOK``). On a failed check the parser skips to the next CR LF,
searching from the frame's first byte, exactly as the vendor does (so a CR LF inside the
rejected bytes ends the skip); it never searches for ``$`` or ``#`` inside a length-framed
payload. A sweep whose declared extent contains the early-end marker ``FF FE FF FE 00``
is dropped up to the end of the marker and parsing resumes right after it; the marker
may start anywhere in the declared extent, its CR LF slot included, and so run up to 4
bytes past it (a sweep cut after its last points). Like the vendor, an early end is a
normal event (the device aborts the sweep it is sending when a command arrives, so every
retune makes one): the aborted frame counts in ``early_ends`` and ``frame_bytes``, not as
a resync or dropped bytes. A sweep that
arrives before any configuration, or whose n differs from the configured point count,
is well-formed but dropped (and counted). Amplitude byte b decodes to ``-b/2 + offset``
dBm, vectorised with ``np.frombuffer``.

Disagreements, and what is done here:

- ``$s`` count: ``zleytus/rfe`` reads ``(c + 1) * 16``; the vendor (both libraries) reads
  ``16 c`` with 0 meaning 256 * 16 = 4096, as the notes do. The vendor wins.
- Early-end marker: the .NET loop looks for it only while a sweep is still incomplete,
  which makes the outcome depend on how reads split the stream. Here any marker inside
  the declared extent ends the sweep, however the bytes arrive. Such a marker in a
  genuine sweep would mean four points at -127.5/-127 dBm (below the analyser's floor)
  followed by one at 0 dBm, so nothing real is lost.
- Other frames: the vendor skips ``$q``/``$Q``/``$C``/``$D`` by length without looking
  at their last two bytes. towerd never asks for them, so one arriving is more likely
  line noise: they get the same CR LF check as sweeps, which bounds the damage of a
  false header to one skip-to-CR-LF. Unknown ``$x`` frames (the vendor loop stalls on
  them) are rejected the same way.
- Text lines must be printable ASCII (device lines are); a "line" of binary garbage is
  dropped and counted instead of reported.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from towerd.drivers.rfexplorer.commands import (  # re-exported: importers use this module
    cmd_analyzer_config,
    cmd_hold,
    cmd_request_config,
    cmd_sweep_points,
    command,
)
from towerd.drivers.rfexplorer.messages import (  # re-exported: importers use this module
    CALCULATOR_NAMES,
    MAX_SWEEP_POINTS,
    MODE_SPECTRUM_ANALYZER,
    MODEL_NAMES,
    RfeConfig,
    RfeLine,
    RfeMessage,
    RfeModel,
    RfeReset,
    RfeSweep,
    RfeSweeps,
    parse_config,
    parse_model,
)

__all__ = [
    "cmd_analyzer_config",
    "cmd_hold",
    "cmd_request_config",
    "cmd_sweep_points",
    "command",
    "CALCULATOR_NAMES",
    "MAX_SWEEP_POINTS",
    "MODE_SPECTRUM_ANALYZER",
    "MODEL_NAMES",
    "RfeConfig",
    "RfeLine",
    "RfeMessage",
    "RfeModel",
    "RfeReset",
    "RfeSweep",
    "RfeSweeps",
    "parse_config",
    "parse_model",
    "CRLF",
    "EEOT",
    "MAX_FRAME_BYTES",
    "MAX_LINE_BYTES",
    "RESET_PREFIXES",
    "RfeParser",
    "RfeParserStats",
]

log = logging.getLogger(__name__)

EEOT = b"\xff\xfe\xff\xfe\x00"
"""Early End Of Transmission: the device aborted the sweep it was sending."""
CRLF = b"\r\n"
_MIN_RUN = 4
"""Sweeps after a valid one for which decoding them as one block pays (measured: about even at 3)."""
RESET_PREFIXES = (b"(C) Ariel Rocholl ", b"RF Explorer ")
"""Lines that mean the device restarted (RFE_Common.CONST_RESETSTRING; RFECommunicator.cs)."""
MAX_FRAME_BYTES = 4 + MAX_SWEEP_POINTS + 2
"""Largest length-framed message the device can send: ``$z`` / ``$Q`` of 65535 bytes."""
MAX_LINE_BYTES = 512
"""Longest text line waited for (the longest real line, ``#C2-f:``, has 82 characters)."""

_PRINTABLE = bytes(range(0x20, 0x7F)) + b"\t"
_DOLLAR, _CR, _LF, _FF = 0x24, 0x0D, 0x0A, 0xFF
_S, _s, _z, _q, _Q, _C, _D = (ord(c) for c in "SszqQCD")
_NEED_MORE = -1
_U8, _F4 = np.dtype(np.uint8), np.dtype(np.float32)
_MINUS_HALF = np.float32(-0.5)


@dataclass
class RfeParserStats:
    """Running counts. Every consumed byte is in ``frame_bytes`` or ``dropped_bytes``."""

    frames: int = 0  # well-formed messages (lines and length-framed), used or not
    frame_bytes: int = 0
    bad_frames: int = 0  # length-framed candidates that failed their checks; bad config/model lines
    resyncs: int = 0  # times alignment was lost (entering a stretch of dropped bytes)
    dropped_bytes: int = 0
    sweeps: int = 0  # sweeps emitted
    sweeps_without_config: int = 0
    sweeps_wrong_points: int = 0
    early_ends: int = 0  # sweeps aborted by the early-end marker (normal at a retune), and stray markers
    configs: int = 0
    models: int = 0
    resets: int = 0
    lines: int = 0  # other printable lines
    other_frames: int = 0  # $q $Q $C $D skipped by length
    last_error: str = ""


# --------------------------------------------------------------------------- parser


class RfeParser:
    """Incremental, bounded parser of the device -> host stream.

    After any :meth:`feed` the caller holds fewer than ``max(max_frame_bytes,
    max_line_bytes + 2)`` unconsumed bytes: an incomplete frame, an incomplete line, or a
    trailing CR while skipping to the next CR LF. The parser keeps the last accepted
    configuration (``config``); a reset banner forgets it.
    """

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        if max_frame_bytes < 16 or max_line_bytes < 64:
            raise ValueError("max_frame_bytes must be >= 16 and max_line_bytes >= 64")
        self.max_frame_bytes = max_frame_bytes
        self.max_line_bytes = max_line_bytes
        self.stats = RfeParserStats()
        self.config: RfeConfig | None = None
        self.model: RfeModel | None = None
        self._skipping = False  # skipping to the next CR LF
        self._in_garbage = False  # a resync has been counted for the current stretch
        self._scanned = 0  # bytes of the pending sweep at the buffer front already searched for EEOT

    def reset(self) -> None:
        """Forget the configuration and any partial state (a new connection)."""
        self.config = None
        self.model = None
        self._skipping = False
        self._in_garbage = False
        self._scanned = 0

    def feed(self, buf: bytes | bytearray | memoryview) -> tuple[int, list[RfeMessage]]:
        """Decode what ``buf`` completes; return (bytes to delete from its front, messages).

        Never raises on any content; the caller must delete exactly ``consumed`` bytes
        and call again with the rest plus new data.
        """
        consumed, messages = self.feed_runs(buf)
        if not any(type(msg) is RfeSweeps for msg in messages):
            return consumed, messages
        out: list[RfeMessage] = []
        for msg in messages:
            if type(msg) is RfeSweeps:
                config, variant = msg.config, msg.variant
                out.extend([RfeSweep(config, variant, row) for row in msg.power_dbm])
            else:
                out.append(msg)
        return consumed, out

    def feed_runs(self, buf: bytes | bytearray | memoryview) -> tuple[int, list[RfeMessage | RfeSweeps]]:
        """:meth:`feed`, with each run of consecutive sweeps decoded together given as one
        :class:`RfeSweeps` (a row per sweep) instead of one :class:`RfeSweep` per sweep."""
        data = buf if isinstance(buf, (bytes, bytearray)) else bytes(buf)
        n = len(data)
        pos = 0
        out: list[RfeMessage | RfeSweeps] = []
        scanned, self._scanned = self._scanned, 0
        while pos < n:
            if self._skipping:
                end = data.find(CRLF, pos)
                if end < 0:
                    keep = 1 if data[n - 1] == _CR else 0
                    self._drop(n - keep - pos)
                    pos = n - keep
                    break
                self._drop(end + 2 - pos)
                pos = end + 2
                self._skipping = False
                continue
            first = data[pos]
            if first == _DOLLAR:
                nxt = self._frame(data, pos, n, out, scanned if pos == 0 else 0)
            elif first == _FF:
                nxt = self._stray_eeot(data, pos, n, out)
            else:
                nxt = self._line(data, pos, n, out)
            if nxt == _NEED_MORE:
                break
            pos = nxt
        return pos, out

    # -- accounting -------------------------------------------------------------

    def _drop(self, count: int) -> None:
        if count <= 0:
            return
        self.stats.dropped_bytes += count
        if not self._in_garbage:
            self._in_garbage = True
            self.stats.resyncs += 1

    def _accept(self, count: int) -> None:
        self.stats.frames += 1
        self.stats.frame_bytes += count
        self._in_garbage = False

    def _reject(self, reason: str) -> None:
        """A length-framed candidate failed: count it and skip to the next CR LF."""
        self.stats.bad_frames += 1
        self.stats.last_error = reason
        if not self._in_garbage:
            self._in_garbage = True
            self.stats.resyncs += 1
        self._skipping = True
        log.debug("RF Explorer frame rejected: %s", reason)

    # -- length-framed messages ---------------------------------------------------

    def _frame(self, data: bytes | bytearray, pos: int, n: int, out: list[RfeMessage | RfeSweeps],
               scanned: int) -> int:
        if n - pos < 2:
            return _NEED_MORE
        kind = data[pos + 1]
        if kind in (_S, _s, _z):
            return self._sweep(data, pos, n, out, kind, scanned)
        if kind in (_q, _Q):
            head = 3 if kind == _q else 4
            if n - pos < head:
                return _NEED_MORE
            length = data[pos + 2] | ((data[pos + 3] << 8) if kind == _Q else 0)
            total = head + length + 2
        elif kind == _C:
            if n - pos < 4:
                return _NEED_MORE
            sub = data[pos + 2]
            if sub in (ord("c"), ord("d")):
                total = data[pos + 3] + 6
            elif sub == ord("b"):
                if n - pos < 5:
                    return _NEED_MORE
                total = 2 + (data[pos + 4] + 1) * 16 + 10
            else:
                self._reject(f"unknown frame $C{chr(sub)!r}")
                return pos
        elif kind == _D:
            total = 2 + 128 * 8 + 2
        else:
            self._reject(f"unknown frame type $ {kind:#04x}")
            return pos
        if total > self.max_frame_bytes:
            self._reject(f"${chr(kind)} frame of {total} bytes exceeds {self.max_frame_bytes}")
            return pos
        if n - pos < total:
            return _NEED_MORE
        if data[pos + total - 2] != _CR or data[pos + total - 1] != _LF:
            self._reject(f"${chr(kind)} frame of {total} bytes does not end in CR LF")
            return pos
        self._accept(total)
        self.stats.other_frames += 1
        return pos + total

    def _sweep(self, data: bytes | bytearray, pos: int, n: int, out: list[RfeMessage | RfeSweeps], kind: int,
               scanned: int) -> int:
        head = 4 if kind == _z else 3
        if n - pos < head:
            return _NEED_MORE
        count = data[pos + 2]
        if kind == _S:
            points = count
        elif kind == _s:
            points = 16 * (count or 256)
        else:
            points = (count << 8) | data[pos + 3]
        total = head + points + 2
        if total > self.max_frame_bytes:
            self._reject(f"sweep of {points} points exceeds max_frame_bytes {self.max_frame_bytes}")
            return pos
        lo = pos + head
        # The marker may start anywhere in the declared extent (the CR LF slot included)
        # and so end up to len(EEOT) - 1 bytes past it: a sweep cut after its last points.
        reach = pos + total + len(EEOT) - 1
        hi = n if n < reach else reach
        start = pos + scanned - (len(EEOT) - 1)
        eeot = data.find(EEOT, lo if lo > start else start, hi)
        if eeot >= 0:
            # A normal event (the device aborts the sweep it is sending when a command
            # arrives): the aborted frame is consumed as such, not counted as lost bytes.
            self.stats.early_ends += 1
            self._accept(eeot + len(EEOT) - pos)
            return eeot + len(EEOT)
        if n - pos < total:
            self._scanned = hi - pos
            return _NEED_MORE
        end = lo + points
        if data[end] != _CR or data[end + 1] != _LF:
            if any(n - k < pos + total and data.endswith(EEOT[:k]) for k in range(1, len(EEOT))):
                self._scanned = n - pos  # maybe a marker straddling the extent's end: wait for it
                return _NEED_MORE
            self._reject(f"{chr(_DOLLAR)}{chr(kind)} sweep of {points} points not followed by CR LF")
            return pos
        self._accept(total)
        config = self.config
        if config is None:
            self.stats.sweeps_without_config += 1
            return pos + total
        if points != config.points:
            self.stats.sweeps_wrong_points += 1
            self.stats.last_error = f"sweep of {points} points, configuration says {config.points}"
            return pos + total
        count = self._run(data, pos, n, head, total)
        # The amplitude bytes of the sweeps, a view every ``total`` bytes (gone before the caller
        # resizes ``data``), as float32 -b/2 (exact).
        power = np.ndarray((count, points), _U8, data, lo, (total, 1)).astype(_F4)
        power *= _MINUS_HALF
        if config.offset_db:
            power += np.float32(config.offset_db)
        more = count - 1
        self.stats.sweeps += count
        self.stats.frames += more
        self.stats.frame_bytes += more * total
        out.append(RfeSweeps(config, "$" + chr(kind), power) if more else RfeSweep(config, "$" + chr(kind), power[0]))
        return pos + count * total

    @staticmethod
    def _run(data: bytes | bytearray, pos: int, n: int, head: int, total: int) -> int:
        """How many sweeps from the accepted one at ``pos`` on are decoded together with it:
        those that follow with the same header, each whole, ending in CR LF, with no
        early-end marker anywhere near them (a device streams sweep after sweep). Each byte
        position of the header and of the CR LF, taken every ``total`` bytes (a strided
        slice), holds the same byte in all of them; else the run ends where the first sweep
        differs."""
        count = (n - pos) // total
        if count <= _MIN_RUN:
            return 1
        stop = pos + count * total
        if data.find(EEOT, pos + total, n if n < stop + len(EEOT) - 1 else stop + len(EEOT) - 1) >= 0:
            return 1
        for at in (pos, pos + 1, pos + 2, pos + 3, pos + total - 2, pos + total - 1) if head == 4 else \
                (pos, pos + 1, pos + 2, pos + total - 2, pos + total - 1):
            if data[at:stop:total] != data[at:at + 1] * count:
                break
        else:
            return count
        block = np.frombuffer(data, _U8, count * total, pos).reshape(count, total)
        same = (block[1:, :head] == block[0, :head]).all(axis=1) & (block[1:, total - 2] == _CR) \
            & (block[1:, total - 1] == _LF)
        return 1 + int(np.argmin(same))

    def _stray_eeot(self, data: bytes | bytearray, pos: int, n: int, out: list[RfeMessage]) -> int:
        """An early-end marker where a message should start (its sweep header was lost)."""
        avail = min(n - pos, len(EEOT))
        if data[pos:pos + avail] != EEOT[:avail]:
            return self._line(data, pos, n, out)
        if avail < len(EEOT):
            return _NEED_MORE
        self.stats.early_ends += 1
        self._drop(len(EEOT))
        return pos + len(EEOT)

    # -- lines ----------------------------------------------------------------------

    def _line(self, data: bytes | bytearray, pos: int, n: int, out: list[RfeMessage]) -> int:
        limit = pos + self.max_line_bytes + 2
        end = data.find(CRLF, pos, min(n, limit))
        if end < 0:
            if n >= limit:
                # Too long for a device line: garbage, skipped to the next CR LF.
                self.stats.last_error = f"no CR LF within {self.max_line_bytes} bytes of a line start"
                if not self._in_garbage:
                    self._in_garbage = True
                    self.stats.resyncs += 1
                self._skipping = True
                return pos
            return _NEED_MORE
        raw = bytes(data[pos:end])
        size = end + 2 - pos
        if raw.translate(None, _PRINTABLE):
            self._drop(size)
            return end + 2
        text = raw.decode("ascii")
        if text.startswith(("#C2-F:", "#C2-f:")):
            try:
                config = parse_config(text)
            except ValueError as exc:
                return self._bad_line(end + 2, size, f"bad configuration line: {exc}")
            self._accept(size)
            self.stats.configs += 1
            self.config = config
            out.append(config)
        elif text.startswith("#C2-M:"):
            try:
                model = parse_model(text)
            except ValueError as exc:
                return self._bad_line(end + 2, size, f"bad model line: {exc}")
            self._accept(size)
            self.stats.models += 1
            self.model = model
            out.append(model)
        elif raw.startswith(RESET_PREFIXES):
            self._accept(size)
            self.stats.resets += 1
            self.config = None
            out.append(RfeReset(text))
        else:
            self._accept(size)
            if text:
                self.stats.lines += 1
                out.append(RfeLine(text))
        return end + 2

    def _bad_line(self, end: int, size: int, reason: str) -> int:
        """A well-framed line whose content is invalid: dropped and counted, alignment kept."""
        self.stats.bad_frames += 1
        self.stats.last_error = reason
        self.stats.dropped_bytes += size
        log.debug("RF Explorer: %s", reason)
        return end
