"""RF Explorer spectrum analyser: the messages the device sends, and the decoding of its
configuration and model lines (``#C2-F:`` / ``#C2-f:``, ``#C2-M:``) at the vendor's fixed
character positions. Sources and the byte stream: :mod:`towerd.drivers.rfexplorer.protocol`.

Disagreement with the project notes, and what is done here:

- Step digits: the notes say newer firmware may send an 8-digit step, shifting later
  fields; the vendor parsers read 7 fixed digits at [14:21]. Fixed vendor positions are
  used; only when character 21 is a digit where the vendor expects a comma is the step
  read as 8 digits and every later position shifted by one (the vendor would reject such
  a line, so accepting it loses nothing).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_SWEEP_POINTS = 65535
"""RFE_Common.CONST_MAX_SPECTRUM_STEPS."""

CALCULATOR_NAMES = {0: "normal", 1: "max", 2: "avg", 3: "overwrite", 4: "max-hold", 5: "max-historical"}
"""RFE_Common.eCalculator."""
MODEL_NAMES = {
    0: "433M", 1: "868M", 2: "915M", 3: "WSUB1G", 4: "2.4G", 5: "WSUB3G", 6: "6G",
    10: "WSUB1G+", 11: "ProAudio", 12: "2.4G+", 13: "4G+", 14: "6G+",
    60: "RFE6GEN", 61: "RFE6GEN-expansion", 255: "none",
}
"""RFE_Common.eModel / RFECommunicator.cs eModel."""
MODE_SPECTRUM_ANALYZER = 0


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


@dataclass(eq=False, slots=True)
class RfeSweeps:
    """Consecutive sweeps of one configuration and variant, decoded together: what
    :meth:`~towerd.drivers.rfexplorer.protocol.RfeParser.feed_runs` gives in place of as
    many :class:`RfeSweep` (a driver makes one reading per row, without a message per sweep)."""

    config: RfeConfig
    variant: str  # "$S", "$s" or "$z"
    power_dbm: np.ndarray  # shape (sweeps, config.points), float32: -b/2 + config.offset_db


RfeMessage = RfeConfig | RfeModel | RfeReset | RfeLine | RfeSweep

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
