"""Uplink client against a real ROUTER on 127.0.0.1 that the test drives by hand (what it
receives, when it acknowledges), with a real SQLite outbox."""

from __future__ import annotations

import json
import logging
import shutil
import socket
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from towerd import icd
from towerd import keys as towerd_keys
from towerd.clock import ManualClock, SystemClock
from towerd.errors import ConfigError, UplinkError
from towerd.icd import MsgType
from towerd.outbox.sqlite import Outbox
from towerd.schema import Validator, compose
from towerd.uplink.client import CentralSettings, UplinkClient
from towerd.uplink.sharing import SharingRule, coarsen

TOWER = "tx-test-01"


def wait_for(cond: Callable[[], bool], step: Callable[[], None], timeout_s: float = 5.0, what: str = "") -> None:
    """Run ``step`` until ``cond`` holds; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        step()


class Peer:
    """A bare ROUTER standing in for a central: the test decides every reply."""

    def __init__(self, ctx: zmq.Context, endpoint: str = "tcp://127.0.0.1:*", curve_secret: bytes | None = None):
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.linger = 0
        self.sock.router_handover = 1
        if curve_secret is not None:
            self.sock.curve_server = True
            self.sock.curve_secretkey = curve_secret
        deadline = time.monotonic() + 5.0
        while True:  # rebinding a port whose old socket libzmq is still closing
            try:
                self.sock.bind(endpoint)
                break
            except zmq.ZMQError as exc:
                if exc.errno != zmq.EADDRINUSE or time.monotonic() > deadline:
                    self.sock.close(0)
                    raise
                self.sock.poll(10)
        self.endpoint = self.sock.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.received: list[tuple[bytes, icd.Message]] = []

    def drain(self, timeout_ms: int = 10) -> None:
        if self.sock.poll(timeout_ms):
            while True:
                try:
                    rid, frame = self.sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    return
                self.received.append((rid, icd.decode(frame)))

    def records(self) -> list[tuple[bytes, icd.Message]]:
        return [(rid, m) for rid, m in self.received if m.type in (MsgType.TRACKS, MsgType.EVENTS)]

    def send(self, rid: bytes, *frames: bytes) -> None:
        self.sock.send_multipart([rid, *frames])

    def close(self) -> None:
        self.sock.close(0)


def ranges(msgs) -> list[tuple[str, int, int]]:
    out = []
    for _, m in msgs:
        if m.type == MsgType.TRACKS:
            seq = icd.decode_tracks(m)["seq"]
            out.append(("T", int(seq[0]), int(seq[-1])))
        else:
            ev = icd.decode_events(m)
            out.append(("E", ev[0]["seq"], ev[-1]["seq"]))
    return out


def settings(endpoint: str, name: str = "lab", **kw) -> CentralSettings:
    base = dict(plain=True, reconnect_ivl_s=0.05, reconnect_ivl_max_s=0.2, ack_timeout_s=5.0)
    base.update(kw)
    if "replay_window" not in base:
        base["replay_window"] = min(8, base.get("window", 64))
    return CentralSettings(name, endpoint, **base)


def tracks(n: int) -> np.ndarray:
    rec = icd.empty_track_records(n)
    rec["time_us"] = 1_700_000_000_000_000 + np.arange(n) * 50_000
    rec["track_id"] = np.arange(n)
    return rec


@pytest.fixture
def ctx():
    context = zmq.Context()
    yield context
    context.term()


@pytest.fixture
def peer(ctx):
    p = Peer(ctx)
    yield p
    p.close()


@pytest.fixture
def outbox(tmp_path):
    box = Outbox(tmp_path / "outbox.sqlite", clock=SystemClock())
    yield box
    box.close()


@pytest.fixture
def make_client():
    made: list[UplinkClient] = []

    def make(endpoint: str, outbox: Outbox, clock=None, health=None, zone_of=None, **kw) -> UplinkClient:
        client = UplinkClient(TOWER, settings(endpoint, **kw), outbox, clock=clock or SystemClock(), health=health,
                              zone_of=zone_of)
        made.append(client)
        return client

    yield make
    for c in made:
        c.close()


def test_messages_hold_one_kind_of_consecutive_seq(peer, outbox, make_client):
    outbox.add_tracks(tracks(3))                              # 1..3
    outbox.add_event("sensor.down", "warning", "radar-1")     # 4
    outbox.add_tracks(tracks(3))                              # 5..7
    outbox.commit()
    outbox.ack(6, 6)                                          # a gap: 5, 7
    outbox.add_tracks(tracks(2))                              # 8, 9 not committed: must not be sent
    client = make_client(peer.endpoint, outbox, batch_records=2)

    def step():
        client.poll(5)
        peer.drain(5)

    wait_for(lambda: len(peer.records()) >= 5, step, what="5 messages")
    assert ranges(peer.records()) == [("T", 1, 2), ("T", 3, 3), ("E", 4, 4), ("T", 5, 5), ("T", 7, 7)]
    assert {rid for rid, _ in peer.received} == {TOWER.encode()}
    # Held before the link came up: backlog, flagged REPLAY (ICD "delivery").
    assert all(m.stream_id == outbox.stream_id and m.flags == icd.FLAG_REPLAY for _, m in peer.received)
    sent = np.concatenate([icd.decode_tracks(m) for _, m in peer.records() if m.type == MsgType.TRACKS])
    stored = {seq: payload for seq, kind, payload in outbox.pending() if kind == "T"}
    assert [bytes(r.tobytes()) for r in sent] == [stored[int(s)] for s in sent["seq"]]
    assert icd.decode_events(peer.records()[2][1])[0]["code"] == "sensor.down"
    assert client.link_up and client.stats["state"] == "up"
    assert client.name == client.settings.name == "lab"


def test_ack_deletes_from_outbox_and_frees_the_window(peer, outbox, make_client):
    outbox.add_tracks(tracks(5))
    outbox.commit()
    client = make_client(peer.endpoint, outbox, window=2, batch_records=1)

    def step():
        client.poll(5)
        peer.drain(5)

    wait_for(lambda: len(peer.records()) >= 2, step)
    for _ in range(5):
        step()
    assert ranges(peer.records()) == [("T", 1, 1), ("T", 2, 2)]
    assert client.stats["in_flight"] == 2 and client.stats["last_ack_mono"] is None

    rid = TOWER.encode()
    peer.send(rid, icd.encode_ack(outbox.stream_id, 1, 1))
    wait_for(lambda: len(peer.records()) >= 3, step)
    assert outbox.pending_count() == 4
    assert [s for s, _, _ in outbox.pending()] == [2, 3, 4, 5]
    assert client.stats["acked_records"] == 1 and client.stats["last_ack_mono"] is not None

    acked = 1
    while acked < 5:
        wait_for(lambda: len(peer.records()) > acked, step)
        _, m = peer.records()[acked]
        seq = int(icd.decode_tracks(m)["seq"][0])
        peer.send(rid, icd.encode_ack(outbox.stream_id, seq, seq))
        acked += 1
    wait_for(lambda: outbox.pending_count() == 0, step)
    assert client.stats["in_flight"] == 0 and client.stats["acked_records"] == 5
    assert client.stats["resent_msgs"] == 0


def test_foreign_and_unmatched_acks_delete_nothing(peer, outbox, make_client):
    outbox.add_tracks(tracks(4))
    outbox.commit()
    client = make_client(peer.endpoint, outbox, batch_records=2)

    def step():
        client.poll(5)
        peer.drain(5)

    wait_for(lambda: len(peer.records()) >= 2, step)
    rid = TOWER.encode()
    peer.send(rid, icd.encode_ack(outbox.stream_id ^ 1, 1, 2))   # another stream
    peer.send(rid, icd.encode_ack(outbox.stream_id, 1, 4))       # not a message we sent
    wait_for(lambda: client.stats["foreign_acks"] == 1 and client.stats["unmatched_acks"] == 1, step)
    assert outbox.pending_count() == 4


def test_unacknowledged_message_is_resent_after_the_ack_timeout(peer, outbox, make_client):
    clock = ManualClock()
    outbox.add_tracks(tracks(2))
    outbox.commit()
    client = make_client(peer.endpoint, outbox, clock=clock, ack_timeout_s=5.0)

    def step():
        client.poll(5)
        peer.drain(5)

    wait_for(lambda: len(peer.records()) == 1, step)
    clock.advance(4.9)
    for _ in range(5):
        step()
    assert len(peer.records()) == 1 and client.stats["resent_msgs"] == 0
    clock.advance(0.2)
    wait_for(lambda: len(peer.records()) == 2, step)
    assert ranges(peer.records()) == [("T", 1, 2), ("T", 1, 2)]
    assert client.stats["resent_msgs"] == 1
    peer.send(TOWER.encode(), icd.encode_ack(outbox.stream_id, 1, 2))
    wait_for(lambda: outbox.pending_count() == 0, step)


def test_ack_timeout_grows_with_the_measured_round_trip_and_backs_off(peer, outbox, make_client):
    """A central whose ACKs take 8 s is not sent duplicates after the configured 10 s:
    the timeout becomes srtt + 4 rttvar (8 + 4 * 4 = 24 s), doubles after a resend, and
    never exceeds ack_timeout_max_s."""
    clock = ManualClock()
    outbox.add_tracks(tracks(1))
    outbox.commit()
    client = make_client(peer.endpoint, outbox, clock=clock, ack_timeout_s=10.0, ack_timeout_max_s=40.0)

    def step():
        client.poll(5)
        peer.drain(5)

    wait_for(lambda: len(peer.records()) == 1, step)
    assert client.stats["ack_timeout_s"] == 10.0 and client.stats["srtt_s"] is None
    clock.advance(8.0)
    peer.send(TOWER.encode(), icd.encode_ack(outbox.stream_id, 1, 1))
    wait_for(lambda: outbox.pending_count() == 0, step)
    assert client.stats["srtt_s"] == 8.0 and client.stats["ack_timeout_s"] == 24.0

    outbox.add_tracks(tracks(1))  # seq 2, sent at t = 8 s
    outbox.commit()
    wait_for(lambda: len(peer.records()) == 2, step)
    clock.advance(23.9)           # 10 s would have resent it long ago
    for _ in range(5):
        step()
    assert len(peer.records()) == 2 and client.stats["resent_msgs"] == 0
    clock.advance(0.2)
    wait_for(lambda: len(peer.records()) == 3, step)
    assert ranges(peer.records()) == [("T", 1, 1), ("T", 2, 2), ("T", 2, 2)]
    assert client.stats["ack_timeouts"] == 1
    assert client.stats["ack_timeout_s"] == 40.0  # doubled (48 s), bounded by ack_timeout_max_s
    clock.advance(39.9)
    for _ in range(5):
        step()
    assert len(peer.records()) == 3
    clock.advance(0.2)
    wait_for(lambda: len(peer.records()) == 4, step)
    # The ACK of a message sent more than once gives no sample (Karn): the timeout stays up.
    peer.send(TOWER.encode(), icd.encode_ack(outbox.stream_id, 2, 2))
    wait_for(lambda: outbox.pending_count() == 0, step)
    assert client.stats["srtt_s"] == 8.0 and client.stats["resent_msgs"] == 2


def test_nothing_is_resent_while_acks_keep_arriving(peer, outbox, make_client):
    """The timeout runs from the last ACK: a message older than ack_timeout_s is not sent
    again while the central keeps acknowledging others, only once the ACKs stop."""
    clock = ManualClock()
    outbox.add_tracks(tracks(1))  # seq 1 at t = 0
    outbox.commit()
    client = make_client(peer.endpoint, outbox, clock=clock, ack_timeout_s=5.0, batch_records=1)

    def step():
        client.poll(5)
        peer.drain(5)

    wait_for(lambda: len(peer.records()) == 1, step)
    clock.advance(4.5)
    outbox.add_tracks(tracks(1))  # seq 2 at t = 4.5 s
    outbox.commit()
    wait_for(lambda: len(peer.records()) == 2, step)
    clock.advance(0.1)
    peer.send(TOWER.encode(), icd.encode_ack(outbox.stream_id, 2, 2))  # at t = 4.6 s, round trip 0.1 s
    wait_for(lambda: outbox.pending_count() == 1, step)
    assert client.stats["ack_timeout_s"] == 5.0  # srtt + 4 rttvar = 0.3 s: the floor holds
    clock.advance(3.4)            # t = 8 s: seq 1 is 8 s old, but an ACK came 3.4 s ago
    for _ in range(5):
        step()
    assert len(peer.records()) == 2 and client.stats["resent_msgs"] == 0
    clock.advance(1.7)            # t = 9.7 s: 5.1 s without an ACK
    wait_for(lambda: len(peer.records()) == 3, step)
    assert ranges(peer.records())[-1] == ("T", 1, 1) and client.stats["resent_msgs"] == 1


def test_ack_timeout_max_below_ack_timeout_is_refused():
    with pytest.raises(ValueError, match="ack_timeout_max_s < ack_timeout_s"):
        settings("tcp://127.0.0.1:1", ack_timeout_s=10.0, ack_timeout_max_s=5.0)


def test_everything_in_flight_is_resent_after_a_reconnect(ctx, outbox, make_client):
    first = Peer(ctx)
    endpoint = first.endpoint
    outbox.add_tracks(tracks(3))
    outbox.commit()
    client = make_client(endpoint, outbox, batch_records=1)
    wait_for(lambda: len(first.records()) == 3, lambda: (client.poll(5), first.drain(5)))
    first.close()
    wait_for(lambda: not client.link_up, lambda: client.poll(10), what="link down")
    assert client.stats["state"] == "down"

    second = Peer(ctx, endpoint)
    try:
        wait_for(lambda: len(second.records()) == 3, lambda: (client.poll(5), second.drain(5)), what="resend")
        assert ranges(second.records()) == [("T", 1, 1), ("T", 2, 2), ("T", 3, 3)]
        assert all(m.flags == icd.FLAG_REPLAY for _, m in second.records())
        stats = client.stats
        assert stats["replay_msgs"] == 6 and stats["connects"] == 2 and stats["disconnects"] == 1
        assert stats["flow_restarts"] == 2
        assert outbox.pending_count() == 3
    finally:
        second.close()


def free_endpoint() -> str:
    """A TCP port on 127.0.0.1 that nothing listens on (a plain socket closes at once;
    a ZeroMQ socket would close asynchronously and might still accept)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def test_nothing_is_sent_without_a_central(ctx, outbox, make_client):
    outbox.add_tracks(tracks(3))
    outbox.commit()
    client = make_client(free_endpoint(), outbox)
    for _ in range(5):
        client.poll(10)
    assert not client.link_up
    assert client.stats["state"] == "connecting" and client.stats["sent_msgs"] == 0
    assert client.stats["in_flight"] == 0 and outbox.pending_count() == 3


