"""ICD v1.1 IDENTITY message (docs/protocol.md, appendix "identity"): the 112-byte
identity record, its checks, its encode and decode, and the UAS ID field's two forms.

The UAS ID field holds what F3411's Basic ID holds on the air: ASCII text for ID types 0,
1 and 2 (serial number, CAA registration), the raw bytes for types 3 (UTM-assigned UUID,
16 bytes) and 4 (specific session ID, 20 bytes, its first byte the session-ID type). In
Python the UAS ID is text either way: a binary one as lower-case hex of its bytes,
trailing zero bytes left out (the driver renders it so; on the air they cannot be told
from padding). :func:`uas_id_bytes` and :func:`uas_id_text` go from one to the other.
Pure: bytes in, values out.
"""

from __future__ import annotations

import enum
import re

import numpy as np

from towerd.icd import (
    IDENTITY_RECORD_SIZE,
    LAT_LON_UNKNOWN,
    Message,
    MessageError,
    MsgType,
    _check_record_array,
    _expect,
    _header,
)

UAS_ID_LEN = 20
OPERATOR_ID_LEN = 20
SELF_ID_LEN = 23
"""F3411 text field sizes (Basic ID's UAS ID, Operator ID, Self ID description), bytes."""


class IdentityWithheld(enum.IntFlag):
    """IDENTITY record ``withheld`` bits: what the tower's sharing rule kept from this
    central (the field is then empty/unknown although the tower knows it)."""

    UAS_ID = 0x01  # uas_id and id_type
    OPERATOR_POSITION = 0x02  # operator_lat_e7, operator_lon_e7, operator_alt_m
    OPERATOR_ID = 0x04


WITHHELD_BITS = int(IdentityWithheld.UAS_ID | IdentityWithheld.OPERATOR_POSITION | IdentityWithheld.OPERATOR_ID)
IDENTITY_STATUS_MAX = 4
"""IDENTITY ``status``: 1 cooperative, 2 id_only, 3 non_cooperative, 4 mismatch
(towerd.reports.identity.IdentityStatus)."""

IDENTITY_RECORD_DTYPE = np.dtype(
    {
        "names": [
            "seq", "time_us", "last_heard_us", "track_id", "status", "source", "id_type", "ua_type",
            "operator_lat_e7", "operator_lon_e7", "operator_alt_m", "rssi_dbm", "withheld",
            "uas_id", "operator_id", "self_id",
        ],
        "formats": [
            "<u8", "<i8", "<i8", "<u4", "u1", "u1", "u1", "u1",
            "<i4", "<i4", "<f4", "<f4", "u1",
            f"S{UAS_ID_LEN}", f"S{OPERATOR_ID_LEN}", f"S{SELF_ID_LEN}",
        ],
        "offsets": [0, 8, 16, 24, 28, 29, 30, 31, 32, 36, 40, 44, 48, 49, 69, 89],
        "itemsize": IDENTITY_RECORD_SIZE,
    }
)
"""One ICD v1.1 IDENTITY record, 112 bytes, byte-exact (docs/protocol.md)."""
assert IDENTITY_RECORD_DTYPE.itemsize == IDENTITY_RECORD_SIZE
_TEXT_FIELDS = (("uas_id", UAS_ID_LEN), ("operator_id", OPERATOR_ID_LEN), ("self_id", SELF_ID_LEN))


def empty_identity_records(n: int = 0) -> np.ndarray:
    """IDENTITY records with every optional field at its 'unknown' value (status 0 is
    not valid: the caller sets it)."""
    rec = np.zeros(n, dtype=IDENTITY_RECORD_DTYPE)
    rec["operator_lat_e7"] = LAT_LON_UNKNOWN
    rec["operator_lon_e7"] = LAT_LON_UNKNOWN
    rec["operator_alt_m"] = np.nan
    rec["rssi_dbm"] = np.nan
    return rec


BINARY_ID_TYPES = {3: 16, 4: 20}
"""F3411 ID types whose UAS ID is binary, and its size in bytes: 3 UTM-assigned UUID
(128 bits), 4 specific session ID (session-ID type byte + 19 bytes)."""
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")
_PRINTABLE = re.compile(rb"[\x20-\x7e]*")


