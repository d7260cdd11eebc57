"""The PostgreSQL store's area index (schema version 3): the grid-cell btree gives exactly
the rows of the plain polygon test, the planner uses it, and a version 2 database (GiST on
the position) is upgraded in place keeping what it had. Against the real server."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import psycopg

from towerd.central.pgschema import LAT_LON_UNKNOWN, SCHEMA_VERSION
from towerd.central.pgstore import PgCentralStore
from towerd.central.store import Pending
from towerd.clock import SystemClock
from towerd.icd import empty_track_records


def _records(lat_e7: np.ndarray, lon_e7: np.ndarray, t_us: int) -> np.ndarray:
    rec = empty_track_records(lat_e7.size)
    rec["seq"] = np.arange(1, lat_e7.size + 1)
    rec["time_us"] = t_us + np.arange(lat_e7.size)
    rec["track_id"] = 1
    rec["lat_e7"], rec["lon_e7"] = lat_e7, lon_e7
    return rec


def _polygons() -> list[str]:
    # Around cell edges (multiples of 2^17), on both sides of the equator and of Greenwich.
    return ["((-985100000,293900000),(-984900000,293900000),(-984900000,294100000),(-985100000,294100000))",
            "((-131072,-131072),(131072,-131072),(131072,131072),(-131072,131072))",
            "((-300000,-200000),(262144,-200000),(0,262145))",  # a triangle, not a box
            "((1000000,-899999999),(1300000,-899999999),(1300000,-899000000),(1000000,-899000000))"]


def test_area_cells_give_exactly_the_polygon_rows_and_the_planner_uses_them(pg_url):
    rng = np.random.default_rng(7)
    n = 4000
    centres = [(294_000_000, -985_000_000), (0, 0), (-899_500_000, 1_150_000)]
    lat = np.concatenate([c[0] + rng.integers(-400_000, 400_000, n) for c in centres]).astype(np.int32)
    lon = np.concatenate([c[1] + rng.integers(-400_000, 400_000, n) for c in centres]).astype(np.int32)
    lat[:50], lon[:50] = LAT_LON_UNKNOWN, LAT_LON_UNKNOWN  # unknown positions are never in an area
    t0 = SystemClock().utc_us()
    store = PgCentralStore(pg_url, retention_days=2)
    try:
        assert store.store_many([Pending("tx-area", 99, False, records=_records(lat, lon, t0))]) == [lat.size]
    finally:
        store.close()
    window = f"time_us >= {t0} AND time_us < {t0 + lat.size}"
    with psycopg.connect(pg_url) as conn:
        conn.execute("ANALYZE tracks")
        for poly in _polygons():
            plain = conn.execute(f"SELECT array_agg(seq ORDER BY seq) FROM tracks WHERE {window} AND lat_e7 <> "
                                 f"{LAT_LON_UNKNOWN} AND point(lon_e7, lat_e7) <@ polygon '{poly}'").fetchone()[0]
            cells = (f"SELECT array_agg(seq ORDER BY seq) FROM tracks WHERE towerd_cell(lat_e7, lon_e7) = ANY "
                     f"(towerd_area_cells(polygon '{poly}')) AND {window} AND lat_e7 <> {LAT_LON_UNKNOWN} "
                     f"AND point(lon_e7, lat_e7) <@ polygon '{poly}'")
            assert plain and conn.execute(cells).fetchone()[0] == plain, poly
            conn.execute("SET enable_seqscan = off")  # a small table: make the planner show its choice
            plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + cells).fetchall())
            conn.execute("RESET enable_seqscan")
            assert "cell_time" in plan, plan


def test_a_version_2_database_is_upgraded_in_place_and_keeps_its_gist_index(pg_url):
    PgCentralStore(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:  # make it what version 2 made
        conn.execute("DROP INDEX tracks_cell_time")
        conn.execute("DROP FUNCTION towerd_area_cells(polygon)")
        conn.execute("DROP FUNCTION towerd_cell(integer, integer)")
        conn.execute(f"CREATE INDEX tracks_position ON tracks USING gist (point(lon_e7, lat_e7)) "
                     f"WHERE lat_e7 <> {LAT_LON_UNKNOWN}")
        conn.execute("UPDATE towerd_schema SET version = 2")
    store = PgCentralStore(pg_url)
    try:
        rec = _records(np.array([294_000_000], np.int32), np.array([-985_000_000], np.int32), SystemClock().utc_us())
        assert store.store_many([Pending("tx-up", 5, False, records=rec)]) == [1]
    finally:
        store.close()
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT version FROM towerd_schema").fetchall() == [(SCHEMA_VERSION,)]
        names = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'tracks'")}
        assert {"tracks_cell_time", "tracks_position"} <= names
        assert conn.execute("SELECT count(*) FROM tracks WHERE towerd_cell(lat_e7, lon_e7) = ANY "
                            "(towerd_area_cells(polygon '((-985000100,293999900),(-984999900,294000100),"
                            "(-985000100,294000100))'))").fetchone()[0] == 1
    PgCentralStore(pg_url).close()  # opening an up-to-date database again changes nothing
    with psycopg.connect(pg_url) as conn:
        assert {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'tracks'")} == names


def test_closed_day_partitions_get_the_gist_index_and_today_does_not(pg_url):
    from towerd.central.pgindex import index_closed_days

    clock = SystemClock()
    PgCentralStore(pg_url, retention_days=2, index_closed_days_after_s=None).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        made = index_closed_days(conn, clock)
        today = f"tracks_{datetime.fromtimestamp(clock.utc_us() / 1e6, tz=timezone.utc):%Y%m%d}"
        gist = {r[0] for r in conn.execute("SELECT tablename FROM pg_indexes WHERE indexdef LIKE '%USING gist%'")}
        parts = {r[0] for r in conn.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON "
                                            "c.oid = i.inhrelid WHERE i.inhparent = 'tracks'::regclass")}
        closed = {p for p in parts if p[7:].isdigit() and p < today}
        assert len(closed) == 2 and gist == closed and sorted(made) == sorted(f"{p}_position" for p in closed)
        assert index_closed_days(conn, clock) == []  # made once
