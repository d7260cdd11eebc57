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

One job per module: :mod:`towerd.central.rounds` (the poll round: waiting, receiving,
live before backlog, handing over to the store writer), :mod:`towerd.central.intake`
(checks, limits, decoding, malformed messages), :mod:`towerd.central.peers` (per-tower state, deferral),
:mod:`towerd.central.storing` (store batching, ACK and ERROR replies),
:mod:`towerd.central.descriptors`, :mod:`towerd.central.handshakes` and
:mod:`towerd.central.export`; this module composes them and runs the command line.

``towerd central export --db DB [--out FILE]`` writes what a store holds as JSON lines.
``--store postgresql://...`` (instead of ``--db``) keeps the reports in PostgreSQL
(:mod:`towerd.central.pgstore`), which several central processes may share.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys
import threading
from collections import OrderedDict
from pathlib import Path

import zmq

from towerd.central.auth import ZAP_DOMAIN, CurveAuthenticator
from towerd.central.descriptors import DescriptorsMixin, _raise_nofile
from towerd.central.export import export, export_main, open_store
from towerd.central.handshakes import HandshakeWatch
from towerd.central.intake import IntakeMixin
from towerd.central.limits import CentralLimits, TowerLimits, load_limits
from towerd.central.peers import PeersMixin, _Peer
from towerd.central.rounds import RoundsMixin
from towerd.central.storing import StoringMixin
from towerd.central.store import CentralStore, ReportStore, StreamSummary
from towerd.central.writer import AckTiming, Entry, StoreWriter
from towerd.clock import Clock, SystemClock
from towerd.errors import EX_CONFIG, ConfigError, TowerdError, UplinkError
from towerd.icd import HEADER_SIZE
from towerd.keys import load_secret_key_file
from towerd.ratelog import RateLimitedLog

__all__ = ["CentralServer", "export", "export_main", "main", "open_store"]

log = logging.getLogger(__name__)

_MAX_SOCKETS = 8
"""ZeroMQ sockets of the central's context: the ROUTER and the ZAP handler (libzmq's
default is 1023; each socket costs descriptors)."""


class CentralServer(RoundsMixin, IntakeMixin, PeersMixin, StoringMixin, DescriptorsMixin):
    """ROUTER + CentralStore (+ CURVE admission unless ``plain``). Drive it with
    :meth:`poll_once` or :meth:`serve_forever` from one thread.

    With CURVE, ``server_secret_key_file`` (the central's key pair, mode 0600) and
    ``allow_dir`` (the tower allow-list) are required; a missing or unsafe file is a
    ConfigError naming it. ``heartbeat_ivl_s``: ZMTP heartbeat period towards the
    towers (timeout three times that); it also bounds how long a tower whose routing id
    an impostor took over keeps a dead connection (about four periods).

    ``store``: where reports go (e.g. a :class:`towerd.central.pgstore.PgCentralStore`);
    default a :class:`CentralStore` (SQLite) at ``db_path``. The server owns and closes it.

    ``identity``: take ICD v1.1 IDENTITY messages (stored and acknowledged like records);
    False makes this central an ICD v1 one, refusing them as an unknown type with ERROR
    ``malformed.type`` (``--icd-v1``: to test towers against an older central)."""

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
        identity: bool = True,
    ) -> None:
        self._identity = identity
        self._clock = clock if clock is not None else SystemClock()
        self._limits = limits if limits is not None else CentralLimits()
        self._limited = RateLimitedLog(log, self._clock, self._limits.log_interval_s)
        self._peers: OrderedDict[str, _Peer] = OrderedDict()
        self._tower_ids: dict[bytes, str] = {}  # routing ids already checked, bounded by max_peers
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
            "stored_identities": 0,
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
        self._tracks_waiting: list = []  # TRACKS of this round whose records are checked together
        self._pending: list[Entry] = []  # without a store writer: (rid, first, last, message, 0.0)
        self._handover: list[Entry] = []  # with one: decoded, not yet handed to it
        self._writer: StoreWriter | None = None
        self._timing = AckTiming()
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
            if self._store.batch_records > 0:  # a batching store commits on its own thread
                self._writer = StoreWriter(self._store)
            self._pollers = (self._poller(True), self._poller(False))
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

    @property
    def ack_timing(self) -> dict[str, dict[str, float]]:
        """With a store writer, where the central's part of the ACK latency goes (median
        and p99 ms of every message since start, within 0.5 %): ``queue`` (waiting for the transaction before
        to commit), ``commit`` (its own transaction), ``ack`` (commit to ACK sent)."""
        return self._timing.summary()

    def streams(self, tower_id: str | None = None) -> list[StreamSummary]:
        """Per (tower, stream): records held and the seq ranges missing, announced as
        dropped, and missing without announcement."""
        return self._store.streams(tower_id)

    def reload_allow_list(self) -> bool:
        """Re-read the allow-list directory now (SIGHUP). Returns whether it changed."""
        return self._auth.reload(force=True) if self._auth is not None else False

    def close(self) -> None:
        """Close the sockets, the context and the store. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            self._writer.close()
        if self._handshakes is not None:
            self._handshakes.close()
        self._sock.close(0)
        if self._auth is not None:
            self._auth.close()
        self._ctx.term()
        self._store.close()


# ------------------------------------------------------------------------------ command line


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
    parser.add_argument("--icd-v1", action="store_true", help="behave as an ICD v1 central: refuse the v1.1 "
                        "IDENTITY message as an unknown type (ERROR malformed.type), for testing towers against "
                        "an older central")
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
                               allow_dir=args.allow_dir, limits=limits, store=store, identity=not args.icd_v1)
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
        timing = server.ack_timing
        server.close()
    log.info("central stopped: %d tracks and %d events stored, %d duplicates, %d malformed, %d refused, %d busy, "
             "%d internal errors", stats["stored_tracks"], stats["stored_events"], stats["duplicates"],
             stats["malformed"], stats["refused"], stats["busy"], stats["internal_errors"])
    worst = sorted(stats["by_peer"].items(), key=lambda kv: -sum(kv[1].values()))[:50]
    if worst:
        log.info("central stopped: refusals per tower: %s", json.dumps(dict(worst), sort_keys=True))
    if timing:
        log.info("central stopped: ACK latency at the central (ms): %s", json.dumps(timing, sort_keys=True))
    if "auth" in stats:
        log.info("central stopped: handshakes: %s", json.dumps(stats["auth"], sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
