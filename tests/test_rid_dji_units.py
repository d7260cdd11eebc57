"""DJI DroneID velocity is in cm/s on the wire (DroneSecurity prints it raw). The vector:
Ka-zam/gr-droneid ``python/djiencoder.py`` (commit 4fc7037b), ``droneid_defaults``:
uav_vel_n 0.123, uav_vel_e 1.234, uav_vel_u 0.02 m/s, packed as ``round(v * 100)``, i.e.
the int16s 12, 123, 2 that a DroneSecurity-style receiver prints as v_north, v_east,
v_up; its position and pilot position as given there. Fed to the driver over a real pty."""

from __future__ import annotations

import json
import math
import time

import pytest

from towerd.drivers.measurements import RidSource
from towerd.drivers.remoteid.driver import RemoteIdDriver, RemoteIdSettings

LINE = {"serial_number": "Skysense00000000", "latitude": 59.401961877206965, "longitude": 17.96186335631357,
        "altitude": 100.0, "height": 89.0, "v_north": 12, "v_east": 123, "v_up": 2,
        "app_lat": 59.40108401242872, "app_lon": 17.95851152195049, "latitude_home": 59.403246486946564,
        "longitude_home": 17.956683191685695, "device_type": "DJI Mavic 3"}


def test_droneid_velocity_is_read_in_cm_per_second(pty_pair):
    with RemoteIdDriver("rid", RemoteIdSettings(port=pty_pair.path)) as d:
        pty_pair.write(json.dumps(LINE).encode("ascii") + b"\r\n")
        deadline, readings = time.monotonic() + 8.0, []
        while not readings and time.monotonic() < deadline:
            readings = d.read()
    [r] = readings
    assert r.source == RidSource.DJI_DRONEID and r.uas_id == "Skysense00000000"
    assert r.speed_mps == pytest.approx(math.hypot(0.12, 1.23))  # 1.236 m/s, not 123.6 (m/s) nor 0.0124 (mm/s)
    assert r.course_deg == pytest.approx(math.degrees(math.atan2(1.23, 0.12)))  # 84.4 deg: mostly east
    assert r.vertical_speed_mps == pytest.approx(0.02)
    assert (r.operator_lat_deg, r.operator_lon_deg) == pytest.approx((59.40108401242872, 17.95851152195049))