def test_health_on_connect_and_every_interval(peer, outbox, make_client, caplog):
    clock = ManualClock()
    calls = []

    def health() -> dict:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("sensor table locked")
        return {"tower_id": TOWER, "n": len(calls)}

    client = make_client(peer.endpoint, outbox, clock=clock, health=health, health_interval_s=10.0)

    def step():
        client.poll(5)
        peer.drain(5)

    def healths():
        return [icd.decode_health(m) for _, m in peer.received if m.type == MsgType.HEALTH]

    wait_for(lambda: len(healths()) == 1, step)
    # As health() gives it, plus this central's identity capability (ICD v1.1).
    assert healths()[0] == {"tower_id": TOWER, "n": 1, "identity": {
        "capability": "unknown", "stream_id": f"{outbox.identity_stream_id:016x}"}}
    peer.send(TOWER.encode(), icd.encode_health_ack(outbox.stream_id))
    wait_for(lambda: client.stats["health_acks"] == 1, step)
    with caplog.at_level(logging.ERROR, logger="towerd.uplink.client"):
        clock.advance(10.0)
        wait_for(lambda: len(calls) == 2, step)
    assert "building HEALTH failed" in caplog.text
    outbox.add_tracks(tracks(1))   # a failing health() does not stop the reports
    outbox.commit()
    wait_for(lambda: len(peer.records()) == 1, step)
    clock.advance(10.0)
    wait_for(lambda: len(healths()) == 2, step)
    assert healths()[1]["n"] == 3 and client.stats["health_sent"] == 2


