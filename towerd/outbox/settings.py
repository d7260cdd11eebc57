"""Settings of the durable outbox (the ``outbox:`` block of the configuration).

Pure: no SQLite import, so that the configuration and check-config can load it
without the storage layer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from towerd.schema import spec

DEFAULT_MAX_RECORDS = 1_000_000
DEFAULT_MAX_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class OutboxSettings:
    """The ``outbox:`` block of the configuration (a superset of the walking skeleton's
    OutboxConfig: same keys plus the size cap)."""

    path: str = spec("outbox.sqlite", doc="record store, relative to state_dir")
    synchronous: Literal["full", "normal", "extra"] = spec(
        "full", doc="full/extra: a committed record survives a power cut; normal: never corrupt, but the "
        "commits since the last checkpoint may be lost on power loss (not on a crash); see docs/durability.md")
    commit_interval_s: float = spec(0.02, doc="longest a record waits for its commit", unit="s", lo=0.0, hi=10.0)
    max_records: int = spec(DEFAULT_MAX_RECORDS, doc="records held at most; when full the oldest are dropped "
                            "and an outbox.dropped event names them", lo=1000, hi=100_000_000)
    max_bytes: int = spec(DEFAULT_MAX_BYTES, doc="payload bytes held at most (the file is about 1.3 times "
                          "this, see docs/durability.md)", unit="bytes", lo=1_000_000, hi=2**40)

