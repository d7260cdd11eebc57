"""Local status socket and ``towerd status``.

The daemon listens on a Unix stream socket (default /run/towerd/status.sock, mode 0660)
speaking newline-delimited JSON, one request and one answer per connection, in the
spirit of gpsd's socket:

    -> {"command": "status"}
    <- {"ok": true, "status": {...}}
    -> {"command": "nonsense"}
    <- {"ok": false, "error": "unknown command 'nonsense', expected one of: status, version"}

The server is polled from the daemon's main loop (non-blocking, bounded buffers and a
per-client deadline), so answering never races the loop's own state. See
docs/status-protocol.md for the fields of ``status``.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import select
import socket
import sys
import time
from typing import Any, Callable

from towerd.tools.output import plural

log = logging.getLogger(__name__)

DEFAULT_SOCKET = "/run/towerd/status.sock"
MAX_REQUEST = 4096
CLIENT_DEADLINE_S = 2.0
EXIT_OK, EXIT_PROBLEM, EXIT_UNREACHABLE = 0, 1, 3


class StatusServer:
    """Answers status requests; call :meth:`poll` from the loop that owns the state."""

    def __init__(self, path: str, provider: Callable[[], dict[str, Any]], version: str) -> None:
        self.path = path
        self._provider = provider
        self._version = version
        self._clients: dict[socket.socket, tuple[bytearray, float]] = {}
        self._sock = self._bind(path)

    @staticmethod
    def _bind(path: str) -> socket.socket:
        if os.path.exists(path):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(path)
            except OSError:
                os.unlink(path)  # stale: left by a daemon that died
            else:
                raise OSError(errno.EADDRINUSE, f"another towerd answers on {path}")
            finally:
                probe.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            os.chmod(path, 0o660)
            sock.listen(8)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        return sock

    def filenos(self) -> list[int]:
        """File descriptors to wait on: the listening socket and clients mid-request."""
        return [self._sock.fileno(), *(c.fileno() for c in self._clients)]

    def wanted(self, ready: set[int]) -> bool:
        """Whether :meth:`poll` has work: the listening socket is among the descriptors
        ``ready`` (a poll found them readable), or clients are mid-request (their data or
        their deadline)."""
        return bool(self._clients) or self._sock.fileno() in ready

    def poll(self) -> None:
        """Accept, read and answer without blocking."""
        now = time.monotonic()
        while True:
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                log.warning("status socket accept: %s", exc)
                break
            conn.setblocking(False)
            self._clients[conn] = (bytearray(), now + CLIENT_DEADLINE_S)
        for conn in list(self._clients):
            buf, deadline = self._clients[conn]
            try:
                chunk = conn.recv(MAX_REQUEST)
            except BlockingIOError:
                chunk = None
            except OSError:
                self._drop(conn)
                continue
            if chunk == b"":
                self._drop(conn)
                continue
            if chunk:
                buf += chunk
            if b"\n" in buf:
                self._answer(conn, bytes(buf.split(b"\n", 1)[0]))
            elif len(buf) > MAX_REQUEST:
                self._answer(conn, None, error=f"request longer than {MAX_REQUEST} bytes")
            elif now > deadline:
                self._drop(conn)

    def _answer(self, conn: socket.socket, line: bytes | None, error: str | None = None) -> None:
        reply: dict[str, Any]
        if error is None:
            reply = self.handle(line or b"")
        else:
            reply = {"ok": False, "error": error}
        data = (json.dumps(reply, default=str, allow_nan=False) + "\n").encode()
        try:
            conn.setblocking(True)
            conn.settimeout(CLIENT_DEADLINE_S)
            conn.sendall(data)
        except OSError as exc:
            log.debug("status client went away: %s", exc)
        self._drop(conn)

    def handle(self, line: bytes) -> dict[str, Any]:
        """One request line -> the reply object."""
        try:
            request = json.loads(line)
            command = request["command"]
        except (ValueError, TypeError, KeyError):
            return {"ok": False, "error": 'malformed request, expected {"command": "status"}'}
        if command == "status":
            return {"ok": True, "status": _json_safe(self._provider())}
        if command == "version":
            return {"ok": True, "version": self._version}
        return {"ok": False, "error": f"unknown command {command!r}, expected one of: status, version"}

    def _drop(self, conn: socket.socket) -> None:
        self._clients.pop(conn, None)
        conn.close()

    def close(self) -> None:
        for conn in list(self._clients):
            self._drop(conn)
        self._sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


def _json_safe(value: Any) -> Any:
    """NaN/inf -> None so the answer is strict JSON."""
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def query(path: str, command: str = "status", timeout_s: float = 3.0) -> dict[str, Any]:
    """Ask the daemon; raises OSError when it does not answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        sock.connect(path)
        sock.sendall(json.dumps({"command": command}).encode() + b"\n")
        buf = bytearray()
        deadline = time.monotonic() + timeout_s
        while b"\n" not in buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([sock], [], [], remaining)[0]:
                raise TimeoutError(f"no answer from {path} within {timeout_s} s")
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
    return json.loads(bytes(buf).split(b"\n", 1)[0])


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    return f"{s // 3600} h {s % 3600 // 60} min"


