"""Remote ID in `towerd demo`: what the demo's drones broadcast, the receiver's YAML, and
the track identities the central holds, for the live table and the summary.

The demo's three drones (:func:`towerd.sim.scenario.builtin_scenario` ``demo``): the
crossing one broadcasts F3411 over Bluetooth with its pilot's position, the orbiter is
silent (non-cooperative), the climber broadcasts a position 60 m north of where it flies
(inside the radar's view, where it sees nothing: ``rid_mismatch``).
"""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

from towerd.icd import LAT_LON_UNKNOWN
from towerd.identity import ID_ONLY_TRACK_ID_BASE
from towerd.reports.identity import IdentityStatus
from towerd.sim.rid_spec import RemoteIdSpec

DEMO_RID_SPECS = {
    "crossing": RemoteIdSpec(uas_id="1581F5FKD229400001", form="f3411-hex", transport="ble",
                             operator_enu_m=(-40.0, 10.0, 1.5), operator_id="USA-OP-0042", self_id="Survey flight"),
    "orbiter": RemoteIdSpec(silent=True),
    "climber": RemoteIdSpec(uas_id="1581F6ZZX001SPOOF000", form="f3411-hex", transport="beacon",
                            spoof_offset_m=60.0, spoof_bearing_deg=0.0),
}
"""What each drone of the demo scenario broadcasts."""

REMOTE_ID_YAML = "remote_id: {mismatch_after_s: 3.0, non_cooperative_after_s: 5.0}\n"
"""The demo's fusion settings: findings within a short demo."""


def rid_sensor(path: str | None) -> str:
    """The Remote ID receiver's entry under ``sensors:`` (none without a port)."""
    if path is None:
        return ""
    return f"""\
  - name: rid0
    driver: remoteid
    settings:
      port: {path}
"""


def is_id_only(track_id: int) -> bool:
    """An ID-only track (heard, not seen) rather than a radar or RF-only one."""
    return ID_ONLY_TRACK_ID_BASE <= track_id < ID_ONLY_TRACK_ID_BASE + 0x4000_0000


def describe(row: sqlite3.Row | dict) -> str:
    """One identity as the demo prints it."""
    status = IdentityStatus(row["status"])
    if status == IdentityStatus.NON_COOPERATIVE:
        return "non-cooperative: no Remote ID where the receiver hears"
    text = f"Remote ID {row['uas_id'] or '?'}"
    if row["operator_lat_e7"] != LAT_LON_UNKNOWN:
        text += f", pilot at {row['operator_lat_e7'] / 1e7:.5f} {row['operator_lon_e7'] / 1e7:.5f}"
    if status == IdentityStatus.MISMATCH:
        text += ": rid_mismatch, the radar contradicts its broadcast position"
    elif status == IdentityStatus.ID_ONLY:
        text += " (heard, not seen by the radar)"
    return text


class IdentityView:
    """The latest identity per track id the central stored (read-only SQLite)."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self.latest: dict[int, dict] = {}
        self._after_us = -math.inf

    def refresh(self, conn: sqlite3.Connection | None) -> None:
        """Read what arrived since the last call over ``conn`` (None: not open yet)."""
        if conn is None:
            return
        try:
            rows = conn.execute("SELECT * FROM identities WHERE time_us > ? ORDER BY time_us",
                                (-(2**63) if self._after_us == -math.inf else self._after_us,)).fetchall()
        except sqlite3.Error:
            return  # no identities table yet
        for row in rows:
            self.latest[row["track_id"]] = dict(row)
            self._after_us = row["time_us"]