def test_malformed_and_error_replies_are_counted_and_do_not_stop_the_client(peer, outbox, make_client, caplog):
    outbox.add_tracks(tracks(1))
    outbox.commit()
    client = make_client(peer.endpoint, outbox)

    def step():
        client.poll(5)
        peer.drain(5)

    wait_for(lambda: len(peer.records()) == 1, step)
    rid = TOWER.encode()
    peer.send(rid, b"xx")                                          # short
    peer.send(rid, b"TX" + bytes(30))                              # bad magic
    peer.send(rid, icd.encode_health_ack(1), b"extra")             # two frames
    peer.send(rid, icd.encode_health(1, {}))                       # a tower's message type
    with caplog.at_level(logging.ERROR, logger="towerd.uplink.client"):
        peer.send(rid, icd.encode_error(outbox.stream_id, "central.store_failed", "disk full"))
        wait_for(lambda: client.stats["malformed"] == 4 and client.stats["errors_received"] == 1, step)
    assert "central.store_failed" in caplog.text and "disk full" in caplog.text
    peer.send(rid, icd.encode_ack(outbox.stream_id, 1, 1))
    wait_for(lambda: outbox.pending_count() == 0, step)


def test_bad_stored_row_is_dropped_loudly_not_blocking_the_stream(peer, outbox, make_client, caplog):
    outbox.add_tracks(tracks(3))
    outbox.commit()
    with sqlite3.connect(str(outbox.path)) as conn:
        conn.execute("UPDATE records SET payload = x'00' WHERE seq = 2")
    client = make_client(peer.endpoint, outbox)
    with caplog.at_level(logging.ERROR, logger="towerd.uplink.client"):
        wait_for(lambda: len(peer.records()) == 2, lambda: (client.poll(5), peer.drain(5)))
    assert ranges(peer.records()) == [("T", 1, 1), ("T", 3, 3)]
    assert client.stats["bad_rows"] == 1 and "seq 2" in caplog.text
    assert [s for s, _, _ in outbox.pending()] == [1, 3]


