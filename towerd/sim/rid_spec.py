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
from typing import Any, Callable

FORMS = ("json", "f3411-hex", "dji")
TRANSPORTS = ("ble", "bt5", "beacon", "nan")
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


@dataclass(frozen=True)
class RemoteIdSpec:
    """One drone's Remote ID broadcast (see the module docstring)."""

    uas_id: str = ""
    form: str = "f3411-hex"
    transport: str = "ble"
    id_type: int = 1
    ua_type: int = 2
    operator_enu_m: tuple[float, float, float] | None = None
    operator_id: str = ""
    self_id: str = ""
    mac: str = ""
    rate_hz: float = 1.0
    rssi_at_1m_dbm: float = -40.0
    silent: bool = False
    spoof_offset_m: float = 0.0
    spoof_bearing_deg: float = 90.0

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
        if self.mac and not _MAC.fullmatch(self.mac):
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


_KEYS = {"form": str, "transport": str, "uas_id": str, "id_type": int, "ua_type": int, "operator_enu_m": list,
         "operator_id": str, "self_id": str, "mac": str, "rate_hz": float, "rssi_at_1m_dbm": float, "silent": bool,
         "spoof_offset_m": float, "spoof_bearing_deg": float}


def parse_remote_id(raw: Any, key: str, add_problem: Callable[[str, str], None]) -> RemoteIdSpec | None:
    """A ``remote_id:`` mapping -> RemoteIdSpec; every problem goes to ``add_problem(key, message)``."""
    if not isinstance(raw, dict):
        add_problem(key, f"must be a mapping, got {type(raw).__name__}")
        return None
    values: dict[str, Any] = {}
    ok = True
    for k, value in raw.items():
        full = f"{key}.{k}"
        want = _KEYS.get(k)
        if want is None:
            add_problem(full, f"unknown key (allowed: {', '.join(_KEYS)})")
            ok = False
        elif want is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            values[k] = float(value)
        elif want is int and isinstance(value, int) and not isinstance(value, bool):
            values[k] = value
        elif want is list and isinstance(value, list) and len(value) == 3 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            values[k] = tuple(float(v) for v in value)
        elif want in (str, bool) and isinstance(value, want):
            values[k] = value
        elif want is str and isinstance(value, (int, float)) and not isinstance(value, bool):
            values[k] = str(value)  # a serial number of digits reads as a number in YAML
        else:
            add_problem(full, f"must be {'[east, north, up]' if want is list else want.__name__}, got {value!r}")
            ok = False
    if not ok:
        return None
    try:
        return RemoteIdSpec(**values)
    except ValueError as exc:
        add_problem(key, str(exc))
        return None
