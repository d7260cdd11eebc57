"""Identity (ICD v1.1) end to end with real parts: a real outbox (SQLite file) and real
uplinks (ZeroMQ DEALER, CURVE, loopback) in this process, real `towerd central`
processes (one of them told to be an ICD v1 central with --icd-v1), the real
`towerd central export`, and the PostgreSQL store on a real cluster.

Shows: identities round-trip tower -> central store -> export; a v1 central keeps
receiving every track (no stall, no gap) while identities are withheld from it, logged
once and shown as its capability (stats, HEALTH, `towerd status` text) and the rows are
still deleted once every central is done; the partner rule strips the serial number
and the pilot position, and a partner that gets uas tracks only gets no identity of a
track it does not see."""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq
import zmq.auth

from processes import Child, free_tcp_port, wait_listening
from towerd import icd, keys
from towerd.central.pgstore import PgCentralStore
from towerd.central.server import CentralServer
from towerd.central.store import CentralStore
from towerd.clock import SystemClock
from towerd.drivers.measurements import RidSource
from towerd.outbox.sqlite import Outbox
from towerd.reports.identity import IdentityStatus, TrackIdentity
from towerd.status import render
from towerd.uplink.client import CentralSettings, UplinkClient
from towerd.uplink.sharing import IdentitySharing, SharingRule

TOWER = "tx-rid-01"
CLOCK = SystemClock()
TRACK_LATENCY_BOUND_S = 2.0
"""Creation -> stored at the v1 central, for every track record (no stall)."""


@pytest.fixture
def k(tmp_path) -> dict:
    central = keys.generate_keypair(tmp_path / "keys", "central")
    tower = keys.generate_keypair(tmp_path / "keys", "tower")
    keys.allow_tower(TOWER, tower.public_file, tmp_path / "allow")
    return {"central": central, "tower": tower, "allow": tmp_path / "allow"}


def start_central(exe: str, tmp_path: Path, name: str, k: dict, *extra: str) -> Child:
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    db = tmp_path / f"{name}.sqlite"
    child = Child([exe, "central", "--bind", endpoint, "--db", str(db), "--secret-key",
                   str(k["central"].secret_file), "--allow-dir", str(k["allow"]), *extra],
                  tmp_path / f"{name}.log")
    child.endpoint, child.db = endpoint, db
    wait_listening(endpoint, child)
    return child


def settings(name: str, endpoint: str, k: dict, **kw) -> CentralSettings:
    return CentralSettings(name, endpoint, server_public_key_file=str(k["central"].public_file),
                           client_secret_key_file=str(k["tower"].secret_file), ack_timeout_s=0.5,
                           heartbeat_ivl_s=0.2, heartbeat_timeout_s=0.6, reconnect_ivl_s=0.05,
                           reconnect_ivl_max_s=0.2, batch_records=20, **kw)


def cooperative(track_id: int, i: int = 0) -> TrackIdentity:
    now = CLOCK.utc_us()
    return TrackIdentity(track_id=track_id, time_us=now, status=IdentityStatus.COOPERATIVE,
                         source=RidSource.BLUETOOTH_LONG_RANGE, uas_id=f"1581F5FKD2294{i:07d}", id_type=1, ua_type=2,
                         operator_lat_deg=27.5012345, operator_lon_deg=-99.5012345, operator_alt_m=140.5,
                         operator_id="USA-OP-0042", self_id="survey flight", last_heard_us=now - 150_000,
                         rssi_dbm=-71.5)


def silent(track_id: int) -> TrackIdentity:
    return TrackIdentity(track_id=track_id, time_us=CLOCK.utc_us(), status=IdentityStatus.NON_COOPERATIVE)


def tracks(n: int) -> np.ndarray:
    rec = icd.empty_track_records(n)
    rec["time_us"] = CLOCK.utc_us()
    rec["track_id"] = 1 + np.arange(n)
    rec["status"] = icd.Status.CONFIRMED
    rec["category"] = icd.Category.UAS
    rec["sources"] = icd.SOURCE_RADAR | icd.SOURCE_REMOTE_ID
    rec["lat_e7"] = 275_000_000 + np.arange(n)
    rec["lon_e7"] = -995_000_000
    return rec