def test_identity_and_settings_are_validated(outbox):
    for bad in ("", "has space", "x" * 65, "tx/01", "é"):
        with pytest.raises(ConfigError):
            UplinkClient(bad, settings("tcp://127.0.0.1:1"), outbox, clock=SystemClock())
    with pytest.raises(ValueError):
        settings("tcp://127.0.0.1:1", window=0, replay_window=1)
    with pytest.raises(ValueError):
        settings("tcp://127.0.0.1:1", batch_records=65536)
    with pytest.raises(ValueError, match="replay_window 9 not in 1..window"):
        settings("tcp://127.0.0.1:1", window=8, replay_window=9)
    with pytest.raises(ValueError, match="CURVE needs"):
        CentralSettings("agency", "tcp://127.0.0.1:1")


def test_close_is_idempotent_and_keeps_the_records(peer, outbox):
    outbox.add_tracks(tracks(2))
    outbox.commit()
    client = UplinkClient(TOWER, settings(peer.endpoint), outbox, clock=SystemClock())
    wait_for(lambda: len(peer.records()) == 1, lambda: (client.poll(5), peer.drain(5)))
    client.close()
    client.close()
    assert client.stats["state"] == "closed" and not client.link_up
    assert outbox.pending_count() == 2
    with pytest.raises(UplinkError):
        client.poll()


