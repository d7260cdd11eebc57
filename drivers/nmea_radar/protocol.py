"""NMEA 0183 radar target sentences (TTM, TLL): framing, checksum and decoding.

Pure and incremental: no ``serial`` import, no I/O. :meth:`NmeaParser.feed` takes the
caller's receive buffer and returns how many bytes to delete from its front plus the
targets those bytes completed, as one structured array (:data:`TARGET_DTYPE`).

Framing (NMEA 0183 §5.3): ``$<talker(2)><type(3)>,<fields>*<hh><CR><LF>``, at most 82
characters, ``hh`` = XOR of every byte between ``$`` and ``*`` in hexadecimal. This
parser is lenient on length — real radars have been seen sending 91-100 characters, so
up to ``max_sentence_chars`` (100 by default, CR LF included) is accepted — and on the
line end (LF alone is accepted), but strict on the checksum: a sentence without one, or
with a wrong one, is dropped and counted. A ``$`` cannot occur inside a sentence (it is
reserved), so a line holding several ``$`` keeps only the last one: the bytes before it
(line noise, or a sentence cut short by a glitch) are dropped and counted. Bytes are
checked as printable ASCII (0x20-0x7E) between ``$`` and the checksum.

Vectorised: line ends, ``$`` positions, printable check and every checksum of a buffer
are computed at once with NumPy (XOR of a range = two lookups in a prefix-XOR array);
only sentences that pass are split into fields in Python.

TTM, tracked target message (NMEA 0183 4.x field order; the 13-field NMEA 2.x form
stops after field 13, older radars after field 10 — all accepted):

    1 target number (0-999)      2 target distance           3 bearing from own ship
    4 bearing reference T/R      5 target speed              6 target course
    7 course reference T/R       8 distance of CPA           9 time to CPA, minutes
                                                                (negative: range opening)
    10 speed/distance units K/N/S (km & km/h, nautical miles & knots, statute miles & mph)
    11 target name               12 status L lost / Q acquiring / T tracking
    13 reference target R        14 UTC hhmmss.ss            15 acquisition A/M/R

TLL, target latitude and longitude: 1 target number, 2-3 latitude ddmm.mm N/S,
4-5 longitude dddmm.mm E/W, 6 target name, 7 UTC hhmmss.ss, 8 status L/Q/T,
9 reference target R.

Decoded values are in SI units (metres, m/s, seconds) with NaN for empty fields; a
sentence whose mandatory parts are missing or unreadable (target number; a bearing
without its T/R reference; a distance or speed without K/N/S units; latitude/longitude
out of range) is dropped and counted as malformed. A course without its reference is
kept as unknown (NaN). The talker is not checked (RA, IN, TI, ... all accepted).

Sources: NMEA 0183 v4.10 sentence definitions of TTM and TLL as summarised by gpsd's
NMEA 0183 reference ("AIVDM/NMEA" www.catb.org/gpsd/NMEA.html) and pynmea2's
``types/talker.py`` (same field order); units per the standard's K/N/S convention.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

MAX_SENTENCE_CHARS = 100
"""Default length limit, ``$`` to LF inclusive (the standard's 82, plus real radars' excess)."""

TARGET_DTYPE = np.dtype(
    [
        ("sentence", "U3"),  # "TTM" or "TLL"
        ("talker", "U2"),  # e.g. "RA"
        ("target_number", "<i4"),
        ("distance_m", "<f8"),  # TTM target distance; NaN in TLL or when empty
        ("bearing_deg", "<f8"),  # TTM bearing from own position, [0, 360)
        ("bearing_true", "?"),  # True: from true north (T); False: relative to own heading (R)
        ("speed_mps", "<f8"),  # TTM target speed
        ("course_deg", "<f8"),  # TTM target course; NaN when empty or without a reference
        ("course_true", "?"),  # True: course from true north (T); False: relative (R)
        ("cpa_m", "<f8"),  # distance of closest point of approach
        ("tcpa_s", "<f8"),  # time to CPA, seconds; negative when the range is opening
        ("units", "U1"),  # K, N or S as sent ("" when absent)
        ("name", "U32"),
        ("status", "U1"),  # L, Q, T or ""
        ("reference", "?"),  # reference target flag (R)
        ("utc_s", "<f8"),  # UTC time of data, seconds since midnight; NaN when absent
        ("acquisition", "U1"),  # A, M, R or ""
        ("latitude_deg", "<f8"),  # TLL, signed (south negative); NaN in TTM
        ("longitude_deg", "<f8"),  # TLL, signed (west negative); NaN in TTM
    ]
)
"""One row per decoded target sentence."""

DISTANCE_M = {"K": 1000.0, "N": 1852.0, "S": 1609.344}
"""Metres per distance unit: kilometre, international nautical mile, statute mile."""

_LF, _CR, _DOLLAR, _STAR = 0x0A, 0x0D, 0x24, 0x2A
_HEX = np.full(256, -1, dtype=np.int16)
for _i, _c in enumerate(b"0123456789ABCDEF"):
    _HEX[_c] = _i
for _i, _c in enumerate(b"abcdef"):
    _HEX[_c] = 10 + _i
_ADDRESS = re.compile(rb"\$[A-Z0-9]{5},")
"""A sentence start (as opposed to a stray "$" in line noise)."""
_NOT_PRINTABLE = np.ones(256, dtype=bool)
_NOT_PRINTABLE[0x20:0x7F] = False


@dataclass
class NmeaStats:
    """Running counts of one parser."""

    sentences: int = 0  # checksummed sentences accepted (any type)
    targets: int = 0  # TTM/TLL sentences decoded into targets
    ignored: int = 0  # valid sentences of other types (skipped)
    bad_checksum: int = 0  # checksum present but wrong or not hexadecimal
    no_checksum: int = 0  # no "*hh" before the line end
    too_long: int = 0  # longer than max_sentence_chars
    not_printable: int = 0  # bytes outside 0x20-0x7E between "$" and "*"
    malformed: int = 0  # checksum fine but TTM/TLL fields unreadable
    dropped_bytes: int = 0  # bytes consumed without being part of an accepted sentence
    resyncs: int = 0  # times sentence alignment was lost (garbage or a rejected line)
    last_error: str = ""

    @property
    def bad_sentences(self) -> int:
        """Sentences rejected for any reason."""
        return self.bad_checksum + self.no_checksum + self.too_long + self.not_printable + self.malformed


class NmeaParser:
    """Incremental, bounded parser of an NMEA 0183 byte stream (TTM and TLL decoded).

    After any :meth:`feed` the caller holds at most ``max_sentence_chars - 1`` unconsumed
    bytes: the start of a sentence still waiting for its line end.
    """

    def __init__(self, max_sentence_chars: int = MAX_SENTENCE_CHARS) -> None:
        if max_sentence_chars < 12:
            raise ValueError("max_sentence_chars must be at least 12")
        self.max_sentence_chars = max_sentence_chars
        self.stats = NmeaStats()
        self._hunting = False

    def feed(self, buf: bytes | bytearray | memoryview) -> tuple[int, np.ndarray]:
        """Decode the complete lines in ``buf``; return (bytes to delete from its front,
        targets as a TARGET_DTYPE array). Never raises on any content."""
        data = bytes(buf)
        n = len(data)
        arr = np.frombuffer(data, dtype=np.uint8)
        bodies: list[str] = []
        lf = np.flatnonzero(arr == _LF)
        consumed = 0
        if len(lf):
            consumed = int(lf[-1]) + 1
            self._lines(data, arr, lf, bodies)
        consumed += self._tail(data, consumed, n)
        return consumed, self._decode(bodies)

    # ----------------------------------------------------------------- framing

    def _lines(self, data: bytes, arr: np.ndarray, lf: np.ndarray, bodies: list[str]) -> None:
        """Check every complete line at once; append the good sentences' bodies (between
        "$" and "*") to ``bodies``."""
        stats = self.stats
        line_start = np.concatenate(([0], lf[:-1] + 1))
        content_end = lf - ((lf > line_start) & (arr[np.maximum(lf - 1, 0)] == _CR))
        dollars = np.concatenate(([-1], np.flatnonzero(arr == _DOLLAR)))  # -1: "none before"
        start = dollars[np.searchsorted(dollars, content_end) - 1]  # last "$" before each line end
        has_dollar = start >= line_start
        start = np.where(has_dollar, start, line_start)
        star = content_end - 3
        has_star = has_dollar & (content_end - start >= 4) & (arr[np.maximum(star, 0)] == _STAR)
        length_ok = (lf + 1 - start) <= self.max_sentence_chars

        # Printable check and XOR between "$" and "*" from prefix arrays.
        bad_prefix = np.concatenate(([0], np.cumsum(_NOT_PRINTABLE[arr], dtype=np.int64)))
        xor_prefix = np.concatenate(([0], np.bitwise_xor.accumulate(arr))).astype(np.uint8)
        body_from = np.minimum(start + 1, star.clip(min=0))
        body_to = np.maximum(star, body_from)
        printable = (bad_prefix[body_to] - bad_prefix[body_from]) == 0
        computed = xor_prefix[body_to] ^ xor_prefix[body_from]
        hi = _HEX[arr[np.clip(star + 1, 0, len(arr) - 1)]]
        lo = _HEX[arr[np.clip(star + 2, 0, len(arr) - 1)]]
        given_ok = (hi >= 0) & (lo >= 0)
        checksum_ok = given_ok & ((hi * 16 + lo) == computed)

        blank = content_end == line_start
        candidate = has_dollar & ~blank
        reasons = [
            (candidate & ~length_ok, "too_long"),
            (candidate & length_ok & ~has_star, "no_checksum"),
            (candidate & length_ok & has_star & ~printable, "not_printable"),
            (candidate & length_ok & has_star & printable & ~checksum_ok, "bad_checksum"),
        ]
        good = candidate & length_ok & has_star & printable & checksum_ok
        for mask, name in reasons:
            count = int(np.count_nonzero(mask))
            if count:
                setattr(stats, name, getattr(stats, name) + count)
                stats.last_error = name.replace("_", " ")

        garbage = np.where(good, start - line_start, lf + 1 - line_start)  # bytes of the line not accepted
        stats.dropped_bytes += int(garbage.sum())
        lost = (garbage > 0) & ~blank  # an empty line is dropped but breaks no alignment
        previous = np.concatenate(([self._hunting], lost[:-1]))
        stats.resyncs += int(np.count_nonzero(lost & ~previous))
        self._hunting = bool(lost[-1])

        stats.sentences += int(np.count_nonzero(good))
        bodies += [data[s + 1 : e].decode("ascii") for s, e in zip(start[good].tolist(), star[good].tolist())]

    def _tail(self, data: bytes, pos: int, n: int) -> int:
        """Bytes after the last line end: keep what may still become a sentence (at most
        ``max_sentence_chars - 1`` bytes from a ``$``), drop the rest. Returns how many
        bytes are dropped (consumed)."""
        if n - pos < self.max_sentence_chars:
            return 0
        last = data.rfind(b"$", pos)
        keep_from = last if last >= 0 and n - last < self.max_sentence_chars else n
        drop = keep_from - pos
        if drop > 0:
            stats = self.stats
            stats.dropped_bytes += drop
            if _ADDRESS.search(data, pos, keep_from):
                stats.too_long += 1  # a sentence start that ran past the limit without a line end
                stats.last_error = "too long"
            if not self._hunting:
                stats.resyncs += 1
                self._hunting = True
        return drop

    # ----------------------------------------------------------------- fields

    def _decode(self, bodies: list[str]) -> np.ndarray:
        """Checked sentence bodies -> TARGET_DTYPE rows, in stream order; each field is
        converted for all sentences of a type at once (see :func:`_ttm_rows`)."""
        split = [body.split(",") for body in bodies]
        ttm = [i for i, f in enumerate(split) if len(f[0]) == 5 and f[0][2:] == "TTM"]
        tll = [i for i, f in enumerate(split) if len(f[0]) == 5 and f[0][2:] == "TLL"]
        self.stats.ignored += len(split) - len(ttm) - len(tll)
        out = np.zeros(len(ttm) + len(tll), dtype=TARGET_DTYPE)
        if not len(out):
            return out
        order = []
        parts = []
        for kind, index, width, builder in (("TTM", ttm, 16, _ttm_rows), ("TLL", tll, 10, _tll_rows)):
            if not index:
                continue
            table = np.array([split[i] if len(split[i]) == width else (split[i] + [""] * width)[:width]
                              for i in index], dtype=str)
            count = np.array([len(split[i]) for i in index])
            with np.errstate(invalid="ignore"):  # inf/nan text is flagged by the builders
                rows, bad, reason = builder(table, count)
            if bad.any():
                self.stats.malformed += int(bad.sum())
                self.stats.last_error = f"malformed {kind}: {reason}"
                log.debug("NMEA: %s (%d sentences)", self.stats.last_error, int(bad.sum()))
            parts.append(rows[~bad])
            order.append(np.asarray(index)[~bad])
        rows = np.concatenate(parts)
        rows = rows[np.argsort(np.concatenate(order), kind="stable")]
        self.stats.targets += len(rows)
        return rows


def _floats(column: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n,) text -> (values, unreadable): empty text is NaN; text that is not a finite
    decimal number is unreadable. One C-level cast for the whole column; only a column
    holding garbage is converted element by element to find the bad rows."""
    empty = column == ""
    try:
        values = np.where(empty, "nan", column).astype(np.float64)
    except ValueError:
        values = np.full(len(column), np.nan)
        unreadable = np.zeros(len(column), dtype=bool)
        for i, text in enumerate(column.tolist()):
            if text:
                try:
                    values[i] = float(text)
                except ValueError:
                    unreadable[i] = True
        return values, unreadable | (~empty & ~unreadable & ~np.isfinite(values))
    return values, ~empty & ~np.isfinite(values)


