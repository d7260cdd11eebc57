"""RF Explorer spectrum analyser: the serial byte stream, its parser, and the host commands.

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

- ``CJ`` (set sweep points): the notes say ``chr((n-16)/16)`` (as third-party libraries
  ``zleytus/rfe`` and a Go client also do); the vendor's ``SendCommand_SweepDataPoints``
  sends ``chr(n/16)``. The vendor wins: :func:`cmd_sweep_points` sends ``n // 16`` and,
  like the ``$s`` count byte, 0 for 4096 (the vendor's ``chr(256)`` cannot be sent; 0 for
  4096 is this module's reading of the ``$s`` convention, not a vendor statement).
- ``$s`` count: ``zleytus/rfe`` reads ``(c + 1) * 16``; the vendor (both libraries) reads
  ``16 c`` with 0 meaning 256 * 16 = 4096, as the notes do. The vendor wins.
- Step digits: the notes say newer firmware may send an 8-digit step, shifting later
  fields; the vendor parsers read 7 fixed digits at [14:21]. Fixed vendor positions are
  used; only when character 21 is a digit where the vendor expects a comma is the step
  read as 8 digits and every later position shifted by one (the vendor would reject such
  a line, so accepting it loses nothing).
- Amplitude top/bottom in ``C2-F``: the vendor's ``UpdateDeviceConfig`` pads the
  3-character form, which turns -10 into ``0-10``; the notes, the device's own ``#C2-F:``
  reply and other clients write ``-010``. :func:`cmd_analyzer_config` writes ``-010``.
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

log = logging.getLogger(__name__)

EEOT = b"\xff\xfe\xff\xfe\x00"
"""Early End Of Transmission: the device aborted the sweep it was sending."""
CRLF = b"\r\n"
_MIN_RUN = 4
"""Sweeps after a valid one for which decoding them as one block pays (measured: about even at 3)."""
RESET_PREFIXES = (b"(C) Ariel Rocholl ", b"RF Explorer ")
"""Lines that mean the device restarted (RFE_Common.CONST_RESETSTRING; RFECommunicator.cs)."""
MAX_SWEEP_POINTS = 65535
"""RFE_Common.CONST_MAX_SPECTRUM_STEPS."""
MAX_FRAME_BYTES = 4 + MAX_SWEEP_POINTS + 2
"""Largest length-framed message the device can send: ``$z`` / ``$Q`` of 65535 bytes."""
MAX_LINE_BYTES = 512
"""Longest text line waited for (the longest real line, ``#C2-f:``, has 82 characters)."""

CALCULATOR_NAMES = {0: "normal", 1: "max", 2: "avg", 3: "overwrite", 4: "max-hold", 5: "max-historical"}
"""RFE_Common.eCalculator."""
MODEL_NAMES = {
    0: "433M", 1: "868M", 2: "915M", 3: "WSUB1G", 4: "2.4G", 5: "WSUB3G", 6: "6G",
    10: "WSUB1G+", 11: "ProAudio", 12: "2.4G+", 13: "4G+", 14: "6G+",
    60: "RFE6GEN", 61: "RFE6GEN-expansion", 255: "none",
}
"""RFE_Common.eModel / RFECommunicator.cs eModel."""
MODE_SPECTRUM_ANALYZER = 0

_PRINTABLE = bytes(range(0x20, 0x7F)) + b"\t"
_DOLLAR, _CR, _LF, _FF = 0x24, 0x0D, 0x0A, 0xFF
_S, _s, _z, _q, _Q, _C, _D = (ord(c) for c in "SszqQCD")
_NEED_MORE = -1


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class RfeConfig:
    """A ``#C2-F:`` / ``#C2-f:`` line: the analyser's current configuration."""

    start_khz: int
    step_hz: int
    amp_top_dbm: int
    amp_bottom_dbm: int
    points: int  # amplitude bytes per sweep
    expansion_active: bool
    mode: int  # 0 spectrum analyser
    min_khz: int  # limits of the active RF module
    max_khz: int
    max_span_khz: int
    rbw_khz: int | None  # None: firmware older than 1.09
    offset_db: int  # added to every amplitude (0 when not sent)
    calculator: int | None  # None: firmware older than 1.12
    line: str

    @property
    def start_mhz(self) -> float:
        return self.start_khz / 1e3

    @property
    def step_mhz(self) -> float:
        return self.step_hz / 1e6

    @property
    def end_mhz(self) -> float:
        """Frequency of the last point, MHz."""
        return self.start_mhz + self.step_mhz * max(self.points - 1, 0)

    @property
    def calculator_name(self) -> str:
        if self.calculator is None:
            return "normal"
        return CALCULATOR_NAMES.get(self.calculator, "unknown")


@dataclass(frozen=True)
class RfeModel:
    """A ``#C2-M:`` line: model codes and firmware."""

    main_model: int
    expansion_model: int  # 255: none
    firmware: str
    line: str

    @property
    def main_name(self) -> str:
        return MODEL_NAMES.get(self.main_model, f"model-{self.main_model}")

    @property
    def expansion_name(self) -> str:
        return MODEL_NAMES.get(self.expansion_model, f"model-{self.expansion_model}")


@dataclass(frozen=True)
class RfeReset:
    """The device restarted (its banner); its configuration is unknown until it sends one."""

    line: str


@dataclass(frozen=True)
class RfeLine:
    """Any other printable line (``#Sn...``, ``#ACK``, ``DSP:...``, human-readable text)."""

    text: str


@dataclass(eq=False, slots=True)
class RfeSweep:
    """One accepted sweep, with the configuration it was decoded against. Read-only by
    convention: not frozen, since a frozen dataclass costs three times as much to make
    and a device streams tens of sweeps a second per 4 KiB read."""

    config: RfeConfig
    variant: str  # "$S", "$s" or "$z"
    power_dbm: np.ndarray  # shape (config.points,), float32: -b/2 + config.offset_db


RfeMessage = RfeConfig | RfeModel | RfeReset | RfeLine | RfeSweep


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


# --------------------------------------------------------------------------- line parsing


def _digits(text: str, a: int, b: int, what: str) -> int:
    field = text[a:b]
    if len(field) != b - a or not field.isdigit() or not field.isascii():
        raise ValueError(f"{what}: expected {b - a} digits at [{a}:{b}], got {field!r}")
    return int(field)


def _signed(text: str, a: int, b: int, what: str) -> int:
    field = text[a:b]
    body = field[1:] if field[:1] in ("-", "+") else field
    if len(field) != b - a or not body.isdigit() or not body.isascii():
        raise ValueError(f"{what}: expected a signed {b - a}-character number at [{a}:{b}], got {field!r}")
    return int(field)


def _comma(text: str, i: int) -> None:
    if text[i:i + 1] != ",":
        raise ValueError(f"expected ',' at {i}, got {text[i:i + 1]!r}")


def parse_config(text: str) -> RfeConfig:
    """Decode a ``#C2-F:``/``#C2-f:`` line at the vendor's fixed positions (see module
    docstring for the 8-digit step); ValueError says what is wrong."""
    if not (text.startswith("#C2-F:") or text.startswith("#C2-f:")):
        raise ValueError("not a #C2-F: / #C2-f: line")
    if len(text) < 60:
        raise ValueError(f"config line of {len(text)} characters, the vendor requires at least 60")
    start = _digits(text, 6, 13, "start kHz")
    _comma(text, 13)
    step_end = 22 if text[21:22].isdigit() else 21
    step = _digits(text, 14, step_end, "step Hz")
    sh = step_end - 21
    _comma(text, 21 + sh)
    top = _signed(text, 22 + sh, 26 + sh, "amplitude top")
    _comma(text, 26 + sh)
    bottom = _signed(text, 27 + sh, 31 + sh, "amplitude bottom")
    _comma(text, 31 + sh)
    p = 32 + sh
    width = 5 if text[4] == "f" else 4
    points = _digits(text, p, p + width, "data points")
    p += width
    _comma(text, p)
    if text[p + 1:p + 2] not in ("0", "1"):
        raise ValueError(f"expansion module flag at {p + 1} is {text[p + 1:p + 2]!r}, expected 0 or 1")
    expansion = text[p + 1] == "1"
    _comma(text, p + 2)
    mode = _digits(text, p + 3, p + 6, "mode")
    _comma(text, p + 6)
    min_khz = _digits(text, p + 7, p + 14, "min kHz")
    _comma(text, p + 14)
    max_khz = _digits(text, p + 15, p + 22, "max kHz")
    _comma(text, p + 22)
    max_span = _digits(text, p + 23, p + 30, "max span kHz")
    rbw = calc = None
    offset = 0
    if len(text) > p + 30:
        _comma(text, p + 30)
        rbw = _digits(text, p + 31, p + 36, "RBW kHz")
    if len(text) > p + 36:
        _comma(text, p + 36)
        offset = _signed(text, p + 37, p + 41, "amplitude offset")
    if len(text) > p + 41:
        _comma(text, p + 41)
        calc = _digits(text, p + 42, p + 45, "calculator mode")
    return RfeConfig(start, step, top, bottom, points, expansion, mode, min_khz, max_khz, max_span, rbw,
                     offset, calc, text)


def parse_model(text: str) -> RfeModel:
    """Decode ``#C2-M:mmm,eee,firmware`` (main model [6:9], expansion [10:13], firmware
    from 14; the vendor reads 5 characters, real units send e.g. ``01.12B20``)."""
    if not text.startswith("#C2-M:"):
        raise ValueError("not a #C2-M: line")
    main = _digits(text, 6, 9, "main model")
    _comma(text, 9)
    expansion = _digits(text, 10, 13, "expansion model")
    _comma(text, 13)
    firmware = text[14:].strip()
    if not firmware:
        raise ValueError("no firmware version after the model codes")
    return RfeModel(main, expansion, firmware, text)


# --------------------------------------------------------------------------- host commands


def command(payload: bytes) -> bytes:
    """Frame a command: ``#``, one size byte counting the whole command, the payload."""
    size = len(payload) + 2
    if size > 64:
        raise ValueError(f"command of {size} bytes; the device takes at most 64")
    return b"#" + bytes([size]) + payload


def cmd_request_config() -> bytes:
    """``#\\x04C0``: send ``Current_Config`` (and start sending sweeps)."""
    return command(b"C0")


def cmd_hold() -> bytes:
    """``#\\x04CH``: stop the sweep dump."""
    return command(b"CH")


def cmd_analyzer_config(start_khz: int, end_khz: int, amp_top_dbm: int, amp_bottom_dbm: int) -> bytes:
    """``#\\x20C2-F:Sssssss,Eeeeeee,tttt,bbbb``: start and END frequency in kHz (7 digits),
    amplitude top and bottom in dBm (4 characters, sign first: ``-010``)."""
    for name, value, lo, hi in (("start_khz", start_khz, 0, 9_999_999), ("end_khz", end_khz, 0, 9_999_999),
                                ("amp_top_dbm", amp_top_dbm, -999, 9999),
                                ("amp_bottom_dbm", amp_bottom_dbm, -999, 9999)):
        if not lo <= value <= hi:
            raise ValueError(f"{name} {value} does not fit its field")
    text = f"C2-F:{start_khz:07d},{end_khz:07d},{amp_top_dbm:04d},{amp_bottom_dbm:04d}"
    return command(text.encode("ascii"))


def cmd_sweep_points(points: int) -> bytes:
    """Sweep points: ``#\\x05CJ`` + one byte ``points // 16`` (vendor
    ``SendCommand_SweepDataPoints``; 4096 -> 0) for multiples of 16 up to 4096, else
    ``#\\x06Cj`` + big-endian u16 (the large-sweep command, up to 65535)."""
    if not 16 <= points <= MAX_SWEEP_POINTS:
        raise ValueError(f"sweep points {points} outside 16..{MAX_SWEEP_POINTS}")
    if points <= 4096 and points % 16 == 0:
        return command(b"CJ" + bytes([(points // 16) & 0xFF]))
    return command(b"Cj" + points.to_bytes(2, "big"))


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
        data = buf if isinstance(buf, (bytes, bytearray)) else bytes(buf)
        n = len(data)
        pos = 0
        out: list[RfeMessage] = []
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

    def _frame(self, data: bytes | bytearray, pos: int, n: int, out: list[RfeMessage], scanned: int) -> int:
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

    def _sweep(self, data: bytes | bytearray, pos: int, n: int, out: list[RfeMessage], kind: int,
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
        hi = min(n, reach)
        eeot = data.find(EEOT, max(lo, pos + scanned - (len(EEOT) - 1)), hi)
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
        # The sweeps that follow with the same header, each whole, ending in CR LF, and no
        # early-end marker anywhere near them, are this one's kind: decoded with it in one
        # block (a device streams sweep after sweep). Worth it for runs of short sweeps
        # (the checks cost a few array operations per block).
        more = (n - pos) // total - 1
        if more >= _MIN_RUN and data.find(EEOT, pos + total, min(n, pos + (more + 1) * total + len(EEOT) - 1)) < 0:
            block = np.frombuffer(data, dtype=np.uint8, count=(more + 1) * total, offset=pos).reshape(more + 1, total)
            same = (block[1:, :head] == block[0, :head]).all(axis=1) & (block[1:, total - 2] == _CR) \
                & (block[1:, total - 1] == _LF)
            more = int(np.argmin(same)) if not same.all() else len(same)
        else:
            more = 0
        if more:
            power = np.frombuffer(data, dtype=np.uint8, count=(more + 1) * total, offset=pos).reshape(
                more + 1, total)[:, head:head + points].astype(np.float32)
        else:
            power = np.frombuffer(data, dtype=np.uint8, count=points, offset=lo).astype(np.float32)
        power *= np.float32(-0.5)
        if config.offset_db:
            power += np.float32(config.offset_db)
        self.stats.sweeps += more + 1
        self.stats.frames += more
        self.stats.frame_bytes += more * total
        variant = "$" + chr(kind)
        if more:
            out.extend([RfeSweep(config, variant, row) for row in power])
        else:
            out.append(RfeSweep(config, variant, power))
        return pos + (more + 1) * total

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
