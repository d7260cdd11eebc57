"""The central's identity tables (ICD v1.1): the SQLite store and a real PostgreSQL
cluster keep IDENTITY records keyed (tower, stream, seq) with duplicates dropped, and
export them; stores made before identities existed are upgraded in place."""

from __future__ import annotations

import io
import json
import math
import sqlite3

import numpy as np
import psycopg

from towerd import icd
from towerd.central.pgstore import PgCentralStore
from towerd.central.server import export
from towerd.central.store import CentralStore, Pending
from towerd.clock import SystemClock

TOWER = "tx-id-01"
STREAM = 0xF1E2D3C4B5A69788


def identities(n: int, first_seq: int = 1) -> np.ndarray:
    rec = icd.empty_identity_records(n)
    rec["seq"] = np.arange(first_seq, first_seq + n, dtype=np.uint64)
    rec["time_us"] = SystemClock().utc_us()
    rec["last_heard_us"] = rec["time_us"] - 200_000
    rec["track_id"] = 7 + np.arange(n)
    rec["status"] = 1
    rec["source"] = 5
    rec["id_type"] = 1
    rec["ua_type"] = 2
    rec["uas_id"] = b"1581F5FKD229400A1234"
    rec["operator_id"] = b"USA-OP-0042"
    rec["self_id"] = b"survey flight 23 chars!"
    rec["operator_lat_e7"] = 275_012_345
    rec["operator_lon_e7"] = -995_012_345
    rec["rssi_dbm"] = -71.5
    rec[-1]["status"] = 3  # non-cooperative: nothing known
    for name in ("uas_id", "operator_id", "self_id"):
        rec[-1][name] = b""
    rec[-1]["operator_lat_e7"] = rec[-1]["operator_lon_e7"] = icd.LAT_LON_UNKNOWN
    rec[-1]["rssi_dbm"] = np.nan
    rec[-1]["last_heard_us"] = 0
    return rec


def _check_rows(rows: list[dict], rec: np.ndarray) -> None:
    assert [r["seq"] for r in rows] == rec["seq"].tolist()
    first, last = rows[0], rows[-1]
    assert first["tower_id"] == TOWER and first["stream_id"] == STREAM
    assert first["uas_id"] == "1581F5FKD229400A1234" and first["operator_id"] == "USA-OP-0042"
    assert first["self_id"] == "survey flight 23 chars!" and first["source"] == 5 and first["status"] == 1
    assert first["operator_lat_e7"] == 275_012_345 and first["rssi_dbm"] == -71.5
    assert math.isnan(first["operator_alt_m"])
    assert last["status"] == 3 and last["uas_id"] == "" and math.isnan(last["rssi_dbm"])
    assert last["operator_lat_e7"] == icd.LAT_LON_UNKNOWN and last["last_heard_us"] == 0


def _check_export(lines: list[dict], rec: np.ndarray) -> None:
    ids = [x for x in lines if x["kind"] == "identity"]
    assert [x["seq"] for x in ids] == rec["seq"].tolist()
    assert ids[0]["stream_id"] == f"{STREAM:016x}" and ids[0]["uas_id"] == "1581F5FKD229400A1234"
    assert ids[0]["operator_alt_m"] is None and ids[-1]["rssi_dbm"] is None
    # The identity stream is summarised on its own (its own seq), beside the records streams.
    (summary,) = [x for x in lines if x["kind"] == "stream" and x["stream_id"] == f"{STREAM:016x}"]
    assert (summary["records"], summary["last_seq"], summary["unexplained"]) == (rec.size, int(rec["seq"][-1]), [])


def test_sqlite_store_keeps_identities_once_and_exports_them(tmp_path):
    db = tmp_path / "central.sqlite"
    store = CentralStore(db)
    rec = identities(3)
    try:
        assert store.store_many([Pending(TOWER, STREAM, False, identities=rec)]) == [3]
        assert store.store_many([Pending(TOWER, STREAM, True, identities=rec[1:])]) == [0]  # duplicates
        _check_rows(store.identities(), rec)
        assert store.count_identities() == 3 and store.count_tracks() == 0
    finally:
        store.close()
    out = io.StringIO()
    export(db, out)
    _check_export([json.loads(line) for line in out.getvalue().splitlines()], rec)


def test_sqlite_store_of_schema_2_is_upgraded(tmp_path):
    db = tmp_path / "old.sqlite"
    store = CentralStore(db)
    store.close()
    with sqlite3.connect(db) as conn:  # as a towerd before v1.1 left it
        conn.execute("DROP TABLE identities")
        conn.execute("PRAGMA user_version = 2")
    out = io.StringIO()
    export(db, out)  # read-only, no identities table: nothing to say about identities
    assert all(json.loads(x)["kind"] != "identity" for x in out.getvalue().splitlines())
    store = CentralStore(db)
    try:
        assert store.store_many([Pending(TOWER, STREAM, False, identities=identities(2))]) == [2]
    finally:
        store.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 3


def test_postgresql_store_keeps_identities_once_and_exports_them(pg_url):
    store = PgCentralStore(pg_url, retention_days=2)
    rec = identities(3)
    try:
        tracks = icd.empty_track_records(1)
        tracks["seq"], tracks["time_us"] = 1, SystemClock().utc_us()
        got = store.store_many([Pending(TOWER, 0x1234, False, records=tracks),
                                Pending(TOWER, STREAM, False, identities=rec)])
        assert got == [1, 3]
        assert store.store_many([Pending(TOWER, STREAM, True, identities=rec)]) == [0]
        _check_rows(store.identities(), rec)
        _check_export(list(store.export()), rec)
    finally:
        store.close()


def test_postgresql_schema_1_is_upgraded(pg_url):
    store = PgCentralStore(pg_url, retention_days=2)
    store.close()
    with psycopg.connect(pg_url) as conn:  # as a towerd before v1.1 left it
        conn.execute("DROP TABLE identities")
        conn.execute("UPDATE towerd_schema SET version = 1")
    reader = PgCentralStore(pg_url, read_only=True)
    try:
        assert reader.identities() == [] and all(x["kind"] != "identity" for x in reader.export())
    finally:
        reader.close()
    store = PgCentralStore(pg_url, retention_days=2)
    try:
        assert store.store_many([Pending(TOWER, STREAM, False, identities=identities(2))]) == [2]
    finally:
        store.close()
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT version FROM towerd_schema").fetchone()[0] == 3  # identities (2), area cells (3)
