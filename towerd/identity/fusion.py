"""Remote ID broadcasts with radar tracks: the composition of :mod:`towerd.identity`.

Per evaluation (each radar frame, each expiry tick, each broadcast with a drone position,
and another broadcast at least ``INGEST_EVAL_S`` after the last evaluation), for every
transmitter whose latest position is at most ``max_position_age_s`` old
(:mod:`.broadcasts`), against the live radar tracks (:mod:`.gating`, :mod:`.assign`):

- **matched** (gated GNN with the confirmed and coasting tracks): the radar track carries
  the identity (status COOPERATIVE, ``sources`` remote id in its records); the pair is
  remembered while both live;
- **paired track elsewhere**: the track it was matched with earlier is alive but out of
  the broadcast's gate — a contradiction;
- **in radar coverage** (:class:`.coverage.RadarCoverage`, shrunk by the broadcast's
  accuracy) with no track in its gate — a contradiction (no echo); with a track in its gate
  that it did not get (a tentative track, another broadcast's): pending;
- **outside radar coverage**: heard, not seen: an ID-only track from the broadcast
  (status ID_ONLY, :mod:`.records`).

A contradiction lasting ``mismatch_after_s`` raises the threat rule ``rid_mismatch``: one
EVENTS object ``threat.rid_mismatch`` per episode, status MISMATCH on the paired radar
track (whose records' threat is raised to ``mismatch_threat``), or on an ID-only track at
the broadcast position when there is none. Until then the benefit of the doubt: the
paired track stays COOPERATIVE; a drone that is only pending gets no track of its own.
A MISMATCH holds until the radar agrees with the broadcast again (:mod:`.rules`).

A confirmed or coasting radar track classified uas, inside receiver coverage
(:class:`.coverage.ReceiverCoverage`), with no broadcast paired for
``non_cooperative_after_s`` is NON_COOPERATIVE (one ``identity.non_cooperative`` event);
that holds until a broadcast matches it or it ends.

Outputs: radar records marked (:meth:`RemoteIdFusion.on_radar`), ID-only records (every
method returns those due), events (:meth:`pop_events`) and the track identities due for
the uplink (:meth:`pop_identities`, policy in :mod:`.identities`). Pure computation on
an injected clock; no I/O.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any, Callable

import numpy as np

from towerd import geo
from towerd.clock import Clock
from towerd.detection.plots import SensorMount
from towerd.drivers.measurements import RemoteIdReading
from towerd.icd import TRACK_RECORD_DTYPE, Category, Status, Threat
from towerd.icd_identity import BINARY_ID_TYPES, UAS_ID_LEN, uas_id_bytes, uas_id_text
from towerd.identity.assign import assign
from towerd.identity.broadcasts import K1, BroadcastCache, broadcasts
from towerd.identity.coverage import RadarCoverage, ReceiverCoverage
from towerd.identity.gating import gates, mahalanobis
from towerd.identity.identities import IdentityReporter, what_of
from towerd.identity.records import ID_ONLY_DTYPE, ID_ONLY_TRACK_ID_BASE, id_only_records, mark_radar_records
from towerd.identity.rules import TRACK_ELSEWHERE, Evidence, SilentTracks, Verdict, judge
from towerd.identity.settings import RemoteIdSettings
from towerd.identity.transmitters import Transmitter, TransmitterTable
from towerd.reports.identity import IdentityStatus, TrackIdentity
from towerd.threat import LEVELS, ThreatAssessor
from towerd.tracking.state import TrackTable
from towerd.tracking.tracker import TrackUpdate

log = logging.getLogger(__name__)

EVENT_MISMATCH = "threat.rid_mismatch"
EVENT_NON_COOPERATIVE = "identity.non_cooperative"
TIME_EPS_S = 1e-6
STATUS_GROUND = 1
"""F3411 operational status "ground"."""
INGEST_EVAL_S = 0.1
"""A reading with a new drone position is evaluated at once; any other (Basic ID, System,
Self ID...) only when no evaluation ran in this long (else the next radar frame or expiry
tick takes it in): a receiver may pass on dozens of messages a second (each F3411
message type its own reading), and each evaluation gates every transmitter against
every track."""


class RemoteIdFusion:
    """Remote ID fusion for one tower (see the module docstring)."""

    def __init__(
        self,
        settings: RemoteIdSettings,
        site: geo.Site,
        mounts: Mapping[str, SensorMount],
        clock: Clock,
        threat: ThreatAssessor | None = None,
        *,
        listening: bool = True,
    ) -> None:
        self.clock = clock
        self.transmitters = TransmitterTable(settings.transmitter_timeout_s)
        self.verdicts: dict[str, Verdict] = {}
        self.identity_reporter = IdentityReporter(settings.identity_interval_s)
        self._tracks = TrackTable.empty()
        self._categories: Callable[[np.ndarray], np.ndarray] | np.ndarray = np.zeros(0, dtype=np.uint8)
        self.silent = SilentTracks()
        self._next_id = ID_ONLY_TRACK_ID_BASE
        self._last_eval = -math.inf
        self._events: list[tuple[str, str, str, dict[str, Any]]] = []
        self._identities: dict[int, TrackIdentity] = {}  # due, not yet popped: the latest per track
        self._airborne: np.ndarray | None = None  # airborne_tracks(), until the pairs change
        self._quiet = False
        """The last evaluation left nothing to judge or report (no transmitter, verdict,
        non-cooperative or eligible track): while that holds and no receiver can hear, the
        next one would do nothing (see :meth:`_evaluate`)."""
        self.receivers_up = True
        """Whether a Remote ID receiver covers now (:meth:`set_receivers`): while none
        does, silence proves nothing and no track becomes non-cooperative."""
        self.receivers: dict[str, str] = {}
        """Per receiver (sensor name): "" when it covers, else why not (:meth:`set_receivers`)."""
        self.reconfigure(settings, site, mounts, threat, listening=listening)

    def reconfigure(self, settings: RemoteIdSettings, site: geo.Site, mounts: Mapping[str, SensorMount],
                    threat: ThreatAssessor | None = None, *, listening: bool = True) -> None:
        """New settings, site, radar mounts (by sensor name) or zones; transmitters, pairs
        and ids are kept. ``listening``: the tower has a Remote ID receiver (without one,
        no track is non-cooperative: nothing could have been heard)."""
        self.settings, self.site, self.threat = settings, site, threat
        self.transmitters.timeout_s = settings.transmitter_timeout_s
        self.identity_reporter.interval_s = settings.identity_interval_s
        self.radar = RadarCoverage([(m, settings.coverage_of(name)) for name, m in mounts.items()])
        self._measure = BroadcastCache(site, settings)
        heard_m = settings.receiver_range_m if listening else 0.0
        self.receiver = ReceiverCoverage(settings.receiver_position_enu_m, heard_m)
        self._mismatch_level = np.uint8(LEVELS[settings.mismatch_threat])

    # -- inputs ---------------------------------------------------------------------

    def ingest(self, reading: RemoteIdReading) -> np.ndarray:
        """Merge one reading; ID-only records now due."""
        tx = self.transmitters.merge(reading)
        if tx is None:
            return _NO_RECORDS
        self._airborne = None  # its operational status may have changed
        self.verdicts.setdefault(tx.key, Verdict())
        if tx.t_position != reading.t_mono and reading.t_mono - self._last_eval < INGEST_EVAL_S - TIME_EPS_S:
            return _NO_RECORDS
        return self._evaluate(reading.t_mono)

    def on_radar(self, update: TrackUpdate, categories: Callable[[np.ndarray], np.ndarray] | np.ndarray,
                 records: np.ndarray) -> np.ndarray:
        """After a radar tracker call: ``update``, its live tracks' ICD ``categories`` (K,),
        or a function giving those of the rows (indices into ``update.tracks``) it is
        given (called only for the confirmed tracks inside receiver coverage: deciding
        categories costs)
        and the radar ``records`` built for it. Marks those records (sources remote id,
        threat at least ``mismatch_threat`` on a MISMATCH) and returns them followed by
        the ID-only records due."""
        before = self._marks()
        self._tracks, self._categories = update.tracks, categories
        id_only = self._evaluate(update.t_mono)
        marks = self._marks()
        for tid in update.ended.track_id:
            if int(tid) in before:
                marks[int(tid)] = before[int(tid)]
        if marks:
            ids = np.fromiter(marks, dtype=np.uint32, count=len(marks))
            mark_radar_records(records, ids, np.fromiter(marks.values(), dtype=np.uint8, count=len(marks)))
        return _join(records, id_only)

    def expire(self, t_mono: float) -> np.ndarray:
        """Forget silent transmitters (their ID-only tracks end); ID-only records due."""
        ended = [self._end(tx) for tx in self.transmitters.expire(t_mono)]
        return _join(self._evaluate(t_mono), *ended)

    def end_all(self, t_mono: float) -> np.ndarray:
        """Final ENDED records of every ID-only track (the daemon is stopping)."""
        out = [self._end(tx) for tx in list(self.transmitters.by_key.values())]
        self.transmitters.by_key.clear()
        self._airborne = None
        return _join(_NO_RECORDS, *out)

    def set_receivers(self, silence: Mapping[str, float | None]) -> None:
        """The receivers' state, by sensor name: None when its port is down, else the
        seconds since it last sent anything. A receiver covers when its port is up and it
        has sent something within ``receiver_silent_after_s``; without one that covers,
        no track becomes non-cooperative (a dead or mute receiver hears nothing)."""
        limit = self.settings.receiver_silent_after_s
        why = {}
        for name, silent_s in silence.items():
            if silent_s is None:
                why[name] = "not covering: its port is down"
            elif silent_s > limit:
                why[name] = (f"not covering: silent for {silent_s:.0f} s (over remote_id.receiver_silent_after_s "
                             f"{limit:g} s), so its silence is not taken for the absence of broadcasts")
            else:
                why[name] = ""
        for name, text in why.items():
            if text != self.receivers.get(name, ""):
                if text:
                    log.warning("Remote ID receiver %s %s", name, text)
                else:
                    log.info("Remote ID receiver %s covering again", name)
        self.receivers = why
        self.receivers_up = any(not text for text in why.values())

    # -- outputs --------------------------------------------------------------------

    def pop_events(self) -> list[tuple[str, str, str, dict[str, Any]]]:
        """Events raised since the last call: (code, severity, message, fields)."""
        out, self._events = self._events, []
        return out

    def pop_identities(self) -> list[TrackIdentity]:
        """Track identities due since the last call, for the uplink, in track id order
        (the latest per track: what nobody popped is replaced, never piled up)."""
        out, self._identities = [self._identities[k] for k in sorted(self._identities)], {}
        return out

    def airborne_tracks(self) -> np.ndarray:
        """(n,) uint32 ids of the radar tracks paired with the broadcast of a drone not
        declared on the ground (F3411 operational status other than 1 "ground": airborne,
        emergency, or undeclared, as DJI DroneID and most JSON receivers give none): never
        static clutter, however still it hovers (the labeller asks)."""
        if self._airborne is None:  # pairs change only in an evaluation or when a transmitter ends
            ids = [v.paired_track for key, v in self.verdicts.items()
                   if v.paired_track and v.status == IdentityStatus.COOPERATIVE
                   and (tx := self.transmitters.by_key.get(key)) is not None and tx.merged.status != STATUS_GROUND]
            self._airborne = np.array(ids, dtype=np.uint32)
        return self._airborne

    @property
    def id_only_count(self) -> int:
        """Live ID-only tracks."""
        return sum(1 for v in self.verdicts.values() if v.id_only)

    # -- evaluation -----------------------------------------------------------------

    def _marks(self) -> dict[int, int]:
        """Radar track id -> threat floor, for every live pair."""
        out: dict[int, int] = {}
        for v in self.verdicts.values():
            if v.paired_track and v.status in (IdentityStatus.COOPERATIVE, IdentityStatus.MISMATCH):
                floor = int(self._mismatch_level) if v.status == IdentityStatus.MISMATCH else 0
                out[v.paired_track] = max(out.get(v.paired_track, 0), floor)
        return out

    def _evaluate(self, t: float) -> np.ndarray:
        self._last_eval = t
        self._airborne = None
        if self._quiet and not self.verdicts and not self.transmitters.by_key and not (
                self.receiver.range_m > 0 and self.receivers_up):
            # Nothing heard and nothing could be (no receiver, or none up): gating, the
            # silence rule and the reports would find nothing, at ~0.5 ms a radar frame.
            return _NO_RECORDS
        s = self.settings
        tracks = self._tracks
        established = tracks.rows_with_status(Status.CONFIRMED, Status.COASTING)
        live = {int(tid): row for row, tid in enumerate(tracks.track_id.tolist())} if self.verdicts else {}
        for v in self.verdicts.values():
            if v.paired_track and v.paired_track not in live:
                v.paired_track = 0
                if v.status == IdentityStatus.COOPERATIVE:
                    v.status = None
        fresh = [tx for tx in self.transmitters.by_key.values()
                 if tx.has_position and t - tx.t_position <= s.max_position_age_s]
        if fresh:  # else no broadcast to gate (a receiver that hears nothing: most frames)
            self._judge_broadcasts(fresh, established, live, t)
        for v in self.verdicts.values():
            if v.paired_track and v.status is None:
                v.status = IdentityStatus.COOPERATIVE  # a stale position, still heard: the pair holds
        eligible = established & self.receiver.covers(tracks.state[:, :3]) & self.receivers_up
        if eligible.any():  # of those, the uas: categories of these rows alone (deciding them costs)
            rows = np.flatnonzero(eligible)
            if callable(self._categories):
                eligible[rows] = np.asarray(self._categories(rows), dtype=np.uint8) == Category.UAS
            else:
                cats = np.asarray(self._categories, dtype=np.uint8)
                eligible[rows] = (cats[rows] == Category.UAS) if len(cats) == len(tracks) else False
        paired = (v.paired_track for v in self.verdicts.values() if v.paired_track)
        for tid, held in self.silent.judge(t, tracks.track_id, eligible, paired, s.non_cooperative_after_s):
            message = f"track {tid}: a uas in receiver coverage with no Remote ID broadcast for {held:.0f} s"
            log.info("non-cooperative: %s", message)
            self._events.append((EVENT_NON_COOPERATIVE, "info", message, {"track_id": tid}))
        self._quiet = not (self.verdicts or self.transmitters.by_key or self.silent.non_cooperative or eligible.any())
        return self._report(t, established)

    def _judge_broadcasts(self, fresh: list[Transmitter], established: np.ndarray, live: dict[int, int],
                          t: float) -> None:
        """Gate the ``fresh`` transmitters' positions against the radar tracks and judge
        each (matched, paired track elsewhere, in radar coverage, outside it)."""
        s = self.settings
        tracks = self._tracks
        bc = self._measure.measure(fresh)
        d2 = mahalanobis(bc, tracks)
        gate = gates(bc, s.gate_probability)
        match = assign(d2, gate, established)
        in_gate = d2 <= gate[:, None]
        covered = self.radar.covers(bc.pos_enu_m, bc.h_accuracy_m)
        for n, tx in enumerate(fresh):
            v = self.verdicts[tx.key]
            row = live.get(v.paired_track) if v.paired_track else None
            ev = Evidence(matched_track=int(tracks.track_id[match[n]]) if match[n] >= 0 else 0,
                          paired_in_gate=None if row is None else bool(in_gate[n, row]),
                          covered=bool(covered[n]), any_in_gate=bool(in_gate[n].any()))
            if judge(v, ev, t, s.mismatch_after_s):
                self._raise_mismatch(tx, v, t)

    def _raise_mismatch(self, tx: Transmitter, v: Verdict, t: float) -> None:
        r = tx.merged
        what = (f"its radar track {v.paired_track} is elsewhere" if v.reason == TRACK_ELSEWHERE
                else "the radar sees nothing there")
        name = r.uas_id or tx.key
        held = t - v.contradicted_since
        message = f"Remote ID {name}: broadcast position contradicted by the radar for {held:.0f} s ({what})"
        log.warning("rid_mismatch: %s", message)
        self._events.append((EVENT_MISMATCH, "warning", message, {
            "rule": "rid_mismatch", "reason": v.reason, "transmitter": tx.key, "uas_id": r.uas_id,
            "track_id": v.paired_track or None, "broadcast_lat_deg": r.lat_deg, "broadcast_lon_deg": r.lon_deg,
        }))

    # -- reports --------------------------------------------------------------------

    def _identity(self, track_id: int, status: IdentityStatus, t: float, tx: Transmitter | None) -> TrackIdentity:
        if tx is None:
            return TrackIdentity(track_id=track_id, time_us=self.clock.utc_us(t), status=status)
        r = tx.merged
        return TrackIdentity(
            track_id=track_id, time_us=self.clock.utc_us(t), status=status, source=r.source,
            **_icd_uas_id(r.uas_id, r.id_type), ua_type=r.ua_type, operator_lat_deg=r.operator_lat_deg,
            operator_lon_deg=r.operator_lon_deg, operator_alt_m=r.operator_alt_m,
            operator_id=_icd_text(r.operator_id, 20),
            self_id=_icd_text(r.self_id, 23), last_heard_us=self.clock.utc_us(tx.t_heard), rssi_dbm=r.rssi_dbm,
        )

    def _report(self, t: float, established: np.ndarray) -> np.ndarray:
        """ID-only records due and the identities due at ``t``; ``established``: the
        confirmed and coasting rows of the radar tracks."""
        shown = set(self._tracks.track_id[established].tolist())
        current: dict[int, TrackIdentity] = {}
        rows, finals = [], []
        for key in sorted(self.verdicts):
            v, tx = self.verdicts[key], self.transmitters.by_key.get(key)
            if tx is None:
                continue
            if v.paired_track and v.status in (IdentityStatus.COOPERATIVE, IdentityStatus.MISMATCH):
                if v.id_only:
                    finals.append(self._id_only_row(tx, v, Status.ENDED))
                    v.id_only, v.id_only_last = 0, None
                if v.paired_track in shown and (v.paired_track not in current or v.status == IdentityStatus.MISMATCH):
                    current[v.paired_track] = self._identity(v.paired_track, v.status, t, tx)
                continue
            wants_track = v.status in (IdentityStatus.ID_ONLY, IdentityStatus.MISMATCH) or (
                v.id_only and v.status is None)
            if not wants_track or not tx.has_position:
                continue
            if not v.id_only:
                v.id_only, self._next_id = self._next_id, self._next_id + 1
                log.info("Remote ID %s: ID-only track %d", tx.merged.uas_id or key, v.id_only)
            status = v.status or IdentityStatus.ID_ONLY
            current[v.id_only] = self._identity(v.id_only, status, t, tx)
            row = self._id_only_row(tx, v, Status.CONFIRMED)
            last = v.id_only_last
            due = last is None or (int(row["status"]), int(row["threat"])) != last[1:] or (
                tx.t_position > last[0] and tx.t_position - last[0] >= self.settings.id_only_interval_s - TIME_EPS_S)
            if due:
                rows.append(row)
                v.id_only_last = (tx.t_position, int(row["status"]), int(row["threat"]))
        # A non-cooperative track's identity says the same at every call but its time:
        # made only when due (a tower with a receiver may see dozens of them).
        whats = {tid: what_of(i) for tid, i in current.items()}
        whats.update((tid, _NON_COOPERATIVE_WHAT) for tid in self.silent.non_cooperative & shown if tid not in current)
        for tid in self.identity_reporter.due_ids(whats, t):
            ident = current.get(tid)
            self._identities[tid] = ident if ident is not None else self._identity(
                tid, IdentityStatus.NON_COOPERATIVE, t, None)
        return self._records(rows + finals)

    def _id_only_row(self, tx: Transmitter, v: Verdict, status: Status) -> np.ndarray:
        r = tx.merged
        s = self.settings
        row = np.zeros((), dtype=ID_ONLY_DTYPE)
        bc = broadcasts([tx], self.site, s)
        enu = bc.z[0, :3].copy()
        if not bc.known[0, 2]:
            enu[2] = np.nan
        vel = np.array([bc.z[0, 3], bc.z[0, 4], r.vertical_speed_mps]) if bc.known[0, 3] else np.full(3, np.nan)
        row["track_id"], row["status"], row["t_mono"], row["hits"] = v.id_only, status, tx.t_position, tx.positions
        row["enu_m"], row["vel_enu_mps"] = enu, vel
        row["h_accuracy_m"] = bc.h_accuracy_m[0]
        row["v_accuracy_m"] = math.sqrt(bc.var[0, 2]) * K1
        level = np.uint8(Threat.NONE)
        if self.threat is not None:
            pos = np.nan_to_num(enu[None, :])
            level = self.threat.assess(pos, np.nan_to_num(vel[None, :]), np.array([Category.UAS], np.uint8),
                                       np.array([100])).threat[0]
        if v.status == IdentityStatus.MISMATCH:
            level = max(level, self._mismatch_level)
        row["threat"] = level
        return row

    def _records(self, rows: list[np.ndarray]) -> np.ndarray:
        if not rows:
            return _NO_RECORDS
        return id_only_records(np.array(rows, dtype=ID_ONLY_DTYPE), self.site, self.clock)

    def _end(self, tx: Transmitter) -> np.ndarray:
        """The ENDED record of ``tx``'s ID-only track (none when it has none); its state goes."""
        v = self.verdicts.pop(tx.key, None)
        self._airborne = None
        if v is None or not v.id_only:
            return _NO_RECORDS
        return self._records([self._id_only_row(tx, v, Status.ENDED)])


