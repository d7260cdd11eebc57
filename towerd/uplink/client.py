"""Uplink client: a DEALER that drains the outbox to one central (ICD v1).

Why it is built this way: a successful ZeroMQ
``send()`` proves nothing, so the outbox is the real queue. Records stay there until an
ACK covers them; messages not acknowledged are sent again when no ACK at all has come for
the ACK timeout, and everything unacknowledged is sent again after every reconnect
(at-least-once; the central drops duplicates by ``(tower id, stream_id, seq)``).

ACK timeout (as TCP's RTO, RFC 6298): srtt + 4 rttvar of the measured ACK round trips
(only messages sent once are measured), never below ``ack_timeout_s`` (also the value
before the first ACK) nor above ``ack_timeout_max_s``, doubled at each timeout until a
fresh ACK. The timer runs from the later of a message's send and the last ACK received:
a central that is slow but acknowledging is never sent duplicates, which would multiply
its load just when it is behind (measured: 135,000 messages re-sent in one benchmark run
with a fixed 5 s timeout). A lost ACK is then recovered once ACKs stop (at the latest when
the window is full).

Order after an outage (ICD "Sequence numbers, acknowledgements, delivery"): when the link
comes up, the outbox's committed high-water mark B splits the records. Records from B on
are *live*: sent as soon as they are committed, oldest first, with no flag. Records below
B that this central has not acknowledged are the *backlog*: sent oldest first with the
REPLAY flag, paced by a token bucket at ``replay_rate_rps`` records per second (bursts of
at most a quarter of a second's worth, or one message), with at most ``replay_window``
backlog messages in flight so that the rest of the ``window`` is always free for live
reports. Live messages are placed before backlog messages in every poll, so a live report
never waits behind the backlog in this process. The same split is made again after every
reconnect, so whatever was in flight when the link fell is re-sent as backlog.

Sharing: each central has a :class:`~towerd.uplink.sharing.SharingRule`. Rows its rule
excludes are marked done for it in the outbox without being sent; the records it may see
are sent, coarsened if the rule says so. The records of one message always have
consecutive ``seq`` (ICD), so a filtered central gets shorter messages.

Socket habits: routing id = tower id, ``IMMEDIATE=1`` (queue only to a completed
connection), ``LINGER=0`` (shutdown never hangs; the outbox keeps the data), a small
``SNDHWM``, ZMTP heartbeats so that a black-holed link is noticed in seconds, and
``RECONNECT_IVL``/``RECONNECT_IVL_MAX``. A socket monitor tells link up
(HANDSHAKE_SUCCEEDED), down (DISCONNECTED) and refused (HANDSHAKE_FAILED_AUTH). libzmq
4.3.5 does not reconnect after an authentication refusal, so the client closes the socket
and builds a new one after a backoff (reconnect_ivl_s doubling up to reconnect_ivl_max_s)
so that it recovers once the central's allow-list is fixed.

Keys: with CURVE (the default) the tower's secret key file must exist, be mode 0600 or
stricter and hold a valid key pair, and the central's public key file must hold a valid
key; otherwise construction raises ConfigError naming the file and why (``towerd run``
exits 78).

Everything runs in :meth:`UplinkClient.poll`, called from the daemon's loop thread (the
same thread that uses the outbox; ZeroMQ sockets and the sqlite3 connection are not
shared between threads).
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import zmq
from zmq.utils.monitor import recv_monitor_message

from towerd.clock import Clock
from towerd.errors import ConfigError, FrameError, UplinkError
from towerd.icd import (
    FLAG_REPLAY,
    MAX_COUNT,
    RECORD_SIZE,
    TOWER_ID_RE,
    TRACK_RECORD_DTYPE,
    MsgType,
    decode,
    decode_ack,
    decode_error,
    encode_events,
    encode_health,
    encode_tracks,
)
from towerd.keys import load_public_key_file, load_secret_key_file
from towerd.outbox.sqlite import KIND_EVENT, KIND_TRACK, Outbox
from towerd.schema import spec
from towerd.uplink.sharing import RecordFilter, SharingRule, ZoneOf

log = logging.getLogger(__name__)

__all__ = ["CentralSettings", "RateLimitedLog", "TOWER_ID_RE", "UplinkClient"]

CENTRAL_NAME_PATTERN = r"[a-z0-9][a-z0-9_-]{0,31}"
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
_PAGES_PER_MESSAGE = 20
"""Outbox pages read at most while building one message (a rule that excludes most
rows must not make one poll scan the whole backlog)."""
_BURST_S = 0.25
"""The backlog token bucket holds at most this many seconds of ``replay_rate_rps``."""
_PASS, _EXCLUDED, _BAD = "pass", "excluded", "bad"
_MAX_ERROR_CODES = 16
"""ERROR codes from one central that get a log line (per second) each."""


class RateLimitedLog:
    """Log at most one line per reason per ``interval_s``; the lines left out are
    counted and their number is added to the next line logged for that reason."""

    _MAX_REASONS = 256

    def __init__(self, logger: logging.Logger, clock: Clock, interval_s: float = 1.0) -> None:
        self._log = logger
        self._clock = clock
        self._interval = interval_s
        self._state: dict[str, tuple[float, int]] = {}

    def __call__(self, level: int, reason: str, msg: str, *args: object, exc_info: bool = False) -> bool:
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
        self._log.log(level, msg, *args, exc_info=exc_info)
        return True

    def exception(self, reason: str, msg: str, *args: object) -> bool:
        """Like calling it at ERROR, with the current exception's traceback."""
        return self(logging.ERROR, reason, msg, *args, exc_info=True)


