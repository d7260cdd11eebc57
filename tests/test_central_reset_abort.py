"""A peer that resets its TCP connection can kill the reference central: libzmq 4.3.5 defect.

libzmq 4.3.5 (the one pyzmq's wheels bundle, and Debian 12's libzmq5) aborts the whole
process with ``Assertion failed: !_io_error (src/stream_engine_base.cpp:310)`` when, on one
connection:

1. the receive queue is full (ZMQ_RCVHWM, the central's ``receive_queue``, reached while
   its main thread is busy, e.g. storing): the engine stops reading (``_input_stopped``);
2. the peer resets the connection (RST): epoll reports EPOLLERR/EPOLLHUP even with reading
   off, ``in_event`` sees the stopped input, unregisters the socket and sets ``_io_error``,
   but keeps the engine until the queue drains;
3. before that, something calls ``out_event``, whose first line is
   ``zmq_assert (!_io_error)``: either the engine's own ZMTP heartbeat timer (the central
   sets ZMQ_HEARTBEAT_IVL), or, when the queue drains, a PING from the peer that was
   already read into the engine's buffer behind the message that filled the queue
   (``restart_input`` decodes it, and the PONG goes straight to ``out_event``).

Upstream libzmq (master too) still has these paths: zeromq/libzmq#4852 (an early return
instead of the assert) was closed unmerged. The only socket option that avoids them,
ZMQ_RCVHWM=0, gives up the per-connection bound the ICD promises (``receive_queue``), so
these tests reproduce the defect (xfail). They were strict, failing if a libzmq upgrade fixed
it; since the central reads on while its store is slow, the abort comes in only some runs,
so they are no longer strict (LIBZMQ_ABORT) and the link-cut soak test keeps its
restart-on-abort.

Real parts: a ``towerd central`` subprocess; its SQLite file held locked by the test so
that its main thread blocks in the store (sqlite3's 5 s busy timeout); a real CURVE
handshake through a small proxy that resets the central's side (SO_LINGER 0 close), and a
hand-made ZMTP 3.1 NULL peer against ``--plain``.
"""

from __future__ import annotations

import socket
import sqlite3
import struct
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from processes import free_tcp_port
from towerd import icd, keys

TOWER = "tx-rst-01"
STREAM = 0xC0FFEE0000000077
LIBZMQ_ABORT = pytest.mark.xfail(
    strict=False,
    reason="libzmq 4.3.5: zmq_assert(!_io_error) in stream_engine_base_t::out_event (see the module docstring); "
           "not strict since the central reads on while its store is slow (issue 13): the repro then aborts the "
           "central in only some runs, and in others the flood is read before the engine stops")


def _central_side_rx_queue(central_port: int, peer_port: int) -> int | None:
    """Bytes the kernel holds unread on the central's end of the connection from
    ``peer_port`` (/proc/net/tcp), or None once that socket is gone (closed or reset)."""
    want = (f"0100007F:{central_port:04X}", f"0100007F:{peer_port:04X}")
    with open("/proc/net/tcp") as fh:
        for line in fh.readlines()[1:]:
            f = line.split()
            if (f[1], f[2]) == want and f[3] != "07":
                return int(f[4].split(":")[1], 16)
    return None


def _survives(central: subprocess.Popen, window_s: float) -> bool:
    """Whether the central is still running after ``window_s`` (it aborts within a
    heartbeat period, 1 s, when the defect strikes); returns as soon as it exits."""
    deadline = time.monotonic() + window_s
    while central.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    return central.poll() is None


