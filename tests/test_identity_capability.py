"""Whether a central takes identities (ICD v1.1) survives a restart: it is kept in the
outbox per central with the central's server key, so a v1 central is not probed at every
start; it is asked again after ``share.identity.recheck_after_s`` and at once under
another server key (an upgraded or replaced central). Real ZeroMQ sockets on loopback and
a real outbox file, closed and reopened as a daemon restart does."""

from __future__ import annotations

import logging
import time

import pytest

from test_identity_sharing import BASE
from test_identity_uplink import identity_msgs, idents
from test_uplink import TOWER, Peer, ctx, peer, settings, wait_for  # noqa: F401 (ctx, peer: fixtures)
from towerd import icd
from towerd.clock import SystemClock
from towerd.config import parse_config
from towerd.errors import ConfigError
from towerd.outbox.sqlite import Outbox
from towerd.status import render
from towerd.uplink.client import UplinkClient
from towerd.uplink.sharing import IdentitySharing, SharingRule

RECHECK_S = 60.0


class JumpClock(SystemClock):
    """The real clocks, both moved forward by ``jump_s`` on demand (a long wait)."""

    def __init__(self) -> None:
        self.jump_s = 0.0

    def monotonic(self) -> float:
        return super().monotonic() + self.jump_s

    def utc_us(self, mono: float | None = None) -> int:
        return super().utc_us(None if mono is None else mono - self.jump_s) + round(self.jump_s * 1e6)


def start(path, endpoint: str, clock) -> tuple[Outbox, UplinkClient]:
    """A daemon's start, as far as identity goes: the outbox file opened, the uplink made."""
    box = Outbox(path, clock=clock)
    rule = SharingRule(identity=IdentitySharing(recheck_after_s=RECHECK_S))
    return box, UplinkClient(TOWER, settings(endpoint, ack_timeout_s=0.2, share=rule), box, clock=clock)


def stop(box: Outbox, client: UplinkClient) -> None:
    box.commit()
    client.close()
    box.close()


def test_a_v1_central_is_remembered_across_a_restart_and_asked_again_later(ctx, peer, tmp_path, caplog):
    path, clock = tmp_path / "outbox.sqlite", JumpClock()
    box, client = start(path, peer.endpoint, clock)

    def step():
        client.poll(5)
        peer.drain(5)

    try:
        box.add_identities(idents(2))
        box.commit()
        wait_for(lambda: identity_msgs(peer), step, what="the first IDENTITY")
        peer.send(TOWER.encode(), icd.encode_error(box.identity_stream_id, "malformed.type", "unknown type 0x04"))
        wait_for(lambda: client.identity_capability == "unsupported", step, what="unsupported")
    finally:
        stop(box, client)
    asked = len(identity_msgs(peer))

    # Restart: the central is known not to take identities before anything is sent.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="towerd.uplink"):
        box, client = start(path, peer.endpoint, clock)
    try:
        assert client.identity_capability == "unsupported"
        remembered = [r.getMessage() for r in caplog.records if "remembered" in r.getMessage()]
        assert len(remembered) == 1 and "asked again in" in remembered[0]
        box.add_identities(idents(3))
        box.commit()
        wait_for(lambda: box.identity_pending_count() == 0, step, what="new identities withheld, not sent")
        peer.drain(50)
        assert len(identity_msgs(peer)) == asked  # no probe at the restart
        status = client.stats
        assert status["identity"] == "unsupported" and 50.0 < status["identity_recheck_in_s"] <= RECHECK_S
        text, _ = render({"centrals": {"lab": {**status, "endpoint": peer.endpoint, "link_up": True}}})
        assert "WITHHELD: this central speaks ICD v1 only" in text and "asked again in 5" in text
        # recheck_after_s later the central is asked again; an upgraded one acknowledges.
        clock.jump_s += RECHECK_S
        box.add_identities(idents(1))
        box.commit()
        wait_for(lambda: len(identity_msgs(peer)) > asked, step, what="asked again")
        assert client.identity_capability == "unknown"
        msg = identity_msgs(peer)[-1]
        seq = icd.decode_identities(msg)["seq"]
        peer.send(TOWER.encode(), icd.encode_ack(box.identity_stream_id, int(seq[0]), int(seq[-1])))
        wait_for(lambda: client.identity_capability == "supported", step, what="supported")
    finally:
        stop(box, client)
    box, client = start(path, peer.endpoint, clock)
    try:
        assert client.identity_capability == "supported"  # remembered too
    finally:
        stop(box, client)