def text_field(value: object, size: int, what: str) -> bytes:
    """``value`` as an F3411 text field's bytes: printable ASCII, at most ``size``
    characters (unpadded); ValueError naming ``what`` otherwise."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string")
    try:
        raw = value.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"{what} {value!r} is not ASCII (F3411 text fields are)") from None
    if len(raw) > size:
        raise ValueError(f"{what} {value!r} is longer than {size} characters")
    if not _PRINTABLE.fullmatch(raw):
        raise ValueError(f"{what} {value!r} is not printable ASCII")
    return raw


def uas_id_bytes(uas_id: str, id_type: int) -> bytes:
    """The UAS ID field's bytes (at most 20, unpadded) for ``uas_id`` of ``id_type``:
    ASCII text, or for a binary type (3, 4) the bytes its hex text spells. ValueError
    when it cannot be carried (not printable ASCII; not hex; too long)."""
    size = BINARY_ID_TYPES.get(int(id_type))
    if size is None:
        return text_field(uas_id, UAS_ID_LEN, "uas_id")
    if uas_id and not _HEX.fullmatch(uas_id):
        raise ValueError(f"uas_id {uas_id!r} of ID type {id_type} is not hex text of whole bytes")
    raw = bytes.fromhex(uas_id).rstrip(b"\0")
    if len(raw) > size:
        raise ValueError(f"uas_id {uas_id!r} of ID type {id_type} is over {size} bytes")
    return raw


def uas_id_text(raw: bytes, id_type: int) -> str:
    """The UAS ID field's bytes (``raw``, trailing NULs stripped as NumPy reads an ``S``
    field) as text by ``id_type``: hex for the binary types 3 and 4, else ASCII."""
    return raw.hex() if int(id_type) in BINARY_ID_TYPES else raw.decode("ascii")


def uas_id_texts(records: np.ndarray) -> list[str]:
    """The UAS ID of every record (IDENTITY_RECORD_DTYPE, shape (n,)) as text by its type."""
    return [uas_id_text(raw, t) for raw, t in zip(records["uas_id"].tolist(), records["id_type"].tolist())]


def _identity_problem(rec: np.ndarray) -> tuple[str, str] | None:
    """``(reason, detail)`` for the first IDENTITY record field the ICD forbids, else None.
    Text: printable ASCII (0x20-0x7E) then NUL padding only (numpy's ``S`` fields strip
    trailing NULs, so an interior NUL is the only way one survives)."""
    if rec.size == 0:
        return None
    status = rec["status"]
    if ((status < 1) | (status > IDENTITY_STATUS_MAX)).any():
        return "range", f"IDENTITY status {int(status[(status < 1) | (status > IDENTITY_STATUS_MAX)][0])} not in 1..4"
    for name in ("id_type", "ua_type"):
        if (rec[name] > 15).any():
            return "range", f"IDENTITY {name} beyond 15 (a 4-bit F3411 field)"
    if (rec["withheld"] & (0xFF ^ WITHHELD_BITS)).any():
        return "range", "IDENTITY withheld sets undefined bits"
    for name in ("operator_alt_m", "rssi_dbm"):
        if np.isinf(rec[name]).any():
            return "range", f"IDENTITY {name} is infinite (unknown is NaN)"
    for name, limit in (("operator_lat_e7", 900_000_000), ("operator_lon_e7", 1_800_000_000)):
        col = rec[name]
        if ((col != LAT_LON_UNKNOWN) & (np.abs(col.astype(np.int64)) > limit)).any():
            return "range", f"IDENTITY {name} beyond +-{limit} (unknown is -2^31)"
    if ((rec["last_heard_us"] < 0)).any():
        return "range", "IDENTITY last_heard_us is negative (never heard is 0)"
    binary = np.isin(rec["id_type"], list(BINARY_ID_TYPES))
    uuid_tail = np.frombuffer(rec["uas_id"].tobytes(), dtype=np.uint8).reshape(rec.size, -1)[:, 16:]
    if ((rec["id_type"] == 3) & uuid_tail.any(axis=1)).any():
        return "encoding", "IDENTITY uas_id of ID type 3 (a 16-byte UUID) has bytes after its 16th"
    for name, _size in _TEXT_FIELDS:
        raw = np.frombuffer(rec[name].tobytes(), dtype=np.uint8).reshape(rec.size, -1)
        nul = raw == 0
        # After the first NUL only NULs; before it only printable ASCII (binary UAS IDs aside).
        after_nul = np.logical_or.accumulate(nul, axis=1)
        bad = ((raw != 0) & after_nul).any(axis=1) | (~after_nul & ((raw < 0x20) | (raw > 0x7E))).any(axis=1)
        if name == "uas_id":
            bad &= ~binary
        if bad.any():
            return "encoding", f"IDENTITY {name} is not printable ASCII padded with NUL"
    return None


def check_identity_records(records: np.ndarray) -> None:
    """Raise ValueError naming the first field of IDENTITY records (IDENTITY_RECORD_DTYPE,
    shape (n,)) that the ICD cannot carry (``seq`` aside)."""
    if not isinstance(records, np.ndarray) or records.dtype != IDENTITY_RECORD_DTYPE or records.ndim != 1:
        raise ValueError("records must be a 1-D array of IDENTITY_RECORD_DTYPE")
    problem = _identity_problem(records)
    if problem is not None:
        raise ValueError(problem[1])


def encode_identities(stream_id: int, records: np.ndarray, flags: int = 0) -> bytes:
    """One IDENTITY message (ICD v1.1). ``records``: 1-D array of IDENTITY_RECORD_DTYPE,
    shape (count,), ``seq`` assigned, consecutive ascending, 1 <= count <= 65535, every
    field within the ICD (status 1..4, id/UA type 0..15, text printable ASCII); the
    ``stream_id`` is the tower's identity stream, never its records stream."""
    _check_record_array(records, IDENTITY_RECORD_DTYPE, "IDENTITY")
    problem = _identity_problem(records)
    if problem is not None:
        raise ValueError(problem[1])
    return _header(MsgType.IDENTITY, stream_id, records.size, flags) + np.ascontiguousarray(records).tobytes()


def decode_identities(msg: Message) -> np.ndarray:
    """The records of a decoded IDENTITY message (ICD v1.1): a writable copy,
    IDENTITY_RECORD_DTYPE, shape (count,), every field checked (reasons ``range`` and
    ``encoding``, see :func:`encode_identities`). ``source`` is not checked: a source
    added later is stored as its number."""
    _expect(msg, MsgType.IDENTITY)
    records = np.frombuffer(msg.body, dtype=IDENTITY_RECORD_DTYPE, count=msg.count).copy()
    problem = _identity_problem(records)
    if problem is not None:
        raise MessageError(*problem)
    return records