@dataclass(frozen=True)
class CentralSettings:
    """How to reach one central and what it may receive (one entry of ``centrals:``)."""

    name: str = spec(doc="name in logs, status and the outbox's acknowledgement state",
                     pattern=CENTRAL_NAME_PATTERN)
    endpoint: str = spec(doc="the central's ROUTER endpoint, e.g. tcp://central.example.net:7700")
    extra_endpoints: tuple[str, ...] = spec((), doc="further endpoints of the same central (its other processes, "
                                           "sharing one store): the tower connects to all and sends to those up, "
                                           "so one going down fails over to the others")
    plain: bool = spec(False, doc="true: no CURVE encryption/authentication (lab and demo only; the central "
                       "must run with --plain too)")
    server_public_key_file: str | None = spec(None, doc="the central's public key file (CURVE)")
    client_secret_key_file: str | None = spec(None, doc="this tower's secret key file, mode 0600 (CURVE)")
    ack_timeout_s: float = spec(5.0, doc="resend what the central has not acknowledged after this long; the "
                                "first and the shortest timeout: it grows with the measured ACK round trip "
                                "(srtt + 4 rttvar) and doubles after each resend", unit="s", lo=0.05, hi=600.0)
    ack_timeout_max_s: float = spec(60.0, doc="longest ACK timeout, however slow the ACKs", unit="s",
                                    lo=0.05, hi=3600.0)
    window: int = spec(64, doc="messages in flight (sent, not yet acknowledged)", lo=1, hi=10_000)
    batch_records: int = spec(100, doc="records per TRACKS/EVENTS message at most", lo=1, hi=MAX_COUNT)
    heartbeat_ivl_s: float = spec(1.0, doc="ZMTP heartbeat period", unit="s", lo=0.05, hi=600.0)
    heartbeat_timeout_s: float = spec(3.0, doc="a silent link is declared dead after this long", unit="s",
                                      lo=0.1, hi=3600.0)
    reconnect_ivl_s: float = spec(1.0, doc="first reconnect delay (doubles after a refusal)", unit="s",
                                  lo=0.01, hi=600.0)
    reconnect_ivl_max_s: float = spec(30.0, doc="longest reconnect delay", unit="s", lo=0.01, hi=3600.0)
    health_interval_s: float = spec(10.0, doc="HEALTH period (also sent at every connect)", unit="s",
                                    lo=0.1, hi=3600.0)
    replay_rate_rps: float = spec(3000.0, doc="backlog records sent per second at most after an outage "
                                  "(live reports go first)", unit="records/s", lo=1.0, hi=1_000_000.0)
    replay_window: int = spec(8, doc="backlog messages in flight at most; keep it below window so that live "
                              "reports always have room", lo=1, hi=10_000)
    share: SharingRule = spec(SharingRule(), doc="what this central may receive (default: everything, exact)")

    def __post_init__(self) -> None:
        problems = []
        if not self.name:
            problems.append("central name is empty")
        if not self.endpoint:
            problems.append(f"central {self.name!r}: endpoint is empty")
        if any(not e for e in self.extra_endpoints) or len({self.endpoint, *self.extra_endpoints}) != \
                1 + len(self.extra_endpoints):
            problems.append(f"central {self.name!r}: extra_endpoints must be non-empty and all different")
        if not 1 <= self.window <= 10_000:
            problems.append(f"central {self.name!r}: window {self.window} not in 1..10000")
        if not 1 <= self.batch_records <= MAX_COUNT:
            problems.append(f"central {self.name!r}: batch_records {self.batch_records} not in 1..{MAX_COUNT}")
        if not 1 <= self.replay_window <= self.window:
            problems.append(f"central {self.name!r}: replay_window {self.replay_window} not in 1..window "
                            f"({self.window})")
        if self.ack_timeout_max_s < self.ack_timeout_s:
            problems.append(f"central {self.name!r}: ack_timeout_max_s < ack_timeout_s")
        for field in ("ack_timeout_s", "ack_timeout_max_s", "heartbeat_ivl_s", "heartbeat_timeout_s", "reconnect_ivl_s",
                      "reconnect_ivl_max_s", "health_interval_s", "replay_rate_rps"):
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
            raise ValueError("; ".join(problems))


