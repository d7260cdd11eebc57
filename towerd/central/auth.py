"""CURVE admission for the reference central: a ZAP handler (ZeroMQ RFC 27) with an
allow-list that binds each tower public key to one tower id.

Why our own handler instead of pyzmq's authenticators: it runs in the central's own poll
loop (no thread, no asyncio), it reloads the allow-list when the directory changes or on
demand (SIGHUP), and it puts the tower id in the ZAP User-Id so that every message the
ROUTER receives carries the tower its key belongs to (``zmq.Frame.get("User-Id")``).

The User-Id is ``"<tower-id> <z85 public key>"``. For every message, :meth:`check_sender`
compares it with the message's routing id (ICD "Transport": a message whose routing id
differs from the tower id of the key that sent it is dropped and logged) and with the
allow-list as it is now (a key removed or bound to another tower since the handshake no
longer speaks for anyone). A key caught speaking for another tower is quarantined:
refused at its next handshakes for ``quarantine_s``. That is what lets the genuine tower
win back its routing id (the ROUTER's HANDOVER gives it to the newest connection).

Traps: a ``curve_server`` socket with no ZAP
handler admits any key, so :class:`CurveAuthenticator` must be started *before* the
ROUTER binds, in the same context; ZAP domains are compared literally.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import zmq
from zmq.utils import z85

from towerd.central.limits import TokenBucket
from towerd.clock import Clock
from towerd.errors import ConfigError, UplinkError
from towerd.keys import AllowList, allow_dir_signature, load_allow_list
from towerd.ratelog import RateLimitedLog

log = logging.getLogger(__name__)

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_VERSION = b"1.0"
ZAP_DOMAIN = "towerd"
"""The ``zap_domain`` the central's ROUTER sets; requests for other domains are refused."""
_MAX_REQUESTS_PER_CALL = 1000
_HANDSHAKE_BURST = 10
_MAX_ADMITTED = 100_000
"""(routing id, User-Id) pairs :meth:`CurveAuthenticator.check_sender` remembers as
admitted (every message is checked; the answer only changes with the allow-list)."""