# ------------------------------------------------------------------------------ CURVE


@pytest.fixture
def keys(tmp_path) -> dict[str, Path]:
    d = tmp_path / "keys"
    central = towerd_keys.generate_keypair(d, "central")
    tower = towerd_keys.generate_keypair(d, "tower")
    return {"server_pub": central.public_file, "server_sec": central.secret_file,
            "tower_pub": tower.public_file, "tower_sec": tower.secret_file}


def test_missing_or_wrong_key_files_name_the_file(tmp_path, outbox, keys):
    """ConfigError (``towerd run`` exits 78), naming the file and why."""
    missing = tmp_path / "nope.key_secret"
    unsafe = tmp_path / "unsafe.key_secret"
    shutil.copy(keys["tower_sec"], unsafe)
    unsafe.chmod(0o644)
    cases = [
        (dict(server_public_key_file=str(keys["server_pub"]), client_secret_key_file=str(missing)),
         f"{missing}: missing"),
        (dict(server_public_key_file=str(tmp_path / "gone.key"), client_secret_key_file=str(keys["tower_sec"])),
         f"server public key file {tmp_path / 'gone.key'}: missing"),
        (dict(server_public_key_file=str(keys["server_pub"]), client_secret_key_file=str(keys["tower_pub"])),
         "holds no secret key"),
        (dict(server_public_key_file=str(keys["server_pub"]), client_secret_key_file=str(unsafe)),
         f"{unsafe}: mode 0644 gives group and others access"),
    ]
    for files, expected in cases:
        s = CentralSettings("agency", "tcp://127.0.0.1:1", **files)
        with pytest.raises(ConfigError) as info:
            UplinkClient(TOWER, s, outbox, clock=SystemClock())
        assert expected in str(info.value)


def test_curve_link_refused_then_recovers_when_the_key_is_allowed(ctx, tmp_path, outbox, keys, caplog):
    allow = tmp_path / "allow"
    allow.mkdir()
    auth = ThreadAuthenticator(ctx)
    auth.start()
    peer = None
    client = None
    try:
        auth.configure_curve(domain="*", location=str(allow))   # empty allow-list: refuse everyone
        _, server_secret = zmq.auth.load_certificate(keys["server_sec"])
        peer = Peer(ctx, curve_secret=server_secret)
        outbox.add_tracks(tracks(2))
        outbox.commit()
        s = CentralSettings("agency", peer.endpoint, server_public_key_file=str(keys["server_pub"]),
                            client_secret_key_file=str(keys["tower_sec"]), reconnect_ivl_s=0.05,
                            reconnect_ivl_max_s=0.1)
        client = UplinkClient(TOWER, s, outbox, clock=SystemClock())

        def step():
            client.poll(5)
            peer.drain(5)

        with caplog.at_level(logging.ERROR, logger="towerd.uplink.client"):
            wait_for(lambda: client.stats["auth_failures"] >= 2, step, what="refusal, rebuild, refusal")
        assert "refused" in caplog.text and peer.records() == []
        assert not client.link_up

        shutil.copy(keys["tower_pub"], allow / "tower.key")
        auth.configure_curve(domain="*", location=str(allow))
        wait_for(lambda: len(peer.records()) == 1, step, what="delivery after the key was allowed")
        assert client.link_up and client.stats["state"] == "up"
        assert ranges(peer.records()) == [("T", 1, 2)] and peer.records()[0][0] == TOWER.encode()
    finally:
        if client is not None:
            client.close()
        if peer is not None:
            peer.close()
        auth.stop()


# ------------------------------------------------------------------------------ live before backlog


def flags_by_range(msgs) -> list[tuple[str, int, int, int]]:
    return [(*r, m.flags) for r, (_, m) in zip(ranges(msgs), msgs)]


def ack_all(peer: Peer, msgs, stream_id: int) -> None:
    for (_, first, last), _ in zip(ranges(msgs), msgs):
        peer.send(TOWER.encode(), icd.encode_ack(stream_id, first, last))


