"""Remote ID end to end with real processes: the TI radar emulator and the Remote ID
receiver emulator write to ptys; `towerd run` reads both (pyserial), tracks, fuses the
broadcasts with the radar tracks and sends ICD v1.1 over ZeroMQ to two `towerd central`
processes: one that takes IDENTITY, one told to be an ICD v1 central (--icd-v1).

Three drones in the radar's field of view: ``coop`` broadcasts F3411 over Bluetooth
(serial number, pilot position); ``silent`` broadcasts nothing; ``spoofer`` broadcasts
F3411 message packs with a position 70 m north of where it flies, where the radar sees
nothing (F3411 gives accuracy classes: a broadcast without any, e.g. a plain JSON
receiver line, is taken at the FAA's 30 m, and 70 m from another drone is then within its
gate). A fourth, ``behind``, a DJI drone (DroneID), flies behind the radar: heard, not
seen. Shown: the broadcasting drone's radar track reaches the central with its serial
number and pilot position (and sources radar + remote id), the silent one marked
non-cooperative, the spoofer raises rid_mismatch, the drone behind the radar arrives as
an ID-only track, and the v1 central keeps receiving tracks (and no identity).
"""

from __future__ import annotations

import math
import socket
import sqlite3
import time

import numpy as np
import pytest

from processes import Child, free_tcp_port, wait_listening
from towerd.demo import DEMO_SITE, RADAR_BORESIGHT_DEG, RADAR_POSITION_ENU_M
from towerd.geo import enu_to_geodetic, geodetic_to_enu
from towerd.icd import SOURCE_RADAR, SOURCE_REMOTE_ID
from towerd.reports.identity import IdentityStatus
from towerd.sim.pty import PtyPair
from towerd.sim.remoteid import RemoteIdEmulator
from towerd.sim.rid_spec import RemoteIdSpec
from towerd.sim.scenario import MeasurementNoise, OrbitPath, Scenario, Target
from towerd.sim.ti_mmwave import TiMmwaveEmulator

pytestmark = pytest.mark.slow

SERIAL = "1581F5FKD229400001"
SPOOF_ID = "1581F5FKD2294SPOOF1"
DJI_ID = "1581F4QWD215P00A0042"
PILOT_ENU = (-60.0, 20.0, 1.5)
SCENARIO = Scenario(
    name="remote-id",
    false_alarms_per_frame=0.5,
    noise=MeasurementNoise(range_sigma_m=0.5, azimuth_sigma_deg=1.0, elevation_sigma_deg=2.0, doppler_sigma_mps=0.1),
    targets=(
        Target("coop", "uas", -15.0, OrbitPath(centre_enu_m=(-45.0, 100.0), radius_m=12.0, speed_mps=5.0, up_m=40.0)),
        Target("silent", "uas", -15.0, OrbitPath(centre_enu_m=(45.0, 100.0), radius_m=12.0, speed_mps=5.0,
                                                 start_deg=90.0, up_m=35.0)),
        Target("spoofer", "uas", -15.0, OrbitPath(centre_enu_m=(0.0, 55.0), radius_m=8.0, speed_mps=3.0, up_m=30.0)),
        Target("behind", "uas", -15.0, OrbitPath(centre_enu_m=(0.0, -300.0), radius_m=20.0, speed_mps=6.0,
                                                 up_m=60.0)),
    ),
)
SPECS = {
    "coop": RemoteIdSpec(uas_id=SERIAL, form="f3411-hex", transport="ble", operator_enu_m=PILOT_ENU,
                         operator_id="USA-OP-0042", self_id="survey flight"),
    "silent": RemoteIdSpec(silent=True),
    "spoofer": RemoteIdSpec(uas_id=SPOOF_ID, form="f3411-hex", transport="bt5", spoof_offset_m=70.0,
                            spoof_bearing_deg=0.0),
    "behind": RemoteIdSpec(uas_id=DJI_ID, form="dji", operator_enu_m=(10.0, -250.0, 1.5)),
}


