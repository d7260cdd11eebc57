"""Identity (ICD v1.1 IDENTITY): what one track identity costs on each hop, in process
CPU time (it holds under the machine's load better than wall-clock time), beside the
TRACKS record measured the same way.

Tower: ``TrackIdentity`` objects to 112-byte records (``identity_records``, the checks
included) and the durable add (``Outbox.add_identities``, 20 identities per commit,
synchronous=full, a temporary file). Both ends: one IDENTITY message of 100 records
encoded, then decoded and every field checked as the central does.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import Figure, Section
from towerd import icd
from towerd.clock import SystemClock
from towerd.drivers.measurements import RidSource
from towerd.outbox.identity import identity_records
from towerd.outbox.sqlite import Outbox
from towerd.reports.identity import IdentityStatus, TrackIdentity

STREAM = 0x1234_5678_9ABC_DEF0


def _identities(n: int) -> list[TrackIdentity]:
    return [TrackIdentity(track_id=i, time_us=1_764_720_000_000_000 + i, status=IdentityStatus.COOPERATIVE,
                          source=RidSource.BLUETOOTH_LONG_RANGE, uas_id=f"1581F5FKD2294{i:07d}", id_type=1,
                          ua_type=2, operator_lat_deg=27.5 + i * 1e-6, operator_lon_deg=-99.5, operator_alt_m=140.0,
                          operator_id="USA-OP-0042", self_id="survey", last_heard_us=1_764_719_999_900_000,
                          rssi_dbm=-70.0) for i in range(n)]


def _cpu_us_per(fn, items: int, runs: int) -> tuple[float, tuple[float, float]]:
    values = []
    for _ in range(runs):
        t0 = time.process_time()
        fn()
        values.append((time.process_time() - t0) / items * 1e6)
    values.sort()
    return values[len(values) // 2], (values[0], values[-1])


def run(quick: bool) -> Section:
    runs = 3 if quick else 7
    n_msgs = 20 if quick else 200
    figures = []
    objs = _identities(1000)
    med, spread = _cpu_us_per(lambda: identity_records(objs), 1000, runs)
    figures.append(Figure("TrackIdentity -> IDENTITY record (checked)", med, "µs CPU per identity", spread))

    rec = identity_records(_identities(100))
    rec["seq"] = np.arange(1, 101, dtype=np.uint64)
    tracks = icd.empty_track_records(100)
    tracks["seq"] = np.arange(1, 101, dtype=np.uint64)

    def identity_hop() -> None:
        for _ in range(n_msgs):
            icd.decode_identities(icd.decode(icd.encode_identities(STREAM, rec)))

    def tracks_hop() -> None:
        for _ in range(n_msgs):
            icd.decode_tracks(icd.decode(icd.encode_tracks(STREAM, tracks)))

    med, spread = _cpu_us_per(identity_hop, 100 * n_msgs, runs)
    ref, _ = _cpu_us_per(tracks_hop, 100 * n_msgs, runs)
    figures.append(Figure("IDENTITY encode + decode with every field checked, 100 records a message", med,
                          "µs CPU per record", spread, reference=f"TRACKS the same way: {ref:.3g} µs per record"))

    with tempfile.TemporaryDirectory(prefix="towerd-bench-identity-") as tmp:
        batches = 25 if quick else 250
        values = []
        for k in range(runs):
            box = Outbox(Path(tmp) / f"outbox-{k}.sqlite", clock=SystemClock(), synchronous="full")
            batch = _identities(20)
            t0 = time.process_time()
            for _ in range(batches):
                box.add_identities(batch)
                box.commit()
            values.append((time.process_time() - t0) / (20 * batches) * 1e6)
            box.close()
        values.sort()
        figures.append(Figure("Outbox.add_identities, 20 per commit, synchronous=full", values[len(values) // 2],
                              "µs CPU per identity", (values[0], values[-1]),
                              note="process CPU time; the fsync wait is not CPU and not counted"))
    return Section("Identity (ICD v1.1)", figures, __doc__.split("\n\n", 1)[1].strip())
