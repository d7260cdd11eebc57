"""Reference central: store de-duplication, the whole report path outbox -> uplink ->
central over real sockets, outages, hostile input, ACK-after-commit, and the CLI."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from towerd import icd, keys
from towerd.central.server import CentralServer, main
from towerd.central.store import TRACK_FIELDS, CentralStore, subtract_ranges
from towerd.clock import ManualClock, SystemClock
from towerd.errors import EX_CONFIG, ConfigError, OutboxError, UplinkError
from towerd.outbox.sqlite import Outbox
from towerd.uplink.client import CentralSettings, UplinkClient

TOWER = "tx-lrd-014"
STREAM = 0xC0FFEE0000000001


def wait_for(cond: Callable[[], bool], step: Callable[[], None], timeout_s: float = 5.0, what: str = "") -> None:
    """Run ``step`` until ``cond`` holds; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        step()


def free_endpoint() -> str:
    """A TCP port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def tracks(n: int, first_seq: int = 0) -> np.ndarray:
    """Records with distinct values in every field; seq set only if first_seq > 0."""
    rec = icd.empty_track_records(n)
    i = np.arange(n)
    if first_seq:
        rec["seq"] = first_seq + i
    rec["time_us"] = 1_700_000_000_000_000 + 100_000 * i
    rec["track_id"] = 7 + i // 10
    rec["status"] = icd.Status.CONFIRMED
    rec["category"] = icd.Category.UAS
    rec["confidence"] = 80
    rec["threat"] = icd.Threat.MEDIUM
    rec["sources"] = icd.SOURCE_RADAR
    rec["hits"] = i + 1
    rec["lat_e7"] = 294_000_000 + i
    rec["lon_e7"] = -985_000_000 - i
    rec["alt_m"] = 180.5 + i
    rec["range_m"] = 1200.25 + i
    rec["azimuth_deg"] = (10.5 + i) % 360
    rec["vel_east_mps"] = -3.5
    rec["rf_freq_mhz"][::2] = 2437.0  # every other record has RF, the rest NaN
    return rec


def assert_stored_equal(rows: list[dict], sent: np.ndarray) -> None:
    """Stored rows hold exactly the sent records, field by field (NaN == NaN)."""
    assert [r["seq"] for r in rows] == [int(s) for s in sent["seq"]]
    for name in TRACK_FIELDS:
        got = np.array([r[name] for r in rows], dtype=sent.dtype.fields[name][0])
        if got.dtype.kind == "f":
            np.testing.assert_allclose(got, sent[name], equal_nan=True)
        else:
            np.testing.assert_array_equal(got, sent[name])


def settings(endpoint: str, **kw) -> CentralSettings:
    base = dict(plain=True, reconnect_ivl_s=0.05, reconnect_ivl_max_s=0.2)
    base.update(kw)
    return CentralSettings("lab", endpoint, **base)


class Dealer:
    """A raw DEALER for hand-made (and hostile) messages."""

    def __init__(self, ctx: zmq.Context, endpoint: str, routing_id: bytes | None = TOWER.encode()):
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        if routing_id is not None:
            self.sock.routing_id = routing_id
        self.sock.connect(endpoint)

    def replies(self, timeout_ms: int) -> list[icd.Message]:
        out = []
        while self.sock.poll(timeout_ms if not out else 0):
            out.append(icd.decode(self.sock.recv()))
        return out

    def close(self) -> None:
        self.sock.close(0)


@pytest.fixture
def ctx():
    context = zmq.Context()
    yield context
    context.term()


@pytest.fixture
def central(tmp_path):
    made: list[CentralServer] = []

    def make(bind: str = "tcp://127.0.0.1:*", **kw) -> CentralServer:
        kw.setdefault("plain", True)
        deadline = time.monotonic() + 5.0
        while True:
            try:
                srv = CentralServer(bind, tmp_path / "central.sqlite", **kw)
                break
            except UplinkError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)  # port of the previous server still closing; retried with a deadline
        made.append(srv)
        return srv

    yield make
    for srv in made:
        srv.close()


@pytest.fixture
def outbox(tmp_path):
    box = Outbox(tmp_path / "outbox.sqlite", clock=SystemClock())
    yield box
    box.close()


# ------------------------------------------------------------------------------ store


def test_store_deduplicates_by_key_and_keeps_every_field(tmp_path):
    clock = ManualClock()
    store = CentralStore(tmp_path / "c.sqlite", clock=clock)
    try:
        rec = tracks(6, first_seq=1)
        assert store.store_tracks(TOWER, STREAM, rec[:4], replay=False) == 4
        assert store.store_tracks(TOWER, STREAM, rec[2:], replay=True) == 2      # 3, 4 are duplicates
        assert store.store_tracks("tx-other", STREAM, rec[:2], replay=False) == 2  # same seq, other tower
        assert store.store_tracks(TOWER, STREAM + 1, rec[:1], replay=False) == 1   # other stream
        assert store.count_tracks() == 9
        rows = store.tracks(TOWER)
        mine = [r for r in rows if r["stream_id"] == STREAM]
        assert_stored_equal(mine, rec)
        assert [r["replay"] for r in mine] == [False] * 4 + [True] * 2
        assert all(r["received_us"] == clock.utc_us() and r["tower_id"] == TOWER for r in rows)
        assert math.isnan(mine[1]["rf_freq_mhz"]) and mine[0]["lat_e7"] == 294_000_000
        with pytest.raises(ValueError):
            bad = tracks(1, first_seq=1)
            bad["seq"] = 2**63
            store.store_tracks(TOWER, STREAM, bad, replay=False)

        events = [{"seq": 7, "time_us": 5, "code": "sensor.down", "severity": "error", "message": "radar-1",
                   "sensor": "radar-1"}]
        assert store.store_events(TOWER, STREAM, events, replay=False) == 1
        assert store.store_events(TOWER, STREAM, events, replay=False) == 0
        (ev,) = store.events()
        assert (ev["seq"], ev["code"], ev["severity"], ev["stream_id"]) == (7, "sensor.down", "error", STREAM)
        assert json.loads(ev["json"]) == events[0]
    finally:
        store.close()
        store.close()
    with sqlite3.connect(str(tmp_path / "c.sqlite")) as conn:  # committed, visible to another reader
        assert conn.execute("SELECT count(*) FROM tracks").fetchone()[0] == 9
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# ------------------------------------------------------------------------------ end to end


def _drive(client: UplinkClient, srv: CentralServer | None) -> Callable[[], None]:
    def step() -> None:
        client.poll(2)
        if srv is not None:
            srv.poll_once(2)
    return step


def test_outbox_to_central_end_to_end(central, outbox):
    srv = central()
    sent = []
    for k in range(5):
        first, last = outbox.add_tracks(tracks(50))
        sent.append((first, last))
        outbox.add_event("sensor.up", "info", f"batch {k}", batch=k)
    outbox.commit()
    health = {"tower_id": TOWER, "software_version": "0.1", "outbox": {"pending": outbox.pending_count()}}
    client = UplinkClient(TOWER, settings(srv.bound_endpoint), outbox, clock=SystemClock(), health=lambda: health)
    try:
        wait_for(lambda: outbox.pending_count() == 0, _drive(client, srv), what="outbox drained")
        wait_for(lambda: TOWER in srv.health, _drive(client, srv), what="health")
    finally:
        client.close()
    assert outbox.pending() == [] and outbox.oldest_seq() is None
    store = srv.store
    assert store.count_tracks() == 250 and store.count_events() == 5
    rows = store.tracks(TOWER)
    assert {r["stream_id"] for r in rows} == {outbox.stream_id}
    expected = np.concatenate([tracks(50, first_seq=f) for f, _ in sent])
    assert_stored_equal(rows, expected)
    events = store.events(TOWER)
    assert [e["seq"] for e in events] == [last + 1 for _, last in sent]
    assert [json.loads(e["json"])["batch"] for e in events] == [0, 1, 2, 3, 4]
    assert srv.health[TOWER] == {**health, "identity": {  # plus this central's identity capability (v1.1)
        "capability": "unknown", "stream_id": f"{outbox.identity_stream_id:016x}"}}
    assert srv.stats["duplicates"] == 0 and srv.stats["malformed"] == 0
    assert client.stats["acked_records"] == 255


def test_central_started_after_the_tower_queued_records(central, outbox):
    endpoint = free_endpoint()
    outbox.add_tracks(tracks(120))
    outbox.add_event("daemon.started", "info", "towerd started")
    outbox.commit()
    client = UplinkClient(TOWER, settings(endpoint), outbox, clock=SystemClock())
    try:
        for _ in range(10):
            client.poll(5)
        assert not client.link_up and client.stats["sent_msgs"] == 0
        srv = central(endpoint)
        wait_for(lambda: outbox.pending_count() == 0, _drive(client, srv), what="drain after central start")
    finally:
        client.close()
    assert srv.store.count_tracks() == 120 and srv.store.count_events() == 1


def test_central_restarted_on_the_same_port_gets_everything_exactly_once(central, outbox):
    srv = central()
    endpoint = srv.bound_endpoint
    client = UplinkClient(TOWER, settings(endpoint, batch_records=20), outbox, clock=SystemClock())
    total = 0
    try:
        for _ in range(10):  # records trickle in while the central runs
            outbox.add_tracks(tracks(30))
            outbox.commit()
            total += 30
            _drive(client, srv)()
        wait_for(lambda: outbox.pending_count() == 0, _drive(client, srv), what="first drain")
        # Fault injection: the central commits the next two messages and dies before its
        # ACKs leave. The tower must send them again; the new central must ignore them.
        srv._ack = lambda *args, **kwargs: None
        outbox.add_tracks(tracks(30))
        outbox.commit()
        total += 30
        wait_for(lambda: srv.store.count_tracks() == total, _drive(client, srv), what="stored, not acked")
        assert client.stats["in_flight"] == 2
        srv.close()
        wait_for(lambda: not client.link_up, lambda: client.poll(10), what="link down")
        for _ in range(5):  # the outage: the tower keeps queueing
            outbox.add_tracks(tracks(30))
            outbox.add_event("sensor.down", "warning", "central unreachable")
            outbox.commit()
            total += 31
            client.poll(5)
        srv2 = central(endpoint)
        wait_for(lambda: outbox.pending_count() == 0, _drive(client, srv2), timeout_s=8, what="drain after restart")
    finally:
        client.close()
    with sqlite3.connect(str(srv2.store._path)) as conn:
        seqs = [r[0] for r in conn.execute("SELECT seq FROM tracks UNION ALL SELECT seq FROM events ORDER BY 1")]
    assert seqs == list(range(1, total + 1))  # every record exactly once, none missing
    assert client.stats["flow_restarts"] == 2  # the in-flight two went again, as backlog
    assert srv2.stats["duplicates"] == 30 and srv2.stats["stored_tracks"] + srv2.stats["stored_events"] == 155
    with sqlite3.connect(str(srv2.store._path)) as conn:  # held during the outage: all flagged REPLAY
        flags = {r[0] for r in conn.execute("SELECT replay FROM tracks WHERE seq > ?", (total - 155,))}
    assert flags == {1}


def test_same_message_twice_is_stored_once_and_acked_twice(ctx, central):
    srv = central()
    dealer = Dealer(ctx, srv.bound_endpoint)
    try:
        frame = icd.encode_tracks(STREAM, tracks(5, first_seq=11))
        dealer.sock.send(frame)
        dealer.sock.send(frame)
        replies: list[icd.Message] = []
        wait_for(lambda: len(replies) == 2, lambda: (srv.poll_once(5), replies.extend(dealer.replies(5))))
    finally:
        dealer.close()
    assert [icd.decode_ack(m) for m in replies] == [(11, 15), (11, 15)]
    assert all(m.stream_id == STREAM for m in replies)
    assert srv.store.count_tracks() == 5 and srv.stats["duplicates"] == 5 and srv.stats["acks_sent"] == 2


def test_health_gets_health_ack_and_the_last_one_is_kept(ctx, central):
    srv = central()
    dealer = Dealer(ctx, srv.bound_endpoint)
    try:
        dealer.sock.send(icd.encode_health(STREAM, {"uptime_s": 1}))
        dealer.sock.send(icd.encode_health(STREAM, {"uptime_s": 2}))
        replies: list[icd.Message] = []
        wait_for(lambda: len(replies) == 2, lambda: (srv.poll_once(5), replies.extend(dealer.replies(5))))
    finally:
        dealer.close()
    assert [(m.type, m.stream_id) for m in replies] == [(icd.MsgType.HEALTH_ACK, STREAM)] * 2
    assert srv.health == {TOWER: {"uptime_s": 2}}
    assert srv.store.count_tracks() == 0


# ------------------------------------------------------------------------------ hostile input


def test_hostile_frames_are_counted_and_do_not_stop_the_central(ctx, central, caplog):
    clock = ManualClock()
    srv = central(clock=clock)
    rng = np.random.default_rng(7)
    evil = Dealer(ctx, srv.bound_endpoint, b"evil-1")
    anonymous = Dealer(ctx, srv.bound_endpoint, routing_id=None)  # libzmq's random id: not a tower id
    good = Dealer(ctx, srv.bound_endpoint)
    one = tracks(1, first_seq=1).tobytes()
    try:
        hostile = [
            b"",                                                                      # short
            b"TW\x01",                                                                # short
            b"XX" + bytes(14),                                                        # magic
            struct_header(0x01, count=2) + one,                                       # size (count 2, 1 record)
            struct_header(0x01, count=1, flags=0x0004) + one,                         # flags
            struct_header(0x02, count=2) + b'[{"seq":1}]',                            # count
            struct_header(0x81) + bytes(16),                                          # ack_range (and direction)
            rng.bytes(200),                                                           # magic (random)
        ]
        for frame in hostile:
            evil.sock.send(frame)
        evil.sock.send_multipart([b"TW", b"two frames"])                              # frames
        anonymous.sock.send(icd.encode_tracks(STREAM, tracks(1, first_seq=1)))        # routing_id
        with caplog.at_level(logging.WARNING, logger="towerd.central.server"):
            for _ in range(20):
                evil.sock.send(b"short")                                              # short x20
            wait_for(lambda: srv.stats["received"] == 30, lambda: srv.poll_once(5), what="all hostile frames")
        good.sock.send(icd.encode_tracks(STREAM, tracks(3, first_seq=1)))
        replies: list[icd.Message] = []
        wait_for(lambda: replies, lambda: (srv.poll_once(5), replies.extend(good.replies(5))))
    finally:
        evil.close()
        anonymous.close()
        good.close()
    assert icd.decode_ack(replies[0]) == (1, 3)
    stats = srv.stats
    assert stats["malformed"] == 30
    assert stats["malformed_by_reason"] == {"short": 22, "magic": 2, "size": 1, "flags": 1, "count": 1,
                                            "ack_range": 1, "frames": 1, "routing_id": 1}
    assert srv.store.count_tracks() == 3 and srv.store.tracks()[0]["tower_id"] == TOWER
    short_lines = [r for r in caplog.records if "short frame" in r.getMessage()]
    assert len(short_lines) == 1  # 22 of them within one second (ManualClock does not move): one line

    caplog.clear()
    clock.advance(1.0)
    evil2 = Dealer(ctx, srv.bound_endpoint, b"evil-2")
    try:
        with caplog.at_level(logging.WARNING, logger="towerd.central.server"):
            evil2.sock.send(b"x")
            wait_for(lambda: srv.stats["malformed"] == 31, lambda: srv.poll_once(5))
    finally:
        evil2.close()
    assert "(21 similar suppressed)" in caplog.text


def struct_header(mtype: int, count: int = 0, flags: int = 0, stream_id: int = STREAM) -> bytes:
    """A hand-made ICD header (the encoder refuses to make bad ones)."""
    return struct.pack("<2sBBQHH", b"TW", 1, mtype, stream_id, count, flags)


def test_ack_to_a_tower_that_is_gone_is_counted_not_fatal(ctx, central, monkeypatch):
    srv = central()
    # The monitor's EVENT_DISCONNECTED leaves libzmq's I/O thread before the session even
    # starts terminating the pipe, so the ROUTER could still route the ACK (the flake:
    # acks_sent 1, unroutable 0). The store is therefore gated until the ROUTER itself
    # refuses the tower's routing id (ROUTER_MANDATORY -> EHOSTUNREACH): its pipe has
    # left the active state, which is final (libzmq 4.3.5 router.cpp xsend, pipe.cpp
    # check_write), so the ACK that follows the store is unroutable too. The SQLite
    # central stores inside poll_once (no writer thread): the gate runs on the thread
    # that owns the socket.
    assert srv.store.batch_records == 0
    sock = srv._sock  # test-only peeks at the server's socket
    real_store_many = CentralStore.store_many
    gated: list[bool] = []

    def router_dropped_tower() -> bool:
        try:
            sock.send(b"tx-gone", zmq.SNDMORE | zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EHOSTUNREACH:
                return True
            raise
        sock.send(b"", zmq.NOBLOCK)  # completes the probe; nobody reads it
        return False

    def store_many_once_tower_dropped(self: CentralStore, items: list) -> list:
        if not gated:
            gated.append(True)
            # polling makes libzmq process the socket's commands (pipe_term) as they arrive
            wait_for(router_dropped_tower, lambda: sock.poll(10), what="the ROUTER to drop tx-gone")
        return real_store_many(self, items)

    monkeypatch.setattr(CentralStore, "store_many", store_many_once_tower_dropped)
    mon = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    try:
        gone = Dealer(ctx, srv.bound_endpoint, b"tx-gone")
        gone.sock.linger = 2000
        gone.sock.send(icd.encode_tracks(STREAM, tracks(2, first_seq=1)))
        gone.sock.close()  # flushes (linger), then the connection closes
        assert mon.poll(5000), "server never saw the tower disconnect"
        recv_monitor_message(mon)
        wait_for(lambda: srv.stats["received"] == 1, lambda: srv.poll_once(5))
    finally:
        sock.disable_monitor()
        mon.close(0)
    assert gated
    assert srv.stats["unroutable"] == 1 and srv.stats["acks_sent"] == 0
    assert srv.store.count_tracks() == 2  # stored; the tower will resend and be de-duplicated
    good = Dealer(ctx, srv.bound_endpoint)
    try:
        good.sock.send(icd.encode_tracks(STREAM, tracks(1, first_seq=3)))
        replies: list[icd.Message] = []
        wait_for(lambda: replies, lambda: (srv.poll_once(5), replies.extend(good.replies(5))))
    finally:
        good.close()
    assert icd.decode_ack(replies[0]) == (3, 3)


# ------------------------------------------------------------------------------ ACK after commit


def test_ack_is_sent_only_after_the_records_are_committed(ctx, central, monkeypatch, tmp_path):
    entered = threading.Event()
    release = threading.Event()
    real = CentralStore.store_tracks

    def gated(self, *args, **kwargs):
        entered.set()
        release.wait(5)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(CentralStore, "store_tracks", gated)
    srv = central()
    db = tmp_path / "central.sqlite"
    stop = threading.Event()
    thread = threading.Thread(target=srv.serve_forever, args=(stop,), name="central")
    dealer = Dealer(ctx, srv.bound_endpoint)
    thread.start()
    try:
        dealer.sock.send(icd.encode_tracks(STREAM, tracks(4, first_seq=21)))
        assert entered.wait(5)
        assert dealer.replies(200) == []  # while the store is held, no ACK may leave
        release.set()
        assert dealer.sock.poll(5000), "no ACK"
        ack = icd.decode(dealer.sock.recv())
        with sqlite3.connect(str(db)) as conn:  # a separate reader sees committed rows only
            stored = [r[0] for r in conn.execute("SELECT seq FROM tracks WHERE tower_id = ? ORDER BY seq", (TOWER,))]
        assert icd.decode_ack(ack) == (21, 24)
        assert stored == [21, 22, 23, 24]
    finally:
        release.set()
        stop.set()
        thread.join(5)
        dealer.close()
    assert not thread.is_alive()


def test_store_failure_is_not_acknowledged(ctx, central, monkeypatch):
    srv = central()

    def broken(self, *args, **kwargs):
        raise OutboxError("disk I/O error")

    monkeypatch.setattr(CentralStore, "store_tracks", broken)
    dealer = Dealer(ctx, srv.bound_endpoint)
    try:
        dealer.sock.send(icd.encode_tracks(STREAM, tracks(1, first_seq=1)))
        replies: list[icd.Message] = []
        wait_for(lambda: replies, lambda: (srv.poll_once(5), replies.extend(dealer.replies(5))))
    finally:
        dealer.close()
    assert [m.type for m in replies] == [icd.MsgType.ERROR]
    assert icd.decode_error(replies[0])[0] == "central.store_failed"
    assert srv.stats["store_errors"] == 1 and srv.stats["acks_sent"] == 0


class _GatedBatchingStore(CentralStore):
    """The SQLite store as a batching one (so the server commits on its store writer),
    with a gate that holds each commit and a switch that makes it raise."""

    batch_records = 100

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.entered, self.release, self.defect = threading.Event(), threading.Event(), False
        self.batches: list[int] = []

    def store_many(self, items):
        self.entered.set()
        assert self.release.wait(5)
        if self.defect:
            raise RuntimeError("a defect in the store")
        self.batches.append(len(items))
        return super().store_many(items)


def test_store_writer_keeps_receiving_during_a_commit_and_acks_after_it(ctx, central, tmp_path):
    store = _GatedBatchingStore(tmp_path / "writer.sqlite")
    srv = central(store=store)
    dealer = Dealer(ctx, srv.bound_endpoint)
    try:
        dealer.sock.send(icd.encode_tracks(STREAM, tracks(4, first_seq=1)))
        wait_for(store.entered.is_set, lambda: srv.poll_once(5), what="first commit started")
        for first in (5, 9):  # arrive while the first batch is being committed
            dealer.sock.send(icd.encode_tracks(STREAM, tracks(4, first_seq=first)))
        wait_for(lambda: srv.stats["received"] == 3, lambda: srv.poll_once(5), what="received during the commit")
        assert dealer.replies(50) == [] and srv.stats["acks_sent"] == 0  # nothing committed yet: no ACK
        store.release.set()
        acks: list[icd.Message] = []
        wait_for(lambda: len(acks) == 3, lambda: (srv.poll_once(5), acks.extend(dealer.replies(5))), what="ACKs")
        assert [icd.decode_ack(m) for m in acks] == [(1, 4), (5, 8), (9, 12)]
        assert store.batches == [1, 2]  # the two that waited went into one transaction (group commit)
        assert [r["seq"] for r in store.tracks()] == list(range(1, 13))
        store.defect, store.batches = True, []
        dealer.sock.send(icd.encode_tracks(STREAM, tracks(2, first_seq=13)))
        errors: list[icd.Message] = []
        wait_for(lambda: errors, lambda: (srv.poll_once(5), errors.extend(dealer.replies(5))), what="ERROR")
        assert [icd.decode_error(m)[0] for m in errors] == ["central.store_failed"]
        assert srv.stats["internal_errors"] == 1 and srv.stats["acks_sent"] == 3
    finally:
        store.release.set()
        dealer.close()


# ------------------------------------------------------------------------------ configuration and CLI


def test_curve_central_needs_its_key_and_allow_list(tmp_path):
    with pytest.raises(ConfigError, match="needs its secret key file and an allow-list"):
        CentralServer("tcp://127.0.0.1:*", tmp_path / "c.sqlite")
    pair = keys.generate_keypair(tmp_path / "k", "central")
    os.chmod(pair.secret_file, 0o644)
    with pytest.raises(ConfigError, match="mode 0644"):
        CentralServer("tcp://127.0.0.1:*", tmp_path / "c.sqlite", server_secret_key_file=pair.secret_file,
                      allow_dir=tmp_path)
    os.chmod(pair.secret_file, 0o600)
    with pytest.raises(ConfigError, match="allow-list directory .*missing"):
        CentralServer("tcp://127.0.0.1:*", tmp_path / "c.sqlite", server_secret_key_file=pair.secret_file,
                      allow_dir=tmp_path / "absent")


def test_bind_failure_is_an_uplink_error(central):
    srv = central()
    with pytest.raises(UplinkError, match="cannot bind"):
        CentralServer(srv.bound_endpoint, srv.store._path.with_name("other.sqlite"), plain=True)


def test_main_without_plain_or_keys_exits_78(tmp_path, caplog):
    with caplog.at_level(logging.ERROR):
        assert main(["--db", str(tmp_path / "c.sqlite")]) == EX_CONFIG
    assert "needs its secret key file and an allow-list directory" in caplog.text
    assert not (tmp_path / "c.sqlite").exists()


def test_main_serves_until_sigterm_and_exits_0(ctx, tmp_path):
    db = tmp_path / "central.sqlite"
    log_path = tmp_path / "central.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "towerd.central.server", "--bind", "tcp://127.0.0.1:*", "--db", str(db),
             "--plain", "--log-level", "INFO"],
            stdout=subprocess.DEVNULL, stderr=log_file, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    dealer = None
    try:
        found: list[str] = []

        def look() -> None:
            if proc.poll() is not None:
                raise AssertionError(f"central exited {proc.returncode}: {log_path.read_text()}")
            m = re.search(r"listening on (tcp://127\.0\.0\.1:\d+)", log_path.read_text())
            if m:
                found.append(m.group(1))
            else:
                time.sleep(0.02)

        wait_for(lambda: bool(found), look, timeout_s=15, what="central start")
        dealer = Dealer(ctx, found[0])
        dealer.sock.send(icd.encode_tracks(STREAM, tracks(3, first_seq=1)))
        assert dealer.sock.poll(5000), "no ACK from the central process"
        assert icd.decode_ack(icd.decode(dealer.sock.recv())) == (1, 3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if dealer is not None:
            dealer.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    text = log_path.read_text()
    assert "SIGTERM received" in text and "3 tracks and 0 events stored" in text
    with sqlite3.connect(str(db)) as conn:
        assert conn.execute("SELECT count(*) FROM tracks").fetchone()[0] == 3


# ------------------------------------------------------------------------------ CURVE, allow-list, identity


class CurveKeys:
    """Key pairs for a central and three towers; tx-a and tx-b are allowed, the
    stranger is not."""

    def __init__(self, root) -> None:
        self.central = keys.generate_keypair(root / "central", "central")
        self.a = keys.generate_keypair(root / "tx-a", "tower")
        self.b = keys.generate_keypair(root / "tx-b", "tower")
        self.stranger = keys.generate_keypair(root / "stranger", "tower")
        self.allow = root / "allow"
        keys.allow_tower("tx-a", self.a.public_file, self.allow)
        keys.allow_tower("tx-b", self.b.public_file, self.allow)

    def settings(self, endpoint: str, pair: keys.KeyPair, **kw) -> CentralSettings:
        base = dict(server_public_key_file=str(self.central.public_file), client_secret_key_file=str(pair.secret_file),
                    reconnect_ivl_s=0.05, reconnect_ivl_max_s=0.2, ack_timeout_s=0.5)
        base.update(kw)
        return CentralSettings("hq", endpoint, **base)


@pytest.fixture
def ck(tmp_path) -> CurveKeys:
    return CurveKeys(tmp_path / "keys")


def curve_dealer(ctx: zmq.Context, endpoint: str, routing_id: bytes, pair: keys.KeyPair,
                 server_public: bytes) -> Dealer:
    d = Dealer.__new__(Dealer)
    d.sock = ctx.socket(zmq.DEALER)
    d.sock.linger = 0
    d.sock.routing_id = routing_id
    public, secret = keys.load_secret_key_file(pair.secret_file)
    d.sock.curve_serverkey = server_public
    d.sock.curve_publickey = public
    d.sock.curve_secretkey = secret
    d.sock.connect(endpoint)
    return d


def curve_central(central, ck: CurveKeys, **kw) -> CentralServer:
    return central(plain=False, server_secret_key_file=ck.central.secret_file, allow_dir=ck.allow, **kw)


def stored_seqs(srv: CentralServer, tower: str) -> list[int]:
    return [r["seq"] for r in srv.store.tracks(tower)]


def test_curve_admits_allowed_towers_and_refuses_strangers_and_plain_clients(ctx, central, ck, tmp_path, caplog):
    srv = curve_central(central, ck)
    server_public = keys.load_public_key_file(ck.central.public_file)
    box = Outbox(tmp_path / "a.sqlite", clock=SystemClock())
    genuine = UplinkClient("tx-a", ck.settings(srv.bound_endpoint, ck.a), box, clock=SystemClock())
    stranger = curve_dealer(ctx, srv.bound_endpoint, b"tx-s", ck.stranger, server_public)
    plain = Dealer(ctx, srv.bound_endpoint, b"tx-p")
    hostile = curve_dealer(ctx, srv.bound_endpoint, b"tx-b", ck.b, server_public)  # allowed key, bad frames
    try:
        stranger.sock.send(icd.encode_tracks(STREAM, tracks(5, first_seq=1)))
        plain.sock.send(icd.encode_tracks(STREAM, tracks(5, first_seq=1)))
        for frame in (b"", b"XX" + bytes(14), struct_header(0x01, count=3) + bytes(80)):
            hostile.sock.send(frame)
        total = 0
        with caplog.at_level(logging.WARNING, logger="towerd.central.auth"):
            for _ in range(5):  # the genuine tower keeps reporting throughout
                box.add_tracks(tracks(20))
                box.commit()
                total += 20
                for _ in range(3):
                    _drive(genuine, srv)()
            wait_for(lambda: box.pending_count() == 0 and srv.stats["malformed"] == 3, _drive(genuine, srv),
                     what="genuine drained, hostile counted")
            wait_for(lambda: srv.stats["auth"]["refused_unknown_key"] >= 1, lambda: srv.poll_once(5))
        assert stored_seqs(srv, "tx-a") == list(range(1, total + 1))
        assert srv.store.tracks("tx-s") == [] and srv.store.tracks("tx-p") == []
        assert srv.stats["malformed_by_reason"] == {"short": 1, "magic": 1, "size": 1}
        assert srv.stats["auth"]["admitted"] == 2   # tx-a and the hostile tx-b: allowed keys
        assert "is not on the allow-list" in caplog.text
        assert stranger.replies(50) == [] and plain.replies(50) == []
    finally:
        genuine.close()
        box.close()
        for d in (stranger, plain, hostile):
            d.close()


def test_negative_control_a_curve_router_without_zap_admits_the_stranger(ctx, ck):
    """The stranger above is refused because of the allow-list, not because its socket
    cannot connect: the same DEALER against a CURVE ROUTER with no ZAP handler gets in
    (libzmq fails open)."""
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    _, server_secret = keys.load_secret_key_file(ck.central.secret_file)
    router.curve_server = True
    router.curve_secretkey = server_secret
    router.bind("tcp://127.0.0.1:*")
    endpoint = router.getsockopt(zmq.LAST_ENDPOINT).decode()
    stranger = curve_dealer(ctx, endpoint, b"tx-s", ck.stranger, keys.load_public_key_file(ck.central.public_file))
    try:
        frame = icd.encode_tracks(STREAM, tracks(5, first_seq=1))
        stranger.sock.send(frame)
        assert router.poll(5000), "the stranger did not get in: the refusal test proves nothing"
        assert router.recv_multipart() == [b"tx-s", frame]
    finally:
        stranger.close()
        router.close(0)


def test_a_curve_central_never_binds_without_its_zap_handler(ck, tmp_path, monkeypatch):
    monkeypatch.setattr(CentralServer, "_start_auth", lambda self: None)
    with pytest.raises(UplinkError, match="without its ZAP handler"):
        CentralServer("tcp://127.0.0.1:*", tmp_path / "c.sqlite", server_secret_key_file=ck.central.secret_file,
                      allow_dir=ck.allow)


def test_a_key_speaking_for_another_tower_is_dropped_logged_and_quarantined(ctx, central, ck, tmp_path, caplog):
    srv = curve_central(central, ck, quarantine_s=60.0, heartbeat_ivl_s=0.2)
    server_public = keys.load_public_key_file(ck.central.public_file)
    box_a = Outbox(tmp_path / "a.sqlite", clock=SystemClock())
    genuine = UplinkClient("tx-a", ck.settings(srv.bound_endpoint, ck.a), box_a, clock=SystemClock())
    impostor = None
    try:
        box_a.add_tracks(tracks(10))
        box_a.commit()
        wait_for(lambda: box_a.pending_count() == 0, _drive(genuine, srv), what="genuine first batch")
        impostor = curve_dealer(ctx, srv.bound_endpoint, b"tx-a", ck.b, server_public)  # tx-b's key, tx-a's id
        fake = tracks(3, first_seq=1)
        fake["track_id"] = 666
        with caplog.at_level(logging.ERROR, logger="towerd.central.server"):
            impostor.sock.send(icd.encode_tracks(STREAM, fake))
            wait_for(lambda: srv.stats["refused_by_reason"].get("identity", 0) >= 1,
                     _drive(genuine, srv), what="impostor refused")
        assert "sent with routing id 'tx-a' by the key of tower 'tx-b'" in caplog.text
        # The genuine tower keeps flowing (it wins its routing id back: the impostor's key
        # is quarantined, so its reconnections are refused).
        total = 10
        for _ in range(4):
            box_a.add_tracks(tracks(10))
            box_a.commit()
            total += 10
            _drive(genuine, srv)()
        wait_for(lambda: box_a.pending_count() == 0, _drive(genuine, srv), timeout_s=15, what="genuine drained")
        rows = srv.store.tracks("tx-a")
        assert [r["seq"] for r in rows] == list(range(1, total + 1))
        assert all(r["track_id"] != 666 for r in rows) and all(r["stream_id"] == box_a.stream_id for r in rows)
        # The real tx-b is refused while its key is quarantined.
        box_b = Outbox(tmp_path / "b.sqlite", clock=SystemClock())
        real_b = UplinkClient("tx-b", ck.settings(srv.bound_endpoint, ck.b), box_b, clock=SystemClock())
        try:
            wait_for(lambda: real_b.stats["auth_failures"] >= 1, _drive(real_b, srv), what="quarantine refusal")
            assert srv.stats["auth"]["refused_quarantined"] >= 1
        finally:
            real_b.close()
            box_b.close()
    finally:
        genuine.close()
        box_a.close()
        if impostor is not None:
            impostor.close()


def test_allow_list_changes_are_picked_up_and_revocation_stops_a_connection(central, ck, tmp_path):
    keys_dir = ck.allow
    (keys_dir / "tx-a.key").unlink()   # tx-a starts refused
    srv = curve_central(central, ck, reload_interval_s=0.05)
    box = Outbox(tmp_path / "a.sqlite", clock=SystemClock())
    client = UplinkClient("tx-a", ck.settings(srv.bound_endpoint, ck.a), box, clock=SystemClock())
    try:
        box.add_tracks(tracks(5))
        box.commit()
        wait_for(lambda: client.stats["auth_failures"] >= 1, _drive(client, srv), what="refused")
        keys.allow_tower("tx-a", ck.a.public_file, keys_dir)
        wait_for(lambda: box.pending_count() == 0, _drive(client, srv), timeout_s=10, what="admitted after allow")
        (keys_dir / "tx-a.key").unlink()   # revoked: the open connection's messages are dropped
        wait_for(lambda: srv.stats["auth"]["reloads"] == 3, lambda: srv.poll_once(5), what="reload")
        box.add_tracks(tracks(5))
        box.commit()
        wait_for(lambda: srv.stats["refused_by_reason"].get("revoked", 0) >= 1, _drive(client, srv),
                 what="revoked")
        assert box.pending_count() == 5 and srv.store.count_tracks() == 5
    finally:
        client.close()
        box.close()


def test_reload_allow_list_on_demand(central, ck, tmp_path):
    (ck.allow / "tx-a.key").unlink()
    srv = curve_central(central, ck, reload_interval_s=3600.0)
    keys.allow_tower("tx-a", ck.a.public_file, ck.allow)
    assert srv.reload_allow_list() is True
    box = Outbox(tmp_path / "a.sqlite", clock=SystemClock())
    client = UplinkClient("tx-a", ck.settings(srv.bound_endpoint, ck.a), box, clock=SystemClock())
    try:
        box.add_tracks(tracks(3))
        box.commit()
        wait_for(lambda: box.pending_count() == 0, _drive(client, srv))
    finally:
        client.close()
        box.close()


def test_main_curve_serves_reloads_on_sighup_and_stops_on_sigterm(ck, tmp_path):
    db = tmp_path / "central.sqlite"
    log_path = tmp_path / "central.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "towerd.central.server", "--bind", "tcp://127.0.0.1:*", "--db", str(db),
             "--secret-key", str(ck.central.secret_file), "--allow-dir", str(ck.allow)],
            stdout=subprocess.DEVNULL, stderr=log_file, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    box = Outbox(tmp_path / "a.sqlite", clock=SystemClock())
    client = None
    try:
        found: list[str] = []

        def look() -> None:
            if proc.poll() is not None:
                raise AssertionError(f"central exited {proc.returncode}: {log_path.read_text()}")
            m = re.search(r"listening on (tcp://127\.0\.0\.1:\d+) \(CURVE\)", log_path.read_text())
            if m:
                found.append(m.group(1))
            else:
                time.sleep(0.02)

        wait_for(lambda: bool(found), look, timeout_s=15, what="central start")
        client = UplinkClient("tx-a", ck.settings(found[0], ck.a), box, clock=SystemClock())
        box.add_tracks(tracks(7))
        box.commit()
        wait_for(lambda: box.pending_count() == 0, lambda: client.poll(10), timeout_s=10, what="ACK over CURVE")
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "re-reading the allow-list" in log_path.read_text(), lambda: time.sleep(0.02))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if client is not None:
            client.close()
        box.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert "7 tracks and 0 events stored" in log_path.read_text()


# ------------------------------------------------------------------------------ gaps, drops, export


def test_streams_report_missing_announced_and_unexplained_ranges(tmp_path):
    store = CentralStore(tmp_path / "c.sqlite", clock=ManualClock())
    try:
        rec = tracks(12, first_seq=1)
        held = [s for s in range(2, 13) if s not in (3, 4, 5, 8)]
        store.store_tracks(TOWER, STREAM, rec[np.array(held) - 1], replay=False)
        drop = {"seq": 13, "time_us": 1, "code": "outbox.dropped", "severity": "error", "message": "full",
                "first_seq": 3, "last_seq": 5, "count": 3}
        bogus = {"seq": 14, "time_us": 1, "code": "outbox.dropped", "severity": "error", "message": "odd",
                 "first_seq": 9, "last_seq": 7, "count": 1}
        store.store_events(TOWER, STREAM, [drop, bogus], replay=True)
        (summary,) = store.streams()
        assert (summary.records, summary.first_seq, summary.last_seq) == (9, 2, 14)
        assert summary.missing == ((1, 1), (3, 5), (8, 8)) and summary.missing_records == 5
        assert summary.dropped == ((3, 5),)
        assert summary.unexplained == ((1, 1), (8, 8))
        assert store.bad_dropped_events == 1
        assert store.dropped() == [{"tower_id": TOWER, "stream_id": STREAM, "event_seq": 13, "first_seq": 3,
                                    "last_seq": 5, "count": 3, "ranges": [[3, 5]]}]
        assert [r["rx_msg"] for r in store.tracks()] == [1] * 7 and store.events()[0]["rx_msg"] == 2
    finally:
        store.close()


def test_streams_include_the_identity_streams(tmp_path):
    store = CentralStore(tmp_path / "c.sqlite", clock=ManualClock())
    try:
        store.store_tracks(TOWER, STREAM, tracks(2, first_seq=1), replay=False)
        ident = icd.empty_identity_records(3)
        ident["seq"], ident["time_us"], ident["status"] = [1, 2, 6], 5, 1
        ident["uas_id"] = b"1581F5FKD229400"
        assert store.store_identities(TOWER, 0x1D, ident, replay=False) == 3
        by_stream = {s.stream_id: s for s in store.streams()}
        assert set(by_stream) == {STREAM, 0x1D}
        assert (by_stream[0x1D].records, by_stream[0x1D].missing, by_stream[0x1D].unexplained) == (
            3, ((3, 5),), ((3, 5),))
        assert [x["kind"] for x in store.export()][-2:] == ["stream", "stream"]
    finally:
        store.close()


def test_subtract_ranges():
    assert subtract_ranges([(1, 10)], [(3, 4), (6, 6)]) == [(1, 2), (5, 5), (7, 10)]
    assert subtract_ranges([(1, 3), (5, 9)], [(0, 1), (3, 6), (9, 20)]) == [(2, 2), (7, 8)]
    assert subtract_ranges([(1, 3)], []) == [(1, 3)]
    assert subtract_ranges([(4, 4)], [(1, 10)]) == []


def test_export_writes_json_lines_of_everything(towerd_exe, tmp_path):
    db = tmp_path / "c.sqlite"
    store = CentralStore(db, clock=ManualClock())
    rec = tracks(3, first_seq=1)
    store.store_tracks(TOWER, STREAM, rec, replay=False)
    store.store_events(TOWER, STREAM, [{"seq": 5, "time_us": 9, "code": "sensor.up", "severity": "info",
                                        "message": "radar0 up", "sensor": "radar0"}], replay=True)
    store.close()
    out = tmp_path / "export.jsonl"
    res = subprocess.run([towerd_exe, "central", "export", "--db", str(db), "--out", str(out)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [obj["kind"] for obj in lines] == ["track"] * 3 + ["event", "stream"]
    t = lines[1]
    assert (t["tower_id"], t["stream_id"], t["seq"], t["replay"]) == (TOWER, f"{STREAM:016x}", 2, False)
    assert t["rf_freq_mhz"] is None and t["lat_e7"] == 294_000_001   # NaN is null in JSON
    assert lines[3]["event"]["sensor"] == "radar0" and lines[3]["replay"] is True
    assert lines[4]["missing"] == [[4, 4]] and lines[4]["unexplained"] == [[4, 4]] and lines[4]["records"] == 4
    stdout = subprocess.run([towerd_exe, "central", "export", "--db", str(db), "--tower", "nobody"],
                            capture_output=True, text=True, timeout=60)
    assert stdout.returncode == 0 and stdout.stdout == ""
    missing = subprocess.run([towerd_exe, "central", "export", "--db", str(tmp_path / "none.sqlite")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "no such file" in missing.stderr


def test_store_of_the_walking_skeleton_is_upgraded(tmp_path):
    db = tmp_path / "old.sqlite"
    with sqlite3.connect(str(db)) as conn:
        conn.execute("CREATE TABLE tracks (tower_id TEXT NOT NULL, stream_id TEXT NOT NULL, received_us INTEGER "
                     "NOT NULL, replay INTEGER NOT NULL, " + ", ".join(
                         f"{n} REAL" if n in ("alt_m",) or tracks(1).dtype.fields[n][0].kind == "f" else
                         f"{n} INTEGER NOT NULL" for n in TRACK_FIELDS)
                     + ", PRIMARY KEY (tower_id, stream_id, seq)) WITHOUT ROWID")
        conn.execute("CREATE TABLE events (tower_id TEXT NOT NULL, stream_id TEXT NOT NULL, seq INTEGER NOT NULL, "
                     "received_us INTEGER NOT NULL, replay INTEGER NOT NULL, time_us INTEGER NOT NULL, code TEXT "
                     "NOT NULL, severity TEXT NOT NULL, message TEXT NOT NULL, json TEXT NOT NULL, "
                     "PRIMARY KEY (tower_id, stream_id, seq)) WITHOUT ROWID")
    store = CentralStore(db)
    try:
        assert store.store_tracks(TOWER, STREAM, tracks(2, first_seq=1), replay=False) == 2
        assert [r["rx_msg"] for r in store.tracks()] == [1, 1]
    finally:
        store.close()


def _queued_before_bind(ctx: zmq.Context, endpoint: str) -> zmq.Socket:
    """A DEALER connected before the central binds (no IMMEDIATE): what it sends waits,
    then arrives at once, usually in one poll round."""
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.routing_id = TOWER.encode()
    sock.reconnect_ivl = 10
    sock.connect(endpoint)
    return sock


def _first_round(srv: CentralServer) -> int:
    """Messages handled by the first poll round that found any (0 after 5 s)."""
    handled = 0
    deadline = time.monotonic() + 5.0
    while handled == 0 and time.monotonic() < deadline:
        handled = srv.poll_once(50)
    return handled


def test_live_messages_of_a_poll_round_are_stored_and_acked_before_replays(ctx, central, tmp_path):
    """After an outage backlogs (REPLAY) and live reports arrive together: the central
    stores and acknowledges the live ones of each poll round first. The DEALER queues
    its messages before the central binds, so that they arrive in one batch and one
    poll round takes them all (checked; the round is repeated otherwise). One record each:
    the 21 messages fit in one of libzmq's 8 KiB write batches."""
    for attempt in range(5):
        endpoint = f"ipc://{tmp_path}/central-{attempt}.ipc"
        sock = _queued_before_bind(ctx, endpoint)
        stream = STREAM + attempt
        for i in range(20):  # the backlog, oldest first
            sock.send(icd.encode_tracks(stream, tracks(1, first_seq=1 + i), icd.FLAG_REPLAY))
        sock.send(icd.encode_tracks(stream, tracks(2, first_seq=1001)))  # a live report, sent last
        srv = central(endpoint)
        try:
            handled = _first_round(srv)
            acks: list[tuple[int, int]] = []
            wait_for(lambda: len(acks) == handled,
                     lambda: acks.extend(icd.decode_ack(icd.decode(f)) for f in _recv_all(sock, 5)))
        finally:
            sock.close(0)
            srv.close()
        if handled < 21:
            continue  # the messages came in two rounds: try again
        assert acks[0] == (1001, 1002)  # the live report first, though it came last
        assert acks[1:] == [(1 + i, 1 + i) for i in range(20)]  # the backlog in its order
        assert srv.stats["replays_received"] == 20
        return
    pytest.fail("the 21 messages never arrived in one poll round")