def config(radar: str, rid: str, state, hq: str, old: str) -> str:
    return f"""\
version: 1
tower: {{id: tx-rid-001, latitude_deg: {DEMO_SITE.latitude_deg}, longitude_deg: {DEMO_SITE.longitude_deg},
        height_m: {DEMO_SITE.height_m}}}
state_dir: {state}
status_socket: {state}/status.sock
sensors:
  - name: radar0
    driver: ti_mmwave
    settings: {{port: {radar}}}
    mount: {{boresight_azimuth_deg: {RADAR_BORESIGHT_DEG}, position_enu_m: {list(RADAR_POSITION_ENU_M)}}}
    noise: {{range_sigma_m: 0.3, azimuth_sigma_deg: 1.0, elevation_sigma_deg: 1.5}}
  - name: rid0
    driver: remoteid
    settings: {{port: {rid}}}
centrals:
  - {{name: hq, endpoint: "{hq}", plain: true}}
  - {{name: old, endpoint: "{old}", plain: true}}
remote_id:
  radar_coverage: {{max_range_m: 200}}
  mismatch_after_s: 3.0
  non_cooperative_after_s: 4.0
  identity_interval_s: 2.0
web: {{enabled: false}}
"""


def start_central(exe: str, tmp_path, name: str, *extra: str) -> Child:
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    child = Child([exe, "central", "--bind", endpoint, "--db", str(tmp_path / f"{name}.sqlite"), "--plain", *extra],
                  tmp_path / f"{name}.log")
    child.endpoint, child.db = endpoint, tmp_path / f"{name}.sqlite"
    wait_listening(endpoint, child)
    return child


def query(db, sql: str, *args) -> list[sqlite3.Row]:
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1.0)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError:
        return []  # tables not created yet
    finally:
        conn.close()


def nearest(emulator: TiMmwaveEmulator, row) -> tuple[float, str]:
    t_s = (row["time_us"] - emulator.t0_utc_us) / 1e6
    enu = geodetic_to_enu(DEMO_SITE, row["lat_e7"] / 1e7, row["lon_e7"] / 1e7, row["alt_m"])[0]
    dist, name, _ = SCENARIO.nearest(t_s, enu)
    return dist, name


def findings(hq, radar: TiMmwaveEmulator) -> dict:
    """What the central holds so far, by drone."""
    found: dict = {}
    idents = query(hq.db, "SELECT * FROM identities ORDER BY time_us")
    for ident in idents:
        tracks = query(hq.db, "SELECT * FROM tracks WHERE track_id = ? AND status IN (1, 2) ORDER BY seq DESC "
                              "LIMIT 5", ident["track_id"])
        names = {nearest(radar, r)[1] for r in tracks if r["sources"] & SOURCE_RADAR}
        status = IdentityStatus(ident["status"])
        if status == IdentityStatus.COOPERATIVE and names == {"coop"} and ident["uas_id"] == SERIAL:
            found["coop"] = (ident, tracks)
        if status == IdentityStatus.NON_COOPERATIVE and names == {"silent"}:
            found["silent"] = (ident, tracks)
        if status == IdentityStatus.MISMATCH and ident["uas_id"] == SPOOF_ID:
            found["spoofer_identity"] = ident
        if status == IdentityStatus.ID_ONLY and ident["uas_id"] == DJI_ID:
            rows = query(hq.db, "SELECT * FROM tracks WHERE track_id = ? ORDER BY seq DESC LIMIT 5",
                         ident["track_id"])
            if rows:
                found["behind"] = (ident, rows)
    events = query(hq.db, "SELECT * FROM events WHERE code = 'threat.rid_mismatch'")
    if events:
        found["mismatch_events"] = events
    return found