def test_backlog_goes_oldest_first_flagged_replay_paced_and_live_goes_first(peer, outbox, make_client):
    clock = ManualClock()
    outbox.add_tracks(tracks(300))   # held while no central was there: the backlog
    outbox.commit()
    client = make_client(peer.endpoint, outbox, clock=clock, batch_records=50, replay_rate_rps=100.0,
                         window=8, replay_window=2)

    def step():
        client.poll(5)
        peer.drain(5)

    # At connect the token bucket is full (max(batch, 0.25 s of rate) = 50 records): one
    # backlog message goes, then the backlog waits for tokens.
    wait_for(lambda: len(peer.records()) == 1, step)
    for _ in range(5):
        step()
    assert flags_by_range(peer.records()) == [("T", 1, 50, icd.FLAG_REPLAY)]
    assert client.replaying and client.stats["boundary_seq"] == 301

    # A live report is committed: it goes at once, unflagged, while the backlog waits.
    outbox.add_tracks(tracks(5))   # 301..305
    outbox.commit()
    wait_for(lambda: len(peer.records()) == 2, step)
    assert flags_by_range(peer.records())[1] == ("T", 301, 305, 0)

    clock.advance(0.5)   # 50 records' worth of tokens
    wait_for(lambda: len(peer.records()) == 3, step)
    for _ in range(5):
        step()
    assert flags_by_range(peer.records())[2] == ("T", 51, 100, icd.FLAG_REPLAY)
    clock.advance(0.5)   # tokens, but two backlog messages are in flight (replay_window 2)
    for _ in range(5):
        step()
    assert len(peer.records()) == 3

    sent = 3
    while client.replaying or client.stats["in_flight"]:
        ack_all(peer, peer.records(), outbox.stream_id)   # repeated ACKs are harmless: counted, ignored
        clock.advance(0.5)
        for _ in range(5):
            step()
        assert len(peer.records()) <= sent + 2
        sent = len(peer.records())
    assert outbox.pending_count() == 0
    got = flags_by_range(peer.records())
    backlog = [(a, b) for kind, a, b, f in got if f == icd.FLAG_REPLAY]
    assert backlog == [(a, a + 49) for a in range(1, 300, 50)]   # oldest first, each once
    assert [(a, b) for kind, a, b, f in got if f == 0] == [(301, 305)]
    assert client.stats["replay_records"] == 300 and not client.replaying


def test_live_reports_keep_room_in_the_window_while_the_backlog_waits_for_acks(peer, outbox, make_client):
    outbox.add_tracks(tracks(40))
    outbox.commit()
    client = make_client(peer.endpoint, outbox, batch_records=10, window=4, replay_window=2)

    def step():
        client.poll(5)
        peer.drain(5)

    wait_for(lambda: len(peer.records()) == 2, step)
    for _ in range(5):
        step()
    assert [f for *_, f in flags_by_range(peer.records())] == [icd.FLAG_REPLAY] * 2   # no ACK: backlog stops
    for k in range(2):
        outbox.add_tracks(tracks(1))
        outbox.commit()
        wait_for(lambda: len(peer.records()) == 3 + k, step)
    assert flags_by_range(peer.records())[2:] == [("T", 41, 41, 0), ("T", 42, 42, 0)]
    assert client.stats["in_flight"] == 4


def test_late_ack_from_the_previous_link_still_counts(ctx, outbox, make_client):
    first = Peer(ctx)
    endpoint = first.endpoint
    client = make_client(endpoint, outbox)

    def step(p):
        client.poll(5)
        p.drain(5)

    wait_for(lambda: client.link_up, lambda: step(first))
    for _ in range(3):   # three live messages, one record each
        outbox.add_tracks(tracks(1))
        outbox.commit()
        step(first)
    wait_for(lambda: len(first.records()) == 3, lambda: step(first))
    assert all(m.flags == 0 for _, m in first.records())
    first.close()
    wait_for(lambda: not client.link_up, lambda: client.poll(10))
    second = Peer(ctx, endpoint)
    try:
        wait_for(lambda: len(second.records()) == 1, lambda: step(second))
        assert flags_by_range(second.records()) == [("T", 1, 3, icd.FLAG_REPLAY)]   # re-sent as one backlog message
        second.send(TOWER.encode(), icd.encode_ack(outbox.stream_id, 2, 2))   # ACK of a message of the old link
        wait_for(lambda: client.stats["late_acks"] == 1, lambda: step(second))
        assert [s for s, _, _ in outbox.pending()] == [1, 3]
        second.send(TOWER.encode(), icd.encode_ack(outbox.stream_id, 1, 3))
        wait_for(lambda: outbox.pending_count() == 0, lambda: step(second))
    finally:
        second.close()


