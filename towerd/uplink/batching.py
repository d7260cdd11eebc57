"""The uplink's batching: outbox rows judged by the central's sharing rule and built
into TRACKS or EVENTS messages of consecutive seq.

Sharing: each central has a :class:`~towerd.uplink.sharing.SharingRule`. Rows its rule
excludes are marked done for it in the outbox without being sent; the records it may see
are sent, coarsened if the rule says so. The records of one message always have
consecutive ``seq`` (ICD), so a filtered central gets shorter messages.

One encode per hop: the outbox stores each record in wire form and each event as the
JSON object that is sent, so a message is its rows joined behind the header (one copy);
a row is only re-encoded when the rule coarsens positions. An event row is parsed once,
to check it is an ICD event with its own seq (a damaged row is dropped loudly, not sent).

Live records for a central whose rule passes everything take a shorter way: the records
just committed, still in the outbox's memory (:meth:`Outbox.recent_tracks`), become the
message body as one buffer, with no query and no per-row work (they are exactly what was
written). Everything else, the backlog included, is read from the file and checked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from towerd.icd import (
    FLAG_REPLAY,
    RECORD_SIZE,
    TRACK_RECORD_DTYPE,
    check_event,
    encode_events_json,
    encode_tracks,
    encode_tracks_rows,
)
from towerd.outbox.sqlite import KIND_EVENT, KIND_TRACK

_PAGES_PER_MESSAGE = 20
"""Outbox pages read at most while building one message (a rule that excludes most
rows must not make one poll scan the whole backlog)."""
_PASS, _EXCLUDED, _BAD = "pass", "excluded", "bad"


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


@dataclass
class _Message:
    """One TRACKS or EVENTS message built from the outbox, until acknowledged."""

    first: int
    last: int
    count: int
    frame: bytes
    replay: bool
    sent_mono: float | None = None  # None: (re)send at the next opportunity
    sends: int = 0


class BatchingMixin:
    """The part of :class:`~towerd.uplink.client.UplinkClient` that turns outbox rows
    into messages."""

    def _next_message(self, live: bool) -> tuple[_Message | None, bool]:
        """The next live or backlog message: rows this central still needs after the
        cursor, passed by its sharing rule, one kind, consecutive seq, at most
        batch_records. Rows the rule excludes are marked done for this central.
        Returns ``(message or None, exhausted)``; exhausted is False when the scan
        stopped early to keep one poll short."""
        s = self._settings
        name = s.name
        if live and self._filter.passes_everything:  # sent as stored: the just committed rows as one buffer
            run = self._outbox.recent_tracks(self._live_cursor, s.batch_records, central=name)
            if run is not None:
                first, count, body = run
                last = first + count - 1
                frame = encode_tracks_rows(self._outbox.stream_id, [body], 0)
                self._live_cursor = last
                self._outbox.protect(name, first, last)
                return _Message(first=first, last=last, count=count, frame=frame, replay=False), False
        for _ in range(_PAGES_PER_MESSAGE):
            after = self._live_cursor if live else self._backlog_cursor
            rows = self._outbox.pending(after, s.batch_records, central=name,
                                        before_seq=None if live else self._boundary, recent=live)
            if not rows:
                return None, True
            group, skips, consumed = self._select(rows)
            for lo, hi in skips:
                self._stats["skipped_records"] += self._outbox.ack(lo, hi, name)
            if live:
                self._live_cursor = consumed
            else:
                self._backlog_cursor = consumed
            if group:
                kind = group[0][1]
                frame = self._encode_group(kind, group, FLAG_REPLAY if not live else 0)
                # From now until this central acknowledges them the rows may reach it:
                # the outbox's size cap must not drop them (and announce them lost).
                self._outbox.protect(name, group[0][0], group[-1][0])
                return _Message(first=group[0][0], last=group[-1][0], count=len(group), frame=frame,
                                replay=not live), False
        return None, False

    def _select(self, rows: list[tuple[int, str, bytes]]) -> tuple[list, list[tuple[int, int]], int]:
        """Split one page of rows into the message to send (a run of one kind and
        consecutive seq, each row passed by the rule), the seq ranges consumed without
        sending (excluded by the rule, or damaged), and the last seq consumed."""
        checked = self._check_rows(rows)
        group: list[tuple[int, str, object]] = []
        skips: list[tuple[int, int]] = []
        consumed = rows[0][0] - 1
        for seq, kind, payload, verdict in checked:
            if verdict != _PASS:
                if group:
                    break  # the message ends before a row it cannot carry: seq stays consecutive
                if verdict == _BAD:
                    self._stats["bad_rows"] += 1
                    self._log.error("uplink %s: outbox row seq %d cannot be encoded; it is not sent (record lost)",
                              self._settings.name, seq)
                if skips and skips[-1][1] == consumed:
                    skips[-1] = (skips[-1][0], seq)
                else:
                    skips.append((seq, seq))
                consumed = seq
                continue
            if group and (kind != group[0][1] or seq != group[-1][0] + 1):
                break
            group.append((seq, kind, payload))
            consumed = seq
        return group, skips, consumed

    def _check_rows(self, rows: list[tuple[int, str, bytes]]) -> list[tuple[int, str, object, str]]:
        """Each row as ``(seq, kind, payload, verdict)`` (payload as stored: the 80-byte
        record or the event's JSON); verdict _PASS, _EXCLUDED (by the sharing rule) or _BAD (a
        damaged row, which would block the stream if it were kept)."""
        out: list[tuple[int, str, object, str]] = []
        track_idx: list[int] = []
        cache = self._verdicts
        for seq, kind, payload in rows:
            if seq in cache:  # read in the previous page but not consumed: judged already
                out.append(cache[seq])
                continue
            if kind == KIND_TRACK and len(payload) == RECORD_SIZE and int.from_bytes(payload[:8], "little") == seq:
                track_idx.append(len(out))
                out.append((seq, kind, payload, _PASS))
                continue
            if kind == KIND_EVENT:
                try:
                    ev = json.loads(payload.decode("utf-8"), parse_constant=_reject_constant)
                    if isinstance(ev, dict) and ev.get("seq") == seq:
                        check_event(ev)
                        out.append((seq, kind, payload, _PASS if self._filter.event_passes(ev) else _EXCLUDED))
                        continue
                except ValueError:
                    pass
            out.append((seq, kind, payload, _BAD))
        if track_idx and not self._filter.passes_everything:
            records = np.frombuffer(b"".join(out[i][2] for i in track_idx), dtype=TRACK_RECORD_DTYPE)  # type: ignore[misc]
            mask = self._filter.track_mask(records)
            self._identity.note_shared_tracks(records["track_id"][mask])  # identities follow (v1.1)
            for i, passes in zip(track_idx, mask.tolist()):
                if not passes:
                    seq, kind, payload, _ = out[i]
                    out[i] = (seq, kind, payload, _EXCLUDED)
        self._verdicts = {row[0]: row for row in out}
        return out

    def _encode_group(self, kind: str, group: list[tuple[int, str, object]], flags: int) -> bytes:
        stream_id = self._outbox.stream_id
        rows: list[bytes] = [p for _, _, p in group]  # type: ignore[misc]
        if kind != KIND_TRACK:
            return encode_events_json(stream_id, rows, flags)
        if self._filter.rule.coarsen_m <= 0.0:  # sent as stored
            return encode_tracks_rows(stream_id, rows, flags)
        records = np.frombuffer(b"".join(rows), dtype=TRACK_RECORD_DTYPE)
        return encode_tracks(stream_id, self._filter.transform(records), flags)