def test_identities_reach_the_central_and_a_v1_central_keeps_tracks(towerd_exe, tmp_path):
    hq = start_central(towerd_exe, tmp_path, "hq")
    old = start_central(towerd_exe, tmp_path, "old", "--icd-v1")
    radar_pty, rid_pty = PtyPair.open(), PtyPair.open()
    radar = TiMmwaveEmulator(SCENARIO, boresight_azimuth_deg=RADAR_BORESIGHT_DEG, position_enu_m=RADAR_POSITION_ENU_M,
                             frame_rate_hz=10.0, rng=np.random.default_rng(7))
    rid = RemoteIdEmulator(SCENARIO, rng=np.random.default_rng(8), site=DEMO_SITE,
                           position_enu_m=RADAR_POSITION_ENU_M, specs=SPECS)
    cfg = tmp_path / "towerd.yaml"
    cfg.write_text(config(radar_pty.path, rid_pty.path, tmp_path / "state", hq.endpoint, old.endpoint))
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # stands in for systemd
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(30.0)
    daemon = Child([towerd_exe, "run", "--config", str(cfg)], tmp_path / "daemon.log",
                   env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock")})
    try:
        assert notify.recv(4096).decode().startswith("READY=1"), daemon.log()
        radar.start(radar_pty)
        rid.start(rid_pty)
        deadline = time.monotonic() + 60.0
        found: dict = {}
        while time.monotonic() < deadline:
            found = findings(hq, radar)
            if {"coop", "silent", "spoofer_identity", "mismatch_events", "behind"} <= found.keys():
                break
            time.sleep(0.5)  # polling another process's database: there is no event to wait on
        old_tracks_before = len(query(old.db, "SELECT seq FROM tracks"))
        time.sleep(1.5)  # the v1 central, long after it refused IDENTITY, still gets new records
        old_tracks_after = len(query(old.db, "SELECT seq FROM tracks"))
    finally:
        status = daemon.stop()
        radar.stop()
        rid.stop()
        radar_pty.close()
        rid_pty.close()
        notify.close()
        hq_log, old_log = hq.log(), old.log()
        hq.stop()
        old.stop()
    logs = f"--- daemon ---\n{daemon.log()[-6000:]}\n--- hq ---\n{hq_log[-2000:]}\n--- old ---\n{old_log[-2000:]}"
    assert status == 0, logs
    missing = {"coop", "silent", "spoofer_identity", "mismatch_events", "behind"} - found.keys()
    assert not missing, f"not at the central: {missing}; found {sorted(found)}\n{logs}"

    # The broadcasting drone: its radar track carries the serial number and the pilot position.
    ident, tracks = found["coop"]
    assert all(r["sources"] == SOURCE_RADAR | SOURCE_REMOTE_ID for r in tracks[:2]), [r["sources"] for r in tracks]
    lat, lon, _ = enu_to_geodetic(DEMO_SITE, np.array([PILOT_ENU]))
    assert math.isclose(ident["operator_lat_e7"] / 1e7, lat[0], abs_tol=1e-5)
    assert math.isclose(ident["operator_lon_e7"] / 1e7, lon[0], abs_tol=1e-5)
    assert (ident["operator_id"], ident["self_id"], ident["id_type"], ident["ua_type"]) == (
        "USA-OP-0042", "survey flight", 1, 2)
    assert 0 < ident["last_heard_us"] <= ident["time_us"]
    # The silent drone: non-cooperative, nothing heard.
    silent, _ = found["silent"]
    assert silent["uas_id"] == "" and silent["last_heard_us"] == 0
    # The spoofer: rid_mismatch (the radar sees nothing where it says it is).
    ev = found["mismatch_events"][0]
    assert SPOOF_ID in ev["message"]
    # Heard, not seen: an ID-only track at the broadcast position, sources remote id only.
    ident, rows = found["behind"]
    assert all(r["sources"] == SOURCE_REMOTE_ID for r in rows)
    assert min(nearest(radar, r)[0] for r in rows) < 10.0 and {nearest(radar, r)[1] for r in rows} == {"behind"}
    # The v1 central: tracks, no identities, and records kept coming after the refusal.
    assert old_tracks_after > old_tracks_before > 0, (old_tracks_before, old_tracks_after)
    assert query(old.db, "SELECT * FROM identities") == []
    assert "uplink old: the central does not take identities" in daemon.log(), daemon.log()[-3000:]