def _target_numbers(column: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n,) text -> (numbers, unreadable): 1 to 4 decimal digits required."""
    ok = np.char.isdigit(column) & (np.char.str_len(column) <= 4)
    return np.where(ok, column, "0").astype(np.int32), ~ok


def _utc(column: np.ndarray) -> np.ndarray:
    """(n,) hhmmss[.ss] -> seconds since midnight; NaN when empty or not a valid time."""
    values, bad = _floats(column)
    formed = (np.char.str_len(column) >= 6) & np.char.isdigit(np.char.ljust(column, 6).astype("U6"))
    h = np.floor(values / 10000.0)
    m = np.floor(values / 100.0) % 100.0
    sec = values - h * 10000.0 - m * 100.0
    valid = formed & ~bad & (h <= 23) & (m <= 59) & (sec < 61.0)
    return np.where(valid, h * 3600.0 + m * 60.0 + sec, np.nan)


def _ttm_rows(f: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """(n, 16) TTM field table (column 0 the address) -> rows, malformed mask, a reason.

    Refused: fewer than 10 fields, no target number, a number that is not one, a bearing
    without T/R, a distance/speed/CPA without K/N/S units."""
    n = len(f)
    rows = np.zeros(n, dtype=TARGET_DTYPE)
    number, bad_number = _target_numbers(f[:, 1])
    distance, b1 = _floats(f[:, 2])
    bearing, b2 = _floats(f[:, 3])
    speed, b3 = _floats(f[:, 5])
    course, b4 = _floats(f[:, 6])
    cpa, b5 = _floats(f[:, 8])
    tcpa_min, b6 = _floats(f[:, 9])
    units = f[:, 10]
    metres = np.select([units == "K", units == "N", units == "S"], list(DISTANCE_M.values()), np.nan)
    bearing_ref, course_ref = f[:, 4], f[:, 7]
    checks = [
        (count < 11, "fewer than 10 fields"),
        (bad_number, "target number is not 1-4 digits"),
        (b1 | b2 | b3 | b4 | b5 | b6, "a number is unreadable or not finite"),
        (~np.isin(bearing_ref, ("T", "R")) & ~np.isnan(bearing), "bearing without T/R reference"),
        (np.isnan(metres) & ~(np.isnan(distance) & np.isnan(speed) & np.isnan(cpa)), "units are not K, N or S"),
    ]
    bad = np.zeros(n, dtype=bool)
    reason = ""
    for mask, why in checks:
        if mask.any() and not reason:
            reason = why
        bad |= mask
    course_known = np.isin(course_ref, ("T", "R"))
    rows["sentence"] = "TTM"
    rows["talker"] = np.char.ljust(f[:, 0], 2).astype("U2")
    rows["target_number"] = number
    rows["distance_m"] = distance * metres
    rows["bearing_deg"] = bearing % 360.0
    rows["bearing_true"] = bearing_ref == "T"
    rows["speed_mps"] = speed * metres / 3600.0
    rows["course_deg"] = np.where(course_known, course % 360.0, np.nan)
    rows["course_true"] = course_ref == "T"
    rows["cpa_m"] = cpa * metres
    rows["tcpa_s"] = tcpa_min * 60.0
    rows["units"] = np.where(np.isnan(metres), "", units)
    rows["name"] = f[:, 11]
    rows["status"] = f[:, 12]
    rows["reference"] = f[:, 13] == "R"
    rows["utc_s"] = _utc(f[:, 14])
    rows["acquisition"] = f[:, 15]
    rows["latitude_deg"] = np.nan
    rows["longitude_deg"] = np.nan
    return rows, bad, reason


def _latlon(value: np.ndarray, hemisphere: np.ndarray, degree_digits: int, limit: float,
            signs: str) -> tuple[np.ndarray, np.ndarray]:
    """(n,) ddmm.mm / dddmm.mm and N/S or E/W -> (signed degrees, malformed)."""
    v, unreadable = _floats(value)
    dot = np.char.find(value, ".")
    width = np.char.str_len(value)
    formed = np.where(dot >= 0, dot == degree_digits + 2, width == degree_digits + 2) & \
        np.char.isdigit(np.char.replace(value, ".", ""))
    degrees = np.floor(v / 100.0)
    minutes = v - degrees * 100.0
    result = degrees + minutes / 60.0
    bad = unreadable | ~formed | np.isnan(v) | (minutes >= 60.0) | (result > limit) | \
        ~np.isin(hemisphere, tuple(signs))
    return np.where(hemisphere == signs[1], -result, result), bad


def _tll_rows(f: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """(n, 10) TLL field table -> rows, malformed mask, a reason."""
    n = len(f)
    rows = np.zeros(n, dtype=TARGET_DTYPE)
    number, bad_number = _target_numbers(f[:, 1])
    lat, bad_lat = _latlon(f[:, 2], f[:, 3], 2, 90.0, "NS")
    lon, bad_lon = _latlon(f[:, 4], f[:, 5], 3, 180.0, "EW")
    checks = [(count < 6, "fewer than 5 fields"), (bad_number, "target number is not 1-4 digits"),
              (bad_lat | bad_lon, "latitude/longitude not ddmm.mm N/S, dddmm.mm E/W within range")]
    bad = np.zeros(n, dtype=bool)
    reason = ""
    for mask, why in checks:
        if mask.any() and not reason:
            reason = why
        bad |= mask
    for name in ("distance_m", "bearing_deg", "speed_mps", "course_deg", "cpa_m", "tcpa_s"):
        rows[name] = np.nan
    rows["sentence"] = "TLL"
    rows["talker"] = np.char.ljust(f[:, 0], 2).astype("U2")
    rows["target_number"] = number
    rows["name"] = f[:, 6]
    rows["utc_s"] = _utc(f[:, 7])
    rows["status"] = f[:, 8]
    rows["reference"] = f[:, 9] == "R"
    rows["latitude_deg"] = lat
    rows["longitude_deg"] = lon
    return rows, bad, reason


def nmea_checksum(body: str) -> str:
    """Two uppercase hex digits: XOR of the characters of ``body`` (between $ and *)."""
    value = 0
    for ch in body.encode("ascii"):
        value ^= ch
    return f"{value:02X}"


def sentence(body: str) -> bytes:
    """``$body*hh\\r\\n`` as sent on the wire."""
    return f"${body}*{nmea_checksum(body)}\r\n".encode("ascii")
