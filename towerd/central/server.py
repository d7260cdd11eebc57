"""Reference central: a ROUTER that stores tower reports and acknowledges them (ICD v1).

Used for lab links, demos and tests; the production central is built by another team
against the same ICD. Per message: decode, store in one committed SQLite transaction,
and only then ACK with the message's first and last seq and the same stream_id. HEALTH
is answered with HEALTH_ACK and only the last one per tower is kept (in memory). A
malformed message is dropped, counted per reason and per tower, answered with ERROR
``malformed.<reason>`` and logged at most once per second per reason; it never stops the
server (a last-resort guard per message turns a defect into a logged traceback and a
count). If the store fails, nothing is acknowledged (the tower sends again) and the
tower gets an ERROR ``central.store_failed``.

Limits per tower (:mod:`towerd.central.limits`): largest message, event and HEALTH
sizes, records and bytes per second into the store (a tower over its rates has its
messages held back and acknowledged later; only past a bound are they refused,
unacknowledged, with ERROR ``central.busy``), CURVE handshakes per second; and for the
central: the state kept per claimed tower id, the handshake timeout, the per-connection
receive queue, the log rate.

Security (the default): CURVE. The server's secret key comes from a zmq certificate file
(mode 0600, checked like a tower's); tower public keys from an allow-list directory of
``<tower-id>.key`` files (see :mod:`towerd.keys`), each binding one key to one tower id.
A ZAP handler (:mod:`towerd.central.auth`) is bound *before* the ROUTER, so no handshake
is ever admitted without it; the directory is re-read when it changes (checked every
``reload_interval_s``) and on :meth:`CentralServer.reload_allow_list` (SIGHUP for
``towerd central``). A message whose routing id is not the tower its key belongs to is
dropped, counted (``refused_by_reason["identity"]``) and logged, and that key is
quarantined. ``plain=True`` (``--plain``) runs without CURVE, for lab links only.

Socket: ``ROUTER_HANDOVER=1`` (a reconnecting tower takes its routing id over),
``ROUTER_MANDATORY=1`` (an ACK to a tower that is gone fails with EHOSTUNREACH, which is
logged and counted, not fatal), ``LINGER=0``, ``MAXMSGSIZE`` bounding one frame, ZMTP
heartbeats (1 s, timeout 3 s) so that a dead tower connection is dropped. Measured with
libzmq 4.3.5: when HANDOVER gives a routing id to a new connection, the old one is not
closed at once; it is dropped when the heartbeat times out (after about 4 heartbeat
periods), and only then does its tower reconnect.

``towerd central export --db DB [--out FILE]`` writes what a store holds as JSON lines.
``--store postgresql://...`` (instead of ``--db``) keeps the reports in PostgreSQL
(:mod:`towerd.central.pgstore`), which several central processes may share.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import resource
import signal
import sys
import threading
from collections import OrderedDict, deque
from pathlib import Path
from typing import IO

import zmq

from towerd.central.auth import ZAP_DOMAIN, CurveAuthenticator
from towerd.central.limits import CentralLimits, TokenBucket, TowerLimits, load_limits
from towerd.central.handshakes import HandshakeWatch
from towerd.central.store import CentralStore, Pending, ReportStore, StoreResult, StreamSummary
from towerd.clock import Clock, SystemClock
from towerd.errors import EX_CONFIG, ConfigError, FrameError, OutboxError, TowerdError, UplinkError
from towerd.icd import (
    FLAG_REPLAY,
    HEADER_SIZE,
    INT64_MIN,
    TOWER_ID_RE,
    Message,
    MessageError,
    MsgType,
    decode,
    decode_events,
    decode_health,
    decode_tracks,
    encode_ack,
    encode_error,
    encode_health_ack,
)
from towerd.keys import load_secret_key_file
from towerd.ratelog import RateLimitedLog

log = logging.getLogger(__name__)

_MAX_MESSAGES_PER_POLL = 1000
_SEQ_MAX = 2**63 - 1
_FD_CHECK_S = 0.5
_NOFILE_WANTED = 65536
"""Descriptor limit the central raises its soft limit to (within the hard limit): libzmq
needs one per connection, and the default soft limit of 1024 is reached by about 1,000
idle TCP connections."""
_MAX_SOCKETS = 8
"""ZeroMQ sockets of the central's context: the ROUTER and the ZAP handler (libzmq's
default is 1023; each socket costs descriptors)."""


def _is_replay(frames: list[zmq.Frame]) -> bool:
    """Whether a received message carries the REPLAY flag (peeked in the header; the
    message is checked in full when it is handled)."""
    if len(frames) != 2:
        return False
    head = frames[1].buffer[:HEADER_SIZE]
    return len(head) == HEADER_SIZE and bool(int.from_bytes(head[14:16], "little") & FLAG_REPLAY)


class _Peer:
    """What the central keeps per claimed tower id: its limits and rate buckets, the
    messages its rates hold back, its last HEALTH and its refusal counts."""

    __slots__ = ("limits", "records", "bytes", "errors", "deferred", "deferred_bytes", "deferred_keys", "counts")

    def __init__(self, limits: TowerLimits, now: float) -> None:
        self.limits = limits
        self.records = TokenBucket(limits.records_per_s, now)
        self.bytes = TokenBucket(limits.bytes_per_s, now)
        self.errors = TokenBucket(limits.error_replies_per_s, now, burst=max(50.0, limits.error_replies_per_s))
        self.deferred: deque[_Held] = deque()
        self.deferred_bytes = 0
        self.deferred_keys: set[tuple[int, int, int]] = set()
        self.counts: dict[str, int] = {}

    def ready(self, records: int, size: int, now: float) -> bool:
        return self.records.ready(records, now) and self.bytes.ready(size, now)

    def wait_s(self, now: float) -> float:
        if not self.deferred:
            return 0.0
        held = self.deferred[0]
        return max(self.records.wait_s(held.records, now), self.bytes.wait_s(held.size, now))


@dataclasses.dataclass(frozen=True)
class _Held:
    """A decoded TRACKS or EVENTS message waiting to be stored and acknowledged."""

    rid: bytes
    tower_id: str
    msg: Message
    payload: object  # TRACKS records (ndarray) or EVENTS objects (list of dicts)
    records: int
    size: int
    first: int
    last: int

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.msg.stream_id, self.first, self.last)


class CentralServer:
    """ROUTER + CentralStore (+ CURVE admission unless ``plain``). Drive it with
    :meth:`poll_once` or :meth:`serve_forever` from one thread.

    With CURVE, ``server_secret_key_file`` (the central's key pair, mode 0600) and
    ``allow_dir`` (the tower allow-list) are required; a missing or unsafe file is a
    ConfigError naming it. ``heartbeat_ivl_s``: ZMTP heartbeat period towards the
    towers (timeout three times that); it also bounds how long a tower whose routing id
    an impostor took over keeps a dead connection (about four periods).

    ``store``: where reports go (e.g. a :class:`towerd.central.pgstore.PgCentralStore`);
    default a :class:`CentralStore` (SQLite) at ``db_path``. The server owns and closes it."""

    def __init__(
        self,
        bind: str,
        db_path: str | Path,
        *,
        plain: bool = False,
        clock: Clock | None = None,
        server_secret_key_file: str | Path | None = None,
        allow_dir: str | Path | None = None,
        reload_interval_s: float = 2.0,
        quarantine_s: float = 60.0,
        heartbeat_ivl_s: float = 1.0,
        limits: CentralLimits | None = None,
        store: ReportStore | None = None,
    ) -> None:
        self._clock = clock if clock is not None else SystemClock()
        self._limits = limits if limits is not None else CentralLimits()
        self._limited = RateLimitedLog(log, self._clock, self._limits.log_interval_s)
        self._peers: OrderedDict[str, _Peer] = OrderedDict()
        self._health: OrderedDict[str, bytes] = OrderedDict()
        self._health_bytes = 0
        self._deferring: set[str] = set()
        self._deferred_total = 0
        self._fd_short = False
        self._next_fd_check = 0.0
        self._stats: dict = {
            "received": 0,
            "malformed": 0,
            "malformed_by_reason": {},
            "refused": 0,
            "refused_by_reason": {},
            "stored_tracks": 0,
            "stored_events": 0,
            "duplicates": 0,
            "acks_sent": 0,
            "health_received": 0,
            "unroutable": 0,
            "reply_dropped": 0,
            "store_errors": 0,
            "internal_errors": 0,
            "deferred": 0,
            "busy": 0,
            "fd_exhausted": 0,
            "peers_forgotten": 0,
            "health_forgotten": 0,
            "errors_unanswered": 0,
            "replays_received": 0,
        }
        self._closed = False
        self._handshakes: HandshakeWatch | None = None
        curve_keys = None
        if plain:
            if server_secret_key_file or allow_dir:
                log.warning("central is plain: server_secret_key_file and allow_dir are ignored")
        else:
            if not zmq.has("curve"):
                raise ConfigError(f"this libzmq ({zmq.zmq_version()}) has no CURVE support; run with --plain only "
                                  "on a lab link")
            if not server_secret_key_file or not allow_dir:
                raise ConfigError("a CURVE central needs its secret key file and an allow-list directory "
                                  "(or --plain for a lab link)")
            curve_keys = load_secret_key_file(server_secret_key_file)
        self._plain = plain
        self._store: ReportStore = store if store is not None else CentralStore(db_path, clock=self._clock)
        self._pending: list[tuple[bytes, int, int, Pending]] = []  # (rid, first, last, message)
        self._pending_records = 0
        self._ctx = zmq.Context()
        self._ctx.set(zmq.MAX_SOCKETS, _MAX_SOCKETS)
        self._auth: CurveAuthenticator | None = None
        self._sock = self._ctx.socket(zmq.ROUTER)
        try:
            if curve_keys is not None:
                assert allow_dir is not None
                self._auth = CurveAuthenticator(
                    self._ctx, allow_dir, clock=self._clock, reload_interval_s=reload_interval_s,
                    quarantine_s=quarantine_s, log_interval_s=self._limits.log_interval_s,
                    handshakes_per_s=lambda tower: self._limits.for_tower(tower).handshakes_per_s)
                self._start_auth()
                self._sock.curve_server = True
                self._sock.curve_secretkey = curve_keys[1]
                self._sock.zap_domain = ZAP_DOMAIN.encode()
            self._sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
            self._sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
            self._sock.setsockopt(zmq.LINGER, 0)
            self._sock.setsockopt(zmq.MAXMSGSIZE, self._limits.largest_message_bytes + HEADER_SIZE)
            self._sock.setsockopt(zmq.RCVHWM, self._limits.receive_queue)
            self._sock.setsockopt(zmq.HANDSHAKE_IVL, max(1, round(self._limits.handshake_timeout_s * 1000)))
            self._sock.setsockopt(zmq.HEARTBEAT_IVL, max(1, round(heartbeat_ivl_s * 1000)))
            self._sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, max(1, round(3 * heartbeat_ivl_s * 1000)))
            if self._auth is not None and not self._auth.started:
                raise UplinkError("refusing to bind a CURVE central without its ZAP handler (it would admit "
                                  "any key)")
            self._sock.bind(bind)
            self._endpoint = self._sock.getsockopt(zmq.LAST_ENDPOINT).decode()
            port = self._endpoint.rsplit(":", 1)[-1]
            self._handshakes = HandshakeWatch(self._sock, self._limited, int(port) if port.isdigit() else None)
        except zmq.ZMQError as exc:
            self.close()
            raise UplinkError(f"central cannot bind {bind!r}: {exc}") from exc
        except BaseException:
            self.close()
            raise
        log.debug("central bound to %s (%s), store %s", self._endpoint, "plain" if plain else "CURVE", db_path)

    def _start_auth(self) -> None:
        """Bind the ZAP handler (before the ROUTER binds)."""
        assert self._auth is not None
        self._auth.start()

    @property
    def bound_endpoint(self) -> str:
        """The endpoint actually bound (the real port when bound to ``:*``)."""
        return self._endpoint

    @property
    def store(self) -> ReportStore:
        return self._store

    @property
    def health(self) -> dict[str, dict]:
        """The last HEALTH object received from each tower (decoded from the body kept;
        the least recently received are forgotten beyond ``total_health_bytes``)."""
        return {tid: json.loads(body) for tid, body in self._health.items()}

    @property
    def limits(self) -> CentralLimits:
        return self._limits

    @property
    def stats(self) -> dict:
        """Counters (a copy): received, malformed, malformed_by_reason, refused,
        refused_by_reason (no_user_id, revoked, identity), stored_tracks, stored_events,
        duplicates, acks_sent, health_received, unroutable, reply_dropped, store_errors,
        internal_errors (messages a defect failed on: dropped, logged with traceback),
        deferred (messages held back by a tower's rates), busy (refused: its queue of held
        back messages was full), fd_exhausted (times descriptors ran short),
        peers_forgotten, health_forgotten, errors_unanswered (ERROR replies beyond a
        tower's error_replies_per_s), replays_received (messages flagged REPLAY; each
        poll round handles them after the others), ``by_peer`` ({tower id: {reason: n}} for
        malformed, refused, busy and internal errors), and ``auth`` (the ZAP handler's
        counters) with CURVE."""
        out = {**self._stats, "malformed_by_reason": dict(self._stats["malformed_by_reason"]),
               "refused_by_reason": dict(self._stats["refused_by_reason"]),
               "by_peer": {tid: dict(p.counts) for tid, p in self._peers.items() if p.counts},
               "deferred_bytes": self._deferred_total}
        if self._auth is not None:
            out["auth"] = dict(self._auth.stats)
        if self._handshakes is not None:
            out["handshake_failed_by_reason"] = dict(self._handshakes.failures)
        return out

    def streams(self, tower_id: str | None = None) -> list[StreamSummary]:
        """Per (tower, stream): records held and the seq ranges missing, announced as
        dropped, and missing without announcement."""
        return self._store.streams(tower_id)

    def reload_allow_list(self) -> bool:
        """Re-read the allow-list directory now (SIGHUP). Returns whether it changed."""
        return self._auth.reload(force=True) if self._auth is not None else False

    # ---------------------------------------------------------------- serving

    def serve_forever(self, stop: threading.Event, reload: threading.Event | None = None) -> None:
        """Serve until ``stop`` is set (checked at least every 100 ms); re-read the
        allow-list whenever ``reload`` is set."""
        while not stop.is_set():
            if reload is not None and reload.is_set():
                reload.clear()
                self.reload_allow_list()
            self.poll_once(100)

    def poll_once(self, timeout_ms: int) -> int:
        """Wait up to ``timeout_ms`` for messages, then handle those waiting (at most
        1000, after any pending CURVE handshakes; those without the REPLAY flag first),
        and store what the rates let through of the messages held back. Returns how
        many messages were received."""
        if self._closed:
            raise UplinkError("central is closed")
        if self._handshakes is not None:
            self._handshakes.poll()  # failed handshakes: logged with the peer's address
        now = self._clock.monotonic()
        self._drain_deferred(now)
        if self._deferring:
            wait = min(self._peers[t].wait_s(now) for t in self._deferring)
            timeout_ms = min(timeout_ms, max(1, int(wait * 1000) + 1))
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        if self._auth is not None:
            self._auth.maybe_reload()
            poller.register(self._auth.socket, zmq.POLLIN)
        ready = poller.poll(timeout_ms)
        self._check_descriptors()
        if not ready:
            return 0
        if self._auth is not None:
            self._auth.handle()
        # Everything waiting (up to the bound) is taken first, then handled live first:
        # after an outage the towers' REPLAY backlogs must not delay the live reports
        # that arrive in the same round (stored and acknowledged in the first batches).
        received: list[list[zmq.Frame]] = []
        replays: list[list[zmq.Frame]] = []
        while len(received) + len(replays) < _MAX_MESSAGES_PER_POLL:
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            (replays if _is_replay(frames) else received).append(frames)
        handled = len(received) + len(replays)
        self._stats["replays_received"] += len(replays)
        received += replays
        for frames in received:
            try:
                self._handle(frames)
            except Exception:  # last resort: a defect is loud, never an outage
                self._stats["internal_errors"] += 1
                rid = frames[0].bytes[:64] if frames else b""
                tower_id = rid.decode("ascii", "replace")
                if tower_id in self._peers:
                    self._peer_count(tower_id, "internal")
                self._limited.exception("internal", "central: a message from %r could not be handled and was "
                                        "dropped (a defect, please report)", rid)
            if self._pending_records > self._store.batch_records:
                self._flush()
        self._drain_deferred(self._clock.monotonic())
        self._flush()
        return handled

    def _check_descriptors(self) -> None:
        """Log when descriptors run short (every _FD_CHECK_S). libzmq takes one per
        connection and cannot be told to stop accepting (unbinding would close every
        connection it accepted, genuine towers' too); at the limit it retries accept()
        in a tight loop until a descriptor is free. What bounds the use: the handshake
        timeout closes connections that never speak, the soft limit is raised at start
        (``towerd central``), and the allow-list keeps its last good state when it
        cannot be read."""
        now = self._clock.monotonic()
        if now < self._next_fd_check:
            return
        self._next_fd_check = now + _FD_CHECK_S
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return
        try:
            used = len(os.listdir("/proc/self/fd")) - 1  # less the one listing
        except FileNotFoundError:
            return  # no /proc
        except OSError:  # EMFILE itself
            used = soft
        short = used >= soft - max(8, soft // 32)
        if short:
            if not self._fd_short:
                self._stats["fd_exhausted"] += 1
            self._limited(logging.ERROR, "descriptors", "central: %d of %d descriptors in use: new connections "
                          "cannot be accepted until idle ones close (after %g s without a handshake); connected "
                          "towers keep working", used, soft, self._limits.handshake_timeout_s)
        elif self._fd_short:
            log.warning("central: %d of %d descriptors in use: accepting connections again", used, soft)
        self._fd_short = short

    def _peer(self, tower_id: str) -> _Peer:
        """The state kept for a claimed tower id; the least recently heard beyond
        ``max_peers`` are forgotten (never one with messages held back)."""
        peer = self._peers.get(tower_id)
        if peer is not None:
            self._peers.move_to_end(tower_id)
            return peer
        if len(self._peers) >= self._limits.max_peers:
            for old in list(self._peers)[: len(self._peers) - self._limits.max_peers + 1]:
                if not self._peers[old].deferred:
                    del self._peers[old]
                    self._stats["peers_forgotten"] += 1
        peer = self._peers[tower_id] = _Peer(self._limits.for_tower(tower_id), self._clock.monotonic())
        return peer

    def _keep_health(self, tower_id: str, body: bytes) -> None:
        """Keep the last HEALTH body per tower, all of them within total_health_bytes
        (raw bytes: a parsed object would cost ten times as much)."""
        old = self._health.pop(tower_id, None)
        self._health_bytes += len(body) - (len(old) if old is not None else 0)
        self._health[tower_id] = body
        while self._health_bytes > self._limits.total_health_bytes and len(self._health) > 1:
            _tid, dropped = self._health.popitem(last=False)
            self._health_bytes -= len(dropped)
            self._stats["health_forgotten"] += 1

    def _peer_count(self, tower_id: str, reason: str) -> None:
        peer = self._peer(tower_id)
        peer.counts[reason] = peer.counts.get(reason, 0) + 1

    def _count(self, key: str, reason: str) -> None:
        self._stats[key] += 1
        by_reason = self._stats[f"{key}_by_reason"]
        by_reason[reason] = by_reason.get(reason, 0) + 1

    def _malformed(self, reason: str, peer: str, detail: str, rid: bytes | None = None,
                   stream_id: int = 0) -> None:
        """Drop a malformed message: count it (per reason, and per tower when the routing
        id is one), log rate-limited, and answer ERROR ``malformed.<reason>``."""
        self._count("malformed", reason)
        if rid is not None:
            self._peer_count(peer, "malformed." + reason)
        self._limited(logging.WARNING, reason, "central: dropped malformed message from %s: %s", peer, detail[:300])
        if rid is not None:
            self._error_reply(rid, peer, stream_id, "malformed." + reason, detail[:300])

    def _error_reply(self, rid: bytes, tower_id: str, stream_id: int, code: str, text: str) -> None:
        """ERROR to a tower, at most its ``error_replies_per_s`` (the rest are counted)."""
        bucket = self._peer(tower_id).errors
        if not bucket.ready(1, self._clock.monotonic()):
            self._stats["errors_unanswered"] += 1
            return
        bucket.spend(1)
        self._reply(rid, tower_id, encode_error(stream_id, code, text))

    def _refused(self, reason: str, tower_id: str, user_id: str | None) -> None:
        self._count("refused", reason)
        key_tower = user_id.split(" ", 1)[0] if user_id else "?"
        # An impostor is counted under the tower its key belongs to, not the one it claims.
        self._peer_count(key_tower if reason == "identity" else tower_id, "refused." + reason)
        what = {
            "identity": f"sent with routing id {tower_id!r} by the key of tower {key_tower!r} (a tower cannot speak "
                        "for another; the key is quarantined)",
            "revoked": f"from {tower_id!r}: its key is no longer on the allow-list for tower {key_tower!r}",
            "no_user_id": f"from {tower_id!r}: the connection was not admitted by the allow-list",
        }[reason]
        self._limited(logging.ERROR, "refused:" + reason, "central: dropped a message %s", what)

    def _handle(self, frames: list[zmq.Frame]) -> None:
        self._stats["received"] += 1
        peer = repr(frames[0].bytes[:64]) if frames else "?"
        if len(frames) != 2:
            self._malformed("frames", peer, f"{len(frames) - 1} message frames, expected 1")
            return
        rid, frame = frames[0].bytes, frames[1]
        try:
            tower_id = rid.decode("ascii")
        except UnicodeDecodeError:
            tower_id = ""
        if not TOWER_ID_RE.fullmatch(tower_id):
            self._malformed("routing_id", peer, "routing id is not a tower id")
            return
        if self._auth is not None:
            try:
                user_id = frame.get("User-Id")
            except zmq.ZMQError:
                user_id = None
            reason = self._auth.check_sender(tower_id, user_id)
            if reason is not None:
                self._refused(reason, tower_id, user_id)
                return
        limits = self._peer(tower_id).limits
        data = frame.bytes
        if len(data) >= HEADER_SIZE:
            stream_id = int.from_bytes(data[4:12], "little")
            limit = limits.max_health_bytes + HEADER_SIZE if data[3] == MsgType.HEALTH else limits.max_message_bytes
            if len(data) > limit:
                self._malformed("too_large", tower_id, f"{len(data)} bytes, this tower may send {limit}", rid,
                                stream_id)
                return
        try:
            msg = decode(data)
            if msg.type == MsgType.TRACKS:
                self._on_records(rid, tower_id, msg, decode_tracks(msg))
            elif msg.type == MsgType.EVENTS:
                events = decode_events(msg)
                for ev in events:
                    if ev["code"] == "outbox.dropped" and any(
                            isinstance(ev.get(k), int) and not INT64_MIN <= ev[k] <= _SEQ_MAX
                            for k in ("first_seq", "last_seq", "count")):
                        raise MessageError("seq_range", f"outbox.dropped event seq {ev['seq']}: a seq or count "
                                           "beyond what this central stores")
                    size = len(json.dumps(ev, ensure_ascii=False, separators=(",", ":")).encode())
                    if size > limits.max_event_bytes:
                        raise MessageError("event_size", f"event seq {ev['seq']} is {size} bytes, this tower may "
                                           f"send {limits.max_event_bytes}")
                self._on_records(rid, tower_id, msg, events)
            elif msg.type == MsgType.HEALTH:
                health = decode_health(msg, max_nodes=limits.max_health_values)
                self._keep_health(tower_id, msg.body)
                self._store.record_health(tower_id, health)
                self._stats["health_received"] += 1
                self._reply(rid, tower_id, encode_health_ack(msg.stream_id))
            else:
                self._malformed("direction", tower_id, f"{msg.type.name} is not sent by a tower", rid, msg.stream_id)
        except FrameError as exc:
            stream_id = int.from_bytes(data[4:12], "little") if len(data) >= HEADER_SIZE else 0
            self._malformed(getattr(exc, "reason", "decode"), tower_id, str(exc), rid, stream_id)

    def _on_records(self, rid: bytes, tower_id: str, msg: Message, payload) -> None:
        """TRACKS (records) or EVENTS (objects) that decoded: store and ACK now, or hold
        back while the tower is over its rates."""
        if msg.type == MsgType.TRACKS:
            first, last = int(payload["seq"][0]), int(payload["seq"][-1])
        else:
            first, last = payload[0]["seq"], payload[-1]["seq"]
        if last > _SEQ_MAX:
            self._malformed("seq_range", tower_id, f"seq {last} beyond what this central stores", rid, msg.stream_id)
            return
        peer = self._peer(tower_id)
        now = self._clock.monotonic()
        held = _Held(rid, tower_id, msg, payload, len(payload), len(msg.body) + HEADER_SIZE, first, last)
        if not peer.deferred and peer.ready(held.records, held.size, now):
            self._store_held(peer, held)
            return
        if held.key in peer.deferred_keys:
            self._stats["duplicates"] += held.records
            return  # sent again while held back: the ACK comes when the first copy is stored
        if (peer.deferred_bytes + held.size > peer.limits.max_deferred_bytes
                or self._deferred_total + held.size > self._limits.total_deferred_bytes):
            self._stats["busy"] += 1
            peer.counts["busy"] = peer.counts.get("busy", 0) + 1
            self._limited(logging.WARNING, "busy", "central: %s is over its rates (%g records/s, %g bytes/s) with "
                          "%d bytes held back: message not stored, not acknowledged (it will send again)",
                          tower_id, peer.limits.records_per_s, peer.limits.bytes_per_s, peer.deferred_bytes)
            self._error_reply(rid, tower_id, msg.stream_id, "central.busy",
                              "over this tower's rates; not stored, send again")
            return
        peer.deferred.append(held)
        peer.deferred_keys.add(held.key)
        peer.deferred_bytes += held.size
        self._deferred_total += held.size
        self._deferring.add(tower_id)
        self._stats["deferred"] += 1
        self._limited(logging.INFO, "deferred", "central: %s is over its rates (%g records/s, %g bytes/s): its "
                      "messages wait to be stored and acknowledged", tower_id, peer.limits.records_per_s,
                      peer.limits.bytes_per_s)

    def _drain_deferred(self, now: float) -> None:
        for tower_id in list(self._deferring):
            peer = self._peers[tower_id]
            while peer.deferred and peer.ready(peer.deferred[0].records, peer.deferred[0].size, now):
                held = peer.deferred.popleft()
                peer.deferred_keys.discard(held.key)
                peer.deferred_bytes -= held.size
                self._deferred_total -= held.size
                try:
                    self._store_held(peer, held)
                except Exception:
                    self._stats["internal_errors"] += 1
                    self._limited.exception("internal", "central: storing a held-back message from %s failed "
                                            "(dropped, not acknowledged; a defect, please report)", tower_id)
            if not peer.deferred:
                self._deferring.discard(tower_id)

    def _store_held(self, peer: _Peer, held: _Held) -> None:
        """Spend the tower's rates and queue the message for :meth:`_flush`."""
        peer.records.spend(held.records)
        peer.bytes.spend(held.size)
        msg, tower_id = held.msg, held.tower_id
        replay = bool(msg.flags & FLAG_REPLAY)
        if msg.type == MsgType.TRACKS:
            item = Pending(tower_id, msg.stream_id, replay, records=held.payload)
        else:
            item = Pending(tower_id, msg.stream_id, replay, events=held.payload)
            for ev in held.payload:
                if ev["code"] == "outbox.dropped":
                    self._limited(logging.WARNING, "dropped", "central: tower %s announces %s records lost from "
                                  "its full outbox, seq %s..%s", tower_id, str(ev.get("count"))[:40],
                                  str(ev.get("first_seq"))[:40], str(ev.get("last_seq"))[:40])
        self._queue(held.rid, held.first, held.last, item)

    def _queue(self, rid: bytes, first: int, last: int, item: Pending) -> None:
        """Hold a decoded message for :meth:`_flush` (at once when the store does not batch)."""
        self._pending.append((rid, first, last, item))
        self._pending_records += item.size
        if self._store.batch_records <= 0:
            self._flush()

    def _flush(self) -> None:
        """Store the held messages (one transaction when the store batches), then ACK each
        one that is committed; the others get ERROR and no ACK."""
        if not self._pending:
            return
        pending, self._pending, self._pending_records = self._pending, [], 0
        try:
            results: list[StoreResult] = self._store.store_many([p for _, _, _, p in pending])
        except OutboxError as exc:
            results = [exc] * len(pending)
        except Exception:  # last resort: a defect is loud, never an outage (and never an ACK)
            self._stats["internal_errors"] += 1
            self._limited.exception("internal", "central: storing %d messages failed (not acknowledged; "
                                    "a defect, please report)", len(pending))
            results = [OutboxError("internal error while storing")] * len(pending)
        for (rid, first, last, item), result in zip(pending, results):
            if isinstance(result, OutboxError):
                self._store_failed(rid, item.tower_id, item.stream_id, result)
                continue
            self._stats["stored_tracks" if item.records is not None else "stored_events"] += result
            self._stats["duplicates"] += item.size - result
            self._ack(rid, item.tower_id, item.stream_id, first, last)

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
        """Close the sockets, the context and the store. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._handshakes is not None:
            self._handshakes.close()
        self._sock.close(0)
        if self._auth is not None:
            self._auth.close()
        self._ctx.term()
        self._store.close()


# ------------------------------------------------------------------------------ command line


def export(db_path: str | Path, out: IO[str], tower_id: str | None = None, *, postgresql: bool | None = None) -> int:
    """Write what the store at ``db_path`` (a SQLite file, or a ``postgresql://`` URL)
    holds to ``out`` as JSON lines (see :meth:`CentralStore.export`); opened read-only.
    Returns the number of lines."""
    store = open_store(str(db_path), read_only=True, postgresql=postgresql)
    n = 0
    try:
        for obj in store.export(tower_id):
            out.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False))
            out.write("\n")
            n += 1
    finally:
        store.close()
    return n


def open_store(where: str, *, read_only: bool = False, retention_days: int = 30,
               postgresql: bool | None = None) -> ReportStore:
    """The store named by ``where``: PostgreSQL when ``postgresql`` is true, or when it
    is None and ``where`` is a ``postgresql://`` / ``postgres://`` URL; a SQLite file
    otherwise."""
    if postgresql is None:
        postgresql = where.startswith(("postgresql://", "postgres://"))
    if postgresql:
        from towerd.central.pgstore import PgCentralStore

        return PgCentralStore(where, read_only=read_only, retention_days=retention_days)
    return CentralStore(where, read_only=read_only)


def export_main(argv: list[str]) -> int:
    """``towerd central export``: JSON lines of what a central store holds."""
    parser = argparse.ArgumentParser(prog="towerd central export",
                                     description="Write what a central store holds as JSON lines: every track, "
                                     "every event, then one summary per stream with its missing and dropped seq "
                                     "ranges.")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--db", help="the central's SQLite file (opened read-only)")
    where.add_argument("--store", metavar="URL", help="the central's PostgreSQL database "
                       "(postgresql://user@host/dbname; read-only)")
    parser.add_argument("--out", help="output file (default: standard output)")
    parser.add_argument("--tower", help="only this tower id")
    args = parser.parse_args(argv)
    try:
        if args.out:
            with open(args.out, "w", encoding="utf-8") as fh:
                n = export(args.db or args.store, fh, args.tower, postgresql=bool(args.store))
        else:
            n = export(args.db or args.store, sys.stdout, args.tower, postgresql=bool(args.store))
            sys.stdout.flush()
    except (TowerdError, OSError) as exc:
        print(f"towerd central export: {exc}", file=sys.stderr)
        return 1
    print(f"towerd central export: {n} lines written", file=sys.stderr)
    return 0


def _raise_nofile() -> tuple[int, int]:
    """Raise the soft descriptor limit towards _NOFILE_WANTED within the hard limit;
    returns the limits in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = _NOFILE_WANTED if hard == resource.RLIM_INFINITY else min(hard, _NOFILE_WANTED)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError) as exc:
            log.warning("central: cannot raise the descriptor limit from %d to %d: %s", soft, want, exc)
    return soft, hard


def main(argv: list[str]) -> int:
    """``towerd central``: run the reference central until SIGINT/SIGTERM (SIGHUP
    re-reads the allow-list); ``towerd central export ...`` exports a store."""
    if argv[:1] == ["export"]:
        return export_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="towerd central",
        description="Reference central for ICD v1. CURVE by default; `towerd central export --db DB` writes what "
        "a store holds as JSON lines.")
    parser.add_argument("--bind", default="tcp://*:7700", help="ZeroMQ endpoint to bind (default tcp://*:7700)")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--db", help="SQLite file for the received reports")
    where.add_argument("--store", metavar="URL", help="PostgreSQL database for the received reports "
                       "(postgresql://user@host/dbname); several centrals may share one")
    parser.add_argument("--retention-days", type=int, default=30, help="PostgreSQL store: drop the day "
                        "partitions older than this (default 30)")
    parser.add_argument("--secret-key", help="the central's secret key file (mode 0600; `towerd keys generate "
                        "--name central`)")
    parser.add_argument("--allow-dir", help="allow-list directory of <tower-id>.key files (`towerd keys allow`); "
                        "re-read when it changes and on SIGHUP")
    parser.add_argument("--plain", action="store_true", help="no CURVE: plain TCP, for lab and demo links only")
    parser.add_argument("--limits", metavar="FILE", help="YAML file of per-tower limits (docs/protocol.md "
                        "\"Limits\"); the options below override its default section")
    parser.add_argument("--max-message-bytes", type=int, metavar="N", help="largest message a tower may send "
                        "(default 6 MiB)")
    parser.add_argument("--records-per-s", type=float, metavar="R", help="records a tower may store per second; "
                        "beyond it ACKs are slowed (default 20000)")
    parser.add_argument("--bytes-per-s", type=float, metavar="B", help="message bytes a tower may store per "
                        "second (default 8 MiB)")
    parser.add_argument("--log-level", default="info", type=str.lower, choices=["debug", "info", "warning", "error"],
                        help="as for towerd run and demo (default: info)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    store = None
    try:
        limits = load_limits(args.limits) if args.limits else CentralLimits()
        overrides = {name: value for name, value in (("max_message_bytes", args.max_message_bytes),
                                                     ("records_per_s", args.records_per_s),
                                                     ("bytes_per_s", args.bytes_per_s)) if value is not None}
        for name, value in overrides.items():
            meta = next(f.metadata for f in dataclasses.fields(TowerLimits) if f.name == name)
            if not meta["lo"] <= value <= meta["hi"]:
                raise ConfigError(f"--{name.replace('_', '-')} {value:g} is out of range, expected "
                                  f"{meta['lo']:g}..{meta['hi']:g}")
        limits = dataclasses.replace(limits, default=dataclasses.replace(limits.default, **overrides))
        if args.store:
            store = open_store(args.store, retention_days=args.retention_days, postgresql=True)
        server = CentralServer(args.bind, args.db or "", plain=args.plain, server_secret_key_file=args.secret_key,
                               allow_dir=args.allow_dir, limits=limits, store=store)
    except ConfigError as exc:
        if store is not None:
            store.close()
        log.error("central cannot start: %s", exc)
        return EX_CONFIG
    except TowerdError as exc:
        if store is not None:
            store.close()
        log.error("central cannot start: %s", exc)
        return 1
    stop = threading.Event()
    reload = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        log.info("central: %s received, stopping", signal.Signals(signum).name)
        stop.set()

    def _on_hup(_signum: int, _frame: object) -> None:
        log.info("central: SIGHUP received, re-reading the allow-list")
        reload.set()

    old = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    old[signal.SIGHUP] = signal.signal(signal.SIGHUP, _on_hup)
    soft, hard = _raise_nofile()
    log.info("central listening on %s (%s); descriptor limit %d (hard %d); per tower: %d-byte messages, %g "
             "records/s, %g bytes/s", server.bound_endpoint, "plain" if args.plain else "CURVE", soft, hard,
             limits.default.max_message_bytes, limits.default.records_per_s, limits.default.bytes_per_s)
    try:
        server.serve_forever(stop, reload)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        stats = server.stats
        server.close()
    log.info("central stopped: %d tracks and %d events stored, %d duplicates, %d malformed, %d refused, %d busy, "
             "%d internal errors", stats["stored_tracks"], stats["stored_events"], stats["duplicates"],
             stats["malformed"], stats["refused"], stats["busy"], stats["internal_errors"])
    worst = sorted(stats["by_peer"].items(), key=lambda kv: -sum(kv[1].values()))[:50]
    if worst:
        log.info("central stopped: refusals per tower: %s", json.dumps(dict(worst), sort_keys=True))
    if "auth" in stats:
        log.info("central stopped: handshakes: %s", json.dumps(stats["auth"], sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
