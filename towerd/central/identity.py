"""The central's side of ICD v1.1 IDENTITY: table layouts and rows for both stores.

Identity records arrive on a tower's identity stream (its own ``stream_id``, its own
seq from 1) and are stored like TRACKS records: keyed ``(tower_id, stream_id, seq)``,
duplicates dropped, committed before the ACK. Every record is kept (a history of what
the tower said about each track); the latest per ``(tower_id, track_id)`` is the one
with the highest ``time_us``. Text fields are stored as text ('' when unknown or
withheld; ``withheld`` says which; a binary UAS ID as hex), unknown floats as NULL, unknown operator lat/lon as
the ICD's -2^31, like the tracks table.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from towerd.icd_identity import IDENTITY_RECORD_DTYPE, uas_id_text

IDENTITY_FIELDS: tuple[str, ...] = IDENTITY_RECORD_DTYPE.names
TEXT_FIELDS = frozenset(n for n in IDENTITY_FIELDS if IDENTITY_RECORD_DTYPE.fields[n][0].kind == "S")
FLOAT_FIELDS = frozenset(n for n in IDENTITY_FIELDS if IDENTITY_RECORD_DTYPE.fields[n][0].kind == "f")
HEAD_COLUMNS = ("tower_id", "stream_id", "received_us", "replay", "rx_msg")
COLUMNS = HEAD_COLUMNS + IDENTITY_FIELDS
_ID_TYPE = IDENTITY_FIELDS.index("id_type")


def _sqlite_type(name: str) -> str:
    if name in TEXT_FIELDS:
        return "TEXT NOT NULL"
    if name in FLOAT_FIELDS:
        return "REAL"
    return "INTEGER NOT NULL"


SQLITE_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS identities (tower_id TEXT NOT NULL, stream_id TEXT NOT NULL, "
    "received_us INTEGER NOT NULL, replay INTEGER NOT NULL, rx_msg INTEGER NOT NULL, "
    + ", ".join(f"{n} {_sqlite_type(n)}" for n in IDENTITY_FIELDS)
    + ", PRIMARY KEY (tower_id, stream_id, seq)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS identities_track ON identities (tower_id, track_id, time_us)",
    "CREATE INDEX IF NOT EXISTS identities_uas ON identities (uas_id) WHERE uas_id <> ''",
]


def _pg_type(name: str) -> str:
    if name in TEXT_FIELDS:
        return "text NOT NULL"
    if name in FLOAT_FIELDS:
        return "real"
    return {"u1": "smallint", "u4": "bigint", "i4": "integer"}.get(
        IDENTITY_RECORD_DTYPE.fields[name][0].str[1:], "bigint") + " NOT NULL"


PG_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS identities (tower_id text NOT NULL, stream_id bigint NOT NULL, "
    "received_us bigint NOT NULL, replay boolean NOT NULL, rx_msg bigint NOT NULL, "
    + ", ".join(f"{n} {_pg_type(n)}" for n in IDENTITY_FIELDS)
    + ", PRIMARY KEY (tower_id, stream_id, seq, time_us)) PARTITION BY RANGE (time_us)",
    "CREATE INDEX IF NOT EXISTS identities_track ON identities (tower_id, track_id, time_us)",
    "CREATE INDEX IF NOT EXISTS identities_uas ON identities (uas_id) WHERE uas_id <> ''",
    "CREATE TABLE IF NOT EXISTS identities_default PARTITION OF identities DEFAULT",
]


def rows(records: np.ndarray, head: tuple) -> list[tuple]:
    """One row per IDENTITY record (IDENTITY_RECORD_DTYPE, shape (n,)) in ``COLUMNS``
    order: ``head`` (tower_id, stream_id as the store keeps it, received_us, replay,
    rx_msg) then the fields; text decoded (the decoder checked it is ASCII; a binary UAS
    ID, types 3 and 4, as hex), NaN -> None."""
    if records.dtype != IDENTITY_RECORD_DTYPE or records.ndim != 1:
        raise ValueError("records must be a 1-D array of IDENTITY_RECORD_DTYPE")
    out = []
    for rec in records.tolist():
        values = []
        for name, value in zip(IDENTITY_FIELDS, rec):
            if name == "uas_id":
                value = uas_id_text(value, rec[_ID_TYPE])  # hex for a binary (UUID, session) ID
            elif name in TEXT_FIELDS:
                value = value.decode("ascii")
            elif name in FLOAT_FIELDS and math.isnan(value):
                value = None
            values.append(value)
        out.append(head + tuple(values))
    return out


def export_lines(cursor_rows: Iterator[tuple], columns: tuple[str, ...], stream_hex) -> Iterator[dict]:
    """``"kind": "identity"`` export lines from rows of ``columns`` (``stream_hex`` turns
    the store's stream_id into 16 hex digits); unknown floats are null."""
    for row in cursor_rows:
        d = dict(zip(columns, row))
        d["stream_id"] = stream_hex(d["stream_id"])
        d["replay"] = bool(d["replay"])
        yield {"kind": "identity", **d}