def _rising_errors(sensor: dict[str, Any]) -> str:
    """'3 bad frames, 120 bytes dropped in the last 60 s' when error counters rose, else ''."""
    recent = sensor.get("errors_recent") or {}
    parts = []
    for key, word in (("bad_frames", "bad frame"), ("resyncs", "resync"), ("dropped_bytes", "dropped byte")):
        n = recent.get(key) or 0
        if n > 0:
            parts.append(plural(n, word))
    if not parts:
        return ""
    return f"{', '.join(parts)} in the last {sensor.get('errors_window_s', 60):.0f} s"


def _words(values: dict[str, Any]) -> str:
    """'band ism2400, points 112, plan ism433 ism2400' from a driver's status: unknown
    (null) values and zero counts are left out."""
    parts = []
    for key, value in values.items():
        if value is None or value == "" or value == [] or (isinstance(value, int) and not isinstance(value, bool)
                                                           and value == 0):
            continue
        if isinstance(value, float):
            value = f"{value:g}"
        elif isinstance(value, (list, tuple)):
            value = " ".join(str(v) for v in value)
        elif isinstance(value, dict):
            continue
        parts.append(f"{key.replace('_', ' ')} {value}")
    return ", ".join(parts)


def _set_aside(sensor: dict[str, Any]) -> str:
    """'3 bad checksum, 1 lost targets' from the counters by reason ('' when none)."""
    reasons = sensor.get("reasons") or {}
    return ", ".join(f"{n} {key.replace('_', ' ')}" for key, n in reasons.items() if n)


def render(status: dict[str, Any]) -> tuple[str, list[str]]:
    """Plain sentences for a technician, and the list of problems found."""
    problems: list[str] = []
    lines = [
        f"towerd {status.get('software_version', '?')} on tower {status.get('tower_id', '?')}, "
        f"up {_duration(status.get('uptime_s', 0))}, configuration {status.get('config_path', '?')} "
        f"(sha256 {str(status.get('config_digest', ''))[:12]})",
        "Sensors:",
    ]
    sensors = status.get("sensors", {})
    if not sensors:
        lines.append("  none configured")
    for name, s in sensors.items():
        state = s.get("state", "?")
        line = (f"  {name} ({s.get('driver', '?')} on {s.get('port', '?')}): {state}, "
                f"{s.get('rate_hz', 0):.1f} readings/s; {plural(s.get('frames', 0), 'frame')}, "
                f"{s.get('bad_frames', 0)} bad, "
                f"{s.get('resyncs', 0)} resyncs, {s.get('dropped_bytes', 0)} bytes dropped, "
                f"{s.get('reconnects', 0)} reconnects")
        lines.append(line)
        device = _words(s.get("device") or {})
        if device:
            lines.append(f"    device: {device}")
        covering = s.get("covering")
        if covering and covering != "yes":
            if state == "ok":
                problems.append(f"Remote ID receiver {name} is {covering.split(',')[0]}")
            lines.append(f"    remote id: {covering}; no silent drone is marked non-cooperative")
        aside = _set_aside(s)
        if aside:
            lines.append(f"    set aside: {aside}")
        if state != "ok":
            problems.append(f"sensor {name} is {state}: {s.get('last_error') or 'no detail'}")
            lines.append(f"    why: {s.get('last_error') or 'no detail'}")
        rising = _rising_errors(s)
        if rising:
            problems.append(f"sensor {name} is losing data: {rising}")
            lines.append(f"    errors rising: {rising} (check the cable, the baud rate and what else "
                         f"holds the port: towerd doctor)")
    lines.append("Links:")
    centrals = status.get("centrals", {})
    if not centrals:
        lines.append("  no central configured")
    for name, c in centrals.items():
        up = c.get("link_up")
        ack = c.get("last_ack_age_s")
        ack_text = f"last ACK {ack:.1f} s ago" if isinstance(ack, (int, float)) else "no ACK yet"
        lines.append(f"  {name} ({c.get('endpoint', '?')}): {'up' if up else 'DOWN'} ({c.get('state', '?')}), "
                     f"{ack_text}, {plural(c.get('in_flight', 0), 'message')} in flight, {c.get('resent_msgs', 0)} resent")
        if not up:
            problems.append(f"link to central {name} is down ({c.get('state', '?')})")
        if c.get("identity"):
            recheck = c.get("identity_recheck_in_s")
            again = f"; asked again in {_duration(recheck)}" if isinstance(recheck, (int, float)) else ""
            lines.append("    identity (Remote ID, ICD v1.1): " + _IDENTITY_TEXT.get(c["identity"], str(c["identity"]))
                         + again)
    ob = status.get("outbox", {})
    lines.append(f"Outbox: {plural(ob.get('pending', 0), 'record')} waiting for acknowledgement, next seq "
                 f"{ob.get('next_seq')}, {ob.get('dropped_total', 0)} dropped in all")
    if ob.get("write_error"):
        problems.append(f"the outbox cannot write ({ob['write_error']}): new reports are being lost")
        where = status.get("state_dir") or "/var/lib/towerd"
        lines.append(f"    cannot write: {ob['write_error']} (disk full? check: df -h {where}; "
                     "free space, e.g. journalctl --vacuum-size=50M)")
    lines.append(f"Tracks: {status.get('tracks_active', 0)} active")
    if status.get("readings_dropped"):
        problems.append(f"the processing loop fell behind: {status['readings_dropped']} readings dropped")
    lines.append("All good." if not problems else "Problems: " + "; ".join(problems) + ".")
    return "\n".join(lines), problems


