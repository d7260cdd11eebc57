"""The outbox's identity stream on real SQLite files: its own stream id and seq, kept
across a restart; committed with the records; per-central acknowledgement (rows deleted
only when every central is done); a change of centrals; the cap announced on the records
stream; bad identities refused before anything is stored; a failed write rolls back both."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from towerd import icd
from towerd.clock import ManualClock
from towerd.drivers.measurements import RidSource
from towerd.errors import OutboxError
from towerd.outbox.identity import EVENT_IDENTITY_DROPPED, identity_records
from towerd.outbox.sqlite import Outbox
from towerd.reports.identity import IdentityStatus, TrackIdentity


def ident(track_id: int = 1, **kw) -> TrackIdentity:
    base = dict(track_id=track_id, time_us=1_764_720_000_000_000, status=IdentityStatus.COOPERATIVE,
                source=RidSource.WIFI_BEACON, uas_id="1581F5FKD229400A1234", id_type=1, ua_type=2,
                operator_lat_deg=27.5, operator_lon_deg=-99.5, operator_id="USA-OP-0042",
                self_id="x" * 23, last_heard_us=1_764_719_999_900_000, rssi_dbm=-80.0)
    base.update(kw)
    return TrackIdentity(**base)


def test_identity_record_from_a_track_identity():
    rec = identity_records([ident(7), ident(8, status=IdentityStatus.NON_COOPERATIVE, uas_id="", id_type=0,
                                      operator_lat_deg=math.nan, operator_lon_deg=math.nan, self_id="",
                                      operator_id="", last_heard_us=0, rssi_dbm=math.nan)])
    assert rec[0]["track_id"] == 7 and rec[0]["operator_lat_e7"] == 275_000_000
    assert rec[0]["operator_lon_e7"] == -995_000_000 and rec[0]["uas_id"] == b"1581F5FKD229400A1234"
    assert rec[0]["self_id"] == b"x" * 23 and rec[0]["source"] == 3 and np.isnan(rec[0]["operator_alt_m"])
    assert rec[1]["operator_lat_e7"] == icd.LAT_LON_UNKNOWN and rec[1]["uas_id"] == b""


@pytest.mark.parametrize("kw,needle", [
    ({"uas_id": "X" * 21}, "longer than 20"),
    ({"self_id": "caf\u00e9"}, "not ASCII"),
    ({"operator_id": "tab\there"}, "printable ASCII"),
    ({"operator_lat_deg": 91.0}, "operator_lat_deg"),
    ({"operator_lon_deg": math.nan}, "only one of"),
    ({"rssi_dbm": math.inf}, "infinite"),
    ({"id_type": 16}, "id_type"),
    ({"track_id": -1}, "track_id"),
    ({"last_heard_us": -5}, "last_heard_us"),
    ({"status": 9}, "9"),
])
def test_identities_the_icd_cannot_carry_are_refused_before_anything_is_stored(tmp_path, kw, needle):
    box = Outbox(tmp_path / "o.sqlite", clock=ManualClock())
    try:
        with pytest.raises(ValueError) as info:
            box.add_identities([ident(1), ident(**{"track_id": 2, **kw})])
        assert str(info.value).startswith("identity 1 (track ") and needle in str(info.value)
        assert box.identity_pending_count() == 0 and not box.uncommitted
    finally:
        box.close()


def test_own_stream_kept_across_restart_and_committed_with_the_records(tmp_path):
    path = tmp_path / "o.sqlite"
    box = Outbox(path, clock=ManualClock())
    box.add_tracks(icd.empty_track_records(3))
    assert box.add_identities([ident(1), ident(2)]) == (1, 2)
    assert box.pending_identities() == []  # not committed: never sent
    box.commit()
    sid, rid = box.identity_stream_id, box.stream_id
    assert sid not in (0, rid) and box.next_seq == 4  # identities took no records seq
    got = box.pending_identities()
    assert [(s, m) for s, _, m in got] == [(1, 4), (2, 4)]  # records 1..3 came before them
    assert icd.decode_identities(icd.decode(icd.encode_identities(sid, np.frombuffer(
        b"".join(p for _, p, _ in got), dtype=icd.IDENTITY_RECORD_DTYPE))))["track_id"].tolist() == [1, 2]
    box.add_identities([ident(3)])  # uncommitted at the close: committed by close()
    box.close()
    box = Outbox(path, clock=ManualClock())
    try:
        assert box.identity_stream_id == sid and box.stream_id == rid
        assert box.add_identities([ident(4)]) == (4, 4)
        assert box.identity_pending_count() == 4
    finally:
        box.close()


def test_rows_deleted_only_when_every_central_is_done_and_centrals_change(tmp_path):
    box = Outbox(tmp_path / "o.sqlite", clock=ManualClock(), centrals=["hq", "partner"])
    try:
        box.add_identities([ident(i) for i in range(1, 6)])
        box.commit()
        assert box.ack_identities(1, 3, "hq") == 3
        assert box.identity_pending_count() == 5
        assert [s for s, _, _ in box.pending_identities(central="hq")] == [4, 5]
        assert box.ack_identities(1, 2, "partner") == 2  # withheld (a v1 central) or acknowledged
        box.commit()
        assert box.identity_pending_count() == 3
        box.set_centrals(["hq", "third"])  # partner gone; third gets everything held
        assert [s for s, _, _ in box.pending_identities(central="third")] == [3, 4, 5]
        assert [s for s, _, _ in box.pending_identities(central="hq")] == [4, 5]
        box.ack_identities(1, 5, "third")
        box.ack_identities(4, 5, "hq")
        box.commit()
        assert box.identity_pending_count() == 0
    finally:
        box.close()


def test_cap_drops_the_oldest_identities_and_says_so_on_the_records_stream(tmp_path):
    box = Outbox(tmp_path / "o.sqlite", clock=ManualClock(), max_records=2000)  # identity cap: 1000
    try:
        for _ in range(11):
            box.add_identities([ident(i) for i in range(100)])
        box.commit()
        assert box.identity_pending_count() == 1100 - 110  # down to 99 % of the cap, in one go
        assert box.identity_health()["dropped"] == 110
        events = [json.loads(p) for _, kind, p in box.pending(limit=10) if kind == "E"]
        (ev,) = [e for e in events if e["code"] == EVENT_IDENTITY_DROPPED]
        assert (ev["first_seq"], ev["last_seq"], ev["count"]) == (1, 110, 110)
        assert ev["stream_id"] == f"{box.identity_stream_id:016x}" and ev["severity"] == "error"
        assert box.pending_identities(limit=1)[0][0] == 111
    finally:
        box.close()


_FULL_DISK_SCRIPT = r"""
import json, resource, signal, sys
from towerd.clock import SystemClock
from towerd.errors import OutboxError
from towerd.icd import empty_track_records
from towerd.outbox.sqlite import Outbox
from towerd.reports.identity import IdentityStatus, TrackIdentity

