"""Binary UAS IDs (F3411 ID type 3, UTM-assigned UUID, 16 bytes; type 4, specific
session ID, 20 bytes with the session-ID type first) reach the receiver as hex text of up
to 40 characters. The ICD's 20-byte UAS ID field carries their bytes (as F3411 does on
the air), the decode renders them as hex by type, and the central stores and exports
them whole: nothing is cut to 20 characters."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from towerd import icd
from towerd.central.server import export
from towerd.central.store import CentralStore, Pending
from towerd.clock import ManualClock
from towerd.drivers.measurements import RemoteIdReading, RidSource
from towerd.icd_identity import decode_identities, encode_identities, uas_id_bytes, uas_id_texts
from towerd.identity import RemoteIdFusion
from towerd.identity.settings import RemoteIdSettings
from towerd.geo import Site
from towerd.outbox.identity import identity_records
from towerd.reports.identity import IdentityStatus, TrackIdentity

UUID = "3f2a9c1e7b5d4e8fa0c1d2e3f4a5b6c7"  # type 3: 16 bytes, 32 hex characters
SESSION = "01" + "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"[:38]  # type 4: session-ID type 1 + 19 bytes
SERIAL = "1581F5FKD229400A1234"
STREAM = 0x1D0000000000BEEF


def ident(track_id: int, uas_id: str, id_type: int) -> TrackIdentity:
    return TrackIdentity(track_id=track_id, time_us=1_764_720_000_000_000, status=IdentityStatus.COOPERATIVE,
                         source=RidSource.BLUETOOTH_LONG_RANGE, uas_id=uas_id, id_type=id_type, ua_type=2,
                         operator_lat_deg=27.5, operator_lon_deg=-99.5, last_heard_us=1_764_719_999_900_000)


def wire_records() -> np.ndarray:
    rec = identity_records([ident(1, UUID, 3), ident(2, SESSION, 4), ident(3, SERIAL, 1),
                            ident(4, "0badc0de", 4)])  # a short session ID: trailing zero bytes are padding
    rec["seq"] = np.arange(1, len(rec) + 1, dtype=np.uint64)
    return rec


def test_binary_ids_travel_as_their_bytes_and_decode_whole():
    assert len(SESSION) == 40
    frame = encode_identities(STREAM, wire_records())
    body = frame[icd.HEADER_SIZE:]
    field = [body[112 * i + 49:112 * i + 69] for i in range(4)]  # offset 49, 20 bytes (docs/protocol.md)
    assert field[0] == bytes.fromhex(UUID) + bytes(4)
    assert field[1] == bytes.fromhex(SESSION)
    assert field[2] == SERIAL.encode("ascii")
    assert field[3] == bytes.fromhex("0badc0de") + bytes(16)
    decoded = decode_identities(icd.decode(frame))
    assert uas_id_texts(decoded) == [UUID, SESSION, SERIAL, "0badc0de"]
    assert decoded["id_type"].tolist() == [3, 4, 1, 4]


def test_what_a_binary_id_field_cannot_be_is_refused():
    with pytest.raises(ValueError, match="not hex"):
        uas_id_bytes("not-hex-at-all", 3)
    with pytest.raises(ValueError, match="over 16 bytes"):
        uas_id_bytes(UUID + "01", 3)  # a UUID is 128 bits
    rec = wire_records()
    rec[0]["uas_id"] = bytes.fromhex(UUID) + b"\x01"  # a 17th byte after a UUID
    header = encode_identities(STREAM, wire_records())[:icd.HEADER_SIZE]
    with pytest.raises(icd.MessageError, match="ID type 3"):
        decode_identities(icd.decode(header + rec.tobytes()))
    rec = wire_records()
    rec[2]["uas_id"] = b"\x01\x02binary-under-type-1"  # ASCII types stay ASCII
    with pytest.raises(ValueError, match="printable ASCII"):
        icd.check_identity_records(rec)


def test_the_central_stores_and_exports_the_full_id(tmp_path):
    db = tmp_path / "central.sqlite"
    store = CentralStore(db)
    try:
        decoded = decode_identities(icd.decode(encode_identities(STREAM, wire_records())))
        assert store.store_many([Pending("tx-bin-01", STREAM, False, identities=decoded)]) == [4]
        assert [r["uas_id"] for r in store.identities()] == [UUID, SESSION, SERIAL, "0badc0de"]
    finally:
        store.close()
    out = io.StringIO()
    export(db, out)
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    got = {x["track_id"]: (x["id_type"], x["uas_id"]) for x in lines if x["kind"] == "identity"}
    assert got == {1: (3, UUID), 2: (4, SESSION), 3: (1, SERIAL), 4: (4, "0badc0de")}


def test_fusion_hands_on_a_binary_id_whole_and_an_unreadable_one_as_text():
    clock = ManualClock()
    fusion = RemoteIdFusion(RemoteIdSettings(), Site(27.5, -99.5, 130.0), {}, clock)
    for mac, uas_id, id_type in (("aa:00:00:00:00:01", SESSION.upper(), 4), ("aa:00:00:00:00:02", "ABC-notHEX", 3)):
        fusion.ingest(RemoteIdReading("rid0", 0.0, mac, RidSource.WIFI_NAN, uas_id=uas_id, id_type=id_type,
                                      ua_type=2, lat_deg=27.501, lon_deg=-99.5, alt_geo_m=200.0, h_accuracy_m=10.0,
                                      v_accuracy_m=15.0))
    got = sorted((i.id_type, i.uas_id) for i in fusion.pop_identities())
    assert got == [(0, "ABC-notHEX"), (4, SESSION)]