def test_the_size_cap_never_drops_what_is_in_flight(peer, tmp_path, make_client):
    """Records sent and not yet acknowledged may be at the central: dropping them would
    announce as lost what is not. The cap takes the next oldest instead, which were never
    sent, and the announcement names exactly those."""
    box = Outbox(tmp_path / "small.sqlite", clock=SystemClock(), max_records=20)
    try:
        client = make_client(peer.endpoint, box, batch_records=5)

        def step():
            client.poll(5)
            peer.drain(5)

        wait_for(lambda: client.link_up, step)
        box.add_tracks(tracks(10))   # 1..10 go live, unacknowledged
        box.commit()
        wait_for(lambda: len(peer.records()) == 2, step)
        box.add_tracks(tracks(15))   # 25 > 20: 11..16 dropped, not 1..6
        box.commit()
        ev = [json.loads(p) for _, k, p in box.pending(limit=100) if k == "E"]
        assert [(e["first_seq"], e["last_seq"], e["count"]) for e in ev] == [(11, 16, 6)]
        for first in (1, 6):
            peer.send(TOWER.encode(), icd.encode_ack(box.stream_id, first, first + 4))
        wait_for(lambda: any(m.type == MsgType.EVENTS for _, m in peer.records()), step, what="the event")
        sent = {s for kind, a, b in ranges(peer.records()) for s in range(a, b + 1)}
        assert not sent & set(range(11, 17)) and set(range(1, 11)) <= sent
    finally:
        box.close()


# ------------------------------------------------------------------------------ sharing rules


def varied_tracks() -> np.ndarray:
    """12 records: every combination of category (uas, bird) x status (tentative,
    confirmed, ended) x threat (none, high), at distinct positions."""
    rec = tracks(12)
    i = np.arange(12)
    rec["category"] = np.where(i % 2 == 0, icd.Category.UAS, icd.Category.BIRD)
    rec["status"] = [icd.Status.TENTATIVE, icd.Status.CONFIRMED, icd.Status.ENDED][0:3] * 4
    rec["threat"] = np.where(i < 6, icd.Threat.NONE, icd.Threat.HIGH)
    rec["lat_e7"] = 294_000_000 + i * 1_000   # ~11 m apart
    rec["lon_e7"] = -985_000_000 - i * 1_000
    rec["range_m"] = 1000.0 + i
    rec["azimuth_deg"] = 45.0
    rec["elevation_deg"] = 3.0
    rec["pos_sigma_m"] = 5.0
    return rec


def test_a_partner_receives_only_what_its_rule_allows(ctx, tmp_path, make_client):
    box = Outbox(tmp_path / "two.sqlite", clock=SystemClock(), centrals=["hq", "partner"])
    hq, partner = Peer(ctx), Peer(ctx)
    try:
        rule = SharingRule(categories=("uas",), statuses=("confirmed", "ended"), events=False, coarsen_m=1000.0)
        own = make_client(hq.endpoint, box, name="hq")
        other = make_client(partner.endpoint, box, name="partner", share=rule)
        original = varied_tracks()
        box.add_tracks(original)                                   # 1..12
        box.add_event("sensor.down", "warning", "radar0 silent")   # 13
        box.commit()

        def step():
            own.poll(2)
            other.poll(2)
            hq.drain(2)
            partner.drain(2)

        wait_for(lambda: sum(m.count for _, m in hq.records()) == 13, step)
        expected = [s for s in range(1, 13) if original["category"][s - 1] == icd.Category.UAS
                    and original["status"][s - 1] in (icd.Status.CONFIRMED, icd.Status.ENDED)]
        wait_for(lambda: sum(m.count for _, m in partner.records()) == len(expected), step)
        for _ in range(5):
            step()
        got = np.concatenate([icd.decode_tracks(m) for _, m in partner.records()])
        assert got["seq"].tolist() == expected and all(m.type == MsgType.TRACKS for _, m in partner.records())
        assert other.stats["skipped_records"] == 13 - len(expected)
        # Coarsened: cell centres of a 1 km grid (coarsening them again changes nothing),
        # within half a cell of the truth in each axis, no range/azimuth/elevation.
        exact_sent = original[np.array(expected) - 1]
        assert coarsen(got, 1000.0)[["lat_e7", "lon_e7"]].tolist() == got[["lat_e7", "lon_e7"]].tolist()
        assert (got["lat_e7"] != exact_sent["lat_e7"]).all()
        dlat_m = np.abs(got["lat_e7"] - exact_sent["lat_e7"]) / 1e7 * 111_195.0
        dlon_m = np.abs(got["lon_e7"] - exact_sent["lon_e7"]) / 1e7 * 111_195.0 * np.cos(np.radians(29.4))
        assert (dlat_m <= 501).all() and (dlon_m <= 501).all()
        assert np.isnan(got["range_m"]).all() and np.isnan(got["azimuth_deg"]).all()
        np.testing.assert_allclose(got["pos_sigma_m"], np.sqrt(25.0 + 1000.0**2 / 6), rtol=1e-6)
        exact = np.concatenate([icd.decode_tracks(m) for _, m in hq.records() if m.type == MsgType.TRACKS])
        assert exact.tobytes() == box_records_bytes(original, 1)   # hq gets the records as stored

        # Deleted only when both are done: hq acknowledges everything, the partner nothing yet.
        ack_all(hq, hq.records(), box.stream_id)
        wait_for(lambda: own.stats["acked_records"] == 13, step)
        assert sorted(s for s, _, _ in box.pending()) == expected
        ack_all(partner, partner.records(), box.stream_id)
        wait_for(lambda: box.pending_count() == 0, step)
    finally:
        own.close()
        other.close()
        hq.close()
        partner.close()
        box.close()


