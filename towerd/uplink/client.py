"""Uplink client: a DEALER that drains the outbox to one central (ICD v1).

Why it is built this way: a successful ZeroMQ
``send()`` proves nothing, so the outbox is the real queue. Records stay there until an
ACK covers them; messages not acknowledged are sent again when no ACK at all has come for
the ACK timeout, and everything unacknowledged is sent again after every reconnect
(at-least-once; the central drops duplicates by ``(tower id, stream_id, seq)``).

One job per module: :mod:`towerd.uplink.link` (socket, keys, monitor, backoff, extra
endpoints), :mod:`towerd.uplink.flow` (window, live before backlog, paced replay,
resends), :mod:`towerd.uplink.acktimer` (adaptive ACK timeout),
:mod:`towerd.uplink.batching` (rows to messages under the sharing rule) and
:mod:`towerd.uplink.settings` (:class:`CentralSettings`). This module composes them
and handles the central's replies.

Everything runs in :meth:`UplinkClient.poll`, called from the daemon's loop thread (the
same thread that uses the outbox; ZeroMQ sockets and the sqlite3 connection are not
shared between threads).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

import zmq

from towerd.clock import Clock
from towerd.errors import ConfigError, FrameError, UplinkError
from towerd.icd import TOWER_ID_RE, MsgType, decode, decode_ack, decode_error, encode_health
from towerd.outbox.sqlite import Outbox
from towerd.ratelog import RateLimitedLog
from towerd.uplink.acktimer import AckTimer, AckTimerMixin
from towerd.uplink.batching import BatchingMixin, _Message
from towerd.uplink.flow import FlowMixin
from towerd.uplink.identity import TRANSIENT_ERRORS, IdentityFlow
from towerd.uplink.link import LinkMixin, _load_curve_keys
from towerd.uplink.settings import CENTRAL_NAME_PATTERN, CentralSettings
from towerd.uplink.sharing import RecordFilter, ZoneOf

log = logging.getLogger(__name__)

__all__ = ["CENTRAL_NAME_PATTERN", "CentralSettings", "RateLimitedLog", "TOWER_ID_RE", "UplinkClient"]

_MAX_REPLIES_PER_POLL = 10_000
_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)
"""Plain ints: ``get(zmq.EVENTS) & zmq.POLLIN`` makes two enum flags per reply read."""
_PUMP_ROUNDS = 8
"""Rounds of sending and reading replies in one poll while replies keep arriving."""
_BURST_S = 0.25
"""The backlog token bucket holds at most this many seconds of ``replay_rate_rps``."""
_MAX_ERROR_CODES = 16
"""ERROR codes from one central that get a log line (per second) each."""


class UplinkClient(LinkMixin, FlowMixin, AckTimerMixin, BatchingMixin):
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
        self._poll_items: list = []  # (socket, POLLIN) of the monitor and the DEALER
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
        self._ack_timer = AckTimer(settings.ack_timeout_s, settings.ack_timeout_max_s)
        self._progress_mono = clock.monotonic()
        self._unsent = False  # a message in flight could not be sent (socket full): retried each poll
        self._closed = False
        # Every line names its central, also as the journal field CENTRAL= (logsetup).
        self._log = logging.LoggerAdapter(log, {"central": settings.name})
        self._limited = RateLimitedLog(self._log, clock)
        self._error_codes: set[str] = set()
        self._identity = IdentityFlow(settings.name, outbox, settings.share, self._send, logger=self._log,
                                      batch_records=settings.batch_records, ack_timeout_s=settings.ack_timeout_s,
                                      ack_timeout_max_s=settings.ack_timeout_max_s,
                                      filters_tracks=self._filter.filters_tracks,
                                      records_judged_below=self._records_judged_below, clock=clock,
                                      server_key=f"plain {settings.endpoint}" if self._curve is None
                                      else self._curve[2].decode("ascii"))
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
            zmq.zmq_poll(self._poll_items, timeout_ms)
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
        # One poll tells which of the two sockets has something (a failed non-blocking
        # receive costs three times as much, and most polls find nothing).
        try:
            ready = [sock for sock, _ in zmq.zmq_poll(self._poll_items, 0)]
        except zmq.ZMQError:
            ready = [self._mon, self._sock]
        if self._mon in ready:
            self._drain_monitor(now)
            if self._sock is None:
                return
        if self._sock in ready:
            self._drain_replies(now)
        for _ in range(_PUMP_ROUNDS):
            if not self._link_up:
                return
            sent = self._stats["sent_msgs"]
            self._pump(now)
            self._identity.pump(now)
            # A send may take in the socket's pending notices, among them that a reply
            # arrived: the socket's descriptor would then not signal it again, and a
            # caller waiting on it (zmq.FD) would leave the reply unread. So after a send
            # the socket is asked once whether a reply waits, and it is read now.
            sock = self._sock
            if self._stats["sent_msgs"] == sent or sock is None or not sock.getsockopt(_EVENTS) & _POLLIN:
                return
            self._drain_replies(now)


    def _drain_replies(self, now: float) -> None:
        sock = self._sock
        assert sock is not None
        for i in range(_MAX_REPLIES_PER_POLL):
            try:
                if i and not sock.getsockopt(_EVENTS) & _POLLIN:  # the first: the poll said so
                    return
                frames = sock.recv_multipart(zmq.NOBLOCK)
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
            if msg.stream_id == self._outbox.identity_stream_id:
                self._identity.on_ack(*decode_ack(msg))
                return
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
            if msg.stream_id == self._outbox.identity_stream_id:
                self._identity.on_error(code, text)  # an ICD v1 central refusing IDENTITY: logged once there
                if code not in TRANSIENT_ERRORS:
                    return
            # One log line per second per code, for the first few codes; a central that
            # invents codes shares one line per second for all the others.
            if code not in self._error_codes and len(self._error_codes) < _MAX_ERROR_CODES:
                self._error_codes.add(code)
            reason = "error:" + code if code in self._error_codes else "error:other"
            self._limited(logging.ERROR, reason, "uplink %s: central reports error %s: %s", name, code, text)
        else:
            self._malformed("type", f"{msg.type.name} is not sent by a central")


    def _records_judged_below(self) -> int:
        """Every record below this seq has been judged by this central's sharing rule
        (sent or excluded), so the identities added after them can be judged too."""
        if not self._backlog_done:
            return self._backlog_cursor + 1
        if not self._outbox.pending(self._live_cursor, 1, central=self._settings.name):
            return self._outbox.sendable_next_seq
        return self._live_cursor + 1

    def _send_health(self, now: float) -> None:
        if self._health is None or self._next_health is None or now < self._next_health:
            return
        self._next_health = now + self._settings.health_interval_s
        try:
            frame = encode_health(self._outbox.stream_id, {**self._health(), "identity": self._identity.health()})
        except Exception:  # a faulty health() must not stop the reports
            self._log.exception("uplink %s: building HEALTH failed", self._settings.name)
            return
        if self._send(frame):
            self._stats["health_sent"] += 1

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
        health_sent, health_acks, unmatched_acks, foreign_acks, bad_rows, flow_restarts;
        identity (see :attr:`identity_capability`) and the identity_* counters of
        :class:`~towerd.uplink.identity.IdentityFlow`."""
        return {**self._stats, "state": self._state, "in_flight": len(self._inflight),
                "replaying": self.replaying, "boundary_seq": self._boundary,
                "ack_timeout_s": self.ack_timeout(), "srtt_s": self._srtt, **self._identity.stats,
                "identity": self._identity.capability, "identity_ack_timeout_s": self._identity.timer.timeout(),
                "identity_recheck_in_s": self._identity.recheck_in_s(self._clock.monotonic())}

    @property
    def identity_capability(self) -> str:
        """Whether this central takes identities (ICD v1.1): unknown (not asked yet),
        supported, unsupported (an ICD v1 central: identities withheld from it), or
        disabled (its sharing rule)."""
        return self._identity.capability

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