def ident(i):
    return TrackIdentity(track_id=i, time_us=1, status=IdentityStatus.COOPERATIVE, uas_id="A" * 20)

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a write beyond the limit fails (EFBIG/short)
box = Outbox(sys.argv[1], clock=SystemClock(), synchronous="full")
rec = empty_track_records(200)
rec["time_us"] = 1
for _ in range(3):
    box.add_tracks(rec)
    box.add_identities([ident(i) for i in range(100)])
    box.commit()
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (0, hard))   # "the disk is full" for this process
errors = []
try:
    box.add_tracks(rec)
    box.add_identities([ident(i) for i in range(100)])
    box.commit()
except OutboxError as exc:
    errors.append(str(exc))
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))   # space again
first, last = box.add_identities([ident(1)])
box.commit()
box.close()
print(json.dumps({"errors": errors, "after": [first, last]}))
"""


def test_a_full_disk_rolls_identities_back_with_the_records_and_announces_them(tmp_path):
    """A real write failure (the process's file size limit, as a full disk): identities
    created since the last commit are lost with the records, counted in the
    ``outbox.write_failed`` event; their seqs are given again (they were never sent)."""
    import subprocess
    import sys

    path = tmp_path / "o.sqlite"
    res = subprocess.run([sys.executable, "-c", _FULL_DISK_SCRIPT, str(path)], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert len(out["errors"]) == 1 and out["after"] == [301, 301]
    box = Outbox(path, clock=ManualClock())
    try:
        assert [s for s, _, _ in box.pending_identities(limit=1000)] == list(range(1, 302))
        (ev,) = [json.loads(p) for _, kind, p in box.pending(limit=10_000) if kind == "E"]
        assert ev["code"] == "outbox.write_failed" and ev["lost"] == 200 + 100
    finally:
        box.close()


def test_normal_mode_sends_only_synced_identities(tmp_path):
    """synchronous=normal: as for the records, only identities the outbox has fsynced are
    handed out (a power cut must never take back an identity seq a central has seen)."""
    clock = ManualClock()
    box = Outbox(tmp_path / "o.sqlite", clock=clock, synchronous="normal")
    try:
        box.add_identities([ident(1), ident(2)])
        box.commit()
        assert box.pending_identities() == [] and box.identity_sendable_next_seq == 1
        clock.advance(1.0)
        assert [s for s, _, _ in box.pending_identities()] == [1, 2]
    finally:
        box.close()