class CurveAuthenticator:
    """Admits CURVE clients whose public key is on the allow-list in ``allow_dir``.

    Drive it from the central's loop: register :attr:`socket` for POLLIN and call
    :meth:`handle`; call :meth:`maybe_reload` regularly."""

    def __init__(self, ctx: zmq.Context, allow_dir: str | os.PathLike, *, clock: Clock,
                 domain: str = ZAP_DOMAIN, reload_interval_s: float = 2.0, quarantine_s: float = 60.0,
                 handshakes_per_s: Callable[[str], float] | None = None, log_interval_s: float = 1.0) -> None:
        self._ctx = ctx
        self._dir = Path(allow_dir)
        if not self._dir.is_dir():
            raise ConfigError(f"allow-list directory {self._dir}: missing or not a directory")
        self._clock = clock
        self._domain = domain.encode()
        self._reload_interval = reload_interval_s
        self._quarantine_s = quarantine_s
        self._quarantined: dict[bytes, float] = {}  # z85 key -> monotonic end
        self._admitted: set[tuple[str, str]] = set()  # (routing id, User-Id) checked against this list
        self._limited = RateLimitedLog(log, clock, log_interval_s)
        self._sock: zmq.Socket | None = None
        self._allow = AllowList({})
        self._signature: tuple | None = None
        self._next_check = 0.0
        self.stats: dict[str, int] = {"admitted": 0, "refused_unknown_key": 0, "refused_quarantined": 0,
                                      "refused_domain": 0, "refused_mechanism": 0, "bad_requests": 0,
                                      "reloads": 0, "reload_failures": 0, "refused_rate": 0, "internal_errors": 0}
        self._handshakes: dict[bytes, TokenBucket] = {}
        self._handshakes_per_s = handshakes_per_s
        self.reload(force=True)

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Bind the ZAP endpoint of the context. Must happen before the ROUTER binds."""
        sock = self._ctx.socket(zmq.REP)
        sock.linger = 0
        try:
            sock.bind(ZAP_ENDPOINT)
        except zmq.ZMQError as exc:
            sock.close(0)
            raise UplinkError(f"cannot bind the ZAP handler ({ZAP_ENDPOINT}): {exc}") from exc
        self._sock = sock

    @property
    def started(self) -> bool:
        return self._sock is not None

    @property
    def socket(self) -> zmq.Socket:
        if self._sock is None:
            raise UplinkError("the ZAP handler is not started")
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None

    # ---------------------------------------------------------------- allow-list

    def reload(self, force: bool = False) -> bool:
        """Read the allow-list directory again if it changed (or if ``force``). Returns
        whether a new list was loaded."""
        signature = allow_dir_signature(self._dir)
        if not force and signature == self._signature:
            return False
        try:
            if signature[0] == "error":
                raise OSError(signature[1])
            allow, problems = load_allow_list(self._dir, raise_io_errors=True)
        except OSError as exc:
            # EMFILE, EIO, a directory gone for a moment: not a revocation. The last good
            # list stays; the signature is not recorded, so the next check tries again.
            self.stats["reload_failures"] += 1
            self._limited(logging.ERROR, "reload_failed", "central allow-list %s cannot be read (%s): keeping the "
                          "last good list of %d tower keys", self._dir, exc, len(self._allow))
            return False
        self._signature = signature
        self._admitted.clear()
        for problem in problems:
            log.error("central allow-list: %s", problem)
        old = set(self._allow.towers.items())
        new = set(allow.towers.items())
        self._allow = allow
        self.stats["reloads"] += 1
        added = sorted(t for _, t in new - old)
        removed = sorted(t for _, t in old - new)
        log.info("central allow-list %s: %d tower keys%s%s", self._dir, len(allow),
                 f"; added or changed: {', '.join(added)}" if added and not force else "",
                 f"; removed or changed: {', '.join(removed)}" if removed else "")
        return True

    def maybe_reload(self) -> None:
        """Check the directory for changes at most every ``reload_interval_s``."""
        now = self._clock.monotonic()
        if now >= self._next_check:
            self._next_check = now + self._reload_interval
            self.reload()

    # ---------------------------------------------------------------- ZAP

    def handle(self) -> int:
        """Answer the ZAP requests waiting (non-blocking). Returns how many."""
        if self._sock is None:
            return 0
        n = 0
        while n < _MAX_REQUESTS_PER_CALL:
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            n += 1
            try:
                self._answer(frames)
            except Exception:  # last resort: a defect here must not stop the central
                self.stats["internal_errors"] += 1
                self._limited.exception("zap_defect", "central: answering a ZAP request failed (a defect, please "
                                        "report)")
                if len(frames) > 1:
                    self._reply(frames[1], b"500", b"Internal error")
        return n

    def _reply(self, request_id: bytes, code: bytes, text: bytes, user_id: bytes = b"") -> None:
        assert self._sock is not None
        self._sock.send_multipart([ZAP_VERSION, request_id, code, text, user_id, b""])

    def _answer(self, frames: list[bytes]) -> None:
        request_id = frames[1] if len(frames) > 1 else b""
        if len(frames) < 6 or frames[0] != ZAP_VERSION:
            self.stats["bad_requests"] += 1
            self._limited(logging.ERROR, "zap_bad", "central: malformed ZAP request (%d frames)", len(frames))
            self._reply(request_id, b"400", b"Bad request")
            return
        _, request_id, domain, address, _identity, mechanism = frames[:6]
        credentials = frames[6:]
        peer = address.decode("ascii", "replace")
        if domain != self._domain:
            self.stats["refused_domain"] += 1
            self._limited(logging.WARNING, "zap_domain", "central: refused %s: ZAP domain %r", peer, domain)
            self._reply(request_id, b"400", b"Unknown domain")
            return
        if mechanism != b"CURVE" or len(credentials) != 1 or len(credentials[0]) != 32:
            self.stats["refused_mechanism"] += 1
            self._limited(logging.WARNING, "zap_mechanism", "central: refused %s: mechanism %r",
                          peer, mechanism.decode("ascii", "replace"))
            self._reply(request_id, b"400", b"CURVE required")
            return
        key = z85.encode(credentials[0])
        until = self._quarantined.get(key)
        if until is not None:
            if self._clock.monotonic() < until:
                self.stats["refused_quarantined"] += 1
                self._limited(logging.WARNING, "zap_quarantine", "central: refused %s: key %s is quarantined "
                              "(it spoke for another tower)", peer, key.decode())
                self._reply(request_id, b"400", b"Key quarantined")
                return
            del self._quarantined[key]
        tower = self._allow.tower_of(key)
        if tower is None:
            self.stats["refused_unknown_key"] += 1
            self._limited(logging.WARNING, "zap_unknown", "central: refused %s: key %s is not on the allow-list",
                          peer, key.decode())
            self._reply(request_id, b"400", b"Unknown key")
            return
        if self._handshakes_per_s is not None:
            bucket = self._handshakes.get(key)
            now = self._clock.monotonic()
            if bucket is None:
                if len(self._handshakes) > 4 * len(self._allow) + 64:
                    self._handshakes.clear()
                bucket = self._handshakes[key] = TokenBucket(self._handshakes_per_s(tower), now,
                                                             burst=_HANDSHAKE_BURST)
            if not bucket.ready(1, now):
                self.stats["refused_rate"] += 1
                self._limited(logging.WARNING, "zap_rate", "central: refused %s: key of tower %s handshakes more "
                              "than %g times a second", peer, tower, bucket.rate)
                self._reply(request_id, b"400", b"Too many handshakes")
                return
            bucket.spend(1)
        self.stats["admitted"] += 1
        self._limited(logging.INFO, "admitted:" + tower, "central: admitted %s with the key of tower %s", peer, tower)
        self._reply(request_id, b"200", b"OK", f"{tower} {key.decode()}".encode("ascii"))

    # ---------------------------------------------------------------- per message

    def check_sender(self, routing_id: str, user_id: str | None) -> str | None:
        """None when a message from routing id ``routing_id`` whose connection was
        admitted as ``user_id`` may be accepted; otherwise the reason to drop it:
        ``no_user_id`` (not admitted by this handler), ``revoked`` (its key is no
        longer allowed for that tower), ``identity`` (its routing id is another tower's:
        the key is quarantined)."""
        if (routing_id, user_id) in self._admitted:
            return None
        if not user_id or " " not in user_id:
            return "no_user_id"
        tower, key_text = user_id.split(" ", 1)
        key = key_text.encode("ascii", "replace")
        if self._allow.tower_of(key) != tower:
            return "revoked"
        if routing_id != tower:
            self._quarantined[key] = self._clock.monotonic() + self._quarantine_s
            return "identity"
        if len(self._admitted) >= _MAX_ADMITTED:
            self._admitted.clear()
        self._admitted.add((routing_id, user_id))  # until the allow-list changes
        return None
