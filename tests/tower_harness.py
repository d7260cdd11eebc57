"""A tower without sensors, for the end-to-end delivery proofs: writes synthetic track
records (and now and then an event) into a real outbox at a set rate, commits on a timer
like the daemon loop, and sends them with real UplinkClients.

Usage: ``python tower_harness.py CONFIG.json``. After every successful commit it appends
``<first_seq> <last_seq> <run> <first_counter>`` to the ledger file: every seq listed there
was committed, and record ``seq`` of that line carries ``track_id = run * 1_000_000 +
first_counter + (seq - first_seq)``. Events get ledger lines with counter -1. On SIGTERM
it stops writing, drains for up to ``drain_s`` and writes its final stats as JSON to
``<ledger>.stats.json``. SIGKILL is the point of some tests: nothing is flushed then.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time

import numpy as np

from towerd.clock import SystemClock
from towerd.icd import Category, Status, Threat, empty_track_records
from towerd.outbox.sqlite import Outbox
from towerd.uplink.client import CentralSettings, UplinkClient
from towerd.uplink.sharing import SharingRule

CATEGORIES = np.array([Category.UAS, Category.BIRD, Category.UNKNOWN], dtype=np.uint8)
STATUSES = np.array([Status.TENTATIVE, Status.CONFIRMED, Status.COASTING, Status.ENDED], dtype=np.uint8)


def records(n: int, run: int, counter: int, now_us: int) -> np.ndarray:
    """``n`` records numbered from ``counter``; category and status cycle with it."""
    rec = empty_track_records(n)
    c = counter + np.arange(n)
    rec["time_us"] = now_us
    rec["track_id"] = run * 1_000_000 + c
    rec["category"] = CATEGORIES[c % 3]
    rec["status"] = STATUSES[c % 4]
    rec["threat"] = Threat.LOW
    rec["confidence"] = 90
    rec["sources"] = 1
    rec["lat_e7"] = 294_000_000 + (c % 1000) * 100
    rec["lon_e7"] = -985_000_000 - (c % 1000) * 100
    rec["range_m"] = 500.0
    rec["pos_sigma_m"] = 3.0
    return rec


def central_settings(spec: dict) -> CentralSettings:
    spec = dict(spec)
    if "share" in spec:
        share = {k: tuple(v) if isinstance(v, list) else v for k, v in spec["share"].items()}
        spec["share"] = SharingRule(**share)
    return CentralSettings(**spec)


def main(config_path: str) -> int:
    cfg = json.loads(open(config_path).read())
    logging.basicConfig(level=cfg.get("log_level", "INFO"), stream=sys.stderr,
                        format="%(relativeCreated)d %(levelname)s %(name)s: %(message)s")
    clock = SystemClock()
    centrals = [central_settings(c) for c in cfg["centrals"]]
    box = Outbox(cfg["outbox"], clock=clock, synchronous=cfg.get("synchronous", "full"),
                 centrals=[c.name for c in centrals] if len(centrals) > 1 else None,
                 max_records=cfg.get("max_records", 1_000_000))
    uplinks = [UplinkClient(cfg["tower_id"], c, box, clock=clock, health=box.health) for c in centrals]
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    run = int(cfg["run"])
    rate = float(cfg["rate_rps"])
    batch = int(cfg.get("batch", 10))
    commit_every = float(cfg.get("commit_interval_s", 0.02))
    event_every = int(cfg.get("event_every", 0))
    deadline = time.monotonic() + cfg["duration_s"] if cfg.get("duration_s") else None
    ledger = os.open(cfg["ledger"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    uncommitted: list[str] = []
    counter = 0
    batches = 0
    next_batch = last_commit = time.monotonic()
    print("ready", flush=True)
    while not stop["now"] and (deadline is None or time.monotonic() < deadline):
        now = time.monotonic()
        while now >= next_batch:
            first, last = box.add_tracks(records(batch, run, counter, clock.utc_us()))
            uncommitted.append(f"{first} {last} {run} {counter}\n")
            counter += batch
            batches += 1
            next_batch += batch / rate
            if event_every and batches % event_every == 0:
                seq = box.add_event("test.tick", "info", f"batch {batches}", batch=batches)
                uncommitted.append(f"{seq} {seq} {run} -1\n")
        if box.uncommitted and now - last_commit >= commit_every:
            box.commit()
            last_commit = now
            if uncommitted:
                os.write(ledger, "".join(uncommitted).encode())
                uncommitted.clear()
        for u in uplinks:
            u.poll(0)
        uplinks[0].poll(2)
    box.commit()
    if uncommitted:
        os.write(ledger, "".join(uncommitted).encode())
    os.close(ledger)
    drain_until = time.monotonic() + float(cfg.get("drain_s", 10.0))
    while box.pending_count() and time.monotonic() < drain_until:
        for u in uplinks:
            u.poll(5)
        if box.uncommitted:
            box.commit()
    box.commit()
    stats = {"pending": box.pending_count(), "next_seq": box.next_seq, "dropped_total": box.dropped_total,
             "stream_id": box.stream_id, "uplinks": {u.name: u.stats for u in uplinks}}
    with open(cfg["ledger"] + ".stats.json", "w") as fh:
        json.dump(stats, fh)
    for u in uplinks:
        u.close()
    box.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
