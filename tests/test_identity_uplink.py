"""The uplink's identity flow against a bare ROUTER that decides every reply (real
ZeroMQ sockets on loopback, a real outbox file): a central that never answers IDENTITY,
one that is busy, an ERROR on the records stream, and a rule that disables identity. The
records flow is never held up."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from test_uplink import TOWER, Peer, ctx, peer, settings, tracks, wait_for  # noqa: F401 (ctx, peer: fixtures)
from towerd import icd
from towerd.clock import SystemClock
from towerd.icd import MsgType
from towerd.outbox.sqlite import Outbox
from towerd.reports.identity import IdentityStatus, TrackIdentity
from towerd.uplink.client import UplinkClient
from towerd.uplink.identity import IDENTITY_WINDOW
from towerd.uplink.sharing import IdentitySharing, SharingRule


@pytest.fixture
def box(tmp_path):
    b = Outbox(tmp_path / "outbox.sqlite", clock=SystemClock())
    yield b
    b.close()


def idents(n: int) -> list[TrackIdentity]:
    return [TrackIdentity(track_id=i, time_us=1_700_000_000_000_000 + i, status=IdentityStatus.COOPERATIVE,
                          uas_id=f"SN{i:08d}") for i in range(n)]


def identity_msgs(peer: Peer) -> list[icd.Message]:
    return [m for _, m in peer.received if m.type == MsgType.IDENTITY]


def ack_records(peer: Peer, box: Outbox, acked: set) -> None:
    """Acknowledge every TRACKS/EVENTS message received (once each)."""
    for _, m in peer.records():
        seq = icd.decode_tracks(m)["seq"] if m.type == MsgType.TRACKS else [e["seq"] for e in icd.decode_events(m)]
        key = (int(seq[0]), int(seq[-1]))
        if key not in acked:
            acked.add(key)
            peer.send(TOWER.encode(), icd.encode_ack(box.stream_id, *key))


def test_a_central_that_never_answers_identity_holds_up_no_record(peer, box):
    box.add_identities(idents(100 * (IDENTITY_WINDOW + 2)))  # more than a window of messages
    box.add_tracks(tracks(50))
    box.commit()
    client = UplinkClient(TOWER, settings(peer.endpoint, ack_timeout_s=0.2, ack_timeout_max_s=0.4,
                                          batch_records=100), box, clock=SystemClock())
    acked: set = set()
    try:
        def step():
            client.poll(5)
            peer.drain(5)
            ack_records(peer, box, acked)

        wait_for(lambda: box.pending_count() == 0, step, what="every record acknowledged")
        first_round = len(identity_msgs(peer))
        assert first_round == IDENTITY_WINDOW  # the window, no more, while nothing is acknowledged
        wait_for(lambda: client.stats["identity_resent_msgs"] >= 2 * IDENTITY_WINDOW, step, what="resends")
        assert client.identity_capability == "unknown" and box.identity_pending_count() == 100 * (IDENTITY_WINDOW + 2)
        assert {m.stream_id for m in identity_msgs(peer)} == {box.identity_stream_id}
        # Late answers: acknowledging what came makes room for the rest, and says "supported".
        for m in identity_msgs(peer)[:IDENTITY_WINDOW]:
            seq = icd.decode_identities(m)["seq"]
            peer.send(TOWER.encode(), icd.encode_ack(box.identity_stream_id, int(seq[0]), int(seq[-1])))
        wait_for(lambda: client.stats["identity_acked_records"] == 100 * IDENTITY_WINDOW, step, what="acks")
        assert client.identity_capability == "supported"
        wait_for(lambda: len({icd.decode_identities(m)["seq"][0] for m in identity_msgs(peer)})
                 == IDENTITY_WINDOW + 2, step, what="the rest sent")
    finally:
        client.close()


def test_busy_on_the_identity_stream_and_errors_on_the_records_stream_are_not_v1(peer, box):
    box.add_identities(idents(3))
    box.commit()
    client = UplinkClient(TOWER, settings(peer.endpoint, ack_timeout_s=0.2), box, clock=SystemClock())
    try:
        def step():
            client.poll(5)
            peer.drain(5)

        wait_for(lambda: identity_msgs(peer), step, what="an IDENTITY message")
        peer.send(TOWER.encode(), icd.encode_error(box.identity_stream_id, "central.busy", "later"))
        peer.send(TOWER.encode(), icd.encode_error(box.stream_id, "malformed.type", "not about identity"))
        wait_for(lambda: client.stats["errors_received"] == 2, step, what="both errors")
        assert client.identity_capability == "unknown"
        wait_for(lambda: len(identity_msgs(peer)) >= 2, step, what="sent again after the timeout")
        peer.send(TOWER.encode(), icd.encode_error(box.identity_stream_id, "malformed.type", "unknown type 0x04"))
        wait_for(lambda: client.identity_capability == "unsupported", step, what="unsupported")
        wait_for(lambda: box.identity_pending_count() == 0, step, what="withheld rows deleted")
        box.add_identities(idents(2))  # later identities are withheld too, never sent
        box.commit()
        n = len(identity_msgs(peer))
        wait_for(lambda: box.identity_pending_count() == 0, step, what="new rows withheld")
        assert len(identity_msgs(peer)) == n and client.stats["identity_withheld_records"] == 5
    finally:
        client.close()


def test_a_rule_without_identity_sends_none(peer, box):
    box.add_identities(idents(4))
    box.add_tracks(tracks(2))
    box.commit()
    rule = SharingRule(identity=IdentitySharing(enabled=False))
    client = UplinkClient(TOWER, settings(peer.endpoint, share=rule), box, clock=SystemClock())
    acked: set = set()
    try:
        def step():
            client.poll(5)
            peer.drain(5)
            ack_records(peer, box, acked)

        wait_for(lambda: box.pending_count() == 0 and box.identity_pending_count() == 0, step, what="all done")
        assert identity_msgs(peer) == [] and client.identity_capability == "disabled"
        assert np.array_equal(icd.decode_tracks(peer.records()[0][1])["seq"], [1, 2])
    finally:
        client.close()


def test_damaged_identity_rows_are_skipped_counted_and_the_rest_sent(peer, box, tmp_path):
    box.add_identities(idents(5))
    box.commit()
    with sqlite3.connect(tmp_path / "outbox.sqlite") as other:  # a damaged disk, as it were
        other.execute("UPDATE identities SET payload = substr(payload, 1, 100) WHERE seq = 2")
        bad = other.execute("SELECT payload FROM identities WHERE seq = 4").fetchone()[0]
        other.execute("UPDATE identities SET payload = ? WHERE seq = 4", (bad[:28] + b"\x09" + bad[29:],))
    client = UplinkClient(TOWER, settings(peer.endpoint), box, clock=SystemClock())
    try:
        sent: list[int] = []

        def step_and_collect():
            before = [m for _, m in peer.received if m.type == MsgType.IDENTITY]
            client.poll(5)
            peer.drain(5)
            for m in [m for _, m in peer.received if m.type == MsgType.IDENTITY][len(before):]:
                seq = icd.decode_identities(m)["seq"]
                sent.extend(int(s) for s in seq)
                peer.send(TOWER.encode(), icd.encode_ack(box.identity_stream_id, int(seq[0]), int(seq[-1])))

        wait_for(lambda: box.identity_pending_count() == 0, step_and_collect, what="every row done")
        assert sorted(set(sent)) == [1, 3, 5] and client.stats["identity_bad_rows"] == 2
    finally:
        client.close()
