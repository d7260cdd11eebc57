"""A caller that waits on the uplink's socket descriptors (``zmq.FD``, as the load
generator does with epoll) must never be left with a reply that no descriptor announces.

Such a descriptor signals pending socket commands, not messages; any operation on the
socket takes those commands in. When a reply arrives while a poll sends, the send takes in
its notice: the poll must then read the reply itself, or nothing would wake the caller."""
from __future__ import annotations

import select
import time

import zmq

from test_uplink import TOWER, Peer, settings, tracks, wait_for  # noqa: F401 (fixtures below)
from towerd import icd
from towerd.clock import SystemClock
from towerd.outbox.sqlite import Outbox
from towerd.uplink.client import UplinkClient

_PAST_THROTTLE_S = 0.005
"""libzmq takes in a socket's commands on a send only if about 1 ms (3e6 TSC ticks) passed
since it last did: the hook below lets that much pass after the reply's notice arrived."""


class _HookedOutbox(Outbox):
    """The real outbox; ``hook`` runs once when the uplink next reads its live rows,
    that is inside a poll, after the poll looked at its sockets and before it sends."""

    hook = None

    def recent_tracks(self, *args, **kwargs):
        hook, self.hook = self.hook, None
        if hook is not None:
            hook()
        return super().recent_tracks(*args, **kwargs)


def _readable(fd: int, timeout_s: float) -> bool:
    return bool(select.select([fd], [], [], timeout_s)[0])


def test_a_reply_whose_notice_a_send_took_in_is_read_in_that_poll(tmp_path):
    ctx = zmq.Context()
    peer = Peer(ctx)
    box = _HookedOutbox(tmp_path / "outbox.sqlite", clock=SystemClock())
    client = UplinkClient(TOWER, settings(peer.endpoint), box, clock=SystemClock())
    try:
        wait_for(lambda: client.link_up, lambda: client.poll(10), what="link up")
        box.add_tracks(tracks(2))
        box.commit()
        wait_for(lambda: peer.records(), lambda: (client.poll(5), peer.drain(5)), what="the first message")
        rid, first = peer.records()[0]
        seqs = icd.decode_tracks(first)["seq"]
        dealer_fd = client.pollables()[0].get(zmq.FD)

        def ack_arrives_now() -> None:
            peer.send(rid, icd.encode_ack(box.stream_id, int(seqs[0]), int(seqs[-1])))
            assert _readable(dealer_fd, 5.0), "the ACK's notice never came"
            time.sleep(_PAST_THROTTLE_S)

        box.hook = ack_arrives_now
        box.add_tracks(tracks(1))
        box.commit()
        client.poll(0)  # sends the new record; the ACK came in just before that send
        assert box.hook is None, "the hook did not run inside the poll"
        assert client.stats["acked_records"] == 2, "the ACK was left unread behind its consumed notice"
        # Nothing is left behind: no reply waits, so the descriptor will announce the next one.
        assert not client.pollables()[0].getsockopt(zmq.EVENTS) & zmq.POLLIN
    finally:
        client.close()
        box.close()
        peer.close()
        ctx.term()
