"""Reference central: a ROUTER that stores tower reports and acknowledges them (ICD v1).

Used for lab links, demos and tests; the production central is built by another team
against the same ICD. Per message: decode, store in one committed SQLite transaction,
and only then ACK with the message's first and last seq and the same stream_id. HEALTH
is answered with HEALTH_ACK and only the last one per tower is kept (in memory). A
malformed message is dropped, counted per reason and logged at most once per second per
reason; it never stops the server. If the store fails, nothing is acknowledged (the tower
sends again) and the tower gets an ERROR ``central.store_failed``.

Socket: ``ROUTER_HANDOVER=1`` (a reconnecting tower takes its routing id over),
``ROUTER_MANDATORY=1`` (an ACK to a tower that is gone fails with EHOSTUNREACH, which is
logged and counted, not fatal), ``LINGER=0``, ``MAXMSGSIZE`` bounding one frame.

Not done yet (a later issue): CURVE with a ZAP allow-list that binds each key to one
tower id. ``plain=False`` raises UplinkError rather than pretending to be secure.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

import zmq

from towerd.central.store import CentralStore
from towerd.clock import Clock, SystemClock
from towerd.errors import EX_CONFIG, FrameError, OutboxError, TowerdError, UplinkError
from towerd.icd import (
    FLAG_REPLAY,
    MsgType,
    decode,
    decode_events,
    decode_health,
    decode_tracks,
    encode_ack,
    encode_error,
    encode_health_ack,
)
from towerd.uplink.client import TOWER_ID_RE, RateLimitedLog

log = logging.getLogger(__name__)

MAX_FRAME_SIZE = 16 * 1024 * 1024
"""Largest frame accepted (libzmq MAXMSGSIZE drops the connection beyond it). A full
TRACKS message is 16 + 80 * 65535 bytes (5.2 MB); EVENTS get the rest of the room."""
_MAX_MESSAGES_PER_POLL = 1000
_SEQ_MAX = 2**63 - 1


class CentralServer:
    """ROUTER + CentralStore. Drive it with :meth:`poll_once` or :meth:`serve_forever`
    from one thread."""

    def __init__(
        self,
        bind: str,
        db_path: str | Path,
        *,
        plain: bool = True,
        clock: Clock | None = None,
        server_secret_key_file: str | None = None,
        allow_dir: str | None = None,
    ) -> None:
        if not plain:
            raise UplinkError("CURVE central is not implemented yet")
        if server_secret_key_file or allow_dir:
            log.warning("central is plain: server_secret_key_file and allow_dir are ignored")
        self._clock = clock if clock is not None else SystemClock()
        self._limited = RateLimitedLog(log, self._clock)
        self._health: dict[str, dict] = {}
        self._stats: dict = {
            "received": 0,
            "malformed": 0,
            "malformed_by_reason": {},
            "stored_tracks": 0,
            "stored_events": 0,
            "duplicates": 0,
            "acks_sent": 0,
            "health_received": 0,
            "unroutable": 0,
            "reply_dropped": 0,
            "store_errors": 0,
        }
        self._closed = False
        self._store = CentralStore(db_path, clock=self._clock)
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.ROUTER)
        try:
            self._sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
            self._sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
            self._sock.setsockopt(zmq.LINGER, 0)
            self._sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_SIZE)
            self._sock.bind(bind)
            self._endpoint = self._sock.getsockopt(zmq.LAST_ENDPOINT).decode()
        except zmq.ZMQError as exc:
            self.close()
            raise UplinkError(f"central cannot bind {bind!r}: {exc}") from exc
        log.debug("central bound to %s, store %s", self._endpoint, db_path)

    @property
    def bound_endpoint(self) -> str:
        """The endpoint actually bound (the real port when bound to ``:*``)."""
        return self._endpoint

    @property
    def store(self) -> CentralStore:
        return self._store

    @property
    def health(self) -> dict[str, dict]:
        """The last HEALTH object received from each tower (a copy)."""
        return dict(self._health)

    @property
    def stats(self) -> dict:
        """Counters (a copy): received, malformed, malformed_by_reason, stored_tracks,
        stored_events, duplicates, acks_sent, health_received, unroutable,
        reply_dropped, store_errors."""
        return {**self._stats, "malformed_by_reason": dict(self._stats["malformed_by_reason"])}

    # ---------------------------------------------------------------- serving

    def serve_forever(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set (checked at least every 100 ms)."""
        while not stop.is_set():
            self.poll_once(100)

    def poll_once(self, timeout_ms: int) -> int:
        """Wait up to ``timeout_ms`` for messages, then handle those waiting (at most
        1000). Returns how many were handled."""
        if self._closed:
            raise UplinkError("central is closed")
        if not self._sock.poll(timeout_ms, zmq.POLLIN):
            return 0
        handled = 0
        while handled < _MAX_MESSAGES_PER_POLL:
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            handled += 1
            self._handle(frames)
        return handled

    def _malformed(self, reason: str, peer: str, detail: str) -> None:
        self._stats["malformed"] += 1
        by_reason = self._stats["malformed_by_reason"]
        by_reason[reason] = by_reason.get(reason, 0) + 1
        self._limited(logging.WARNING, reason, "central: dropped malformed message from %s: %s", peer, detail)

    def _handle(self, frames: list[bytes]) -> None:
        self._stats["received"] += 1
        peer = repr(frames[0][:64]) if frames else "?"
        if len(frames) != 2:
            self._malformed("frames", peer, f"{len(frames) - 1} message frames, expected 1")
            return
        rid, frame = frames
        try:
            tower_id = rid.decode("ascii")
        except UnicodeDecodeError:
            tower_id = ""
        if not TOWER_ID_RE.fullmatch(tower_id):
            self._malformed("routing_id", peer, "routing id is not a tower id")
            return
        try:
            msg = decode(frame)
            if msg.type == MsgType.TRACKS:
                self._on_tracks(rid, tower_id, msg)
            elif msg.type == MsgType.EVENTS:
                self._on_events(rid, tower_id, msg)
            elif msg.type == MsgType.HEALTH:
                self._health[tower_id] = decode_health(msg)
                self._stats["health_received"] += 1
                self._reply(rid, tower_id, encode_health_ack(msg.stream_id))
            else:
                self._malformed("direction", tower_id, f"{msg.type.name} is not sent by a tower")
        except FrameError as exc:
            self._malformed(getattr(exc, "reason", "decode"), tower_id, str(exc))

    def _on_tracks(self, rid: bytes, tower_id: str, msg) -> None:
        records = decode_tracks(msg)
        first, last = int(records["seq"][0]), int(records["seq"][-1])
        if last > _SEQ_MAX:
            self._malformed("seq_range", tower_id, f"seq {last} beyond what this central stores")
            return
        try:
            new = self._store.store_tracks(tower_id, msg.stream_id, records, bool(msg.flags & FLAG_REPLAY))
        except OutboxError as exc:
            self._store_failed(rid, tower_id, msg.stream_id, exc)
            return
        self._stats["stored_tracks"] += new
        self._stats["duplicates"] += records.size - new
        self._ack(rid, tower_id, msg.stream_id, first, last)

    def _on_events(self, rid: bytes, tower_id: str, msg) -> None:
        events = decode_events(msg)
        first, last = events[0]["seq"], events[-1]["seq"]
        if last > _SEQ_MAX:
            self._malformed("seq_range", tower_id, f"seq {last} beyond what this central stores")
            return
        try:
            new = self._store.store_events(tower_id, msg.stream_id, events, bool(msg.flags & FLAG_REPLAY))
        except OutboxError as exc:
            self._store_failed(rid, tower_id, msg.stream_id, exc)
            return
        self._stats["stored_events"] += new
        self._stats["duplicates"] += len(events) - new
        self._ack(rid, tower_id, msg.stream_id, first, last)

    def _store_failed(self, rid: bytes, tower_id: str, stream_id: int, exc: Exception) -> None:
        self._stats["store_errors"] += 1
        self._limited(logging.ERROR, "store_failed", "central: storing from %s failed, not acknowledged: %s",
                      tower_id, exc)
        self._reply(rid, tower_id, encode_error(stream_id, "central.store_failed", "records not stored; send again"))

    def _ack(self, rid: bytes, tower_id: str, stream_id: int, first: int, last: int) -> None:
        if self._reply(rid, tower_id, encode_ack(stream_id, first, last)):
            self._stats["acks_sent"] += 1

    def _reply(self, rid: bytes, tower_id: str, frame: bytes) -> bool:
        try:
            self._sock.send_multipart([rid, frame], zmq.NOBLOCK)
        except zmq.Again:
            self._stats["reply_dropped"] += 1
            self._limited(logging.WARNING, "reply_hwm", "central: reply to %s dropped (queue full); "
                          "it will send again", tower_id)
            return False
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EHOSTUNREACH:
                self._stats["unroutable"] += 1
                self._limited(logging.WARNING, "unroutable", "central: %s is gone, reply not delivered "
                              "(it will send again)", tower_id)
            else:
                self._stats["reply_dropped"] += 1
                self._limited(logging.ERROR, "reply_error", "central: reply to %s failed: %s", tower_id, exc)
            return False
        return True

    def close(self) -> None:
        """Close the socket, the context and the store. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._sock.close(0)
        self._ctx.term()
        self._store.close()


def main(argv: list[str]) -> int:
    """``towerd central``: run the reference central until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(prog="towerd central", description="Reference central for ICD v1 (lab/demo).")
    parser.add_argument("--bind", default="tcp://*:7700", help="ZeroMQ endpoint to bind (default tcp://*:7700)")
    parser.add_argument("--db", required=True, help="SQLite file for the received reports")
    parser.add_argument("--plain", action="store_true",
                        help="plain TCP without CURVE (required: CURVE is not implemented yet)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.plain:
        log.error("CURVE central is not implemented yet: run with --plain (lab and demo links only)")
        return EX_CONFIG
    try:
        server = CentralServer(args.bind, args.db, plain=True)
    except TowerdError as exc:
        log.error("central cannot start: %s", exc)
        return 1
    stop = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        log.info("central: %s received, stopping", signal.Signals(signum).name)
        stop.set()

    old = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    log.info("central listening on %s", server.bound_endpoint)
    try:
        server.serve_forever(stop)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        stats = server.stats
        server.close()
    log.info("central stopped: %d tracks and %d events stored, %d duplicates, %d malformed",
             stats["stored_tracks"], stats["stored_events"], stats["duplicates"], stats["malformed"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
