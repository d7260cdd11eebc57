"""Reference central: a ROUTER that stores tower reports and acknowledges them (ICD v1).

Used for lab links, demos and tests; the production central is built by another team
against the same ICD. Per message: decode, store in one committed SQLite transaction,
and only then ACK with the message's first and last seq and the same stream_id. HEALTH
is answered with HEALTH_ACK and only the last one per tower is kept (in memory). A
malformed message is dropped, counted per reason and logged at most once per second per
reason; it never stops the server. If the store fails, nothing is acknowledged (the tower
sends again) and the tower gets an ERROR ``central.store_failed``.

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

``towerd central export --db DB [--out FILE]`` writes what a store holds as JSON lines.
``--store postgresql://...`` (instead of ``--db``) keeps the reports in PostgreSQL
(:mod:`towerd.central.pgstore`), which several central processes may share.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import IO

import zmq

from towerd.central.auth import ZAP_DOMAIN, CurveAuthenticator
from towerd.central.store import CentralStore, Pending, ReportStore, StoreResult, StreamSummary
from towerd.clock import Clock, SystemClock
from towerd.errors import EX_CONFIG, ConfigError, FrameError, OutboxError, TowerdError, UplinkError
from towerd.icd import (
    FLAG_REPLAY,
    TOWER_ID_RE,
    MsgType,
    decode,
    decode_events,
    decode_health,
    decode_tracks,
    encode_ack,
    encode_error,
    encode_health_ack,
)
from towerd.keys import load_secret_key_file
from towerd.uplink.client import RateLimitedLog

log = logging.getLogger(__name__)

MAX_FRAME_SIZE = 16 * 1024 * 1024
"""Largest frame accepted (libzmq MAXMSGSIZE drops the connection beyond it). A full
TRACKS message is 16 + 80 * 65535 bytes (5.2 MB); EVENTS get the rest of the room."""
_MAX_MESSAGES_PER_POLL = 1000
_SEQ_MAX = 2**63 - 1


class CentralServer:
    """ROUTER + CentralStore (+ CURVE admission unless ``plain``). Drive it with
    :meth:`poll_once` or :meth:`serve_forever` from one thread.

    With CURVE, ``server_secret_key_file`` (the central's key pair, mode 0600) and
    ``allow_dir`` (the tower allow-list) are required; a missing or unsafe file is a
    ConfigError naming it. ``heartbeat_ivl_s``: ZMTP heartbeat period towards the
    towers (timeout three times that); it also bounds how long a tower whose routing id
    an impostor took over keeps a dead connection (about four periods).

    ``store``: where reports go (e.g. a :class:`towerd.central.pgstore.PgCentralStore`);
    default a :class:`CentralStore` (SQLite) at ``db_path``. The server owns and closes it."""

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
        store: ReportStore | None = None,
    ) -> None:
        self._clock = clock if clock is not None else SystemClock()
        self._limited = RateLimitedLog(log, self._clock)
        self._health: dict[str, dict] = {}
        self._stats: dict = {
            "received": 0,
            "malformed": 0,
            "malformed_by_reason": {},
            "refused": 0,
            "refused_by_reason": {},
            "stored_tracks": 0,
            "stored_events": 0,
            "duplicates": 0,
            "acks_sent": 0,
            "health_received": 0,
            "unroutable": 0,
            "reply_dropped": 0,
            "store_errors": 0,
        }
        self._closed = False
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
        self._pending: list[tuple[bytes, int, int, Pending]] = []  # (rid, first, last, message)
        self._pending_records = 0
        self._ctx = zmq.Context()
        self._auth: CurveAuthenticator | None = None
        self._sock = self._ctx.socket(zmq.ROUTER)
        try:
            if curve_keys is not None:
                assert allow_dir is not None
                self._auth = CurveAuthenticator(self._ctx, allow_dir, clock=self._clock,
                                                reload_interval_s=reload_interval_s, quarantine_s=quarantine_s)
                self._start_auth()
                self._sock.curve_server = True
                self._sock.curve_secretkey = curve_keys[1]
                self._sock.zap_domain = ZAP_DOMAIN.encode()
            self._sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
            self._sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
            self._sock.setsockopt(zmq.LINGER, 0)
            self._sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_SIZE)
            self._sock.setsockopt(zmq.HEARTBEAT_IVL, max(1, round(heartbeat_ivl_s * 1000)))
            self._sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, max(1, round(3 * heartbeat_ivl_s * 1000)))
            if self._auth is not None and not self._auth.started:
                raise UplinkError("refusing to bind a CURVE central without its ZAP handler (it would admit "
                                  "any key)")
            self._sock.bind(bind)
            self._endpoint = self._sock.getsockopt(zmq.LAST_ENDPOINT).decode()
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
        """The last HEALTH object received from each tower (a copy)."""
        return dict(self._health)

    @property
    def stats(self) -> dict:
        """Counters (a copy): received, malformed, malformed_by_reason, refused,
        refused_by_reason (no_user_id, revoked, identity), stored_tracks, stored_events,
        duplicates, acks_sent, health_received, unroutable, reply_dropped, store_errors,
        and ``auth`` (the ZAP handler's counters) with CURVE."""
        out = {**self._stats, "malformed_by_reason": dict(self._stats["malformed_by_reason"]),
               "refused_by_reason": dict(self._stats["refused_by_reason"])}
        if self._auth is not None:
            out["auth"] = dict(self._auth.stats)
        return out

    def streams(self, tower_id: str | None = None) -> list[StreamSummary]:
        """Per (tower, stream): records held and the seq ranges missing, announced as
        dropped, and missing without announcement."""
        return self._store.streams(tower_id)

    def reload_allow_list(self) -> bool:
        """Re-read the allow-list directory now (SIGHUP). Returns whether it changed."""
        return self._auth.reload(force=True) if self._auth is not None else False

    # ---------------------------------------------------------------- serving

    def serve_forever(self, stop: threading.Event, reload: threading.Event | None = None) -> None:
        """Serve until ``stop`` is set (checked at least every 100 ms); re-read the
        allow-list whenever ``reload`` is set."""
        while not stop.is_set():
            if reload is not None and reload.is_set():
                reload.clear()
                self.reload_allow_list()
            self.poll_once(100)

    def poll_once(self, timeout_ms: int) -> int:
        """Wait up to ``timeout_ms`` for messages, then handle those waiting (at most
        1000, after any pending CURVE handshakes). Returns how many were handled."""
        if self._closed:
            raise UplinkError("central is closed")
        if self._auth is not None:
            self._auth.maybe_reload()
            poller = zmq.Poller()
            poller.register(self._sock, zmq.POLLIN)
            poller.register(self._auth.socket, zmq.POLLIN)
            if not poller.poll(timeout_ms):
                return 0
            self._auth.handle()
        elif not self._sock.poll(timeout_ms, zmq.POLLIN):
            return 0
        handled = 0
        while handled < _MAX_MESSAGES_PER_POLL:
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            handled += 1
            self._handle(frames)
            if self._pending_records > self._store.batch_records:
                self._flush()
        self._flush()
        return handled

    def _count(self, key: str, reason: str) -> None:
        self._stats[key] += 1
        by_reason = self._stats[f"{key}_by_reason"]
        by_reason[reason] = by_reason.get(reason, 0) + 1

    def _malformed(self, reason: str, peer: str, detail: str) -> None:
        self._count("malformed", reason)
        self._limited(logging.WARNING, reason, "central: dropped malformed message from %s: %s", peer, detail)

    def _refused(self, reason: str, tower_id: str, user_id: str | None) -> None:
        self._count("refused", reason)
        key_tower = user_id.split(" ", 1)[0] if user_id else "?"
        what = {
            "identity": f"sent with routing id {tower_id!r} by the key of tower {key_tower!r} (a tower cannot speak "
                        "for another; the key is quarantined)",
            "revoked": f"from {tower_id!r}: its key is no longer on the allow-list for tower {key_tower!r}",
            "no_user_id": f"from {tower_id!r}: the connection was not admitted by the allow-list",
        }[reason]
        self._limited(logging.ERROR, "refused:" + reason, "central: dropped a message %s", what)

    def _handle(self, frames: list[zmq.Frame]) -> None:
        self._stats["received"] += 1
        peer = repr(frames[0].bytes[:64]) if frames else "?"
        if len(frames) != 2:
            self._malformed("frames", peer, f"{len(frames) - 1} message frames, expected 1")
            return
        rid, frame = frames[0].bytes, frames[1]
        try:
            tower_id = rid.decode("ascii")
        except UnicodeDecodeError:
            tower_id = ""
        if not TOWER_ID_RE.fullmatch(tower_id):
            self._malformed("routing_id", peer, "routing id is not a tower id")
            return
        if self._auth is not None:
            try:
                user_id = frame.get("User-Id")
            except zmq.ZMQError:
                user_id = None
            reason = self._auth.check_sender(tower_id, user_id)
            if reason is not None:
                self._refused(reason, tower_id, user_id)
                return
        try:
            msg = decode(frame.bytes)
            if msg.type == MsgType.TRACKS:
                self._on_tracks(rid, tower_id, msg)
            elif msg.type == MsgType.EVENTS:
                self._on_events(rid, tower_id, msg)
            elif msg.type == MsgType.HEALTH:
                self._health[tower_id] = decode_health(msg)
                self._store.record_health(tower_id, self._health[tower_id])
                self._stats["health_received"] += 1
                self._reply(rid, tower_id, encode_health_ack(msg.stream_id))
            else:
                self._malformed("direction", tower_id, f"{msg.type.name} is not sent by a tower")
        except FrameError as exc:
            self._malformed(getattr(exc, "reason", "decode"), tower_id, str(exc))

    def _on_tracks(self, rid: bytes, tower_id: str, msg) -> None:
        records = decode_tracks(msg)
        first, last = int(records["seq"][0]), int(records["seq"][-1])
        if last > _SEQ_MAX:
            self._malformed("seq_range", tower_id, f"seq {last} beyond what this central stores")
            return
        self._queue(rid, first, last, Pending(tower_id, msg.stream_id, bool(msg.flags & FLAG_REPLAY), records=records))

    def _on_events(self, rid: bytes, tower_id: str, msg) -> None:
        events = decode_events(msg)
        first, last = events[0]["seq"], events[-1]["seq"]
        if last > _SEQ_MAX:
            self._malformed("seq_range", tower_id, f"seq {last} beyond what this central stores")
            return
        self._queue(rid, first, last, Pending(tower_id, msg.stream_id, bool(msg.flags & FLAG_REPLAY), events=events))
        for ev in events:
            if ev["code"] == "outbox.dropped":
                self._limited(logging.WARNING, "dropped:" + tower_id, "central: tower %s announces %s records lost "
                              "from its full outbox, seq %s..%s", tower_id, ev.get("count"), ev.get("first_seq"),
                              ev.get("last_seq"))

    def _queue(self, rid: bytes, first: int, last: int, item: Pending) -> None:
        """Hold a decoded message for :meth:`_flush` (at once when the store does not batch)."""
        self._pending.append((rid, first, last, item))
        self._pending_records += item.size
        if self._store.batch_records <= 0:
            self._flush()

    def _flush(self) -> None:
        """Store the held messages (one transaction when the store batches), then ACK each
        one that is committed; the others get ERROR and no ACK."""
        if not self._pending:
            return
        pending, self._pending, self._pending_records = self._pending, [], 0
        try:
            results: list[StoreResult] = self._store.store_many([p for _, _, _, p in pending])
        except OutboxError as exc:
            results = [exc] * len(pending)
        for (rid, first, last, item), result in zip(pending, results):
            if isinstance(result, OutboxError):
                self._store_failed(rid, item.tower_id, item.stream_id, result)
                continue
            self._stats["stored_tracks" if item.records is not None else "stored_events"] += result
            self._stats["duplicates"] += item.size - result
            self._ack(rid, item.tower_id, item.stream_id, first, last)

    def _store_failed(self, rid: bytes, tower_id: str, stream_id: int, exc: Exception) -> None:
        self._stats["store_errors"] += 1
        self._limited(logging.ERROR, "store_failed", "central: storing from %s failed, not acknowledged: %s",
                      tower_id, exc)
        self._reply(rid, tower_id, encode_error(stream_id, "central.store_failed", "records not stored; send again"))

    def _ack(self, rid: bytes, tower_id: str, stream_id: int, first: int, last: int) -> None:
        if self._reply(rid, tower_id, encode_ack(stream_id, first, last)):
            self._stats["acks_sent"] += 1

    def _reply(self, rid: bytes, tower_id: str, frame: bytes) -> bool:
        try:
            self._sock.send_multipart([rid, frame], zmq.NOBLOCK)
        except zmq.Again:
            self._stats["reply_dropped"] += 1
            self._limited(logging.WARNING, "reply_hwm", "central: reply to %s dropped (queue full); "
                          "it will send again", tower_id)
            return False
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EHOSTUNREACH:
                self._stats["unroutable"] += 1
                self._limited(logging.WARNING, "unroutable", "central: %s is gone, reply not delivered "
                              "(it will send again)", tower_id)
            else:
                self._stats["reply_dropped"] += 1
                self._limited(logging.ERROR, "reply_error", "central: reply to %s failed: %s", tower_id, exc)
            return False
        return True

    def close(self) -> None:
        """Close the sockets, the context and the store. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._sock.close(0)
        if self._auth is not None:
            self._auth.close()
        self._ctx.term()
        self._store.close()


# ------------------------------------------------------------------------------ command line


def export(db_path: str | Path, out: IO[str], tower_id: str | None = None, *, postgresql: bool | None = None) -> int:
    """Write what the store at ``db_path`` (a SQLite file, or a ``postgresql://`` URL)
    holds to ``out`` as JSON lines (see :meth:`CentralStore.export`); opened read-only.
    Returns the number of lines."""
    store = open_store(str(db_path), read_only=True, postgresql=postgresql)
    n = 0
    try:
        for obj in store.export(tower_id):
            out.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False))
            out.write("\n")
            n += 1
    finally:
        store.close()
    return n


def open_store(where: str, *, read_only: bool = False, retention_days: int = 30,
               postgresql: bool | None = None) -> ReportStore:
    """The store named by ``where``: PostgreSQL when ``postgresql`` is true, or when it
    is None and ``where`` is a ``postgresql://`` / ``postgres://`` URL; a SQLite file
    otherwise."""
    if postgresql is None:
        postgresql = where.startswith(("postgresql://", "postgres://"))
    if postgresql:
        from towerd.central.pgstore import PgCentralStore

        return PgCentralStore(where, read_only=read_only, retention_days=retention_days)
    return CentralStore(where, read_only=read_only)


def export_main(argv: list[str]) -> int:
    """``towerd central export``: JSON lines of what a central store holds."""
    parser = argparse.ArgumentParser(prog="towerd central export",
                                     description="Write what a central store holds as JSON lines: every track, "
                                     "every event, then one summary per stream with its missing and dropped seq "
                                     "ranges.")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--db", help="the central's SQLite file (opened read-only)")
    where.add_argument("--store", metavar="URL", help="the central's PostgreSQL database "
                       "(postgresql://user@host/dbname; read-only)")
    parser.add_argument("--out", help="output file (default: standard output)")
    parser.add_argument("--tower", help="only this tower id")
    args = parser.parse_args(argv)
    try:
        if args.out:
            with open(args.out, "w", encoding="utf-8") as fh:
                n = export(args.db or args.store, fh, args.tower, postgresql=bool(args.store))
        else:
            n = export(args.db or args.store, sys.stdout, args.tower, postgresql=bool(args.store))
            sys.stdout.flush()
    except (TowerdError, OSError) as exc:
        print(f"towerd central export: {exc}", file=sys.stderr)
        return 1
    print(f"towerd central export: {n} lines written", file=sys.stderr)
    return 0


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
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    store = None
    try:
        if args.store:
            store = open_store(args.store, retention_days=args.retention_days, postgresql=True)
        server = CentralServer(args.bind, args.db or "", plain=args.plain, server_secret_key_file=args.secret_key,
                               allow_dir=args.allow_dir, store=store)
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
    log.info("central listening on %s (%s)", server.bound_endpoint, "plain" if args.plain else "CURVE")
    try:
        server.serve_forever(stop, reload)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        stats = server.stats
        server.close()
    log.info("central stopped: %d tracks and %d events stored, %d duplicates, %d malformed, %d refused",
             stats["stored_tracks"], stats["stored_events"], stats["duplicates"], stats["malformed"],
             stats["refused"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
