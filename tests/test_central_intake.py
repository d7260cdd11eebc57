"""The central's quick TRACKS header check (towerd.central.intake.tracks_head) agrees with
the ICD decoder: it accepts only what towerd.icd.decode accepts, with the same values,
and leaves everything else (and every message of more than 16 records) to the decoder,
which names the fault."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from towerd import icd
from towerd.central.intake import is_replay, tracks_head
from towerd.errors import FrameError

STREAM = 0x5EED_0000_0000_0001


def _frame(n: int, first_seq: int = 1, flags: int = 0) -> bytes:
    rec = icd.empty_track_records(n)
    rec["seq"] = first_seq + np.arange(n, dtype=np.uint64)
    rec["time_us"] = 1_700_000_000_000_000
    return icd.encode_tracks(STREAM, rec, flags=flags)


def _with_seq(frame: bytes, k: int, seq: int) -> bytes:
    out = bytearray(frame)
    struct.pack_into("<Q", out, icd.HEADER_SIZE + k * icd.RECORD_SIZE, seq)
    return bytes(out)


def _patched(frame: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(frame)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


U64_MAX = 2**64 - 1
CASES = {
    "one record": _frame(1),
    "four records": _frame(4, 11),
    "sixteen records": _frame(16, 2**40),
    "replay": _frame(4, 5, flags=icd.FLAG_REPLAY),
    "seventeen records (left to the decoder)": _frame(17),
    "ends at 2^64 - 1": _frame(2, U64_MAX - 1),
    "seq 0": _with_seq(_frame(1), 0, 0),
    "not consecutive": _with_seq(_frame(4), 2, 9),
    "descending": _with_seq(_with_seq(_frame(2, 5), 0, 6), 1, 5),
    "wraps past 2^64": _with_seq(_with_seq(_frame(2, 5), 0, U64_MAX), 1, 0),
    "bad magic": b"XW" + _frame(2)[2:],
    "version 2": _patched(_frame(2), 2, "<B", 2),
    "EVENTS type": _patched(_frame(2), 3, "<B", icd.MsgType.EVENTS),
    "undefined flag": _patched(_frame(2), 14, "<H", 0x8000),
    "count 0": _patched(_frame(2), 12, "<H", 0),
    "count above the body": _patched(_frame(2), 12, "<H", 3),
    "stream 0": _patched(_frame(2), 4, "<Q", 0),
    "short body": _frame(2)[:-1],
    "long body": _frame(2) + b"\0",
    "header only": _frame(1)[:icd.HEADER_SIZE],
    "short header": _frame(1)[:10],
}


@pytest.mark.parametrize("name", CASES)
def test_tracks_head_accepts_only_what_the_decoder_accepts(name):
    data = CASES[name]
    head = tracks_head(data)
    try:
        msg = icd.decode(data)
    except FrameError:
        assert head is None
        return
    if msg.type != icd.MsgType.TRACKS or msg.count > 16:
        assert head is None
        return
    seqs = icd.decode_tracks(msg)["seq"]
    assert head == (msg.stream_id, msg.count, msg.flags, int(seqs[0]), int(seqs[-1]))


def test_the_accepted_cases_are_accepted():
    """The table above holds accepted frames (not only refused ones)."""
    assert tracks_head(CASES["four records"]) == (STREAM, 4, 0, 11, 14)
    assert tracks_head(CASES["ends at 2^64 - 1"]) == (STREAM, 2, 0, U64_MAX - 1, U64_MAX)
    assert tracks_head(CASES["replay"])[2] == icd.FLAG_REPLAY


def test_is_replay_reads_the_flag_of_the_header():
    assert is_replay(_frame(2, flags=icd.FLAG_REPLAY))
    assert not is_replay(_frame(2))
    assert not is_replay(b"TW")