@dataclass
class _Message:
    """One TRACKS or EVENTS message built from the outbox, until acknowledged."""

    first: int
    last: int
    count: int
    frame: bytes
    replay: bool
    sent_mono: float | None = None  # None: (re)send at the next opportunity
    sends: int = 0


def _load_curve_keys(settings: CentralSettings) -> tuple[bytes, bytes, bytes]:
    """(client public, client secret, server public), Z85, after the file checks."""
    if not zmq.has("curve"):
        raise ConfigError(
            f"central {settings.name!r}: this libzmq has no CURVE support "
            f"(libzmq {zmq.zmq_version()}); install a pyzmq built with libsodium, or set plain: true for a lab link"
        )
    client_public, client_secret = load_secret_key_file(settings.client_secret_key_file)
    server_public = load_public_key_file(settings.server_public_key_file, "server public key file")
    return client_public, client_secret, server_public


class UplinkClient:
    """Sends the outbox's committed records to one central and marks what it ACKs.

    ``zone_of(lat_deg, lon_deg) -> set of zone names`` is needed when the central's
    sharing rule names zones (ConfigError otherwise)."""

    def __init__(
        self,
        tower_id: str,
        settings: CentralSettings,
        outbox: Outbox,
        *,
        clock: Clock,
        context: zmq.Context | None = None,
        health: Callable[[], dict] | None = None,
        zone_of: ZoneOf | None = None,
    ) -> None:
        if not isinstance(tower_id, str) or not TOWER_ID_RE.fullmatch(tower_id):
            raise ConfigError(f"tower id {tower_id!r} is not 1-64 characters of [A-Za-z0-9._-]")
        self._tower_id = tower_id
        self._settings = settings
        self._outbox = outbox
        self._clock = clock
        self._health = health
        try:
            self._filter = RecordFilter(settings.share, zone_of)
        except ValueError as exc:
            raise ConfigError(f"central {settings.name!r}: {exc}") from exc
        self._curve = None if settings.plain else _load_curve_keys(settings)
        outbox.attach(settings.name)
        self._own_context = context is None
        self._ctx = zmq.Context() if context is None else context
        self._sock: zmq.Socket | None = None
        self._mon: zmq.Socket | None = None
        self._inflight: dict[int, _Message] = {}  # by first seq
        self._backlog_inflight = 0
        self._recent: OrderedDict[tuple[int, int], None] = OrderedDict()
        self._boundary = 1  # B: live records have seq >= B
        self._live_cursor = 0
        self._backlog_cursor = 0
        self._backlog_done = True
        self._held: _Message | None = None  # a backlog message waiting for tokens
        self._verdicts: dict[int, tuple[int, str, object, str]] = {}  # the last page read, judged
        self._tokens = 0.0
        self._tokens_mono = clock.monotonic()
        self._bucket = max(float(settings.batch_records), settings.replay_rate_rps * _BURST_S)
        self._seen_generation = outbox.generation
        self._backlog_started: float | None = None
        self._link_up = False
        self._up_endpoints: set[str] = set()  # connections up (several with extra_endpoints)
        self._state = "connecting"
        self._rebuild_at: float | None = None
        self._backoff = settings.reconnect_ivl_s
        self._next_health: float | None = None
        # ACK timeout (RFC 6298 style): smoothed round trip and its variation from ACKs of
        # messages sent once, a backoff factor doubled at each timeout, and the time of
        # the last ACK (no timeout runs while ACKs keep coming).
        self._srtt: float | None = None
        self._rttvar = 0.0
        self._rto_backoff = 1.0
        self._progress_mono = clock.monotonic()
        self._closed = False
        # Every line names its central, also as the journal field CENTRAL= (logsetup).
        self._log = logging.LoggerAdapter(log, {"central": settings.name})
        self._limited = RateLimitedLog(self._log, clock)
        self._error_codes: set[str] = set()
        self._stats = {
            "sent_msgs": 0,
            "live_msgs": 0,
            "replay_msgs": 0,
            "replay_records": 0,
            "acked_records": 0,
            "late_acks": 0,
            "resent_msgs": 0,
            "ack_timeouts": 0,
            "skipped_records": 0,
            "malformed": 0,
            "last_ack_mono": None,
            "connects": 0,
            "disconnects": 0,
            "auth_failures": 0,
            "handshake_failures": 0,
            "errors_received": 0,
            "reply_errors": 0,
            "health_sent": 0,
            "health_acks": 0,
            "unmatched_acks": 0,
            "foreign_acks": 0,
            "bad_rows": 0,
            "flow_restarts": 0,
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
        self._up_endpoints.clear()
        for endpoint in (s.endpoint, *s.extra_endpoints):
            try:
                sock.connect(endpoint)
            except zmq.ZMQError as exc:
                self._teardown_socket()
                raise UplinkError(f"central {s.name!r}: cannot connect to {endpoint!r}: {exc}") from exc
        self._rebuild_at = None
        self._log.info("uplink %s: connecting to %s (%s)", s.name, s.endpoint, "plain" if s.plain else "CURVE")

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

    def pollables(self) -> list[zmq.Socket]:
        """The sockets whose readiness means :meth:`poll` has work (replies, link
        events), for a caller that waits on many things at once."""
        return [sock for sock in (self._sock, self._mon) if sock is not None]

    def next_timer_s(self) -> float:
        """Seconds until this uplink must be polled even if no socket is ready (backlog
        pacing, a scheduled socket rebuild); ``inf`` when nothing is scheduled."""
        now = self._clock.monotonic()
        if self._rebuild_at is not None:
            return max(0.0, self._rebuild_at - now)
        if self.replaying or self._held is not None:
            return 0.01  # the token bucket refills continuously
        return float("inf")

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
                self._up_endpoints.add(ev.get("endpoint", b"?"))
                self._link_up = True
                self._state = "up"
                self._stats["connects"] += 1
                self._backoff = self._settings.reconnect_ivl_s
                self._next_health = now
                self._restart_flow(now, "link up")
            elif event == zmq.EVENT_DISCONNECTED:
                # Also reported after a failed handshake; only a link that was up goes down.
                endpoint = ev.get("endpoint", b"?")
                if endpoint in self._up_endpoints and len(self._up_endpoints) > 1:
                    # Another endpoint is still up: what went out on this one is sent again there.
                    self._up_endpoints.discard(endpoint)
                    self._stats["disconnects"] += 1
                    self._restart_flow(now, f"endpoint {endpoint!r} lost, {len(self._up_endpoints)} still up")
                    continue
                self._up_endpoints.discard(endpoint)
                if self._link_up:
                    self._log.warning("uplink %s: link down (%d messages unacknowledged)", name, len(self._inflight))
                    self._set_down("down")
            elif event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self._stats["auth_failures"] += 1
                self._set_down("refused")
                self._rebuild_at = now + self._backoff
                self._log.error("uplink %s: central refused this tower's key (ZAP status %s); "
                          "rebuilding the socket in %.1f s", name, ev.get("value"), self._backoff)
                self._backoff = min(2 * self._backoff, self._settings.reconnect_ivl_max_s)
                self._teardown_socket()
                return
            elif event in (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
                self._stats["handshake_failures"] += 1
                self._limited(logging.WARNING, "handshake", "uplink %s: handshake failed (%s, value %s)",
                              name, getattr(event, "name", event), ev.get("value"))

    def _restart_flow(self, now: float, why: str) -> None:
        """Split the outbox anew into live (seq >= B) and backlog (seq < B, REPLAY) and
        forget what is in flight (it is re-sent as backlog; late ACKs for it still count)."""
        for msg in self._inflight.values():
            self._remember(msg.first, msg.last)
        resend = len(self._inflight)
        self._inflight.clear()
        self._backlog_inflight = 0
        self._held = None
        self._verdicts = {}
        self._boundary = self._outbox.sendable_next_seq
        self._live_cursor = self._boundary - 1
        self._backlog_cursor = 0
        self._backlog_done = False
        self._backlog_started = now
        self._tokens = self._bucket
        self._tokens_mono = now
        self._progress_mono = now
        self._rto_backoff = 1.0
        self._seen_generation = self._outbox.generation
        self._stats["flow_restarts"] += 1
        self._log.info("uplink %s: %s; records below seq %d not yet acknowledged are replayed (%d messages were in "
                 "flight), live records first", self._settings.name, why, self._boundary, resend)

    def _remember(self, first: int, last: int) -> None:
        self._recent[(first, last)] = None
        while len(self._recent) > 4 * self._settings.window:
            self._recent.popitem(last=False)

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
            try:
                self._handle_reply(frames, now)
            except Exception:  # last resort: a defect in reply handling must not stop the tower
                self._stats["reply_errors"] += 1
                self._limited.exception("reply_defect", "uplink %s: handling a reply failed (dropped; a defect, "
                                        "please report)", self._settings.name)

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
            self._on_ack(*decode_ack(msg), now)
        elif msg.type == MsgType.HEALTH_ACK:
            self._stats["health_acks"] += 1
        elif msg.type == MsgType.ERROR:
            code, text = decode_error(msg)
            self._stats["errors_received"] += 1
            # Both strings come from the central: bounded and printable in our log.
            code, text = code[:64].encode("unicode_escape").decode(), text[:300].encode("unicode_escape").decode()
            # One log line per second per code, for the first few codes; a central that
            # invents codes shares one line per second for all the others.
            if code not in self._error_codes and len(self._error_codes) < _MAX_ERROR_CODES:
                self._error_codes.add(code)
            reason = "error:" + code if code in self._error_codes else "error:other"
            self._limited(logging.ERROR, reason, "uplink %s: central reports error %s: %s", name, code, text)
        else:
            self._malformed("type", f"{msg.type.name} is not sent by a central")

    def _on_ack(self, first: int, last: int, now: float) -> None:
        """An ACK deletes (marks) exactly a message this client sent: one in flight, or
        one in flight before the last flow restart (a late ACK from the old link)."""
        pending = self._inflight.get(first)
        if pending is not None and pending.last == last:
            del self._inflight[first]
            if pending.replay:
                self._backlog_inflight -= 1
            if pending.sends == 1 and pending.sent_mono is not None:
                self._rtt_sample(now - pending.sent_mono)
        elif (first, last) in self._recent:
            del self._recent[(first, last)]
            self._stats["late_acks"] += 1
        else:
            # A second ACK for a message sent twice: already handled.
            self._stats["unmatched_acks"] += 1
            self._log.debug("uplink %s: ACK %d..%d matches nothing sent", self._settings.name, first, last)
            return
        self._outbox.ack(first, last, self._settings.name)
        self._stats["acked_records"] += last - first + 1
        self._stats["last_ack_mono"] = now
        self._progress_mono = now

    def _rtt_sample(self, rtt: float) -> None:
        """Fold one ACK round trip (of a message sent once: Karn) into srtt and rttvar
        (RFC 6298, alpha 1/8, beta 1/4); a fresh sample ends the timeout backoff."""
        rtt = max(0.0, rtt)
        if self._srtt is None:
            self._srtt, self._rttvar = rtt, rtt / 2
        else:
            self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self._srtt - rtt)
            self._srtt = 0.875 * self._srtt + 0.125 * rtt
        self._rto_backoff = 1.0

    def ack_timeout(self) -> float:
        """Seconds without any ACK after which what is in flight is sent again:
        srtt + 4 rttvar of the measured ACK round trips (``ack_timeout_s`` before the
        first), at least ``ack_timeout_s``, doubled after each timeout until an ACK
        gives a fresh sample, at most ``ack_timeout_max_s``."""
        s = self._settings
        base = s.ack_timeout_s if self._srtt is None else self._srtt + 4 * self._rttvar
        return min(s.ack_timeout_max_s, max(s.ack_timeout_s, base) * self._rto_backoff)

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

    def _send_msg(self, msg: _Message, now: float) -> bool:
        if not self._send(msg.frame):
            return False
        if msg.sends:
            self._stats["resent_msgs"] += 1
        elif msg.replay:
            self._stats["replay_msgs"] += 1
            self._stats["replay_records"] += msg.count
        else:
            self._stats["live_msgs"] += 1
        msg.sends += 1
        msg.sent_mono = now
        return True

    def _pump(self, now: float) -> None:
        self._send_health(now)
        self._check_outbox(now)
        # A message is due again once neither it was sent nor any ACK came within the
        # timeout: while ACKs keep arriving the central is working through its queue,
        # and sending again would only add duplicates to that queue (as TCP restarts its
        # retransmission timer on every ACK of new data).
        timeout = self.ack_timeout()
        timed_out = False
        for msg in self._inflight.values():
            if msg.sent_mono is not None and now - max(msg.sent_mono, self._progress_mono) < timeout:
                continue
            if msg.sent_mono is not None and not timed_out:
                timed_out = True
                self._stats["ack_timeouts"] += 1
                self._rto_backoff = min(2 * self._rto_backoff, self._settings.ack_timeout_max_s)
            if not self._send_msg(msg, now):
                return  # HWM reached or link gone: try again at the next poll
        window = self._settings.window
        while len(self._inflight) < window:
            msg, _ = self._next_message(live=True)
            if msg is None:
                break
            self._inflight[msg.first] = msg
            if not self._send_msg(msg, now):
                return
        self._pump_backlog(now)

    def _pump_backlog(self, now: float) -> None:
        s = self._settings
        self._tokens = min(self._bucket, self._tokens + (now - self._tokens_mono) * s.replay_rate_rps)
        self._tokens_mono = now
        while (not self._backlog_done and self._backlog_inflight < s.replay_window
               and len(self._inflight) < s.window):
            msg = self._held
            if msg is None:
                msg, exhausted = self._next_message(live=False)
                if msg is None:
                    if exhausted:
                        self._backlog_done = True
                        took = now - self._backlog_started if self._backlog_started is not None else 0.0
                        self._log.info("uplink %s: backlog read out in %.1f s (%d records replayed so far)",
                                 s.name, took, self._stats["replay_records"])
                    return
            if self._tokens < msg.count:
                self._held = msg
                return
            self._held = None
            self._tokens -= msg.count
            self._inflight[msg.first] = msg
            self._backlog_inflight += 1
            if not self._send_msg(msg, now):
                return

    def _check_outbox(self, now: float) -> None:
        """After a rollback or a change of centrals this client's view of what is
        acknowledged may be stale: start the flow again from what the outbox holds."""
        if self._outbox.generation != self._seen_generation:
            self._restart_flow(now, "the outbox changed under it (a rolled back transaction or new centrals)")

    def _send_health(self, now: float) -> None:
        if self._health is None or self._next_health is None or now < self._next_health:
            return
        self._next_health = now + self._settings.health_interval_s
        try:
            frame = encode_health(self._outbox.stream_id, self._health())
        except Exception:  # a faulty health() must not stop the reports
            self._log.exception("uplink %s: building HEALTH failed", self._settings.name)
            return
        if self._send(frame):
            self._stats["health_sent"] += 1

    # ---------------------------------------------------------------- batching

    def _next_message(self, live: bool) -> tuple[_Message | None, bool]:
        """The next live or backlog message: rows this central still needs after the
        cursor, passed by its sharing rule, one kind, consecutive seq, at most
        batch_records. Rows the rule excludes are marked done for this central.
        Returns ``(message or None, exhausted)``; exhausted is False when the scan
        stopped early to keep one poll short."""
        s = self._settings
        name = s.name
        for _ in range(_PAGES_PER_MESSAGE):
            after = self._live_cursor if live else self._backlog_cursor
            rows = self._outbox.pending(after, s.batch_records, central=name,
                                        before_seq=None if live else self._boundary)
            if not rows:
                return None, True
            group, skips, consumed = self._select(rows)
            for lo, hi in skips:
                self._stats["skipped_records"] += self._outbox.ack(lo, hi, name)
            if live:
                self._live_cursor = consumed
            else:
                self._backlog_cursor = consumed
            if group:
                kind = group[0][1]
                frame = self._encode_group(kind, group, FLAG_REPLAY if not live else 0)
                # From now until this central acknowledges them the rows may reach it:
                # the outbox's size cap must not drop them (and announce them lost).
                self._outbox.protect(name, group[0][0], group[-1][0])
                return _Message(first=group[0][0], last=group[-1][0], count=len(group), frame=frame,
                                replay=not live), False
        return None, False

    def _select(self, rows: list[tuple[int, str, bytes]]) -> tuple[list, list[tuple[int, int]], int]:
        """Split one page of rows into the message to send (a run of one kind and
        consecutive seq, each row passed by the rule), the seq ranges consumed without
        sending (excluded by the rule, or damaged), and the last seq consumed."""
        checked = self._check_rows(rows)
        group: list[tuple[int, str, object]] = []
        skips: list[tuple[int, int]] = []
        consumed = rows[0][0] - 1
        for seq, kind, payload, verdict in checked:
            if verdict != _PASS:
                if group:
                    break  # the message ends before a row it cannot carry: seq stays consecutive
                if verdict == _BAD:
                    self._stats["bad_rows"] += 1
                    self._log.error("uplink %s: outbox row seq %d cannot be encoded; it is not sent (record lost)",
                              self._settings.name, seq)
                if skips and skips[-1][1] == consumed:
                    skips[-1] = (skips[-1][0], seq)
                else:
                    skips.append((seq, seq))
                consumed = seq
                continue
            if group and (kind != group[0][1] or seq != group[-1][0] + 1):
                break
            group.append((seq, kind, payload))
            consumed = seq
        return group, skips, consumed

    def _check_rows(self, rows: list[tuple[int, str, bytes]]) -> list[tuple[int, str, object, str]]:
        """Each row as ``(seq, kind, payload, verdict)``: payload decoded (an event dict,
        or the 80-byte record); verdict _PASS, _EXCLUDED (by the sharing rule) or _BAD (a
        damaged row, which would block the stream if it were kept)."""
        out: list[tuple[int, str, object, str]] = []
        track_idx: list[int] = []
        cache = self._verdicts
        for seq, kind, payload in rows:
            if seq in cache:  # read in the previous page but not consumed: judged already
                out.append(cache[seq])
                continue
            if kind == KIND_TRACK and len(payload) == RECORD_SIZE and int.from_bytes(payload[:8], "little") == seq:
                track_idx.append(len(out))
                out.append((seq, kind, payload, _PASS))
                continue
            if kind == KIND_EVENT:
                try:
                    ev = json.loads(payload)
                    if isinstance(ev, dict) and ev.get("seq") == seq:
                        encode_events(self._outbox.stream_id, [ev])
                        out.append((seq, kind, ev, _PASS if self._filter.event_passes(ev) else _EXCLUDED))
                        continue
                except ValueError:
                    pass
            out.append((seq, kind, payload, _BAD))
        if track_idx and not self._filter.passes_everything:
            records = np.frombuffer(b"".join(out[i][2] for i in track_idx), dtype=TRACK_RECORD_DTYPE)  # type: ignore[misc]
            mask = self._filter.track_mask(records)
            for i, passes in zip(track_idx, mask.tolist()):
                if not passes:
                    seq, kind, payload, _ = out[i]
                    out[i] = (seq, kind, payload, _EXCLUDED)
        self._verdicts = {row[0]: row for row in out}
        return out

    def _encode_group(self, kind: str, group: list[tuple[int, str, object]], flags: int) -> bytes:
        stream_id = self._outbox.stream_id
        if kind == KIND_TRACK:
            records = np.frombuffer(b"".join(p for _, _, p in group), dtype=TRACK_RECORD_DTYPE)  # type: ignore[misc]
            return encode_tracks(stream_id, self._filter.transform(records), flags)
        return encode_events(stream_id, [p for _, _, p in group], flags)  # type: ignore[misc]

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
    def replaying(self) -> bool:
        """True while backlog (REPLAY) records remain to be read out after a connect."""
        return self._link_up and not self._backlog_done

    @property
    def stats(self) -> dict:
        """Counters (a copy): sent_msgs, live_msgs, replay_msgs, replay_records,
        acked_records, late_acks, resent_msgs, skipped_records (marked done without
        sending: excluded by the sharing rule, or damaged), malformed, last_ack_mono
        (monotonic s or None), state (connecting|up|down|refused|closed), in_flight,
        replaying, boundary_seq, ack_timeout_s (the current ACK timeout), srtt_s (smoothed
        ACK round trip, None before the first), ack_timeouts (times in-flight messages were
        sent again because no ACK came within the timeout), and
        connects, disconnects, auth_failures, handshake_failures, errors_received, reply_errors,
        health_sent, health_acks, unmatched_acks, foreign_acks, bad_rows, flow_restarts."""
        return {**self._stats, "state": self._state, "in_flight": len(self._inflight),
                "replaying": self.replaying, "boundary_seq": self._boundary,
                "ack_timeout_s": self.ack_timeout(), "srtt_s": self._srtt}

    def close(self) -> None:
        """Close the socket and monitor (and the context if this client made it). Records
        in flight stay in the outbox. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._teardown_socket()
        self._outbox.detach(self._settings.name)
        self._link_up = False
        self._state = "closed"
        if self._own_context:
            self._ctx.term()

    def __enter__(self) -> UplinkClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