def test_a_bad_value_among_the_tracks_of_a_round_refuses_only_its_message(ctx, central, tmp_path):
    """The TRACKS records of a poll round are checked together; when that finds a bad
    value, each message is checked on its own: the bad one gets ERROR malformed.range and
    is not stored, the others are stored and acknowledged. The messages are queued before
    the central binds so that one round takes them all (the round is repeated otherwise)."""
    for attempt in range(5):
        endpoint = f"ipc://{tmp_path}/bad-{attempt}.ipc"
        sock = _queued_before_bind(ctx, endpoint)
        stream = STREAM + attempt
        bad = tracks(1, first_seq=3)
        bad["alt_m"] = np.inf  # the encoder would refuse it: its header, then the record
        sock.send(icd.encode_tracks(stream, tracks(2, first_seq=1)))
        sock.send(icd.encode_tracks(stream, tracks(1, first_seq=3))[:icd.HEADER_SIZE] + bad.tobytes())
        sock.send(icd.encode_tracks(stream, tracks(2, first_seq=4)))
        srv = central(endpoint)
        try:
            handled = _first_round(srv)
            replies: list[icd.Message] = []
            wait_for(lambda: len(replies) == handled,
                     lambda: replies.extend(icd.decode(f) for f in _recv_all(sock, 5)))
            held = [r["seq"] for r in srv.store.tracks()]
            stats = srv.stats
        finally:
            sock.close(0)
            srv.close()
        if handled < 3:
            continue  # the messages came in two rounds: try again
        acks = sorted(icd.decode_ack(m) for m in replies if m.type == icd.MsgType.ACK)
        errors = [icd.decode_error(m)[0] for m in replies if m.type == icd.MsgType.ERROR]
        assert acks == [(1, 2), (4, 5)] and errors == ["malformed.range"]
        assert held == [1, 2, 4, 5] and stats["malformed_by_reason"] == {"range": 1}
        return
    pytest.fail("the 3 messages never arrived in one poll round")


def _recv_all(sock: zmq.Socket, timeout_ms: int) -> list[bytes]:
    out = []
    if sock.poll(timeout_ms):
        while True:
            try:
                out.append(sock.recv(zmq.NOBLOCK))
            except zmq.Again:
                return out
    return out
