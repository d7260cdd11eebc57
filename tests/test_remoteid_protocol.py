"""Remote ID line parser and F3411 decoder: reference vectors, every split point, fuzz, counters.

Reference vectors: opendroneid-core-c (github.com/opendroneid/opendroneid-core-c, commit
beb5639c78d8f05d9debe08a666c6a5f1cb0fa02), ``test/test_inout.c``: the source values it
encodes are written below; the hex is what ``encode*Message`` of
``libopendroneid/opendroneid.c`` at that commit made of them. The librid CLI example
(github.com/tuupola/librid ``examples/cli/README.md``) is a second published message.
More of the reference's decodes (random messages) are a conformance capture
(tests/captures/remoteid/odid_core_c_vectors.*).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from numpy.testing import assert_allclose

from towerd.drivers.measurements import RidSource
from towerd.drivers.remoteid import f3411
from towerd.drivers.remoteid.protocol import RidParser

# test_inout.c, encoded by the reference at the commit above
INOUT = {
    "basic_id": "02223132333435363738393031323334353637383930000000",
    "location": "122624160a42bf241b6ed1b4b69808ac0870086b53150e0200",
    "auth0": "22100128003fab013132333435363738393031323334353637",
    "auth1": "22113132333435363738393031323334353637383930313233",
    "self_id": "320044726f6e65735255533a205265616c2045737461746500",
    "system": "4204a6bf241bd2d1b4b62300073109230824f907003fab0100",
    "operator_id": "52003938373635343332313030313233343536373839000000",
}
PACK = "f21907" + "".join(INOUT.values())
LIBRID = "12202d3e0420bd5c25401c190d0000c10834084a0339300100"


def parse(data: bytes, parser: RidParser | None = None) -> tuple[RidParser, list[dict], int]:
    parser = parser or RidParser()
    consumed, items = parser.feed(bytearray(data))
    return parser, items, consumed


def one(line: str) -> dict:
    parser, items, _ = parse(line.encode() + b"\n")
    assert len(items) == 1, parser.stats
    return items[0]


def test_test_inout_messages_decode_to_the_values_the_reference_encoded():
    basic = one(INOUT["basic_id"])
    assert (basic["id_type"], basic["ua_type"], basic["uas_id"]) == (2, 2, "12345678901234567890")
    loc = one(INOUT["location"])
    # test_inout.c: airborne, direction 215.7, speed 5.4, vertical 5.25, lat 45.539309,
    # lon -122.966389, baro 100, geo 110, height 80 over ground, accuracies 2.5 m / 0.5 m /
    # 0.5 m/s, timestamp 360.52 s. On the air: direction 216 (whole degrees), speed 5.5
    # (0.25 m/s steps, rounded), vertical 5.0 (0.5 m/s steps, truncated), 360.5 s (tenths);
    # accuracies as the bounds of their classes: 3 m, 1 m, 1 m/s.
    assert loc["status"] == 2 and loc["height_above_takeoff"] is False
    got = [loc[k] for k in ("course_deg", "speed_mps", "vertical_speed_mps", "lat_deg", "lon_deg", "alt_baro_m",
                            "alt_geo_m", "height_m", "h_accuracy_m", "v_accuracy_m", "speed_accuracy_mps",
                            "broadcast_time_s")]
    assert_allclose(got, [216.0, 5.5, 5.0, 45.539309, -122.966389, 100.0, 110.0, 80.0, 3.0, 1.0, 1.0, 360.5],
                    rtol=0, atol=1e-9)
    assert one(INOUT["self_id"])["self_id"] == "DronesRUS: Real Estate"
    system = one(INOUT["system"])
    assert system["operator_location_type"] == 0
    assert_allclose([system["operator_lat_deg"], system["operator_lon_deg"], system["operator_alt_m"]],
                    [45.539319, -122.966379, 20.5], atol=1e-9)
    assert one(INOUT["operator_id"])["operator_id"] == "98765432100123456789"
    parser, items, _ = parse(f"{INOUT['auth0']}\n{INOUT['auth1']}\n".encode())
    assert items == [] and parser.stats.frames == 2 and parser.stats.f3411.auth_pages == 2


def test_message_pack_is_one_reading_with_all_its_messages_and_the_prefix():
    fields = one(f"EC-3D-FD-01-02-03, -58, bt5, {PACK}")
    assert fields["transmitter"] == "ec:3d:fd:01:02:03" and fields["rssi_dbm"] == -58.0
    assert fields["source"] == RidSource.BLUETOOTH_LONG_RANGE
    assert (fields["uas_id"], fields["self_id"], fields["operator_id"]) == (
        "12345678901234567890", "DronesRUS: Real Estate", "98765432100123456789")
    assert_allclose([fields["lat_deg"], fields["operator_lat_deg"]], [45.539309, 45.539319], atol=1e-9)
    # BLE service data: application code 0x0D and a counter before the pack or message
    assert one("0d07" + PACK)["uas_id"] == "12345678901234567890"
    assert_allclose(one("0D2A" + LIBRID)["lat_deg"], 62.683472, atol=1e-9)


def test_librid_example_and_unknown_encodings():
    loc = one(LIBRID)
    assert math.isnan(loc["alt_baro_m"])  # encoded 0: -1000 m, "unknown"
    assert_allclose([loc["speed_mps"], loc["vertical_speed_mps"], loc["course_deg"], loc["broadcast_time_s"],
                     loc["h_accuracy_m"], loc["v_accuracy_m"], loc["speed_accuracy_mps"]],
                    [15.5, 2.0, 45.0, 1234.5, 10.0, 10.0, 1.0])
    raw = bytearray.fromhex(LIBRID)
    raw[1] |= 0x03  # speed multiplier and E/W flag
    raw[2], raw[3], raw[4] = 181, 255, 126  # direction 361, speed 255, vertical 63: "unknown"
    raw[5:13] = bytes(8)  # latitude 0, longitude 0: unknown
    raw[19], raw[20] = 0x00, 0x0D  # accuracy classes unknown / reserved
    raw[21:23] = (0xFFFF).to_bytes(2, "little")
    unknown = one(raw.hex())
    for key in ("course_deg", "speed_mps", "vertical_speed_mps", "lat_deg", "lon_deg", "h_accuracy_m",
                "v_accuracy_m", "speed_accuracy_mps", "broadcast_time_s"):
        assert math.isnan(unknown[key]), key
    raw[3] = 254  # with the multiplier: 0.75 * 254 + 63.75
    assert one(raw.hex())["speed_mps"] == pytest.approx(254.25)


def test_each_refusal_is_counted_by_its_reason():
    too_long = b"{" + b"x" * 2000 + b"}\n"
    bad_lat = bytearray.fromhex(LIBRID)
    bad_lat[5:9] = (910_000_000).to_bytes(4, "little", signed=True)
    stream = b"".join([
        b"{not json}\n", b"[1, 2]\n", b'{"drone_lat": 91.0, "drone_long": 1.0, "basic_id": "A"}\n',
        b'{"basic_id": "A", "rssi": "strong"}\n', too_long,
        b"abc " + LIBRID.encode() + b"\n",  # a prefix token that is nothing known
        LIBRID.encode() + b"0\n",  # odd number of digits
        LIBRID.encode() + b"00\n",  # 26 bytes: neither a message nor a pack
        b"62" + LIBRID[2:].encode() + b"\n",  # type 6: unknown
        b"13" + LIBRID[2:].encode() + b"\n",  # protocol version 3
        b"f21900" + b"\n" * 0 + INOUT["basic_id"].encode() + b"\n",  # pack of 0 messages
        bytes(bad_lat).hex().encode() + b"\n",
        b"02" + b"12" + b"41ff" + b"00" * 21 + b"\n",  # basic ID text not printable
        b"\xff\xfe{\x80}\n", b"{\"a\": \"\xff\"}\n",  # not UTF-8
        b"boot: rst:0x1 (POWERON_RESET)\n", b"\r\n",
        b'{"mac": "aa:bb:cc:dd:ee:ff", "basic_id": "OK-1"}\n',
    ])
    parser, items, consumed = parse(stream)
    s = parser.stats
    assert consumed == len(stream)
    assert [i["uas_id"] for i in items] == ["OK-1"]
    assert (s.not_json, s.not_object, s.out_of_range, s.too_long, s.bad_hex, s.bad_message, s.bad_text) == (
        2, 1, 3, 1, 3, 3, 1), s
    assert s.text == 2 and s.frames == 1 and s.readings == 1 and s.resyncs == 1
    assert s.dropped_bytes == len(stream) - len(b'{"mac": "aa:bb:cc:dd:ee:ff", "basic_id": "OK-1"}\n') - 2


def test_hostile_json_values_are_refused_not_raised():
    lines = [b'{"drone_lat": 1' + b"0" * 400 + b', "drone_long": 1.0, "basic_id": "A"}',  # int beyond float
             b'{"drone_lat": 1e400, "drone_long": 1.0, "basic_id": "A"}',  # inf
             b'{"drone_lat": NaN, "drone_long": 1.0, "basic_id": "A"}',
             b'{"basic_id": ["A"]}', rb'{"basic_id": "A\u0000B"}', b'{"mac": "aa:bb:cc:dd:ee:ff", "basic_id": {}}',
             b'{"rssi": true, "basic_id": "A"}', b'{"id_type": 2.5, "basic_id": "A"}',
             b"[" * 500 + b"]" * 500, b'{"basic_id": "' + b"x" * 100 + b'"}']
    parser, items, consumed = parse(b"\n".join(lines) + b"\n")
    assert items == [] and consumed == sum(len(ln) + 1 for ln in lines)
    assert parser.stats.out_of_range == 9 and parser.stats.not_object == 1, parser.stats


def test_steve_jacks_id_scanner_lines_and_its_keep_alive():
    """id_scanner's print_json: "id" is the operator ID; its once-a-minute line for slot
    MAX_UAVS has operator "NONE", a zero MAC and zero positions: nothing heard."""
    line = (b'{ "index": 0, "runtime": 12, "mac": "60:60:1f:aa:bb:cc", "id": "GBR-OP-1234ABCD", '
            b'"uav latitude":   51.500000, "uav longitude":   -0.120000, "alitude msl": 95, '
            b'"height agl": 40, "base latitude":   51.499000, "base longitude":   -0.121000, "speed": 7, '
            b'"heading": 270 }\r\n')
    keep_alive = (b'{ "index": 8, "runtime": 60, "mac": "00:00:00:00:00:00", "id": "NONE", '
                  b'"uav latitude":    0.000000, "uav longitude":    0.000000, "alitude msl": 0, "height agl": 0, '
                  b'"base latitude":    0.000000, "base longitude":    0.000000, "speed": 0, "heading": 0 }\r\n')
    parser, items, _ = parse(line + keep_alive)
    (item,) = items
    assert (item["operator_id"], item["transmitter"], item["height_above_takeoff"]) == (
        "GBR-OP-1234ABCD", "60:60:1f:aa:bb:cc", False)
    assert_allclose([item[k] for k in ("lat_deg", "lon_deg", "alt_geo_m", "height_m", "speed_mps", "course_deg",
                                       "operator_lat_deg", "operator_lon_deg")],
                    [51.5, -0.12, 95.0, 40.0, 7.0, 270.0, 51.499, -0.121])
    assert parser.stats.no_drone == 1 and parser.stats.bad_lines == 0


WARDRAGON = (  # Root-Down-Digital/DragonSync-iOS Util/ESP32_RID_AP_FW/main.cpp create_json_response, filled in
    '{"index":3,"runtime":120,"Basic ID":{"id":"1581F5FKD229400001","id_type":"Serial Number (ANSI/CTA-2063-A)",'
    '"ua_type":2,"MAC":"60:60:1f:aa:bb:cc","RSSI":-71},"Location/Vector Message":{"latitude":  27.503600,'
    '"longitude": -99.507600,"speed":5,"vert_speed":0,"geodetic_altitude":155,"height_agl":25,"status":2,'
    '"direction":90,"alt_pressure":-1000,"height_type":0,"horiz_acc":10,"vert_acc":4,"baro_acc":0,"speed_acc":3,'
    '"timestamp":1234},"Self-ID Message":{"text":"UAV 60:60:1f:aa:bb:cc operational","description_type":0,'
    '"description":"Survey"},"System Message":{"latitude":  27.503000,"longitude": -99.508000,'
    '"operator_lat":  27.503000,"operator_lon": -99.508000,"area_count":1,"area_radius":0,"area_ceiling":-1000,'
    '"area_floor":-1000,"operator_alt_geo":131,"classification":1,"timestamp":123456},'
    '"Auth Message":{"type":0,"page":0,"length":0,"timestamp":0,"data":""}}')


def test_wardragon_nested_dialect_and_its_zero_filled_frames():
    item = one(WARDRAGON)
    assert (item["uas_id"], item["ua_type"], item["transmitter"], item["self_id"], item["status"]) == (
        "1581F5FKD229400001", 2, "60:60:1f:aa:bb:cc", "Survey", 2)
    assert "id_type" not in item and "alt_baro_m" not in item  # a fixed text; -1000 m is unknown
    assert_allclose([item[k] for k in ("lat_deg", "lon_deg", "alt_geo_m", "height_m", "speed_mps", "course_deg",
                                       "broadcast_time_s", "h_accuracy_m", "v_accuracy_m", "speed_accuracy_mps",
                                       "operator_lat_deg", "operator_lon_deg", "operator_alt_m", "rssi_dbm")],
                    [27.5036, -99.5076, 155.0, 25.0, 5.0, 90.0, 1234.0, 10.0, 10.0, 1.0, 27.503, -99.508, 131.0, -71.0])
    zero = json.loads(WARDRAGON)
    zero["Location/Vector Message"] = {k: 0 for k in zero["Location/Vector Message"]}
    zero["Location/Vector Message"].update(direction=361, speed=255, vert_speed=63, timestamp=65535)
    only_id = one(json.dumps(zero))
    assert "lat_deg" not in only_id and only_id["uas_id"] == "1581F5FKD229400001"
    zero["Location/Vector Message"].update(latitude=27.5, longitude=-99.5)
    unknowns = one(json.dumps(zero))
    assert not {"course_deg", "speed_mps", "vertical_speed_mps", "broadcast_time_s", "h_accuracy_m"} & set(unknowns)
    zero["Basic ID"] = "not an object"
    parser, items, _ = parse(json.dumps(zero).encode() + b"\n")
    assert items == [] and parser.stats.out_of_range == 1


def test_an_over_long_line_is_dropped_across_feeds_and_the_next_line_is_read():
    parser = RidParser(max_line_bytes=256)
    buf = bytearray(b"{" + b"9" * 300)
    consumed, items = parser.feed(buf)
    assert consumed == len(buf) and items == [] and parser.stats.too_long == 1
    consumed, items = parser.feed(bytearray(b"9" * 50 + b"}\n" + LIBRID.encode() + b"\n"))
    assert len(items) == 1 and parser.stats.too_long == 1 and parser.stats.dropped_bytes == 301 + 52


def _stream() -> bytes:
    lines = [b"==== boot ====", b'{"heartbeat":"x"}', LIBRID.encode(), b"{broken",
             b'{"mac":"8c:1e:d9:c8:c9:f7","rssi":-81,"drone_lat":25.784279,"drone_long":-80.149010,'
             b'"drone_altitude":118,"pilot_lat":25.767196,"pilot_long":-80.137115,"basic_id":"1581F8LQC255L00227P5"}',
             b"60:60:1f:aa:bb:cc -71 nan " + PACK.encode(), INOUT["auth0"].encode(), INOUT["system"].encode()]
    return b"\r\n".join(lines) + b"\r\n" + b'{"partial'


def _result(pieces: list[bytes]) -> tuple[str, dict, int]:
    parser = RidParser()
    buf = bytearray()
    items: list[dict] = []
    consumed = 0
    for piece in pieces:
        buf += piece
        n, got = parser.feed(buf)
        assert 0 <= n <= len(buf)
        del buf[:n]
        consumed += n
        items += got
    stats = parser.stats.as_dict()
    stats.pop("last_error")
    return json.dumps(items, default=int, sort_keys=True), stats, consumed


def test_every_split_point_gives_the_whole_streams_result():
    data = _stream()
    whole = _result([data])
    assert whole[1]["readings"] == 4 and whole[2] == len(data) - len(b'{"partial')
    for cut in range(1, len(data)):
        assert _result([data[:cut], data[cut:]]) == whole, cut
    assert _result([data[i:i + 1] for i in range(len(data))]) == whole


def test_fuzz_random_bytes_and_mutated_lines_never_raise_and_account_for_every_line():
    rng = np.random.default_rng(20261203)
    valid = _stream().split(b"\r\n")[:-1]
    for trial in range(300):
        if trial % 3 == 0:
            data = rng.integers(0, 256, int(rng.integers(1, 3000)), dtype=np.uint8).tobytes()
        else:
            lines = []
            for _ in range(int(rng.integers(1, 12))):
                line = bytearray(valid[int(rng.integers(len(valid)))])
                for _ in range(int(rng.integers(0, 4))):
                    op = int(rng.integers(3))
                    at = int(rng.integers(len(line) + 1))
                    if op == 0 and line:
                        line[min(at, len(line) - 1)] ^= 1 << int(rng.integers(8))
                    elif op == 1:
                        del line[at:at + int(rng.integers(1, 8))]
                    else:
                        line[at:at] = rng.integers(0, 256, int(rng.integers(1, 5)), dtype=np.uint8).tobytes()
                lines.append(bytes(line))
            data = b"\n".join(lines) + b"\n"
        cuts = sorted(set(rng.integers(0, len(data) + 1, 5).tolist()))
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
        parser = RidParser(max_line_bytes=512)
        buf = bytearray()
        consumed = 0
        readings = 0
        for piece in pieces:
            buf += piece
            n, items = parser.feed(buf)
            del buf[:n]
            consumed += n
            readings += len(items)
        s = parser.stats
        assert s.readings == readings <= s.frames
        assert s.dropped_bytes <= consumed <= len(data)
        if data.endswith(b"\n") and b"\n" in data:
            assert consumed == len(data)
        complete = [ln for ln in data[:consumed].split(b"\n") if ln.strip(b" \t\r\n\x0b\x0c")]
        assert s.frames + s.bad_lines + s.text >= len(complete) - s.too_long  # every line counted somewhere


def test_structured_dtype_and_scalar_decoding_agree_on_random_messages():
    """The NumPy pass (many messages at once) and the struct path (a handful) give the
    same fields, NaN for NaN, on random Location and System messages of every flag."""
    rng = np.random.default_rng(7)
    raw = rng.integers(0, 256, (4000, f3411.MESSAGE_SIZE), dtype=np.uint8)
    raw[:2000, 0], raw[2000:, 0] = 0x12, 0x42
    raw[::5, 5:13] = 0  # unknown positions
    small = rng.integers(-900_000_000, 900_000_000, 4000).astype("<i4")
    raw[1::3, 5:9] = np.frombuffer(small[1::3].tobytes(), dtype=np.uint8).reshape(-1, 4)  # plausible latitudes
    raw[2000:][1::3, 2:6] = np.frombuffer(small[2000:][1::3].tobytes(), dtype=np.uint8).reshape(-1, 4)
    together = f3411.decode_rows(raw, f3411.F3411Stats())
    assert len(raw) >= f3411.VECTOR_MIN_ROWS
    for i in range(len(raw)):
        alone = f3411.decode_rows(raw[i:i + 1], f3411.F3411Stats())[0]
        assert alone[0] == together[i][0] and type(alone[2]) is type(together[i][2])
        if alone[1] is not None:
            assert alone[1].keys() == together[i][1].keys()
            for key, value in alone[1].items():
                other = together[i][1][key]
                assert value == other or (math.isnan(value) and math.isnan(other)), (i, key, value, other)
    assert sum(e is None for _, _, e in together) > 1000


def test_fuzz_every_dialect_key_with_hostile_values_never_raises():
    keys = ["mac", "rssi", "drone_lat", "drone_long", "drone_altitude", "height_agl", "pilot_lat", "pilot_long",
            "basic_id", "id_type", "ua_type", "home_lat", "home_long", "source", "transport", "operator_id", "id",
            "uav latitude", "uav longitude", "alitude msl", "height agl", "base latitude", "base longitude", "speed",
            "heading", "serial_number", "latitude", "longitude", "altitude", "height", "v_north", "v_east", "v_up",
            "app_lat", "app_lon", "latitude_home", "longitude_home", "self_id", "status", "Basic ID",
            "Location/Vector Message", "System Message", "Self-ID Message"]
    values = [None, True, 0, -1, 10**30, -(10**400), 1e308, -1e-300, 0.5, 91.0, -181.0, 360.0, "", "x" * 70,
              "aa:bb:cc:dd:ee:ff", "AABBCCDDEEFF", "ble", "NaN", [], {}, [1, 2], {"a": 1}, "\u00e9\u4e2d",
              {"id": "X1", "MAC": "aa:bb:cc:dd:ee:ff", "RSSI": -60, "ua_type": 99},
              {"latitude": 45.0, "longitude": 7.0, "direction": 400, "horiz_acc": 10, "timestamp": -5},
              {"latitude": 45.0, "longitude": 7.0, "speed": 12, "height_type": 1, "vert_acc": 15},
              {"operator_lat": 45.0, "operator_lon": 7.0, "operator_alt_geo": 1e9}]
    rng = np.random.default_rng(11)
    lines = []
    for _ in range(600):
        chosen = rng.choice(len(keys), int(rng.integers(1, 8)), replace=False)
        obj = {keys[k]: values[int(rng.integers(len(values)))] for k in chosen}
        lines.append(json.dumps(obj).encode())
    data = b"\n".join(lines) + b"\n"
    parser = RidParser(max_line_bytes=4096)
    consumed, items = parser.feed(bytearray(data))
    s = parser.stats
    assert consumed == len(data) and s.json_lines + s.bad_lines == len(lines)
    assert s.readings == len(items) > 0 and s.out_of_range > 0
    for item in items:  # whatever got through is within its bounds
        for key, lo, hi in (("lat_deg", -90, 90), ("lon_deg", -180, 180), ("rssi_dbm", -150, 20),
                            ("course_deg", 0, 360), ("operator_lat_deg", -90, 90)):
            if key in item:
                assert lo <= item[key] <= hi, (key, item)
