"""The PostgreSQL store's schema and row layout (:mod:`towerd.central.pgstore` documents
both): the tables and indexes, the staging table and the statement that moves a batch from
it into ``tracks`` (the binary ``COPY`` images are :mod:`towerd.central.pgcopy`'s), and the
small helpers the store's modules share (stream_id as a signed bigint, partition names, URL
checks, the connection lock)."""

from __future__ import annotations

import functools
from datetime import datetime, timezone

from towerd.central import identity
from towerd.errors import ConfigError
from towerd.icd import LAT_LON_UNKNOWN, TRACK_RECORD_DTYPE

try:
    import psycopg
except ImportError:  # pragma: no cover - the extra is not installed
    psycopg = None

SCHEMA_VERSION = 3
CELL_SHIFT = 17
"""Area cells: ``lat_e7 >> 17`` by ``lon_e7 >> 17``, 0.0131 degrees (about 1.46 km north-south)."""
DAY_US = 86_400_000_000
_U64 = 2**64
_ADVISORY_KEY = 0x746F77657264  # "towerd": schema and partition upkeep, across processes
TRACK_FIELDS: tuple[str, ...] = TRACK_RECORD_DTYPE.names

# ICD dtype -> (PostgreSQL type, big-endian NumPy type used in binary COPY).
_PG_OF = {"u8": ("bigint", ">i8"), "i8": ("bigint", ">i8"), "u4": ("bigint", ">i8"), "u2": ("integer", ">i4"),
          "u1": ("smallint", ">i2"), "i4": ("integer", ">i4"), "f4": ("real", ">f4")}
_FIELD_TYPES = {n: _PG_OF[TRACK_RECORD_DTYPE.fields[n][0].str[1:]] for n in TRACK_FIELDS}
_FLOAT_FIELDS = tuple(n for n in TRACK_FIELDS if _FIELD_TYPES[n][0] == "real")
_HEAD_COLUMNS = ("tower_id", "stream_id", "received_us", "replay", "rx_msg")
TRACK_COLUMNS = _HEAD_COLUMNS + TRACK_FIELDS
_PARTITION_KEY = {"tracks": "time_us", "events": "time_us", "health": "received_us", "identities": "time_us"}

_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS towerd_schema (version integer NOT NULL)",
    "CREATE SEQUENCE IF NOT EXISTS towerd_rx_msg",
    "CREATE TABLE IF NOT EXISTS tracks (tower_id text NOT NULL, stream_id bigint NOT NULL, "
    "received_us bigint NOT NULL, replay boolean NOT NULL, rx_msg bigint NOT NULL, "
    + ", ".join(f"{n} {_FIELD_TYPES[n][0]}" + ("" if n in _FLOAT_FIELDS else " NOT NULL") for n in TRACK_FIELDS)
    + ", PRIMARY KEY (tower_id, stream_id, seq, time_us)) PARTITION BY RANGE (time_us)",
    "CREATE INDEX IF NOT EXISTS tracks_tower_time ON tracks (tower_id, time_us)",
    "CREATE INDEX IF NOT EXISTS tracks_time ON tracks USING brin (time_us)",
    # Areas: a btree on (grid cell, time) instead of the GiST on point(lon_e7, lat_e7) of
    # schema version 2, which cost about a third of the database's CPU per record (docs/central.md).
    "CREATE OR REPLACE FUNCTION towerd_cell(lat_e7 integer, lon_e7 integer) RETURNS integer "
    f"LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT ((lat_e7 >> {CELL_SHIFT}) * 32768) + "
    f"(lon_e7 >> {CELL_SHIFT}) $$",
    "CREATE OR REPLACE FUNCTION towerd_area_cells(area polygon) RETURNS integer[] "
    "LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT array_agg(la * 32768 + lo) "
    "FROM (SELECT (box(area))[0] AS ne, (box(area))[1] AS sw) AS c, "
    f"generate_series(floor(c.sw[1] / {2 ** CELL_SHIFT})::integer, "
    f"floor(c.ne[1] / {2 ** CELL_SHIFT})::integer) AS la, "
    f"generate_series(floor(c.sw[0] / {2 ** CELL_SHIFT})::integer, "
    f"floor(c.ne[0] / {2 ** CELL_SHIFT})::integer) AS lo $$",
    "CREATE INDEX IF NOT EXISTS tracks_cell_time ON tracks (towerd_cell(lat_e7, lon_e7), time_us) "
    f"WHERE lat_e7 <> {LAT_LON_UNKNOWN}",
    "CREATE TABLE IF NOT EXISTS events (tower_id text NOT NULL, stream_id bigint NOT NULL, seq bigint NOT NULL, "
    "received_us bigint NOT NULL, replay boolean NOT NULL, rx_msg bigint NOT NULL, time_us bigint NOT NULL, "
    "code text NOT NULL, severity text NOT NULL, message text NOT NULL, event jsonb NOT NULL, "
    "PRIMARY KEY (tower_id, stream_id, seq, time_us)) PARTITION BY RANGE (time_us)",
    "CREATE INDEX IF NOT EXISTS events_tower_time ON events (tower_id, time_us)",
    "CREATE INDEX IF NOT EXISTS events_code_time ON events (code, time_us)",
    "CREATE TABLE IF NOT EXISTS health (tower_id text NOT NULL, received_us bigint NOT NULL, health jsonb NOT NULL) "
    "PARTITION BY RANGE (received_us)",
    "CREATE INDEX IF NOT EXISTS health_tower_time ON health (tower_id, received_us)",
    "CREATE TABLE IF NOT EXISTS dropped (tower_id text NOT NULL, stream_id bigint NOT NULL, "
    "event_seq bigint NOT NULL, first_seq bigint NOT NULL, last_seq bigint NOT NULL, count bigint NOT NULL, "
    "ranges jsonb NOT NULL, received_us bigint NOT NULL, PRIMARY KEY (tower_id, stream_id, event_seq))",
    "CREATE TABLE IF NOT EXISTS tracks_default PARTITION OF tracks DEFAULT",
    "CREATE TABLE IF NOT EXISTS events_default PARTITION OF events DEFAULT",
    "CREATE TABLE IF NOT EXISTS health_default PARTITION OF health DEFAULT",
    *identity.PG_SCHEMA,
]

