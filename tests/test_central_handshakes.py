"""The central logs failed handshakes (a tower with the wrong public key for it, a plain
client at a CURVE central) with the peer's address, rate-limited, and counts them. Real
ROUTER and DEALER sockets on loopback with CURVE."""

from __future__ import annotations

import logging
import time

import zmq

from towerd import keys
from towerd.central.handshakes import _closed_peers
from towerd.central.server import CentralServer


def test_a_tower_with_the_wrong_central_key_is_logged_with_its_address(tmp_path, caplog):
    server_keys = keys.generate_keypair(tmp_path / "c", "central")
    tower = keys.generate_keypair(tmp_path / "t", "tower")
    keys.allow_tower("tx-1", tower.public_file, tmp_path / "allow")
    central = CentralServer("tcp://127.0.0.1:*", tmp_path / "c.sqlite", server_secret_key_file=server_keys.secret_file,
                            allow_dir=tmp_path / "allow")
    ctx = zmq.Context()
    dealers = []
    try:
        public, secret = keys.load_secret_key_file(tower.secret_file)
        wrong, _ = zmq.curve_keypair()
        with caplog.at_level(logging.INFO, logger="towerd.central"):
            for _ in range(5):  # five towers (or one, retrying) with the wrong key
                d = ctx.socket(zmq.DEALER)
                d.linger = 0
                d.setsockopt(zmq.RECONNECT_IVL, 60_000)
                d.curve_publickey, d.curve_secretkey, d.curve_serverkey = public, secret, wrong
                d.connect(central.bound_endpoint)
                dealers.append(d)
            deadline = time.monotonic() + 10
            while central.stats.get("handshake_failed_by_reason", {}).get("wrong_key", 0) < 5:
                assert time.monotonic() < deadline, central.stats
                central.poll_once(20)
            for _ in range(10):
                central.poll_once(20)  # unknown peers are resolved a moment later
        lines = [r.getMessage() for r in caplog.records if "handshake from" in r.getMessage()]
        assert 1 <= len(lines) <= 2, lines  # rate-limited: one line per reason per second
        assert lines[0].startswith("central: handshake from 127.0.0.1:") and "cannot be decrypted" in lines[0]
        assert caplog.records[-1].levelno == logging.WARNING
    finally:
        for d in dealers:
            d.close()
        ctx.term()
        central.close()


def test_closed_peers_reads_the_kernel_table(tmp_path):
    """/proc/net/tcp's format: addresses as host-order hex words; state 06 is TIME_WAIT,
    01 ESTABLISHED (not closed by us: left out)."""
    (tmp_path / "tcp").write_text(
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        "   0: 0100007F:1E14 0100007F:D2F0 06 00000000:00000000 03:00000123 00000000     0        0 0\n"
        "   1: 0100007F:1E14 0200007F:D2F1 01 00000000:00000000 00:00000000 00000000     0        0 1\n"
        "   2: 0100007F:1F90 0100007F:D2F2 06 00000000:00000000 03:00000123 00000000     0        0 0\n")
    assert _closed_peers(0x1E14, str(tmp_path)) == {"127.0.0.1:54000"}