def pump(uplinks: list[UplinkClient], box: Outbox, until, timeout_s: float, what: str) -> None:
    """Drive the tower's loop (commit, poll every uplink) until ``until()`` holds."""
    deadline = time.monotonic() + timeout_s
    while not until():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {[u.stats for u in uplinks]}")
        box.commit()
        for u in uplinks:
            u.poll(10)


def rows(db: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def export_lines(exe: str, db: Path) -> list[dict]:
    out = subprocess.run([exe, "central", "export", "--db", str(db)], capture_output=True, text=True, timeout=30,
                         check=True)
    return [json.loads(line) for line in out.stdout.splitlines()]


def hostile_identities_are_refused_one_by_one(endpoint: str, k: dict) -> None:
    """Malformed IDENTITY frames from the allowed tower key: each answered with ERROR
    ``malformed.<reason>``, nothing stored; a valid one after them is acknowledged."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    try:
        public, secret = zmq.auth.load_certificate(str(k["tower"].secret_file))
        server_public, _ = zmq.auth.load_certificate(str(k["central"].public_file))
        sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = public, secret, server_public
        sock.setsockopt(zmq.ROUTING_ID, TOWER.encode())
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        stream = 0xABCDEF0123456789
        good = icd.empty_identity_records(1)
        good["seq"], good["status"], good["uas_id"] = 1, 1, b"GOOD"
        cases = []
        for field, value, reason in (("status", 9, "range"), ("uas_id", b"A\x00B", "encoding"),
                                     ("self_id", b"\xff" * 23, "encoding"), ("id_type", 99, "range"),
                                     ("operator_lat_e7", 2_000_000_000, "range")):
            bad = good.copy()
            bad[field] = value
            cases.append((icd._header(icd.MsgType.IDENTITY, stream, 1, 0) + bad.tobytes(), reason))
        cases.append((icd._header(icd.MsgType.IDENTITY, stream, 2, 0) + good.tobytes(), "size"))
        two = icd.empty_identity_records(2)
        two["seq"], two["status"] = [1, 3], 1
        cases.append((icd._header(icd.MsgType.IDENTITY, stream, 2, 0) + two.tobytes(), "seq"))
        for frame, reason in cases:
            sock.send(frame)
            assert sock.poll(10_000), f"no answer to a frame refused for {reason}"
            reply = icd.decode(sock.recv())
            assert reply.type == icd.MsgType.ERROR and reply.stream_id == stream
            assert icd.decode_error(reply)[0] == "malformed." + reason
        sock.send(icd.encode_identities(stream, good))
        assert sock.poll(10_000)
        reply = icd.decode(sock.recv())
        assert reply.type == icd.MsgType.ACK and icd.decode_ack(reply) == (1, 1)
    finally:
        sock.close(0)
        ctx.term()


def test_identity_round_trips_tower_to_central_store_and_export(towerd_exe, tmp_path, k):
    central = start_central(towerd_exe, tmp_path, "hq", k)
    box = Outbox(tmp_path / "outbox.sqlite", clock=CLOCK, centrals=["hq"])
    uplink = UplinkClient(TOWER, settings("hq", central.endpoint, k), box, clock=CLOCK, health=box.health)
    try:
        box.add_tracks(tracks(2))
        first, last = box.add_identities([cooperative(1), silent(2)])
        assert (first, last) == (1, 2)
        pump([uplink], box, lambda: box.identity_pending_count() == 0 and box.pending_count() == 0, 15,
             "identities and tracks acknowledged")
        assert uplink.identity_capability == "supported" and uplink.stats["identity_acked_records"] == 2
        streams = (f"{box.stream_id:016x}", f"{box.identity_stream_id:016x}")
        uplink.close()
        hostile_identities_are_refused_one_by_one(central.endpoint, k)
        assert central.proc.poll() is None
    finally:
        uplink.close()
        box.close()
        central.stop()
    ids = [x for x in export_lines(towerd_exe, central.db) if x["kind"] == "identity"]
    hostile = [x for x in ids if x["stream_id"] == "abcdef0123456789"]
    assert [(x["seq"], x["uas_id"]) for x in hostile] == [(1, "GOOD")]  # of the refused frames, nothing stored
    ids = [x for x in ids if x["stream_id"] == streams[1]]
    assert [x["seq"] for x in ids] == [1, 2]
    coop, quiet = ids
    assert coop["tower_id"] == TOWER and coop["stream_id"] == streams[1] != streams[0]
    assert coop["track_id"] == 1 and coop["status"] == IdentityStatus.COOPERATIVE
    assert coop["uas_id"] == "1581F5FKD22940000000" and coop["id_type"] == 1 and coop["ua_type"] == 2
    assert coop["operator_lat_e7"] == 275_012_345 and coop["operator_lon_e7"] == -995_012_345
    assert coop["operator_alt_m"] == 140.5 and coop["rssi_dbm"] == -71.5
    assert coop["operator_id"] == "USA-OP-0042" and coop["self_id"] == "survey flight"
    assert coop["source"] == RidSource.BLUETOOTH_LONG_RANGE and coop["withheld"] == 0
    assert coop["replay"] is True  # added before the link was up: backlog, as records are
    assert quiet["status"] == IdentityStatus.NON_COOPERATIVE and quiet["uas_id"] == "" and quiet["last_heard_us"] == 0
    assert quiet["operator_lat_e7"] == icd.LAT_LON_UNKNOWN and quiet["rssi_dbm"] is None


def test_v1_central_keeps_every_track_while_identity_is_withheld_and_partner_gets_it_stripped(
        towerd_exe, tmp_path, k, caplog):
    old = start_central(towerd_exe, tmp_path, "old", k, "--icd-v1")
    partner = start_central(towerd_exe, tmp_path, "partner", k)
    box = Outbox(tmp_path / "outbox.sqlite", clock=CLOCK, centrals=["old", "partner"])
    strip = SharingRule(categories=("uas",), identity=IdentitySharing(uas_id=False, operator_position=False))
    uplinks = [UplinkClient(TOWER, settings("old", old.endpoint, k), box, clock=CLOCK, health=box.health),
               UplinkClient(TOWER, settings("partner", partner.endpoint, k, share=strip), box, clock=CLOCK,
                            health=box.health)]
    caplog.set_level(logging.INFO, logger="towerd.uplink")
    n_cycles, per_cycle = 40, 5
    try:
        for cycle in range(n_cycles):  # a tower's loop: tracks and identities every cycle
            box.add_tracks(tracks(per_cycle))
            box.add_identities([cooperative(1, cycle), silent(2)])
            if cycle == 10:  # a bird track the partner may not see, and an identity for it
                bird = tracks(1)
                bird["track_id"], bird["category"] = 99, icd.Category.BIRD
                box.add_tracks(bird)
                box.add_identities([cooperative(99, 99)])  # identity seq 23
            box.commit()
            deadline = time.monotonic() + 0.02
            while time.monotonic() < deadline:
                for u in uplinks:
                    u.poll(5)
        pump(uplinks, box, lambda: box.pending_count() == 0 and box.identity_pending_count() == 0, 15,
             "every central done with every row")
        old_stats, partner_stats = uplinks[0].stats, uplinks[1].stats
        health_old = json.loads(json.dumps(uplinks[0]._identity.health()))
    finally:
        for u in uplinks:
            u.close()
        box.close()
        old.stop()
        partner.stop()
    n_tracks, n_ids = n_cycles * per_cycle + 1, 2 * n_cycles + 1
    # The v1 central: every track, seq 1..n without a gap, none late; no identity stored.
    got = rows(old.db, "SELECT seq, received_us - time_us FROM tracks ORDER BY seq")
    assert [s for s, _ in got] == list(range(1, n_tracks + 1))
    assert max(lat for _, lat in got) < TRACK_LATENCY_BOUND_S * 1e6
    assert rows(old.db, "SELECT count(*) FROM identities") == [(0,)]
    assert "malformed.type" in old.log() or "unknown type 0x04" in old.log()
    store = CentralStore(old.db, read_only=True)
    try:
        (stream,) = store.streams()
    finally:
        store.close()
    assert stream.missing == () and stream.unexplained == () and stream.records == n_tracks
    # Its capability, as the tower shows it; logged once however many identities followed.
    assert old_stats["identity"] == "unsupported" and health_old["capability"] == "unsupported"
    assert old_stats["identity_withheld_records"] == n_ids
    warnings = [r for r in caplog.records if "does not take identities" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    text, problems = render({"centrals": {"old": {**old_stats, "link_up": True, "endpoint": old.endpoint}}})
    assert "WITHHELD: this central speaks ICD v1 only" in text and not problems
    # The partner: every identity of a track it may see (not the bird's), serial number and
    # pilot position stripped, flagged.
    assert partner_stats["identity"] == "supported" and partner_stats["identity_withheld_records"] == 1
    got = rows(partner.db, "SELECT seq, status, uas_id, id_type, operator_lat_e7, operator_lon_e7, operator_alt_m, "
                           "operator_id, withheld FROM identities ORDER BY seq")
    assert [g[0] for g in got] == [s for s in range(1, n_ids + 1) if s != 23]
    coop = [g for g in got if g[1] == IdentityStatus.COOPERATIVE]
    assert len(coop) == n_cycles
    assert all(g[2:8] == ("", 0, icd.LAT_LON_UNKNOWN, icd.LAT_LON_UNKNOWN, None, "USA-OP-0042") for g in coop)
    assert all(g[8] == icd.IdentityWithheld.UAS_ID | icd.IdentityWithheld.OPERATOR_POSITION for g in got)
    assert rows(partner.db, "SELECT count(*) FROM tracks") == [(n_tracks - 1,)]
    assert rows(partner.db, "SELECT count(*) FROM tracks WHERE track_id = 99") == [(0,)]


def test_identity_reaches_the_postgresql_store_through_the_server(pg_url, tmp_path, k):
    server = CentralServer("tcp://127.0.0.1:*", "", server_secret_key_file=k["central"].secret_file,
                           allow_dir=k["allow"], store=PgCentralStore(pg_url, retention_days=2))
    stop = threading.Event()
    thread = threading.Thread(target=server.serve_forever, args=(stop,), name="central")
    thread.start()
    box = Outbox(tmp_path / "outbox.sqlite", clock=CLOCK)
    uplink = UplinkClient(TOWER, settings("hq", server.bound_endpoint, k), box, clock=CLOCK)
    try:
        box.add_tracks(tracks(3))
        box.add_identities([cooperative(1), silent(2), cooperative(3, 7)])
        pump([uplink], box, lambda: box.identity_pending_count() == 0 and box.pending_count() == 0, 15,
             "acknowledged")
    finally:
        uplink.close()
        box.close()
        stop.set()
        thread.join(10)
        stats = server.stats
        server.close()
    assert stats["stored_identities"] == 3 and stats["stored_tracks"] == 3
    reader = PgCentralStore(pg_url, read_only=True)
    try:
        ids = reader.identities()
        lines = [x for x in reader.export() if x["kind"] == "identity"]
    finally:
        reader.close()
    assert [(d["seq"], d["track_id"], d["uas_id"]) for d in ids] == [
        (1, 1, "1581F5FKD22940000000"), (2, 2, ""), (3, 3, "1581F5FKD22940000007")]
    assert [x["seq"] for x in lines] == [1, 2, 3] and lines[0]["operator_id"] == "USA-OP-0042"
