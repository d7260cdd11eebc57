"""NMEA 0183 parser: golden captures, pynmea2 side by side, framing faults, bounds and fuzz."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pynmea2
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import nmea_reference
from towerd.drivers.nmea_radar.protocol import TARGET_DTYPE, NmeaParser, nmea_checksum, sentence

CAPTURES = Path(__file__).parent / "captures" / "nmea_radar"
PUBLIC = (CAPTURES / "public_examples.nmea").read_bytes().decode("ascii").split("\r\n")[:-1]
NUMERIC = ("distance_m", "bearing_deg", "speed_mps", "course_deg", "cpa_m", "tcpa_s", "utc_s", "latitude_deg",
           "longitude_deg")


def xor_checksum(body: bytes) -> str:
    """Independent of the module under test."""
    value = 0
    for b in body:
        value ^= b
    return f"{value:02X}"


def feed_all(parser: NmeaParser, data: bytes, chunk: int | None = None) -> tuple[int, np.ndarray]:
    """Feed ``data`` (whole, or ``chunk`` bytes at a time, as reads deliver it) through a
    caller-owned buffer; return the bytes left unconsumed and all targets."""
    buf = bytearray()
    rows = []
    step = chunk or len(data) or 1
    for i in range(0, len(data), step):
        buf += data[i : i + step]
        consumed, out = parser.feed(buf)
        del buf[:consumed]
        rows.append(out)
    return len(buf), np.concatenate(rows) if rows else np.zeros(0, TARGET_DTYPE)


def assert_rows(rows: np.ndarray, expected: list[dict]) -> None:
    assert len(rows) == len(expected)
    for row, want in zip(rows, expected):
        for key, value in want.items():
            got = row[key]
            if key in NUMERIC:
                if value is None:
                    assert math.isnan(got), (key, got)
                else:
                    assert_allclose(got, value, rtol=1e-12, atol=1e-9, err_msg=key)
            else:
                assert got == value, (key, got, value)


# ----------------------------------------------------------------------------- golden captures


@pytest.mark.parametrize("name", ["public_examples", "stream_faults"])
@pytest.mark.parametrize("chunk", [None, 1, 7, 64])
def test_golden_captures_decode_as_documented_however_split(name, chunk):
    data = (CAPTURES / f"{name}.nmea").read_bytes()
    expected = json.loads((CAPTURES / f"{name}.json").read_text())
    parser = NmeaParser()
    left, rows = feed_all(parser, data, chunk)
    assert len(data) - left == expected["consumed"]
    assert rows.dtype == TARGET_DTYPE
    assert_rows(rows, expected["targets"])
    for key, value in expected["stats"].items():
        assert getattr(parser.stats, key) == value, key


RECORDINGS = sorted(p for p in CAPTURES.glob("*.nmea") if "rows" in json.loads(p.with_suffix(".json").read_text()))


@pytest.mark.parametrize("path", RECORDINGS, ids=[p.name for p in RECORDINGS])
def test_real_recording_goldens_are_the_independent_decoders_output(path):
    """The golden of a real recording is what tests/nmea_reference.py (pynmea2 framing,
    its own conversions) makes of it; the conformance suite holds the parser to it."""
    golden = json.loads(path.with_suffix(".json").read_text())
    ref = nmea_reference.decode(path.read_bytes())
    assert golden["columns"] == ref["columns"]
    assert (golden["consumed"], golden["stats"]) == (ref["consumed"], ref["stats"])
    assert golden["rows"] == ref["rows"]
    assert golden["origin"]["commit"] and golden["origin"]["licence"] and golden["device"]
    parser = NmeaParser()
    left, rows = feed_all(parser, path.read_bytes(), 4096)
    assert left == 0
    assert_rows(rows, [dict(zip(golden["columns"], row)) for row in golden["rows"]])


def test_the_reference_decoder_refuses_what_is_not_clean():
    with pytest.raises(pynmea2.ChecksumError):
        nmea_reference.decode(b"$RATTM,01,0.48,263.6,T,0.0,2.9,T,0.48,,N,x,T,,134601,M*00\r\n")
    with pytest.raises(ValueError):
        nmea_reference.decode(b"$RATLL,01,5812.6870,N,01131.9502,E,1,134601,T,*5F")  # no line end


def test_public_capture_checksums_are_the_published_ones():
    for line in PUBLIC:
        body, given = line[1:].rsplit("*", 1)
        assert xor_checksum(body.encode()) == given == nmea_checksum(body)


# ----------------------------------------------------------------------------- pynmea2 side by side


def _dec(value) -> float:
    return float(value) if value is not None else math.nan


def _text(value) -> str:
    return value or ""


@pytest.mark.parametrize("line", PUBLIC[:-1])  # the last has no target number: pynmea2 yields None, we drop it
def test_same_decoding_as_pynmea2(line):
    """Every field both libraries decode, compared after converting pynmea2's raw values
    (Decimal in the sentence's units) with the same unit factors."""
    ref = pynmea2.parse(line, check=True)
    parser = NmeaParser()
    _, rows = feed_all(parser, (line + "\r\n").encode())
    (row,) = rows
    assert row["sentence"] == ref.sentence_type and row["talker"] == ref.talker
    assert row["target_number"] == ref.target_number
    if ref.sentence_type == "TTM":
        metres = {"N": 1852.0, "K": 1000.0, "S": 1609.344}[ref.dist_unit]
        assert_allclose(row["distance_m"], _dec(ref.distance) * metres)
        assert_allclose(row["bearing_deg"], _dec(ref.bearing))
        assert row["bearing_true"] == (ref.brg_ref == "T")
        assert_allclose(row["speed_mps"], _dec(ref.speed) * metres / 3600.0)
        assert_allclose(row["course_deg"], _dec(ref.cog))
        assert row["course_true"] == (ref.cog_unit == "T")
        assert_allclose(row["cpa_m"], _dec(ref.dist_cpa) * metres)
        assert_allclose(row["tcpa_s"], _dec(ref.time_cpa) * 60.0)
        assert (row["units"], row["name"], row["status"]) == (ref.dist_unit, _text(ref.name), _text(ref.status))
        assert row["reference"] == (ref.reference == "R")
        assert row["acquisition"] == _text(ref.acquisition)
        stamp = ref.timestamp
    else:
        assert_allclose(row["latitude_deg"], ref.latitude, rtol=1e-12)
        assert_allclose(row["longitude_deg"], ref.longitude, rtol=1e-12)
        assert (row["name"], row["status"]) == (_text(ref.target_name), _text(ref.target_status))
        assert row["reference"] == (ref.reference == "R")
        stamp = ref.timestamp
    if stamp is None or isinstance(stamp, str):  # pynmea2 keeps the text of a time it cannot read (78 h)
        assert math.isnan(row["utc_s"])
    else:
        seconds = stamp.hour * 3600 + stamp.minute * 60 + stamp.second + stamp.microsecond / 1e6
        assert_allclose(row["utc_s"], seconds)


def test_pynmea2_agrees_on_what_is_rejected():
    bad_checksum = PUBLIC[0][:-2] + "2B"
    with pytest.raises(pynmea2.ChecksumError):
        pynmea2.parse(bad_checksum, check=True)
    parser = NmeaParser()
    _, rows = feed_all(parser, (bad_checksum + "\r\n").encode())
    assert len(rows) == 0 and parser.stats.bad_checksum == 1


def test_throughput_against_pynmea2_on_the_same_bytes(capsys):
    """A quick measurement (the benchmark suite redoes it properly): MB/s of this parser
    and of pynmea2 over the same 15-field TTM stream. The parser must keep up with a
    38400 baud line many times over."""
    rng = np.random.default_rng(1)
    lines = []
    for i in range(4000):
        body = (f"RATTM,{i % 100:02d},{rng.uniform(0, 12):.3f},{rng.uniform(0, 360):.1f},T,{rng.uniform(0, 40):.1f},"
                f"{rng.uniform(0, 360):.1f},T,{rng.uniform(0, 3):.2f},{rng.uniform(-30, 30):.1f},N,TGT{i % 100:02d},T,,"
                f"1200{i % 60:02d}.00,A")
        lines.append(sentence(body))
    data = b"".join(lines)
    parser = NmeaParser()
    t = time.perf_counter()
    consumed, rows = parser.feed(data)
    ours = time.perf_counter() - t
    text = data.decode("ascii").split("\r\n")[:-1]
    t = time.perf_counter()
    parsed = [pynmea2.parse(line, check=True) for line in text]
    lazy = time.perf_counter() - t
    # pynmea2 converts a field only when it is read: read the fields towerd decodes.
    fields = [(p.target_number, p.distance, p.bearing, p.brg_ref, p.speed, p.cog, p.cog_unit, p.dist_cpa,
               p.time_cpa, p.dist_unit, p.name, p.status, p.reference, p.timestamp, p.acquisition) for p in parsed]
    full = time.perf_counter() - t
    assert consumed == len(data) and len(rows) == len(fields) == 4000
    assert_array_equal(rows["target_number"], [f[0] for f in fields])
    assert_allclose(rows["distance_m"], [float(f[1]) * 1852.0 for f in fields])
    mb = len(data) / 1e6
    line_rate = 38400 / 10 / 1e6  # MB/s of a 38400 baud 8N1 line
    with capsys.disabled():
        print(f"\nNMEA TTM, {len(data)} bytes: towerd {mb / ours:.2f} MB/s (framing, checksums and all fields "
              f"decoded); pynmea2 {mb / full:.2f} MB/s with the same fields read, {mb / lazy:.2f} MB/s parse "
              f"only; towerd = {mb / ours / line_rate:.0f} x a 38400 baud line")
    assert mb / ours > 100 * line_rate


# ----------------------------------------------------------------------------- framing rules


def test_units_references_and_tcpa_sign():
    feed = sentence("RATTM,05,2.5,350.0,R,36.0,10.0,R,0.5,-1.5,K,,T,R,,") + \
        sentence("IITTM,06,1.0,10.0,T,10.0,20.0,,1.0,2.0,S,,Q,,,") + \
        sentence("RATTM,07,,,,,,,,,,,Q,,,")
    parser = NmeaParser()
    _, rows = feed_all(parser, feed)
    a, b, c = rows
    assert_allclose([a["distance_m"], a["speed_mps"], a["cpa_m"], a["tcpa_s"]], [2500.0, 10.0, 500.0, -90.0])
    assert not a["bearing_true"] and not a["course_true"] and a["reference"]
    assert_allclose([b["distance_m"], b["speed_mps"]], [1609.344, 1609.344 / 360.0])
    assert b["talker"] == "II" and math.isnan(b["course_deg"])  # no course reference: unknown course
    assert c["target_number"] == 7 and math.isnan(c["distance_m"]) and c["units"] == ""


@pytest.mark.parametrize(
    "body",
    [
        "RATTM,,1.0,10.0,T,1.0,1.0,T,1.0,1.0,N,,T,,,",  # no target number
        "RATTM,01,1.0,10.0,,1.0,1.0,T,1.0,1.0,N,,T,,,",  # bearing without T/R
        "RATTM,01,1.0,10.0,T,1.0,1.0,T,1.0,1.0,,,T,,,",  # distance without units
        "RATTM,01,1.0,10.0,T,1.0,1.0,T,1.0,1.0,M,,T,,,",  # unknown unit letter
        "RATTM,01,1.0,1e999,T,1.0,1.0,T,1.0,1.0,N,,T,,,",  # infinite bearing
        "RATTM,01,abc,10.0,T,1.0,1.0,T,1.0,1.0,N,,T,,,",  # not a number
        "RATTM,01,1.0,10.0,T,1.0,1.0,T,1.0",  # too few fields
        "RATLL,01,4807.038,X,01131.000,E,,,,",  # bad hemisphere
        "RATLL,01,4867.038,N,01131.000,E,,,,",  # 67 minutes
        "RATLL,01,9107.038,N,01131.000,E,,,,",  # latitude > 90
        "RATLL,01,48.07038,N,01131.000,E,,,,",  # not ddmm.mm
    ],
)
def test_malformed_fields_are_counted_not_raised(body):
    parser = NmeaParser()
    _, rows = feed_all(parser, sentence(body) + sentence("RATTM,09,1.0,1.0,T,,,T,,,N,,T,,,"))
    assert list(rows["target_number"]) == [9]
    assert parser.stats.malformed == 1 and parser.stats.sentences == 2 and parser.stats.dropped_bytes == 0


def test_thirteen_and_ten_field_ttm_forms_are_accepted():
    parser = NmeaParser()
    _, rows = feed_all(parser, sentence("RATTM,11,0.5,36.7,T,7.5,90.0,T,0.2,-3.5,N,ALPHA,T,")
                       + sentence("RATTM,12,0.5,36.7,T,7.5,90.0,T,0.2,-3.5,N"))
    assert list(rows["target_number"]) == [11, 12]
    assert rows[0]["name"] == "ALPHA" and math.isnan(rows[0]["utc_s"]) and rows[0]["acquisition"] == ""


def test_length_limit_is_configurable_and_counted():
    body = "RATTM,01,1.0,1.0,T,,,T,,,N," + "N" * 70 + ",T,,,"
    line = sentence(body)
    assert 82 < len(line) <= 110
    assert len(feed_all(NmeaParser(110), line)[1]) == 1
    strict = NmeaParser(82)
    assert len(feed_all(strict, line)[1]) == 0 and strict.stats.too_long == 1


def test_unterminated_input_stays_bounded_and_recovers():
    parser = NmeaParser()
    buf = bytearray()
    for _ in range(1000):  # 100 kB without a line end, with '$' sprinkled in
        buf += b"$RATTM,01" + b"x" * 91
        consumed, rows = parser.feed(buf)
        del buf[:consumed]
        assert len(buf) < parser.max_sentence_chars and len(rows) == 0
    buf += b"\r\n" + sentence("RATTM,03,1.0,1.0,T,,,T,,,N,,T,,,")
    consumed, rows = parser.feed(buf)
    del buf[:consumed]
    assert list(rows["target_number"]) == [3] and not buf
    assert parser.stats.too_long >= 1 and parser.stats.resyncs == 1


def test_fuzz_random_and_corrupted_bytes_never_raise_and_valid_sentences_after_garbage_survive():
    """Seeded fuzz: random bytes, then corrupted copies of valid sentences, then valid
    sentences after a line end. The parser never raises, keeps its buffer under the
    bound, and recovers every valid sentence that follows a line end."""
    rng = np.random.default_rng(2024)
    good = [sentence(f"RATTM,{n:02d},{n / 10:.1f},{n * 3 % 360:.1f},T,1.0,2.0,T,0.1,0.2,N,,T,,,") for n in range(40)]
    for trial in range(200):
        noise = rng.integers(0, 256, rng.integers(0, 400), dtype=np.uint8).tobytes()
        corrupt = bytearray(good[trial % 40])
        for _ in range(rng.integers(1, 4)):
            corrupt[rng.integers(0, len(corrupt))] = rng.integers(0, 256)
        tail = good[:: 1 + trial % 7]
        data = noise + bytes(corrupt) + b"\n" + b"".join(tail)
        parser = NmeaParser()
        buf = bytearray()
        rows = []
        cuts = np.sort(rng.integers(0, len(data), 6))
        for a, b in zip(np.concatenate(([0], cuts)), np.concatenate((cuts, [len(data)]))):
            buf += data[a:b]
            consumed, out = parser.feed(buf)
            assert 0 <= consumed <= len(buf)
            del buf[:consumed]
            assert len(buf) < parser.max_sentence_chars
            rows.append(out)
        numbers = list(np.concatenate(rows)["target_number"])
        want = [int(t[7:9]) for t in tail]
        assert numbers[-len(want):] == want, trial
