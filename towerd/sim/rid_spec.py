"""What a scenario drone broadcasts as Remote ID (its optional ``remote_id:`` section).

Kept apart from :mod:`towerd.sim.remoteid` (the receiver emulator) so the scenario module
can describe drones without importing an emulator. YAML keys (all optional but ``uas_id``
unless ``silent``):

    remote_id:
      form: f3411-hex       # json (ESP32 mesh-mapper/Sky Spy lines) | f3411-hex | dji (DroneID)
      transport: ble        # F3411 bearer: ble (Bluetooth 4 legacy: one message per
                            # advertisement, Location every broadcast, the static
                            # messages in turn) | bt5 | beacon | nan (a Message Pack each)
      uas_id: 1581F5FKD229400001   # serial number (ANSI/CTA-2063-A) or registration
      id_type: 1            # F3411 ID type (1 serial, 2 CAA registration, ...)
      ua_type: 2            # F3411 UA type (2 helicopter or multirotor)
      operator_enu_m: [-40, 10, 1.5]  # where the pilot stands, scenario ENU metres
      operator_id: FIN87astrdge12k8
      self_id: Survey flight
      mac: 60:60:1f:aa:bb:cc  # default: derived from the drone's name
      rate_hz: 1.0          # broadcasts per second (F3411: Location at least 1 Hz)
      rssi_at_1m_dbm: -40   # received power at 1 m; falls off as free space (20 log10 d)
      silent: false         # true: broadcasts nothing (a non-cooperative drone)
      spoof_offset_m: 0     # broadcast a position this far from the true one ...
      spoof_bearing_deg: 90 # ... in this direction (clockwise from north)
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from typing import Literal

from towerd.schema import spec

FORMS = ("json", "f3411-hex", "dji")
TRANSPORTS = ("ble", "bt5", "beacon", "nan")
_MAC = re.compile(r"|[0-9a-f]{2}(:[0-9a-f]{2}){5}")


@dataclass(frozen=True)
class RemoteIdSpec:
    """One drone's Remote ID broadcast (see the module docstring); also the schema of the
    YAML section, validated by :mod:`towerd.schema` with the rest of the scenario file."""

    uas_id: str = spec("", doc="serial number or registration, printable ASCII, at most 20 characters")
    form: Literal[FORMS] = spec("f3411-hex", doc="what the receiver prints")  # type: ignore[valid-type]
    transport: Literal[TRANSPORTS] = spec("ble", doc="F3411 bearer")  # type: ignore[valid-type]
    id_type: int = spec(1, doc="F3411 ID type", lo=0, hi=15)
    ua_type: int = spec(2, doc="F3411 UA type", lo=0, hi=15)
    operator_enu_m: tuple[float, float, float] | None = spec(None, doc="where the pilot stands", unit="m")
    operator_id: str = spec("", doc="F3411 operator ID, at most 20 characters")
    self_id: str = spec("", doc="F3411 self-ID text, at most 23 characters")
    mac: str = spec("", doc="the broadcaster's MAC (default: from the drone's name)", pattern=_MAC.pattern,
                    error="must be lower-case aa:bb:cc:dd:ee:ff")
    rate_hz: float = spec(1.0, doc="broadcasts per second", unit="Hz", gt=0.0, hi=20.0)
    rssi_at_1m_dbm: float = spec(-40.0, doc="received power at 1 m", unit="dBm", lo=-120.0, hi=30.0)
    silent: bool = spec(False, doc="broadcasts nothing")
    spoof_offset_m: float = spec(0.0, doc="broadcast position this far from the true one", unit="m", lo=0.0)
    spoof_bearing_deg: float = spec(90.0, doc="direction of the false offset, clockwise from north", unit="deg")

    def __post_init__(self) -> None:
        if self.form not in FORMS:
            raise ValueError(f"form must be one of {', '.join(FORMS)}")
        if self.transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}")
        for name, limit in (("uas_id", 20), ("operator_id", 20), ("self_id", 23)):
            text = getattr(self, name)
            if len(text) > limit or not all(0x20 <= ord(c) < 0x7F for c in text):
                raise ValueError(f"{name} must be printable ASCII of at most {limit} characters")
        if not self.silent and not self.uas_id:
            raise ValueError("uas_id is required unless the drone is silent")
        if not (0 <= self.id_type <= 15 and 0 <= self.ua_type <= 15):
            raise ValueError("id_type and ua_type must be in 0..15")
        if not _MAC.fullmatch(self.mac):
            raise ValueError("mac must be lower-case aa:bb:cc:dd:ee:ff")
        if not (math.isfinite(self.rate_hz) and 0 < self.rate_hz <= 20):
            raise ValueError("rate_hz must be in (0, 20]")
        if not (math.isfinite(self.spoof_offset_m) and self.spoof_offset_m >= 0):
            raise ValueError("spoof_offset_m must be >= 0")
        if not (math.isfinite(self.rssi_at_1m_dbm) and math.isfinite(self.spoof_bearing_deg)):
            raise ValueError("rssi_at_1m_dbm and spoof_bearing_deg must be finite")
        if self.operator_enu_m is not None and (
                len(self.operator_enu_m) != 3 or not all(math.isfinite(v) for v in self.operator_enu_m)):
            raise ValueError("operator_enu_m must be three finite numbers [east, north, up]")

    def mac_for(self, name: str) -> str:
        """The broadcaster's MAC: the given one, else a locally administered one from ``name``."""
        if self.mac:
            return self.mac
        digest = hashlib.sha256(name.encode()).digest()
        return ":".join(f"{b:02x}" for b in (0x02 | (digest[0] & 0xFC), *digest[1:6]))
