"""The uplink's socket: building the DEALER with its options and CURVE keys,
connecting to every endpoint of the central, following the link through the socket
monitor, and rebuilding the socket with a backoff after a refusal.

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
"""

from __future__ import annotations

import logging

import zmq
from zmq.utils.monitor import recv_monitor_message

from towerd.errors import ConfigError, UplinkError
from towerd.keys import load_public_key_file, load_secret_key_file
from towerd.uplink.settings import CentralSettings

MAX_REPLY_SIZE = 1 << 20
"""Largest frame accepted from a central (libzmq MAXMSGSIZE); replies are tiny."""

_MONITOR_EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)


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


class LinkMixin:
    """The part of :class:`~towerd.uplink.client.UplinkClient` that owns the socket and
    the link state."""

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
        self._poll_items = [(mon, zmq.POLLIN), (sock, zmq.POLLIN)]
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
        self._poll_items = []
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

    def _drain_monitor(self, now: float) -> None:
        name = self._settings.name
        while self._mon is not None:
            try:
                if not self._mon.get(zmq.EVENTS) & zmq.POLLIN:
                    return
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
