"""Track identities: who a tracked drone is, as the tower shares it upstream (ICD v1.1).

Remote ID fusion (:mod:`towerd` identity layer) produces one :class:`TrackIdentity` per
track whose identity is known or whose silence is itself a finding; the uplink encodes
it into the ICD's identity message. Pure data, no I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from towerd.drivers.measurements import RidSource


class IdentityStatus(enum.IntEnum):
    """What the tower concluded about a track's broadcast identity."""

    COOPERATIVE = 1  # a broadcast matched the radar track
    ID_ONLY = 2  # heard, not seen (no radar coverage there): the track comes from the broadcast
    NON_COOPERATIVE = 3  # a confirmed uas track where receivers cover it, and no broadcast matches
    MISMATCH = 4  # a broadcast the radar contradicts (threat rule rid_mismatch)


@dataclass(frozen=True)
class TrackIdentity:
    """The identity of one track at one time. Text fields "" and numbers NaN when unknown."""

    track_id: int  # the ICD track id of the TRACKS records it belongs to
    time_us: int  # UTC microseconds since the epoch of this statement
    status: IdentityStatus
    source: RidSource = RidSource.UNKNOWN
    uas_id: str = ""  # <= 20 characters (F3411 field size); ID types 3, 4: hex of <= 16 / 20 bytes
    id_type: int = 0  # F3411 ID type
    ua_type: int = 0  # F3411 UA type
    operator_lat_deg: float = float("nan")
    operator_lon_deg: float = float("nan")
    operator_alt_m: float = float("nan")
    operator_id: str = ""  # <= 20 characters
    self_id: str = ""  # <= 23 characters
    last_heard_us: int = 0  # UTC microseconds of the last broadcast heard; 0 never (non-cooperative)
    rssi_dbm: float = float("nan")