_STAGE = ("CREATE TEMP TABLE IF NOT EXISTS towerd_stage (k integer NOT NULL, tower_id text NOT NULL, "
          "stream_id bigint NOT NULL, received_us bigint NOT NULL, replay boolean NOT NULL, "
          + ", ".join(f"{n} {_FIELD_TYPES[n][0]}" for n in TRACK_FIELDS) + ") ON COMMIT DELETE ROWS")

_MOVE_SQL = (
    "WITH m AS MATERIALIZED (SELECT k, nextval('towerd_rx_msg') AS rx FROM unnest('{{{keys}}}'::integer[]) AS k), "
    "ins AS (INSERT INTO tracks (" + ", ".join(TRACK_COLUMNS) + ") "
    "SELECT s.tower_id, s.stream_id, s.received_us, s.replay, m.rx, "
    + ", ".join(f"NULLIF(s.{n}, 'NaN')" if n in _FLOAT_FIELDS else f"s.{n}" for n in TRACK_FIELDS)
    + " FROM towerd_stage s JOIN m USING (k) ORDER BY s.tower_id, s.stream_id, s.seq, s.k "
    "ON CONFLICT DO NOTHING RETURNING rx_msg) "
    "SELECT m.k, count(ins.rx_msg) FROM m JOIN (SELECT k, count(*) AS staged FROM towerd_stage GROUP BY k) n "
    "USING (k) LEFT JOIN ins ON ins.rx_msg = m.rx GROUP BY m.k, n.staged HAVING count(ins.rx_msg) < n.staged"
)
"""Moves the staged records into ``tracks``; returns ``(k, new records)`` only for the
messages that held duplicates (every other message's records were all new): usually no
row at all, instead of one row per message to fetch. A template: :func:`move_sql`."""


def move_sql(keys: list[int]) -> str:
    """:data:`_MOVE_SQL` for the staged messages ``keys`` (their indexes in the batch),
    written into it (a statement of a parameterless script, :mod:`towerd.central.pgwire`)."""
    return _MOVE_SQL.format(keys=",".join([str(int(k)) for k in keys]))


def _locked(method):
    """Run ``method`` holding the store's lock (one connection, several threads)."""
    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)
    return run


def _signed(stream_id: int) -> int:
    return stream_id - _U64 if stream_id >= 2**63 else stream_id


def _unsigned(stream_id: int) -> int:
    return stream_id % _U64


def day_name(table: str, day: int) -> str:
    """Partition name of UTC day number ``day`` (days since the epoch)."""
    return f"{table}_{datetime.fromtimestamp(day * 86400, tz=timezone.utc):%Y%m%d}"


def check_url(url: str) -> None:
    """ConfigError unless ``url`` is a PostgreSQL connection URL psycopg can parse."""
    if psycopg is None:
        raise ConfigError("a PostgreSQL store needs psycopg 3 (Debian: apt install python3-psycopg; "
                          "pip: pip install 'towerd[postgresql]')")
    try:
        psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise ConfigError(f"store URL is not a PostgreSQL connection string: {exc}") from exc


def _redact(url: str) -> str:
    """The URL without a password, for messages."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(url)
    except Exception:  # noqa: BLE001 - only for a message
        return "<unparsable URL>"
    params.pop("password", None)
    return " ".join(f"{k}={v}" for k, v in sorted(params.items()))