_IDENTITY_TEXT = {
    "unknown": "not asked yet",
    "supported": "taken by this central",
    "unsupported": "WITHHELD: this central speaks ICD v1 only (it refused IDENTITY); its tracks are not affected",
    "disabled": "not shared (sharing rule)",
}


def _socket_path(args: argparse.Namespace) -> str:
    """--socket; else the configuration's status_socket (-c, or the default file when it
    exists); else the default socket. ConfigError for a -c file that cannot be used."""
    from towerd.config import DEFAULT_PATH, load_config
    from towerd.errors import ConfigError

    if args.socket:
        return args.socket
    path = args.config or DEFAULT_PATH
    if args.config is None and not os.path.exists(path):
        return DEFAULT_SOCKET
    try:
        configured = load_config(path).config.status_socket
    except ConfigError:
        if args.config is not None:
            raise
        return DEFAULT_SOCKET
    if configured is None:
        raise ConfigError(f"{path}: status_socket is null: this daemon has no status socket")
    return configured


def cmd_status(args: argparse.Namespace) -> int:
    from towerd.errors import ConfigError

    try:
        args.socket = _socket_path(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print("towerd status: cannot tell where the daemon's status socket is (use --socket)", file=sys.stderr)
        return EXIT_UNREACHABLE
    try:
        reply = query(args.socket)
    except (OSError, ValueError) as exc:
        print(f"towerd is not answering on {args.socket}: {exc}. Is it running? "
              f"Try: systemctl status towerd; journalctl -u towerd -n 50", file=sys.stderr)
        return EXIT_UNREACHABLE
    if not reply.get("ok"):
        print(f"towerd refused the request: {reply.get('error')}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if args.json:
        print(json.dumps(reply["status"], indent=2))
        _, problems = render(reply["status"])
    else:
        text, problems = render(reply["status"])
        print(text)
    return EXIT_PROBLEM if problems else EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="ask the running daemon how it is; exit 0 all well, 1 something down, "
                                      "3 not answering")
    p.add_argument("--config", "-c", help="configuration file whose status_socket to ask (default: "
                   "/etc/towerd/towerd.yaml when it exists)")
    p.add_argument("--socket", help=f"status socket (default: the configuration's status_socket, else "
                   f"{DEFAULT_SOCKET})")
    p.add_argument("--json", action="store_true", help="print the raw status object")
    p.set_defaults(func=cmd_status)
