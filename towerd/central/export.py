"""``towerd central export``: what a central store holds, as JSON lines; and
opening a store by name (a SQLite file or a PostgreSQL URL)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import IO

from towerd.central.store import CentralStore, ReportStore
from towerd.errors import OutboxError, TowerdError


def export(db_path: str | Path, out: IO[str], tower_id: str | None = None, *, postgresql: bool | None = None,
           health: bool = False) -> int:
    """Write what the store at ``db_path`` (a SQLite file, or a ``postgresql://`` URL)
    holds to ``out`` as JSON lines (see :meth:`CentralStore.export`); opened read-only.
    ``health``: instead, the HEALTH history (``"kind": "health"``, oldest first, per
    tower), which only the PostgreSQL store keeps. Returns the number of lines."""
    store = open_store(str(db_path), read_only=True, postgresql=postgresql)
    n = 0
    try:
        if health and not hasattr(store, "health_history"):
            raise OutboxError("the SQLite store keeps no HEALTH history (only the last HEALTH per tower, in the "
                              "running central); a PostgreSQL store (--store) keeps every one")
        lines = store.health_history(tower_id) if health else store.export(tower_id)  # type: ignore[attr-defined]
        for obj in lines:
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
                                     "every event, every identity, then one summary per stream with its missing and "
                                     "dropped seq ranges; or, with --health, the towers' HEALTH history.")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--db", help="the central's SQLite file (opened read-only)")
    where.add_argument("--store", metavar="URL", help="the central's PostgreSQL database "
                       "(postgresql://user@host/dbname; read-only)")
    parser.add_argument("--out", help="output file (default: standard output)")
    parser.add_argument("--tower", help="only this tower id")
    parser.add_argument("--health", action="store_true", help="the towers' HEALTH history instead (link and "
                        "sensor state as each tower reported it; PostgreSQL store only)")
    args = parser.parse_args(argv)
    try:
        if args.out:
            with open(args.out, "w", encoding="utf-8") as fh:
                n = export(args.db or args.store, fh, args.tower, postgresql=bool(args.store), health=args.health)
        else:
            n = export(args.db or args.store, sys.stdout, args.tower, postgresql=bool(args.store),
                       health=args.health)
            sys.stdout.flush()
    except (TowerdError, OSError) as exc:
        print(f"towerd central export: {exc}", file=sys.stderr)
        return 1
    print(f"towerd central export: {n} lines written", file=sys.stderr)
    return 0
