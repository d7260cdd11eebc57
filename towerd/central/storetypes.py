"""What the central's stores share: a message waiting to be stored (:class:`Pending`),
the result per message, a stream's summary, the store protocol the server needs, and
the one JSON encoding of an EVENTS object."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, Union

import numpy as np

from towerd.errors import OutboxError


def event_json(event: dict) -> str:
    """An EVENTS object as the stores keep it (compact JSON, UTF-8 kept)."""
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class StreamSummary:
    """What the central holds of one ``(tower_id, stream_id)``. Seq ranges are
    inclusive ``(first, last)`` pairs in ascending order. ``missing`` holds the ranges
    in ``1..last_seq`` not stored (at most ``max_ranges`` of them; ``missing_records``
    counts all); ``dropped`` those the tower announced with ``outbox.dropped``;
    ``unexplained`` the missing ranges minus the dropped ones (computed from the ranges
    listed, so exact unless ``truncated``)."""

    tower_id: str
    stream_id: int
    records: int
    first_seq: int
    last_seq: int
    missing_records: int
    missing: tuple[tuple[int, int], ...]
    dropped: tuple[tuple[int, int], ...]
    unexplained: tuple[tuple[int, int], ...]
    truncated: bool

    def as_json(self) -> dict:
        return {"kind": "stream", "tower_id": self.tower_id, "stream_id": f"{self.stream_id:016x}",
                "records": self.records, "first_seq": self.first_seq, "last_seq": self.last_seq,
                "missing_records": self.missing_records, "missing": [list(r) for r in self.missing],
                "dropped": [list(r) for r in self.dropped], "unexplained": [list(r) for r in self.unexplained],
                "truncated": self.truncated}


@dataclass(slots=True)
class Pending:
    """One decoded TRACKS (``records``: TRACK_RECORD_DTYPE array), EVENTS (``events``:
    list of dicts) or IDENTITY (``identities``: IDENTITY_RECORD_DTYPE array) message
    waiting to be stored; exactly one of the three is set. Not changed once made (not a
    frozen dataclass only because one is made per message received, and a frozen one
    costs four times as much to make)."""

    tower_id: str
    stream_id: int
    replay: bool
    records: np.ndarray | None = None
    events: list[dict] | None = None
    identities: np.ndarray | None = None
    event_json: tuple[str, ...] | None = None
    """Each of ``events`` as compact JSON text, encoded once by the central's intake
    (for its size limit) and stored as is."""
    first_seq: int = 0
    last_seq: int = 0
    """The first and last seq of ``records`` when the sender knows them (the central's
    intake read them from the message); 0: read from ``records``."""

    @property
    def size(self) -> int:
        if self.identities is not None:
            return self.identities.size
        return self.records.size if self.records is not None else len(self.events or ())


StoreResult = Union[int, OutboxError]
"""Per message of :meth:`ReportStore.store_many`: how many records were new, or why
the message was not stored (it must not be acknowledged)."""


class ReportStore(Protocol):
    """What the central needs of a store (SQLite :class:`CentralStore`, PostgreSQL
    :class:`towerd.central.pgstore.PgCentralStore`).

    ``batch_records``: 0 means the server stores (and then acknowledges) each message
    on its own; above 0 it gathers the messages of one poll round, up to about that many
    records, and hands them to :meth:`store_many` at once. Every record reported as
    stored must be committed when :meth:`store_many` returns."""

    batch_records: int

    def store_many(self, items: Sequence[Pending]) -> list[StoreResult]: ...

    def record_health(self, tower_id: str, health: dict) -> None: ...

    def streams(self, tower_id: str | None = None, max_ranges: int = 10_000) -> list[StreamSummary]: ...

    def export(self, tower_id: str | None = None) -> Iterator[dict]: ...

    def close(self) -> None: ...
