"""A tower listing several endpoints of one central (``extra_endpoints``): real ROUTERs on
127.0.0.1 that the test drives, a real SQLite outbox."""

from __future__ import annotations

import pytest

from processes import wait_for
from test_uplink import Peer, ctx, outbox, ranges, settings, tracks  # noqa: F401 (ctx, outbox: fixtures)
from towerd import icd
from towerd.clock import SystemClock
from towerd.uplink.client import UplinkClient

TOWER = "tx-ep-01"


def test_both_endpoints_carry_reports_and_one_lost_fails_over_at_once(ctx, outbox):
    a, b = Peer(ctx), Peer(ctx)
    client = None
    try:
        s = settings(a.endpoint, extra_endpoints=(b.endpoint,), batch_records=1, ack_timeout_s=60.0)
        client = UplinkClient(TOWER, s, outbox, clock=SystemClock())

        def step() -> None:
            client.poll(5)
            for peer in (a, b):
                if not peer.sock.closed:
                    peer.drain(5)

        wait_for(lambda: len(client._up_endpoints) == 2, step, what="both endpoints up")
        outbox.add_tracks(tracks(8))
        outbox.commit()
        wait_for(lambda: len(a.records()) + len(b.records()) >= 8, step, what="records sent")
        assert a.records() and b.records(), "the messages are spread over both endpoints"
        on_a = ranges(a.records())
        for rid, m in b.records():  # b acknowledges its share; a's share stays in flight
            seq = icd.decode_tracks(m)["seq"]
            b.send(rid, icd.encode_ack(m.stream_id, int(seq[0]), int(seq[-1])))
        b.received.clear()
        a.close()
        # Not after the 60 s ACK timeout: at the disconnect, a's share goes to b as backlog.
        wait_for(lambda: len(b.records()) >= len(on_a), step, timeout_s=10, what="a's share re-sent to b")
        assert sorted(ranges(b.records())) == sorted(on_a)
        assert all(m.flags == icd.FLAG_REPLAY for _, m in b.records())
        assert client.link_up and client.stats["disconnects"] == 1
        assert outbox.pending_count() == len(on_a)
    finally:
        if client is not None:
            client.close()
        a.close()
        b.close()


def test_extra_endpoints_must_differ():
    with pytest.raises(ValueError, match="extra_endpoints"):
        settings("tcp://127.0.0.1:1", extra_endpoints=("tcp://127.0.0.1:1",))
    with pytest.raises(ValueError, match="extra_endpoints"):
        settings("tcp://127.0.0.1:1", extra_endpoints=("",))
