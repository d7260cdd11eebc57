"""Snapshots -> the console's JSON, on the console's own thread.

Everything here runs off the daemon's loop: converting raw plots to the local frame
(with the same converters the pipeline uses), trails, the RF waterfall, which radar
made each track and its bearing from that radar (the alignment aid), the process's CPU
and memory, and the JSON text itself (encoded once per update, whatever the number of
open consoles).

Coordinates in the JSON: metres east/north/up of the tower's reference point; angles in
degrees clockwise from true north; times as UTC microseconds or ages in seconds.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from towerd import geo
from towerd.detection.plots import GeoPlotConverter, MeasurementNoise, PlotConverter, SensorMount
from towerd.drivers.measurements import GeoPlots, RadarPlots
from towerd.icd import Category, Status, Threat
from towerd.rf.classify import DRONE_LINKS, LINK_NAMES, LinkKind
from towerd.web.feed import ConsoleFeed, Snapshot
from towerd.web.settings import WebSettings

log = logging.getLogger(__name__)

STATUS_NAMES = {int(s): s.name.lower() for s in Status}
CATEGORY_NAMES = {int(c): c.name.lower() for c in Category}
THREAT_NAMES = {int(t): t.name.lower() for t in Threat}
TRAIL_STEP_S = 1.0
"""A trail keeps one point a second (and the track's latest position)."""
ATTRIBUTION_GATE_M = 15.0
"""A track is attributed to the radar with a plot within this distance in the last second."""
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class _Band:
    sensor: str
    band: str
    rows: collections.deque  # (frame number, JSON text of one row)
    latest: Any = None  # BandResult
    sweeps: int = 0


def _r(x: float, nd: int = 1) -> float | None:
    x = float(x)
    return round(x, nd) if math.isfinite(x) else None


def _rounded(values: Any, nd: int) -> list[float | None]:
    """An array rounded to ``nd`` decimals as a list, None where not finite (strict JSON)."""
    a = np.round(np.asarray(values, dtype=float), nd)
    if np.all(np.isfinite(a)):
        return a.tolist()
    return [v if math.isfinite(v) else None for v in a.tolist()]


def _wrap180(deg: float) -> float:
    return (deg + 180.0) % 360.0 - 180.0


class ConsoleView:
    """Consumes snapshots from ``feed``; :meth:`wait_frame` hands the JSON to the
    server's handler threads."""

    def __init__(self, feed: ConsoleFeed, settings: WebSettings) -> None:
        self.feed = feed
        self.settings = settings
        self._cond = threading.Condition()
        self.frame = 0
        self.frame_json = b""
        self.health_json = b"{}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._digest = ""
        self._radars: dict[str, Any] = {}
        self._geometry: dict[str, Any] = {}
        self._plots: collections.deque[tuple[float, str, np.ndarray]] = collections.deque()
        self._trails: dict[int, collections.deque] = {}
        self._bands: dict[tuple[str, str], _Band] = {}
        self._health: dict[str, Any] = {}
        self._cpu: tuple[float, float] | None = None  # (monotonic, cpu seconds)
        self._cpu_pct: float | None = None
        self._health_seq = 0
        self._health_key: tuple = ()
        self._health_out: dict[str, Any] = {}

    # -- thread ---------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="towerd-web-view", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.feed.wake_all()
        if self._thread is not None:
            self._thread.join(5.0)
        with self._cond:
            self._cond.notify_all()

    def _run(self) -> None:
        version = 0
        while not self._stop.is_set():
            snap = self.feed.wait(version, None, until=self._stop.is_set)  # stop() wakes it
            if snap is None or self._stop.is_set():
                continue
            version = snap.version
            try:
                frame, health = self.build(snap)
                text = json.dumps(frame, separators=(",", ":"), allow_nan=False).encode()
                health_text = json.dumps(health, separators=(",", ":"), allow_nan=False, default=str).encode()
            except Exception:  # the console must never take the daemon down with it
                log.exception("console: update %d could not be built", version)
                continue
            with self._cond:
                self.frame += 1
                self.frame_json, self.health_json = text, health_text
                self._cond.notify_all()

    def wait_frame(self, after: int, timeout_s: float) -> int:
        """Block until a frame newer than ``after`` exists (or timeout / stop); its number."""
        with self._cond:
            self._cond.wait_for(lambda: self.frame > after or self._stop.is_set(), timeout_s)
            return self.frame

    def current(self) -> tuple[int, bytes]:
        with self._cond:
            return self.frame, self.frame_json

    def rows_since(self, frame: int) -> bytes:
        """The RF waterfall rows added after ``frame`` (all held when 0), as JSON:
        {"<sensor>/<band>": [[sweep, frame, [dBm...]], ...]}."""
        with self._cond:
            parts = []
            for (sensor, band), b in self._bands.items():
                rows = [text for f, text in b.rows if f > frame]
                if rows:
                    parts.append(json.dumps(f"{sensor}/{band}") + ":[" + ",".join(rows) + "]")
        return ("{" + ",".join(parts) + "}").encode()

    # -- building ---------------------------------------------------------------------

    def build(self, snap: Snapshot) -> tuple[dict[str, Any], dict[str, Any]]:
        if snap.config_digest != self._digest:
            self._configure(snap.config, snap.config_digest)
        next_frame = self.frame + 1
        new_plots = len(self._plots)
        for reading in self.feed.take_readings():
            if isinstance(reading, (RadarPlots, GeoPlots)):
                self._add_plots(reading)
            else:
                self._add_bands(reading, next_frame)
        fresh = list(self._plots)[new_plots:]
        now = snap.t_mono
        while self._plots and self._plots[0][0] < now - self.settings.plots_s:
            self._plots.popleft()
        tracks = self._tracks(snap, now)
        if snap.health is not None:
            self._health = snap.health
            self._health_seq += 1
        health = self._health_view(snap)
        frame = {
            "frame": next_frame,
            "time_us": snap.utc_us,
            "tower": {"id": snap.config.tower.id, "latitude_deg": snap.config.tower.latitude_deg,
                      "longitude_deg": snap.config.tower.longitude_deg, "config_digest": snap.config_digest},
            "geometry": self._geometry,
            "tracks": tracks,
            # Only the plots read since the previous update: the page keeps them for plots_s.
            "plots": [{"sensor": s, "age_s": _r(now - t, 2), "en": np.round(en, 1).tolist()} for t, s, en in fresh],
            "rf": self._rf_view(snap, now),
            "health": health,
        }
        return frame, health

    def _configure(self, config: Any, digest: str) -> None:
        """Geometry (radars, zones, tiles) and plot converters for a configuration."""
        self._digest = digest
        site = geo.Site(config.tower.latitude_deg, config.tower.longitude_deg, config.tower.height_m)
        s = self.settings
        self._radars = {}
        radars = []
        for sensor in config.sensors:
            if sensor.mount is None:
                continue
            m = sensor.mount
            mount = SensorMount(m.position_enu_m, m.boresight_azimuth_deg, m.tilt_deg)
            noise = MeasurementNoise(sensor.noise.range_sigma_m, sensor.noise.azimuth_sigma_deg,
                                     sensor.noise.elevation_sigma_deg)
            self._radars[sensor.name] = (PlotConverter(mount, noise), GeoPlotConverter(site, mount, noise), m)
            radars.append({"name": sensor.name, "driver": sensor.driver, "enabled": sensor.enabled,
                           "position_enu_m": list(m.position_enu_m), "boresight_deg": m.boresight_azimuth_deg,
                           "tilt_deg": m.tilt_deg, "fov_deg": s.radar_fov_deg, "range_m": s.radar_range_m})
        zones = []
        for z in config.threat.zones:
            ll = np.asarray(z.polygon, dtype=float)
            enu = geo.geodetic_to_enu(site, ll[:, 0], ll[:, 1], np.full(len(ll), site.height_m))
            zones.append({"name": z.name, "en": np.round(enu[:, :2], 1).tolist(),
                          "levels": sorted({r.level for r in z.rules})})
        tiles = None
        if s.tiles.url or s.tiles.folder:
            tiles = {"url": s.tiles.url or "/tiles/{z}/{x}/{y}.png", "zoom": s.tiles.zoom,
                     "attribution": s.tiles.attribution}
        self._geometry = {"site": {"latitude_deg": site.latitude_deg, "longitude_deg": site.longitude_deg,
                                   "height_m": site.height_m},
                          "radars": radars, "zones": zones, "tiles": tiles,
                          "rf_sensors": [x.name for x in config.sensors if x.mount is None],
                          "trail_s": s.trail_s, "plots_s": s.plots_s}

    def _add_plots(self, reading: Any) -> None:
        conv = self._radars.get(reading.sensor)
        if conv is None or len(reading.plots) == 0:
            return
        det = (conv[0] if isinstance(reading, RadarPlots) else conv[1]).convert(reading)
        if len(det):
            self._plots.append((reading.t_mono, reading.sensor, det.pos_enu_m[:, :2].copy()))

    def _add_bands(self, bands: Any, frame: int) -> None:
        with self._cond:  # handler threads read the rows (rows_since)
            self._add_bands_locked(bands, frame)

    def _add_bands_locked(self, bands: Any, frame: int) -> None:
        for res in bands:
            key = (res.sensor, res.band)
            b = self._bands.get(key)
            if b is None:
                b = self._bands[key] = _Band(res.sensor, res.band, collections.deque(maxlen=self.settings.waterfall_rows))
            b.latest = res
            b.sweeps += 1
            row = np.round(np.asarray(res.power_dbm, dtype=float), 1)
            row = np.where(np.isfinite(row), row, -200.0)
            f = res.freq_mhz
            b.rows.append((frame, json.dumps([b.sweeps, frame, _r(f[0], 4), _r(f[-1], 4), row.tolist()],
                                             separators=(",", ":"))))

    def _tracks(self, snap: Snapshot, now: float) -> list[dict[str, Any]]:
        """One dict per track; the numbers computed and rounded for all tracks at once."""
        tr = snap.tracks
        n = len(tr)
        if n == 0:
            self._trails.clear()
            return []
        lab = snap.labels
        cutoff = now - self.settings.trail_s
        st = np.asarray(tr.state, dtype=float)
        rng_m, az_deg, el_deg = geo.cartesian_to_spherical(st[:, :3])
        ids, status, t_mono = tr.track_id.tolist(), tr.status.tolist(), tr.t_mono.tolist()
        e_r, n_r = _rounded(st[:, 0], 1), _rounded(st[:, 1], 1)
        up, ve, vn = _rounded(st[:, 2], 1), _rounded(st[:, 3], 2), _rounded(st[:, 4], 2)
        speed = _rounded(np.hypot(st[:, 3], st[:, 4]), 1)
        cols = {
            "climb_mps": _rounded(st[:, 5], 1),
            "heading_deg": _rounded(np.degrees(np.arctan2(st[:, 3], st[:, 4])) % 360.0, 0),
            "range_m": _rounded(rng_m, 1), "azimuth_deg": _rounded(az_deg, 1), "elevation_deg": _rounded(el_deg, 1),
            "sigma_m": _rounded(np.sqrt(np.maximum(0.0, (tr.cov[:, 0, 0] + tr.cov[:, 1, 1]) / 2.0)), 1),
            "hits": tr.hits.tolist(), "age_s": _rounded(now - tr.t_created, 1),
            "since_update_s": _rounded(now - tr.t_last_update, 2),
        }
        if snap.features is not None:
            cols["height_m"] = _rounded(snap.features["height_m"], 1)
        if lab is not None:
            category = [CATEGORY_NAMES.get(c, "?") for c in lab.category.tolist()]
            confidence, reportable = lab.confidence.tolist(), lab.reportable.tolist()
            threat = [THREAT_NAMES.get(c, "?") for c in lab.threat.tolist()]
            linked = lab.rf.linked.tolist()
        else:
            category, confidence = ["unknown"] * n, [0] * n
            threat, reportable, linked = ["none"] * n, [True] * n, [False] * n
        radar_of = self._attribute(tr, now)
        tentative = int(Status.TENTATIVE)
        live = set()
        out = []
        for k in range(n):
            tid = ids[k]
            en = [e_r[k], n_r[k]]
            t = {"id": tid, "status": STATUS_NAMES.get(status[k], "?"), "en": en, "up_m": up[k],
                 "vel_en": [ve[k], vn[k]], "speed_mps": speed[k], "category": category[k],
                 "confidence": confidence[k], "threat": threat[k], "reportable": reportable[k], "trail": []}
            out.append(t)
            if status[k] == tentative:  # many, short-lived, drawn only on request: no more than that
                continue
            live.add(tid)
            trail = self._trails.setdefault(tid, collections.deque())
            if not trail or t_mono[k] - trail[-1][0] >= TRAIL_STEP_S:
                trail.append((t_mono[k], en))
            while trail and trail[0][0] < cutoff:
                trail.popleft()
            t["trail"] = [p for _, p in trail] + [en]
            for key, values in cols.items():
                t[key] = values[k]
            if linked[k]:
                t["rf_link"] = {"freq_mhz": _r(lab.rf.freq_mhz[k], 2), "bw_mhz": _r(lab.rf.bw_mhz[k], 2),
                                "power_dbm": _r(lab.rf.power_dbm[k])}
            radar = radar_of.get(k)
            if radar is not None:
                name, bearing, off = radar
                t["radar"] = {"name": name, "bearing_deg": _r(bearing), "off_boresight_deg": _r(off)}
        for tid in [t for t in self._trails if t not in live]:
            del self._trails[tid]
        return out

    def _attribute(self, tr: Any, now: float) -> dict[int, tuple[str, float, float]]:
        """Row -> (radar, bearing of the track from that radar, bearing minus boresight)
        for tracks with a plot of that radar nearby in the last second."""
        if len(tr) == 0 or not self._plots:
            return {}
        pos = np.asarray(tr.state[:, :2], dtype=float)
        best: dict[int, tuple[float, str]] = {}
        recent: dict[str, list[np.ndarray]] = {}
        for t, s, en in self._plots:
            if t >= now - 1.0:
                recent.setdefault(s, []).append(en)
        for sensor, arrays in recent.items():
            pts = np.concatenate(arrays)
            d = np.min(np.hypot(pos[:, None, 0] - pts[None, :, 0], pos[:, None, 1] - pts[None, :, 1]), axis=1)
            for k in np.flatnonzero(d < ATTRIBUTION_GATE_M):
                if k not in best or d[k] < best[k][0]:
                    best[int(k)] = (float(d[k]), sensor)
        out = {}
        for k, (_, sensor) in best.items():
            mount = self._radars[sensor][2]
            de = pos[k, 0] - mount.position_enu_m[0]
            dn = pos[k, 1] - mount.position_enu_m[1]
            bearing = math.degrees(math.atan2(de, dn)) % 360.0
            out[k] = (sensor, bearing, _wrap180(bearing - mount.boresight_azimuth_deg))
        return out

    def _rf_view(self, snap: Snapshot, now: float) -> dict[str, Any]:
        bands = []
        for (sensor, band), b in self._bands.items():
            res = b.latest
            em = res.emitters
            bands.append({
                "sensor": sensor, "band": band, "age_s": _r(now - res.t_mono, 2), "sweeps": b.sweeps,
                "start_mhz": _r(res.freq_mhz[0], 4), "stop_mhz": _r(res.freq_mhz[-1], 4),
                "power_dbm": np.round(np.nan_to_num(res.power_dbm, nan=-200.0), 1).tolist(),
                "floor_dbm": np.round(np.nan_to_num(res.floor_dbm, nan=-200.0), 1).tolist(),
                "threshold_dbm": np.round(np.nan_to_num(res.threshold_dbm, nan=-200.0), 1).tolist(),
                "emitters": [{"low_mhz": _r(x["low_mhz"], 3), "high_mhz": _r(x["high_mhz"], 3),
                              "peak_dbm": _r(x["peak_dbm"]), "snr_db": _r(x["snr_db"])} for x in em],
            })
        keys = snap.rf_band_keys
        links = []
        for row in snap.rf_tracks:
            kind = LinkKind(int(row["kind"]))
            idx = int(row["band"])
            sensor, band = keys[idx] if 0 <= idx < len(keys) else ("?", "?")
            links.append({
                "id": int(row["rf_track_id"]), "status": STATUS_NAMES.get(int(row["status"]), "?"),
                "kind": LINK_NAMES.get(kind, "unknown"), "drone_link": kind in DRONE_LINKS,
                "confidence": int(row["confidence"]), "sensor": sensor, "band": band,
                "centre_mhz": _r(row["centre_mhz"], 2), "bandwidth_mhz": _r(row["bandwidth_mhz"], 2),
                "power_dbm": _r(row["power_dbm"]), "snr_db": _r(row["snr_db"]),
                "channels": int(row["channels"]), "hopping": bool(row["comb"]),
                "seen_s": _r(now - float(row["first_seen_mono"]), 0),
            })
        bands.sort(key=lambda b: (b["sensor"], b["start_mhz"] or 0.0))
        return {"bands": bands, "tracks": links}

    def _health_view(self, snap: Snapshot) -> dict[str, Any]:
        """Rebuilt when the loop sends health (once a second) or an event came."""
        key = (self._health_seq, len(snap.events), snap.events[-1]["time_us"] if snap.events else 0,
               self.feed.clients)
        if key == self._health_key:
            return self._health_out
        h = dict(self._health)
        h["events"] = list(snap.events)[-20:][::-1]
        h["process"] = self._process()
        h["console"] = {"clients": self.feed.clients, "rate_hz": self.settings.rate_hz}
        self._health_key, self._health_out = key, _json_safe(h)
        return self._health_out

    def _process(self) -> dict[str, Any]:
        """The daemon process's CPU (percent of one core since the last update) and memory."""
        out: dict[str, Any] = {"pid": os.getpid()}
        try:
            fields = open("/proc/self/stat", "rb").read().rsplit(b")", 1)[1].split()
            cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
            now = time.monotonic()
            if self._cpu is not None and now - self._cpu[0] >= 1.0:
                self._cpu_pct = 100.0 * (cpu - self._cpu[1]) / (now - self._cpu[0])
                self._cpu = (now, cpu)
            elif self._cpu is None:
                self._cpu = (now, cpu)
            out["cpu_percent"] = None if self._cpu_pct is None else round(self._cpu_pct, 1)
            for line in open("/proc/self/status").read().splitlines():
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out["rss_mib" if key == "VmRSS" else "rss_peak_mib"] = round(int(rest.split()[0]) / 1024, 1)
            out["load_average"] = [round(x, 2) for x in os.getloadavg()]
        except (OSError, ValueError, IndexError) as exc:
            out["error"] = str(exc)
        return out


def _json_safe(value: Any) -> Any:
    """NaN/inf -> None, tuples -> lists, numpy scalars -> Python (strict JSON)."""
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value