def box_records_bytes(records: np.ndarray, first_seq: int) -> bytes:
    rec = records.copy()
    rec["seq"] = np.arange(first_seq, first_seq + rec.size)
    return rec.tobytes()


def test_zones_are_looked_up_through_the_daemons_function(peer, tmp_path, outbox, make_client):
    rec = tracks(4)
    rec["lat_e7"] = [294_000_000, 295_000_000, icd.LAT_LON_UNKNOWN, 296_000_000]
    rec["lon_e7"] = [-985_000_000, -985_000_000, icd.LAT_LON_UNKNOWN, -985_000_000]
    outbox.add_tracks(rec)
    outbox.commit()
    asked = []

    def zone_of(lat: float, lon: float) -> set[str]:
        asked.append((lat, lon))
        return {"north"} if lat > 29.45 else {"south"}

    rule = SharingRule(zones=("north",))
    with pytest.raises(ConfigError, match="names zones"):
        make_client(peer.endpoint, outbox, share=rule)
    client = make_client(peer.endpoint, outbox, share=rule, zone_of=zone_of)
    wait_for(lambda: outbox.pending_count() == 2, lambda: (client.poll(5), peer.drain(5)))
    wait_for(lambda: len(peer.records()) == 2, lambda: (client.poll(5), peer.drain(5)))
    assert ranges(peer.records()) == [("T", 2, 2), ("T", 4, 4)]
    assert asked == [(29.4, -98.5), (29.5, -98.5), (29.6, -98.5)]   # the unknown position is never looked up


def test_coarsen_snaps_to_cell_centres():
    rec = icd.empty_track_records(3)
    rec["lat_e7"] = [294_001_234, 294_001_300, icd.LAT_LON_UNKNOWN]
    rec["lon_e7"] = [-985_004_321, -985_004_400, icd.LAT_LON_UNKNOWN]
    rec["range_m"] = 1234.5
    out = coarsen(rec, 500.0)
    assert out[0]["lat_e7"] == out[1]["lat_e7"] and out[0]["lon_e7"] == out[1]["lon_e7"]
    assert out[2]["lat_e7"] == icd.LAT_LON_UNKNOWN and np.isnan(out[2]["pos_sigma_m"])
    dlat_m = abs(int(out[0]["lat_e7"]) - 294_001_234) / 1e7 * 111_195.0
    dlon_m = abs(int(out[0]["lon_e7"]) + 985_004_321) / 1e7 * 111_195.0 * np.cos(np.radians(29.4))
    assert dlat_m <= 250.5 and dlon_m <= 250.5
    np.testing.assert_allclose(out["pos_sigma_m"][:2], 500.0 / np.sqrt(6), rtol=1e-6)
    assert np.isnan(out["range_m"]).all() and rec["range_m"][0] == np.float32(1234.5)   # input untouched


def test_central_settings_from_yaml_with_a_sharing_rule():
    text = """\
name: partner
endpoint: tcp://partner.example.net:7700
server_public_key_file: /etc/towerd/keys/partner.key
client_secret_key_file: /etc/towerd/keys/tower.key_secret
replay_rate_rps: 200
share:
  categories: [uas]
  statuses: [confirmed, coasting, ended]
  zones: [border-strip]
  events: false
  coarsen_m: 250
"""
    root, problems = compose(text, "c.yaml")
    assert problems == []
    v = Validator()
    built = v.build(root, CentralSettings)
    assert v.problems == []
    assert built.share == SharingRule(categories=("uas",), statuses=("confirmed", "coasting", "ended"),
                                      zones=("border-strip",), events=False, coarsen_m=250.0)
    assert built.replay_rate_rps == 200.0 and built.window == 64

    bad = text.replace("[uas]", "[uas, drone]").replace("coarsen_m: 250", "coarsen_m: -1")
    root, _ = compose(bad, "c.yaml")
    v = Validator()
    v.build(root, CentralSettings)
    messages = [p.format("c.yaml") for p in v.problems]
    assert any("share.categories[1]: 'drone' is not allowed" in m for m in messages), messages
    assert any("share.coarsen_m: -1 is out of range" in m for m in messages), messages


def test_uplink_log_lines_carry_the_central_for_the_journal(ctx, outbox, caplog):
    """journalctl -u towerd CENTRAL=partner: every uplink line names its central."""
    caplog.set_level(logging.INFO, logger="towerd.uplink.client")
    client = UplinkClient("tx-test-001", settings("tcp://127.0.0.1:9", name="partner"), outbox,
                          clock=SystemClock(), context=ctx)
    client.close()
    lines = [r for r in caplog.records if r.name == "towerd.uplink.client"]
    assert lines and all(getattr(r, "central", None) == "partner" for r in lines)
