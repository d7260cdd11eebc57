"""Handshake failures at the central, logged with the peer's address and counted.

A tower holding the wrong public key for its central seals its CURVE HELLO to a key the
central does not have: libzmq cannot decrypt it and closes the connection, and nothing
reaches the ZAP handler (which logs refused keys). Without this the central says
nothing and the tower keeps retrying. :class:`HandshakeWatch` reads the ROUTER's socket
monitor (ZMQ_EVENT_ACCEPTED / HANDSHAKE_FAILED_* / DISCONNECTED) and logs each failure
rate-limited per reason, with the peer ``address:port``.

The monitor gives a connection's file descriptor, not its address, and libzmq may have
closed a failed connection before the event is read. So the address comes from
``getpeername`` on the descriptor at ACCEPTED while it is open, else from the kernel's
entries for the central's port that it closed itself (FIN_WAIT/TIME_WAIT in /proc/net/tcp,
tcp6): the central closed the failed connection, so its end lingers there with the peer's
address for a minute. A protocol failure (wrong key, CURVE vs plain) is a warning; a
connection dropped mid-handshake (port probes, a client that gave up) is info.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Callable

import zmq
from zmq.utils.monitor import recv_monitor_message

log = logging.getLogger(__name__)

_EVENTS = (zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
           | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)
_MAX_EVENTS_PER_POLL = 1000
_MAX_TRACKED = 4096
_CLOSED_BY_US = {"04", "05", "06", "0B"}
"""TCP states of a connection this end closed first: FIN_WAIT1/2, TIME_WAIT, CLOSING."""
_RESOLVE_AFTER_S = 0.05
"""How long an unknown peer's report waits before looking for the closed connection."""
_GIVE_UP_S = 1.0
"""... and how long at most before it is logged without an address."""

REASONS = {
    zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC: (
        "wrong_key", "its CURVE HELLO cannot be decrypted: the tower has another public key for this central "
                     "(its server_public_key_file is not this central's public key)"),
    zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH: (
        "mechanism", "it does not use this central's security mechanism (CURVE vs plain)"),
}


def _closed_peers(port: int, proc_net: str = "/proc/net") -> set[str]:
    """'address:port' of the peers of the connections on local ``port`` that this end
    closed (FIN_WAIT, TIME_WAIT, CLOSING)."""
    peers = set()
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        try:
            with open(os.path.join(proc_net, name)) as fh:
                lines = fh.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 4 or fields[3] not in _CLOSED_BY_US:
                continue
            local, remote = fields[1], fields[2]
            if int(local.rsplit(":", 1)[1], 16) != port:
                continue
            peers.add(_address(remote, family))
    return peers


def _address(hex_addr: str, family: int) -> str:
    """/proc/net/tcp's 'AABBCCDD:PPPP' (host byte order words) -> '1.2.3.4:port'."""
    addr, port = hex_addr.rsplit(":", 1)
    raw = bytes.fromhex(addr)
    # The kernel prints each 32-bit word in host order (little-endian here).
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    ip = socket.inet_ntop(family, raw)
    if ip.startswith("::ffff:"):
        ip = ip[7:]
    return f"[{ip}]:{int(port, 16)}" if ":" in ip else f"{ip}:{int(port, 16)}"


class HandshakeWatch:
    """Watches ``sock`` (a bound ROUTER); call :meth:`poll` from the loop that owns it."""

    def __init__(self, sock: zmq.Socket, limited: Callable[..., bool], port: int | None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._limited = limited
        self._port = port
        self._monotonic = monotonic
        self._unresolved: list[tuple[float, str, str]] = []  # (when, reason, text) of unknown peers
        self._monitor = sock.get_monitor_socket(_EVENTS)
        self._sock = sock
        self._peers: dict[int, str | None] = {}  # fd -> address, for open connections
        self._failed: list[tuple[str, str]] = []  # (reason key, text) waiting for their DISCONNECTED
        self._seen_closed: set[str] = set()
        self.failures: dict[str, int] = {}

    @property
    def socket(self) -> zmq.Socket:
        """The monitor socket: poll it, and call :meth:`poll` when it is readable."""
        return self._monitor

    @property
    def pending(self) -> bool:
        """Failed handshakes wait to be logged with their peer's address: call
        :meth:`poll` even when :attr:`socket` is not readable."""
        return bool(self._unresolved)

    def poll(self) -> None:
        """Read the monitor events waiting (never blocks)."""
        self._read_events()
        if not self._unresolved:
            return
        age = self._monotonic() - self._unresolved[0][0]
        if age < _RESOLVE_AFTER_S:
            return
        fresh = _closed_peers(self._port) - self._seen_closed if self._port is not None else set()
        if not fresh and age < _GIVE_UP_S:
            return  # the kernel may not show the closed connection yet (a loaded machine)
        self._seen_closed |= fresh
        if len(self._seen_closed) > _MAX_TRACKED:
            self._seen_closed = set(fresh)
        peer = ", ".join(sorted(fresh)) if fresh else None
        for _, reason, text in self._unresolved:
            self._log(reason, text, peer)
        self._unresolved.clear()

    def _read_events(self) -> None:
        for _ in range(_MAX_EVENTS_PER_POLL):
            try:
                if not self._monitor.poll(0):
                    return
                event = recv_monitor_message(self._monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError as exc:
                log.debug("central handshake monitor: %s", exc)
                return
            kind, value = event["event"], int(event["value"])
            if kind == zmq.EVENT_ACCEPTED:
                if len(self._peers) >= _MAX_TRACKED:
                    self._peers.clear()
                self._peers[value] = _peer_of(value)
            elif kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
                self._failed.append(REASONS.get(value, ("protocol", f"ZMTP protocol error 0x{value:x}")))
            elif kind == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
                self._failed.append(("closed", f"the connection failed during the handshake ({os.strerror(value)})"))
            elif kind == zmq.EVENT_DISCONNECTED:
                peer = self._peers.pop(value, None)
                if self._failed:
                    reason, text = self._failed.pop(0)
                    self._report(reason, text, peer)

    def _report(self, reason: str, text: str, peer: str | None) -> None:
        self.failures[reason] = self.failures.get(reason, 0) + 1
        if peer is None:
            if len(self._unresolved) < _MAX_EVENTS_PER_POLL:
                self._unresolved.append((self._monotonic(), reason, text))
            return
        self._log(reason, text, peer)

    def _log(self, reason: str, text: str, peer: str | None) -> None:
        level = logging.INFO if reason == "closed" else logging.WARNING
        self._limited(level, "handshake:" + reason, "central: handshake from %s failed: %s",
                      peer or "an unknown peer", text)

    def close(self) -> None:
        try:
            self._sock.disable_monitor()
        except zmq.ZMQError:
            pass
        self._monitor.close(0)


def _peer_of(fd: int) -> str | None:
    """The peer address of an open connection's descriptor (a duplicate is inspected and
    closed; libzmq's own descriptor is untouched)."""
    try:
        dup = socket.socket(fileno=os.dup(fd))  # family and type from the descriptor
    except OSError:
        return None
    try:
        peer = dup.getpeername()
        if not isinstance(peer, tuple):
            return None  # a Unix socket (ipc://): no address to name
        host, port = peer[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    except OSError:
        return None
    finally:
        dup.close()