_NO_RECORDS = np.zeros(0, dtype=TRACK_RECORD_DTYPE)
_NON_COOPERATIVE_WHAT = what_of(TrackIdentity(track_id=0, time_us=0, status=IdentityStatus.NON_COOPERATIVE))


def _join(*parts: np.ndarray) -> np.ndarray:
    parts = tuple(p for p in parts if len(p))
    return np.concatenate(parts) if len(parts) > 1 else parts[0] if parts else _NO_RECORDS


def _icd_uas_id(text: str, id_type: int) -> dict[str, Any]:
    """``uas_id`` and ``id_type`` as the ICD carries them: a binary ID (type 3 UUID, 4
    session ID) as the receiver's hex, whole (the record holds its bytes); one that is
    not hex of at most its size goes as text with type 0 (what it is cannot be said),
    rather than a wrong binary ID."""
    if id_type in BINARY_ID_TYPES:
        try:
            return {"uas_id": uas_id_text(uas_id_bytes(text, id_type), id_type), "id_type": id_type}
        except ValueError:
            return {"uas_id": _icd_text(text, UAS_ID_LEN), "id_type": 0}
    return {"uas_id": _icd_text(text, UAS_ID_LEN), "id_type": id_type}


def _icd_text(text: str, size: int) -> str:
    """``text`` as the ICD's identity fields carry it: printable ASCII, at most ``size``
    characters; any other character becomes "?" (a JSON receiver may pass on a pilot's
    Cyrillic or accented self-ID: the rest of the identity must still go out)."""
    return "".join(c if " " <= c <= "~" else "?" for c in text[:size])
