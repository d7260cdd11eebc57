"""Uplink client: a DEALER that drains the outbox to one central (ICD v1).

Why it is built this way (../shared/notes/uplink-and-security.md): a successful ZeroMQ
``send()`` proves nothing, so the outbox is the real queue. Records stay there until an
ACK covers them; messages not acknowledged within ``ack_timeout_s`` are sent again, and
everything in flight is sent again after every reconnect (at-least-once; the central
drops duplicates by ``(tower id, stream_id, seq)``).

Socket habits: routing id = tower id, ``IMMEDIATE=1`` (queue only to a completed
connection), ``LINGER=0`` (shutdown never hangs; the outbox keeps the data), a small
``SNDHWM``, ZMTP heartbeats so that a black-holed link is noticed in seconds, and
``RECONNECT_IVL``/``RECONNECT_IVL_MAX``. A socket monitor tells link up
(HANDSHAKE_SUCCEEDED), down (DISCONNECTED) and refused (HANDSHAKE_FAILED_AUTH). libzmq
4.3.5 does not reconnect after an authentication refusal, so the client closes the socket
and builds a new one after a backoff (reconnect_ivl_s doubling up to reconnect_ivl_max_s)
so that it recovers once the central's allow-list is fixed.

Everything runs in :meth:`UplinkClient.poll`, called from the daemon's loop thread (the
same thread that uses the outbox; ZeroMQ sockets and the sqlite3 connection are not
shared between threads).

Not done yet (later issues): records are sent strictly oldest first, and the REPLAY flag
is never set. The ICD's "live before backlog, backlog paced and flagged REPLAY" ordering
after an outage, per-central record filters and per-central acknowledgement state are not
implemented; with one central, oldest first is correct, merely not optimal after a long
outage. Every client deletes from the one shared outbox on its central's ACK, so with
more than one central a record may never reach the second one: until acknowledgement
state is kept per central, configure one central per tower.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import zmq
import zmq.auth
from zmq.utils.monitor import recv_monitor_message

from towerd.clock import Clock
from towerd.errors import ConfigError, FrameError, UplinkError
from towerd.icd import (
    MAX_COUNT,
    RECORD_SIZE,
    TRACK_RECORD_DTYPE,
    MsgType,
    decode,
    decode_ack,
    decode_error,
    encode_events,
    encode_health,
    encode_tracks,
)
from towerd.outbox.sqlite import KIND_EVENT, KIND_TRACK, Outbox

log = logging.getLogger(__name__)

TOWER_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
"""ICD: a tower id (= ZeroMQ routing id) is 1 to 64 bytes of [A-Za-z0-9._-]."""

MAX_REPLY_SIZE = 1 << 20
"""Largest frame accepted from a central (libzmq MAXMSGSIZE); replies are tiny."""

_MONITOR_EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)
_MAX_REPLIES_PER_POLL = 10_000


class RateLimitedLog:
    """Log at most one line per reason per ``interval_s``; the lines left out are
    counted and their number is added to the next line logged for that reason."""

    _MAX_REASONS = 256

    def __init__(self, logger: logging.Logger, clock: Clock, interval_s: float = 1.0) -> None:
        self._log = logger
        self._clock = clock
        self._interval = interval_s
        self._state: dict[str, tuple[float, int]] = {}

    def __call__(self, level: int, reason: str, msg: str, *args: object) -> bool:
        """Log ``msg % args`` unless ``reason`` was logged within the interval.
        Returns whether a line was written."""
        now = self._clock.monotonic()
        last = self._state.get(reason)
        if last is not None and now - last[0] < self._interval:
            self._state[reason] = (last[0], last[1] + 1)
            return False
        if last is not None and last[1]:
            msg += " (%d similar suppressed)"
            args = (*args, last[1])
        if len(self._state) >= self._MAX_REASONS and reason not in self._state:
            self._state.clear()
        self._state[reason] = (now, 0)
        self._log.log(level, msg, *args)
        return True


@dataclass(frozen=True)
class CentralSettings:
    """How to reach one central. Times in seconds; ``window`` counts messages in flight;
    ``batch_records`` is the most records per TRACKS/EVENTS message."""

    name: str
    endpoint: str
    plain: bool = False
    server_public_key_file: str | None = None
    client_secret_key_file: str | None = None
    ack_timeout_s: float = 5.0
    window: int = 64
    batch_records: int = 100
    heartbeat_ivl_s: float = 1.0
    heartbeat_timeout_s: float = 3.0
    reconnect_ivl_s: float = 1.0
    reconnect_ivl_max_s: float = 30.0
    health_interval_s: float = 10.0

    def __post_init__(self) -> None:
        problems = []
        if not self.name:
            problems.append("central name is empty")
        if not self.endpoint:
            problems.append(f"central {self.name!r}: endpoint is empty")
        if not 1 <= self.window <= 10_000:
            problems.append(f"central {self.name!r}: window {self.window} not in 1..10000")
        if not 1 <= self.batch_records <= MAX_COUNT:
            problems.append(f"central {self.name!r}: batch_records {self.batch_records} not in 1..{MAX_COUNT}")
        for field in ("ack_timeout_s", "heartbeat_ivl_s", "heartbeat_timeout_s", "reconnect_ivl_s",
                      "reconnect_ivl_max_s", "health_interval_s"):
            if not getattr(self, field) > 0:
                problems.append(f"central {self.name!r}: {field} must be > 0")
        if self.reconnect_ivl_max_s < self.reconnect_ivl_s:
            problems.append(f"central {self.name!r}: reconnect_ivl_max_s < reconnect_ivl_s")
        if not self.plain and not (self.server_public_key_file and self.client_secret_key_file):
            problems.append(
                f"central {self.name!r}: CURVE needs server_public_key_file and client_secret_key_file "
                "(or plain: true for a lab link)"
            )
        if problems:
            raise ConfigError(problems)


@dataclass
class _InFlight:
    """One message sent (or to be sent) and not yet acknowledged."""

    first: int
    last: int
    frame: bytes
    sent_mono: float | None = None  # None: (re)send at the next opportunity
    sends: int = 0


def _load_curve_keys(settings: CentralSettings) -> tuple[bytes, bytes, bytes]:
    """(client public, client secret, server public) from zmq.auth certificate files."""
    if not zmq.has("curve"):
        raise UplinkError(
            f"central {settings.name!r}: this libzmq has no CURVE support "
            f"(libzmq {zmq.zmq_version()}); install a pyzmq built with libsodium or use plain"
        )
    assert settings.client_secret_key_file and settings.server_public_key_file
    try:
        client_public, client_secret = zmq.auth.load_certificate(settings.client_secret_key_file)
    except (OSError, ValueError) as exc:
        raise UplinkError(f"client key file {settings.client_secret_key_file}: {exc}") from exc
    if not client_secret:
        raise UplinkError(f"client key file {settings.client_secret_key_file} holds no secret key")
    try:
        server_public, _ = zmq.auth.load_certificate(settings.server_public_key_file)
    except (OSError, ValueError) as exc:
        raise UplinkError(f"server public key file {settings.server_public_key_file}: {exc}") from exc
    return client_public, client_secret, server_public


class UplinkClient:
    """Sends the outbox's committed records to one central and deletes what it ACKs."""

    def __init__(
        self,
        tower_id: str,
        settings: CentralSettings,
        outbox: Outbox,
        *,
        clock: Clock,
        context: zmq.Context | None = None,
        health: Callable[[], dict] | None = None,
    ) -> None:
        if not isinstance(tower_id, str) or not TOWER_ID_RE.fullmatch(tower_id):
            raise ConfigError(f"tower id {tower_id!r} is not 1-64 characters of [A-Za-z0-9._-]")
        self._tower_id = tower_id
        self._settings = settings
        self._outbox = outbox
        self._clock = clock
        self._health = health
        self._curve = None if settings.plain else _load_curve_keys(settings)
        self._own_context = context is None
        self._ctx = zmq.Context() if context is None else context
        self._sock: zmq.Socket | None = None
        self._mon: zmq.Socket | None = None
        self._inflight: dict[int, _InFlight] = {}  # by first seq, in ascending seq order
        self._cursor = 0  # highest seq already placed in a message
        self._link_up = False
        self._state = "connecting"
        self._rebuild_at: float | None = None
        self._backoff = settings.reconnect_ivl_s
        self._next_health: float | None = None
        self._closed = False
        self._limited = RateLimitedLog(log, clock)
        self._stats = {
            "sent_msgs": 0,
            "acked_records": 0,
            "resent_msgs": 0,
            "malformed": 0,
            "last_ack_mono": None,
            "connects": 0,
            "disconnects": 0,
            "auth_failures": 0,
            "handshake_failures": 0,
            "errors_received": 0,
            "health_sent": 0,
            "health_acks": 0,
            "unmatched_acks": 0,
            "foreign_acks": 0,
            "bad_rows": 0,
        }
        try:
            self._build_socket()
        except BaseException:
            self.close()
            raise

    # ---------------------------------------------------------------- socket

    def _build_socket(self) -> None:
        s = self._settings
        sock = self._ctx.socket(zmq.DEALER)
        try:
            sock.setsockopt(zmq.ROUTING_ID, self._tower_id.encode("ascii"))
            sock.setsockopt(zmq.IMMEDIATE, 1)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, s.window + 4)
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_REPLY_SIZE)
            sock.setsockopt(zmq.HEARTBEAT_IVL, max(1, round(s.heartbeat_ivl_s * 1000)))
            sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, max(1, round(s.heartbeat_timeout_s * 1000)))
            sock.setsockopt(zmq.HEARTBEAT_TTL, min(6_553_500, max(100, round(2 * s.heartbeat_timeout_s * 1000))))
            sock.setsockopt(zmq.RECONNECT_IVL, max(1, round(s.reconnect_ivl_s * 1000)))
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, max(1, round(s.reconnect_ivl_max_s * 1000)))
            if self._curve is not None:
                client_public, client_secret, server_public = self._curve
                sock.setsockopt(zmq.CURVE_SERVERKEY, server_public)
                sock.setsockopt(zmq.CURVE_PUBLICKEY, client_public)
                sock.setsockopt(zmq.CURVE_SECRETKEY, client_secret)
            mon = sock.get_monitor_socket(_MONITOR_EVENTS)
        except zmq.ZMQError as exc:
            sock.close(0)
            raise UplinkError(f"central {s.name!r}: cannot set up the socket: {exc}") from exc
        self._sock, self._mon = sock, mon
        try:
            sock.connect(s.endpoint)
        except zmq.ZMQError as exc:
            self._teardown_socket()
            raise UplinkError(f"central {s.name!r}: cannot connect to {s.endpoint!r}: {exc}") from exc
        self._rebuild_at = None
        log.info("uplink %s: connecting to %s (%s)", s.name, s.endpoint, "plain" if s.plain else "CURVE")

    def _teardown_socket(self) -> None:
        sock, mon = self._sock, self._mon
        self._sock = self._mon = None
        if sock is not None:
            try:
                sock.disable_monitor()
            except zmq.ZMQError:
                pass
            sock.close(0)
        if mon is not None:
            mon.close(0)

    def _set_down(self, state: str) -> None:
        if self._link_up:
            self._stats["disconnects"] += 1
        self._link_up = False
        self._state = state

    # ---------------------------------------------------------------- polling

    def poll(self, timeout_ms: int = 0) -> None:
        """Do all pending non-blocking I/O; if ``timeout_ms`` > 0, then wait up to that
        long for the socket and do it again."""
        if self._closed:
            raise UplinkError(f"uplink {self._settings.name!r} is closed")
        self._step()
        if timeout_ms <= 0:
            return
        if self._sock is None or self._mon is None:
            wait_s = timeout_ms / 1000
            if self._rebuild_at is not None:
                wait_s = min(wait_s, max(0.0, self._rebuild_at - self._clock.monotonic()))
            time.sleep(wait_s)
        else:
            poller = zmq.Poller()
            poller.register(self._sock, zmq.POLLIN)
            poller.register(self._mon, zmq.POLLIN)
            poller.poll(timeout_ms)
        self._step()

    def _step(self) -> None:
        now = self._clock.monotonic()
        if self._sock is None:
            if self._rebuild_at is not None and now >= self._rebuild_at:
                self._build_socket()
            else:
                return
        self._drain_monitor(now)
        if self._sock is None:
            return
        self._drain_replies(now)
        if self._link_up:
            self._pump(now)

    def _drain_monitor(self, now: float) -> None:
        name = self._settings.name
        while self._mon is not None:
            try:
                ev = recv_monitor_message(self._mon, zmq.NOBLOCK)
            except zmq.Again:
                return
            event = ev["event"]
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._link_up = True
                self._state = "up"
                self._stats["connects"] += 1
                self._backoff = self._settings.reconnect_ivl_s
                for msg in self._inflight.values():
                    msg.sent_mono = None  # whatever was on the old connection may be lost
                self._next_health = now
                log.info("uplink %s: link up (%d messages to resend)", name, len(self._inflight))
            elif event == zmq.EVENT_DISCONNECTED:
                # Also reported after a failed handshake; only a link that was up goes down.
                if self._link_up:
                    log.warning("uplink %s: link down", name)
                    self._set_down("down")
            elif event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self._stats["auth_failures"] += 1
                self._set_down("refused")
                self._rebuild_at = now + self._backoff
                log.error("uplink %s: central refused this tower's key (ZAP status %s); "
                          "rebuilding the socket in %.1f s", name, ev.get("value"), self._backoff)
                self._backoff = min(2 * self._backoff, self._settings.reconnect_ivl_max_s)
                self._teardown_socket()
                return
            elif event in (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
                self._stats["handshake_failures"] += 1
                self._limited(logging.WARNING, "handshake", "uplink %s: handshake failed (%s, value %s)",
                              name, getattr(event, "name", event), ev.get("value"))

    def _drain_replies(self, now: float) -> None:
        assert self._sock is not None
        for _ in range(_MAX_REPLIES_PER_POLL):
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError as exc:
                self._limited(logging.WARNING, "recv", "uplink %s: receive failed: %s", self._settings.name, exc)
                return
            self._handle_reply(frames, now)

    def _malformed(self, reason: str, detail: str) -> None:
        self._stats["malformed"] += 1
        self._limited(logging.WARNING, "malformed:" + reason, "uplink %s: dropped malformed reply: %s",
                      self._settings.name, detail)

    def _handle_reply(self, frames: list[bytes], now: float) -> None:
        name = self._settings.name
        if len(frames) != 1:
            self._malformed("frames", f"{len(frames)} frames, expected 1")
            return
        try:
            msg = decode(frames[0])
        except FrameError as exc:
            self._malformed(getattr(exc, "reason", "decode"), str(exc))
            return
        if msg.type == MsgType.ACK:
            if msg.stream_id != self._outbox.stream_id:
                self._stats["foreign_acks"] += 1
                self._limited(logging.WARNING, "foreign_ack", "uplink %s: ACK for stream %016x, ours is %016x",
                              name, msg.stream_id, self._outbox.stream_id)
                return
            first, last = decode_ack(msg)
            pending = self._inflight.get(first)
            if pending is None or pending.last != last:
                # A second ACK for a message sent twice: already handled.
                self._stats["unmatched_acks"] += 1
                log.debug("uplink %s: ACK %d..%d matches nothing in flight", name, first, last)
                return
            self._outbox.ack(first, last)
            del self._inflight[first]
            self._stats["acked_records"] += last - first + 1
            self._stats["last_ack_mono"] = now
        elif msg.type == MsgType.HEALTH_ACK:
            self._stats["health_acks"] += 1
        elif msg.type == MsgType.ERROR:
            code, text = decode_error(msg)
            self._stats["errors_received"] += 1
            self._limited(logging.ERROR, "error:" + code, "uplink %s: central reports error %s: %s", name, code, text)
        else:
            self._malformed("type", f"{msg.type.name} is not sent by a central")

    def _send(self, frame: bytes) -> bool:
        assert self._sock is not None
        try:
            self._sock.send(frame, zmq.NOBLOCK)
        except zmq.Again:
            return False
        except zmq.ZMQError as exc:
            self._limited(logging.WARNING, "send", "uplink %s: send failed: %s", self._settings.name, exc)
            return False
        self._stats["sent_msgs"] += 1
        return True

    def _pump(self, now: float) -> None:
        self._send_health(now)
        timeout = self._settings.ack_timeout_s
        for msg in self._inflight.values():
            if msg.sent_mono is not None and now - msg.sent_mono < timeout:
                continue
            if not self._send(msg.frame):
                return  # HWM reached or link gone: try again at the next poll
            if msg.sends:
                self._stats["resent_msgs"] += 1
            msg.sends += 1
            msg.sent_mono = now
        while len(self._inflight) < self._settings.window:
            msg = self._next_message()
            if msg is None:
                return
            self._inflight[msg.first] = msg
            if not self._send(msg.frame):
                return
            msg.sends = 1
            msg.sent_mono = now

    def _send_health(self, now: float) -> None:
        if self._health is None or self._next_health is None or now < self._next_health:
            return
        self._next_health = now + self._settings.health_interval_s
        try:
            frame = encode_health(self._outbox.stream_id, self._health())
        except Exception:  # a faulty health() must not stop the reports
            log.exception("uplink %s: building HEALTH failed", self._settings.name)
            return
        if self._send(frame):
            self._stats["health_sent"] += 1

    # ---------------------------------------------------------------- batching

    def _next_message(self) -> _InFlight | None:
        """The next TRACKS or EVENTS message: committed rows after the cursor, one kind,
        consecutive seq, at most batch_records. None when nothing is waiting."""
        while True:
            rows = self._outbox.pending(self._cursor, self._settings.batch_records)
            if not rows:
                return None
            kind = rows[0][1]
            group = [rows[0]]
            for row in rows[1:]:
                if row[1] != kind or row[0] != group[-1][0] + 1:
                    break
                group.append(row)
            bad = self._first_bad_row(kind, group)
            if bad == 0:
                self._drop_bad_row(group[0][0])
                continue
            group = group[:bad]  # the rows before a damaged one go now; it is dropped next time
            self._cursor = group[-1][0]
            return _InFlight(first=group[0][0], last=group[-1][0], frame=self._encode_group(kind, group))

    def _first_bad_row(self, kind: str, group: list[tuple[int, str, bytes]]) -> int | None:
        """Index of the first row that cannot be sent as stored, or None if all can."""
        for i, (seq, _, payload) in enumerate(group):
            if kind == KIND_TRACK:
                if len(payload) != RECORD_SIZE or int.from_bytes(payload[:8], "little") != seq:
                    return i
            elif kind == KIND_EVENT:
                try:
                    ev = json.loads(payload)
                    if not isinstance(ev, dict) or ev.get("seq") != seq:
                        return i
                    encode_events(self._outbox.stream_id, [ev])
                except ValueError:
                    return i
            else:
                return i
        return None

    def _encode_group(self, kind: str, group: list[tuple[int, str, bytes]]) -> bytes:
        stream_id = self._outbox.stream_id
        if kind == KIND_TRACK:
            records = np.frombuffer(b"".join(p for _, _, p in group), dtype=TRACK_RECORD_DTYPE)
            return encode_tracks(stream_id, records)
        return encode_events(stream_id, [json.loads(p) for _, _, p in group])

    def _drop_bad_row(self, seq: int) -> None:
        """A stored row that cannot be encoded would block the stream forever: delete it,
        loudly (this is a damaged store, not a delivery decision)."""
        self._stats["bad_rows"] += 1
        log.error("uplink %s: outbox row seq %d cannot be encoded; deleting it (record lost)",
                  self._settings.name, seq)
        self._outbox.ack(seq, seq)
        self._cursor = max(self._cursor, seq)

    # ---------------------------------------------------------------- state

    @property
    def name(self) -> str:
        return self._settings.name

    @property
    def settings(self) -> CentralSettings:
        return self._settings

    @property
    def link_up(self) -> bool:
        """True between HANDSHAKE_SUCCEEDED and DISCONNECTED/refusal, as the monitor says."""
        return self._link_up

    @property
    def stats(self) -> dict:
        """Counters (a copy): sent_msgs, acked_records, resent_msgs, malformed,
        last_ack_mono (monotonic s or None), state (connecting|up|down|refused|closed),
        in_flight, and connects, disconnects, auth_failures, handshake_failures,
        errors_received, health_sent, health_acks, unmatched_acks, foreign_acks, bad_rows."""
        return {**self._stats, "state": self._state, "in_flight": len(self._inflight)}

    def close(self) -> None:
        """Close the socket and monitor (and the context if this client made it). Records
        in flight stay in the outbox. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._teardown_socket()
        self._link_up = False
        self._state = "closed"
        if self._own_context:
            self._ctx.term()

    def __enter__(self) -> UplinkClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

