"""Uplink client against a real ROUTER on 127.0.0.1 that the test drives by hand (what it
receives, when it acknowledges), with a real SQLite outbox."""

from __future__ import annotations

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
from towerd.clock import ManualClock, SystemClock
from towerd.errors import ConfigError, UplinkError
from towerd.icd import MsgType
from towerd.outbox.sqlite import Outbox
from towerd.uplink.client import CentralSettings, UplinkClient

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


def settings(endpoint: str, **kw) -> CentralSettings:
    base = dict(plain=True, reconnect_ivl_s=0.05, reconnect_ivl_max_s=0.2, ack_timeout_s=5.0)
    base.update(kw)
    return CentralSettings("lab", endpoint, **base)


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

    def make(endpoint: str, outbox: Outbox, clock=None, health=None, **kw) -> UplinkClient:
        client = UplinkClient(TOWER, settings(endpoint, **kw), outbox, clock=clock or SystemClock(), health=health)
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
    assert all(m.stream_id == outbox.stream_id and m.flags == 0 for _, m in peer.received)
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
        stats = client.stats
        assert stats["resent_msgs"] == 3 and stats["connects"] == 2 and stats["disconnects"] == 1
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
    assert healths()[0] == {"tower_id": TOWER, "n": 1}
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
    with pytest.raises(ConfigError):
        settings("tcp://127.0.0.1:1", window=0)
    with pytest.raises(ConfigError):
        settings("tcp://127.0.0.1:1", batch_records=65536)
    with pytest.raises(ConfigError, match="CURVE needs"):
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
    d.mkdir()
    server_pub, server_sec = zmq.auth.create_certificates(d, "central")
    tower_pub, tower_sec = zmq.auth.create_certificates(d, "tower")
    return {"server_pub": Path(server_pub), "server_sec": Path(server_sec),
            "tower_pub": Path(tower_pub), "tower_sec": Path(tower_sec)}


def test_missing_or_wrong_key_files_name_the_file(tmp_path, outbox, keys):
    missing = tmp_path / "nope.key_secret"
    cases = [
        (dict(server_public_key_file=str(keys["server_pub"]), client_secret_key_file=str(missing)), str(missing)),
        (dict(server_public_key_file=str(tmp_path / "gone.key"), client_secret_key_file=str(keys["tower_sec"])),
         "gone.key"),
        (dict(server_public_key_file=str(keys["server_pub"]), client_secret_key_file=str(keys["tower_pub"])),
         "holds no secret key"),
    ]
    for files, expected in cases:
        s = CentralSettings("agency", "tcp://127.0.0.1:1", **files)
        with pytest.raises(UplinkError, match=expected.replace(".", r"\.")):
            UplinkClient(TOWER, s, outbox, clock=SystemClock())


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