def test_another_server_key_is_asked_at_once(ctx, peer, tmp_path):
    path, clock = tmp_path / "outbox.sqlite", SystemClock()
    box, client = start(path, peer.endpoint, clock)
    try:
        box.add_identities(idents(1))
        box.commit()
        wait_for(lambda: identity_msgs(peer), lambda: (client.poll(5), peer.drain(5)), what="IDENTITY")
        peer.send(TOWER.encode(), icd.encode_error(box.identity_stream_id, "malformed.type", "unknown type 0x04"))
        wait_for(lambda: client.identity_capability == "unsupported", lambda: (client.poll(5), peer.drain(5)))
    finally:
        stop(box, client)
    other = Peer(ctx)  # the central moved: a plain link's key is its endpoint (CURVE: its public key)
    box, client = start(path, other.endpoint, clock)
    try:
        assert client.identity_capability == "unknown"
        box.add_identities(idents(1))
        box.commit()
        wait_for(lambda: identity_msgs(other), lambda: (client.poll(5), other.drain(5)), what="asked at once")
    finally:
        stop(box, client)
        other.close()


def test_the_recheck_setting_is_read_and_validated():
    cfg = parse_config(BASE + "        recheck_after_s: 3600\n", "t.yaml")
    assert cfg.centrals[0].share.identity.recheck_after_s == 3600.0
    for bad in ("        recheck_after_s: 5\n", "        recheck_after: 3600\n"):
        with pytest.raises(ConfigError) as info:
            parse_config(BASE + bad, "t.yaml")
        assert any("identity.recheck_after" in p for p in info.value.problems), info.value.problems


def test_the_identity_stream_times_out_as_adaptively_as_the_records(ctx, peer, tmp_path):
    """One ACK-timer class for both streams: a central that acknowledges IDENTITY in 0.4 s
    (under the 0.5 s floor) raises the identity timeout to srtt + 4 rttvar (1.2 s), so a
    second message acknowledged in 0.8 s is not sent twice (the identity stream's old
    timeout went back to the floor at every ACK: it was sent again at 0.5 s)."""
    box = Outbox(tmp_path / "outbox.sqlite", clock=SystemClock())
    client = UplinkClient(TOWER, settings(peer.endpoint, ack_timeout_s=0.5, ack_timeout_max_s=60.0), box,
                          clock=SystemClock())

    def step():
        client.poll(5)
        peer.drain(5)

    def ack_after(delay_s: float, index: int) -> None:
        """The ``index``-th IDENTITY message acknowledged ``delay_s`` after it came (a slow central)."""
        wait_for(lambda: len(identity_msgs(peer)) > index, step, what=f"IDENTITY {index}")
        deadline = time.monotonic() + delay_s
        wait_for(lambda: time.monotonic() >= deadline, step, timeout_s=delay_s + 5.0, what="a slow central")
        seq = icd.decode_identities(identity_msgs(peer)[index])["seq"]
        peer.send(TOWER.encode(), icd.encode_ack(box.identity_stream_id, int(seq[0]), int(seq[-1])))
        wait_for(lambda: client.stats["identity_acked_records"] > index, step, what=f"ACK {index}")

    try:
        assert client.stats["identity_ack_timeout_s"] == 0.5
        box.add_identities(idents(1))
        box.commit()
        ack_after(0.4, 0)
        assert client.stats["identity_ack_timeout_s"] >= 1.2  # 0.4 s + 4 * 0.2 s (more if the poll was late)
        box.add_identities(idents(1))
        box.commit()
        ack_after(0.8, 1)
        peer.drain(20)
        assert client.stats["identity_resent_msgs"] == 0 and len(identity_msgs(peer)) == 2
    finally:
        client.close()
        box.close()