class ResettingProxy:
    """Forward one connection ``127.0.0.1:<port>`` -> ``127.0.0.1:<upstream>``; ``reset()``
    closes the upstream side with SO_LINGER 0, so the central receives an RST."""

    def __init__(self, upstream: int) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._upstream_port = upstream
        self.forwarded = 0
        self.upstream_port = 0
        self._up: socket.socket | None = None
        self._down: socket.socket | None = None
        self._connected = threading.Event()
        self._done = threading.Event()
        self._threads = [threading.Thread(target=self._run, name="rst-proxy", daemon=True)]
        self._threads[0].start()

    def _run(self) -> None:
        self._listener.settimeout(10)
        try:
            self._down, _ = self._listener.accept()
        except OSError:
            return
        self._up = socket.create_connection(("127.0.0.1", self._upstream_port))
        self.upstream_port = self._up.getsockname()[1]
        self._connected.set()
        back = threading.Thread(target=self._pump, args=(self._up, self._down, False), name="rst-proxy-down",
                                daemon=True)
        self._threads.append(back)
        back.start()
        self._pump(self._down, self._up, True)

    def _pump(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        try:
            while not self._done.is_set():
                data = src.recv(65536)
                if not data:
                    return
                dst.sendall(data)
                if count:
                    self.forwarded += len(data)
        except OSError:
            return

    def reset(self) -> None:
        assert self._connected.wait(10), "no connection reached the proxy"
        self._done.set()
        self._up.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._up.close()          # RST towards the central
        self._down.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._done.set()
        self._listener.close()
        for s in (self._up, self._down):
            if s is not None:
                s.close()
        for t in self._threads:
            t.join(5)


def _tracks(n: int, first_seq: int) -> np.ndarray:
    rec = icd.empty_track_records(n)
    i = np.arange(n)
    rec["seq"] = first_seq + i
    rec["time_us"] = 1_700_000_000_000_000 + 100_000 * (first_seq + i)
    rec["track_id"] = 7
    rec["status"] = icd.Status.CONFIRMED
    rec["category"] = icd.Category.UAS
    rec["confidence"] = 80
    rec["hits"] = 1
    return rec


def _curve_dealer(ctx: zmq.Context, k_tower, central_public: bytes, endpoint: str) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.routing_id = TOWER.encode()
    public, secret = keys.load_secret_key_file(k_tower.secret_file)
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_serverkey = central_public
    sock.connect(endpoint)
    return sock


def _wait(cond, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


@pytest.mark.slow
@LIBZMQ_ABORT
def test_reset_of_a_connection_with_a_full_receive_queue_does_not_abort_the_central(towerd_exe, tmp_path):
    k_central = keys.generate_keypair(tmp_path / "central", "central")
    k_tower = keys.generate_keypair(tmp_path / "tower", "tower")
    keys.allow_tower(TOWER, k_tower.public_file, tmp_path / "allow")
    port = free_tcp_port()
    db = tmp_path / "central.sqlite"
    log = tmp_path / "central.log"
    with open(log, "wb") as fh:
        central = subprocess.Popen([towerd_exe, "central", "--bind", f"tcp://127.0.0.1:{port}", "--db", str(db),
                                    "--secret-key", str(k_central.secret_file), "--allow-dir", str(tmp_path / "allow"),
                                    "--log-level", "INFO"], stdout=fh, stderr=subprocess.STDOUT)
    proxy = ResettingProxy(port)
    ctx = zmq.Context()
    lock = None
    try:
        _wait(lambda: "listening on" in log.read_text(errors="replace") or central.poll() is not None, 20,
              "central start")
        assert central.poll() is None, log.read_text()
        central_public = keys.load_public_key_file(k_central.public_file)

        # The central works: one message through the proxy is acknowledged.
        dealer = _curve_dealer(ctx, k_tower, central_public, f"tcp://127.0.0.1:{proxy.port}")
        dealer.send(icd.encode_tracks(STREAM, _tracks(1, 1)))
        assert dealer.poll(10_000), log.read_text()
        assert icd.decode_ack(icd.decode(dealer.recv())) == (1, 1)

        # Its main thread now blocks in the store; flood far past the receive queue (32).
        lock = sqlite3.connect(str(db), timeout=0, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        frames = [icd.encode_tracks(STREAM, _tracks(5, 2 + 5 * m)) for m in range(400)]
        for frame in frames:
            dealer.send(frame)
        sent_bytes = sum(len(f) for f in frames)
        _wait(lambda: proxy.forwarded >= sent_bytes and (_central_side_rx_queue(port, proxy.upstream_port) or 0) > 0,
              10, "the central to stop reading the flooded connection")
        proxy.reset()
        # The connection's heartbeat timer (1 s) fires while the store still blocks.
        assert _survives(central, 2.5), f"central died ({central.returncode}):\n{log.read_text()[-3000:]}"
        lock.rollback()
        lock.close()
        lock = None
        dealer.close(0)

        # ... and still serves: a new connection gets its ACK.
        again = _curve_dealer(ctx, k_tower, central_public, f"tcp://127.0.0.1:{port}")
        again.send(icd.encode_tracks(STREAM, _tracks(1, 5000)))
        replies = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not any(m.type == icd.MsgType.ACK for m in replies):
            if again.poll(200):
                replies.append(icd.decode(again.recv()))
        again.close(0)
        assert central.poll() is None, log.read_text()[-3000:]
        assert any(m.type == icd.MsgType.ACK for m in replies), (replies, log.read_text()[-3000:])
    finally:
        if lock is not None:
            lock.close()
        proxy.close()
        ctx.destroy(linger=0)
        if central.poll() is None:
            central.terminate()
            central.wait(15)


def _zmtp_frame(body: bytes, command: bool = False) -> bytes:
    flags = 0x04 if command else 0x00
    if len(body) > 255:
        return bytes([flags | 0x02]) + struct.pack(">Q", len(body)) + body
    return bytes([flags, len(body)]) + body


def _zmtp_null_dealer(port: int, routing_id: bytes) -> socket.socket:
    """A hand-made ZMTP 3.1 NULL peer (plain central): greeting and READY, no libzmq."""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x01" + b"NULL".ljust(20, b"\x00") + b"\x00" + b"\x00" * 31)
    props = b"".join(bytes([len(k)]) + k + struct.pack(">I", len(v)) + v
                     for k, v in ((b"Socket-Type", b"DEALER"), (b"Identity", routing_id)))
    s.sendall(_zmtp_frame(b"\x05READY" + props, command=True))
    got = b""
    while len(got) < 64 + 2:
        chunk = s.recv(4096)
        assert chunk, "central closed the connection during the greeting"
        got += chunk
    return s


@pytest.mark.slow
@LIBZMQ_ABORT
def test_ping_behind_a_full_receive_queue_then_reset_does_not_abort_the_central(towerd_exe, tmp_path):
    port = free_tcp_port()
    db = tmp_path / "central.sqlite"
    log = tmp_path / "central.log"
    with open(log, "wb") as fh:
        central = subprocess.Popen([towerd_exe, "central", "--bind", f"tcp://127.0.0.1:{port}", "--db", str(db),
                                    "--plain", "--log-level", "INFO"], stdout=fh, stderr=subprocess.STDOUT)
    lock = None
    try:
        _wait(lambda: "listening on" in log.read_text(errors="replace") or central.poll() is not None, 20,
              "central start")
        lock = sqlite3.connect(str(db), timeout=0, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        s = _zmtp_null_dealer(port, TOWER.encode())
        ping = _zmtp_frame(b"\x04PING" + struct.pack(">H", 0) + b"ctx", command=True)
        burst = b"".join(_zmtp_frame(icd.encode_tracks(STREAM, _tracks(1, 1 + m))) + ping for m in range(400))
        s.sendall(burst)
        peer_port = s.getsockname()[1]
        _wait(lambda: 0 < (_central_side_rx_queue(port, peer_port) or 0) < len(burst), 10,
              "the central to stop reading the flooded connection")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()                  # RST
        _wait(lambda: _central_side_rx_queue(port, peer_port) is None, 10, "the reset to reach the central")
        lock.rollback()            # the central drains its queue: restart_input decodes a PING
        lock.close()
        lock = None
        assert _survives(central, 2.5), f"central died ({central.returncode}):\n{log.read_text()[-3000:]}"
    finally:
        if lock is not None:
            lock.close()
        if central.poll() is None:
            central.terminate()
            central.wait(15)
