"""Scenarios: what the device emulators see.

A scenario is a set of targets moving in the tower's local ENU frame (east, north, up,
metres, origin at the tower reference point), static clutter, a false-alarm rate and
measurement noise, on a time axis in seconds from scenario start (false alarms: Poisson per sensor frame,
spread over the sensor's field of view by the emulator; ``false_alarm_doppler_mps``
gives them all one radial speed, e.g. 0 for zero-Doppler clutter, instead of the
emulator's spread). It knows nothing of
any sensor: each emulator projects it into its own geometry and wire format, and tests
ask :meth:`Scenario.truth` for the true state at a report's time.

Paths:
- waypoints ``(t_s, east_m, north_m, up_m)``: piecewise-linear; the target exists from
  the first waypoint's time to the last one's, and is absent outside;
- orbit: a horizontal circle of ``radius_m`` about ``centre_enu_m`` = (east, north) at
  height ``up_m``, flown at ``speed_mps`` (positive clockwise seen from above, negative
  anticlockwise), starting at compass bearing ``start_deg`` from the centre at
  ``t_start_s``, present until ``t_end_s`` (None: for ever).

Time wraps: with ``duration_s`` set, time t means scenario time ``t mod duration_s``
(the scenario repeats so a demo can run indefinitely); with ``duration_s`` None time
never wraps and each target lives as long as its path.

Radio: a target may carry :class:`Emitter` s (its control and video links), on the air
while the target is present; fixed :class:`Interferer` s (Wi-Fi access points, ...) stand
still. An emitter is a flat spectrum ``bandwidth_mhz`` wide around each of its
``centres_mhz`` (several centres: it hops among them), radiating ``tx_power_dbm`` EIRP for
``duty_cycle`` of the time. How much of that a receiver sees is the emulator's business.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from towerd.errors import ConfigError
from towerd.sim.rid_spec import RemoteIdSpec

log = logging.getLogger(__name__)

TARGET_KINDS = ("uas", "bird", "vehicle", "person", "aircraft")

TRUTH_DTYPE = np.dtype(
    [
        ("name", "U32"),
        ("kind", "U16"),
        ("east_m", "<f8"),
        ("north_m", "<f8"),
        ("up_m", "<f8"),
        ("vel_east_mps", "<f8"),
        ("vel_north_mps", "<f8"),
        ("vel_up_mps", "<f8"),
    ]
)
"""One row per target present at the requested time; ENU metres and m/s."""

Vec3 = tuple[float, float, float]


@dataclass(frozen=True)
class WaypointPath:
    """Piecewise-linear path through ``waypoints`` = ((t_s, east_m, north_m, up_m), ...).

    Times strictly increase. At a waypoint shared by two legs the later leg's velocity
    is reported; at the last waypoint, the last leg's.
    """

    waypoints: tuple[tuple[float, float, float, float], ...]
    _table: np.ndarray = field(init=False, repr=False, compare=False)  # (N, 4) float

    def __post_init__(self) -> None:
        table = np.asarray(self.waypoints, dtype=float)
        if table.ndim != 2 or table.shape[1] != 4 or len(table) < 2:
            raise ValueError("waypoints need at least two rows of (t_s, east_m, north_m, up_m)")
        if not np.all(np.isfinite(table)):
            raise ValueError("waypoints must be finite")
        if np.any(np.diff(table[:, 0]) <= 0):
            raise ValueError("waypoint times must strictly increase")
        object.__setattr__(self, "_table", table)

    def state(self, t: float) -> tuple[bool, np.ndarray, np.ndarray]:
        """(present, position (3,) ENU m, velocity (3,) ENU m/s) at time ``t`` s."""
        table = self._table
        times = table[:, 0]
        if not times[0] <= t <= times[-1]:
            return False, np.full(3, np.nan), np.full(3, np.nan)
        leg = min(int(np.searchsorted(times, t, side="right")) - 1, len(times) - 2)
        t0, t1 = times[leg], times[leg + 1]
        p0, p1 = table[leg, 1:], table[leg + 1, 1:]
        vel = (p1 - p0) / (t1 - t0)
        return True, p0 + vel * (t - t0), vel


@dataclass(frozen=True)
class OrbitPath:
    """Horizontal circle; see the module docstring for the conventions."""

    centre_enu_m: tuple[float, float]  # (east_m, north_m)
    radius_m: float
    speed_mps: float  # positive clockwise seen from above
    start_deg: float = 0.0  # compass bearing of the start point from the centre
    up_m: float = 0.0
    t_start_s: float = 0.0
    t_end_s: float | None = None

    def __post_init__(self) -> None:
        if len(self.centre_enu_m) != 2:
            raise ValueError("centre_enu_m is (east_m, north_m)")
        if not self.radius_m > 0:
            raise ValueError("radius_m must be > 0")
        if self.t_end_s is not None and not self.t_end_s > self.t_start_s:
            raise ValueError("t_end_s must be after t_start_s")

    def state(self, t: float) -> tuple[bool, np.ndarray, np.ndarray]:
        """Bearing θ(t) = start + speed (t − t_start) / radius (radians, clockwise from north);
        position = centre + radius (sin θ, cos θ), velocity = speed (cos θ, −sin θ, 0)."""
        if t < self.t_start_s or (self.t_end_s is not None and t > self.t_end_s):
            return False, np.full(3, np.nan), np.full(3, np.nan)
        theta = math.radians(self.start_deg) + self.speed_mps * (t - self.t_start_s) / self.radius_m
        s, c = math.sin(theta), math.cos(theta)
        east, north = self.centre_enu_m
        pos = np.array([east + self.radius_m * s, north + self.radius_m * c, self.up_m])
        vel = np.array([self.speed_mps * c, -self.speed_mps * s, 0.0])
        return True, pos, vel


EMITTER_KINDS = ("ocusync", "elrs", "analog_video", "droneid", "wifi", "cw", "bluetooth")

ELRS_FCC915_MHZ = tuple(round(903.5 + 0.6 * i, 3) for i in range(40))
"""ExpressLRS FCC915: 40 LoRa channels, 903.5-926.9 MHz."""
ELRS_EU868_MHZ = tuple(round(863.275 + 0.525 * i, 3) for i in range(13))
"""ExpressLRS EU868: 13 LoRa channels, 863.275-869.575 MHz."""
ELRS_ISM2G4_MHZ = tuple(round(2400.4 + 1.0 * i, 3) for i in range(80))
"""ExpressLRS 2.4 GHz: 80 channels, 2400.4-2479.4 MHz (812.5 kHz wide)."""
BLUETOOTH_MHZ = tuple(2402.0 + i for i in range(79))
"""Bluetooth BR/EDR: 79 channels of 1 MHz, 2402-2480 MHz, 1,600 hops/s."""

EMITTER_DEFAULTS: dict[str, dict[str, Any]] = {
    # DJI OcuSync downlink: OFDM, 10 or 20 MHz on a 1 MHz grid, 2405.5-2477.5 (and 5.8 GHz).
    "ocusync": {"centres_mhz": (2459.5,), "bandwidth_mhz": 10.0, "tx_power_dbm": 20.0, "duty_cycle": 1.0},
    # ExpressLRS control: LoRa 500 kHz hopping every few packets over its channel set.
    "elrs": {"centres_mhz": ELRS_FCC915_MHZ, "bandwidth_mhz": 0.5, "tx_power_dbm": 20.0, "duty_cycle": 0.25},
    # Analog FPV video, continuous, 8-20 MHz wide (Raceband R5 by default).
    "analog_video": {"centres_mhz": (5806.0,), "bandwidth_mhz": 16.0, "tx_power_dbm": 25.0, "duty_cycle": 1.0},
    # DJI DroneID: ~600 us bursts ~10 MHz wide every ~600 ms on a few fixed carriers.
    "droneid": {"centres_mhz": (2414.5, 2429.5, 2444.5, 2459.5), "bandwidth_mhz": 10.0, "tx_power_dbm": 20.0,
                "duty_cycle": 0.001},
    # 802.11 access point on channel 6, busy a third of the time.
    "wifi": {"centres_mhz": (2437.0,), "bandwidth_mhz": 20.0, "tx_power_dbm": 20.0, "duty_cycle": 0.3},
    # An unmodulated carrier; give its centre.
    "cw": {"centres_mhz": (433.92,), "bandwidth_mhz": 0.01, "tx_power_dbm": 0.0, "duty_cycle": 1.0},
    # Bluetooth BR/EDR (class 2, 2.5 mW) with a busy connection: a packet in most slots.
    "bluetooth": {"centres_mhz": BLUETOOTH_MHZ, "bandwidth_mhz": 1.0, "tx_power_dbm": 4.0, "duty_cycle": 0.6},
}
"""Per kind: what a YAML emitter that leaves a key out gets (detection-and-tracking notes)."""


@dataclass(frozen=True)
class Emitter:
    """A transmitter: flat spectrum ``bandwidth_mhz`` wide around each centre; with several
    centres it hops and is on each one ``duty_cycle / len(centres_mhz)`` of the time."""

    kind: str  # one of EMITTER_KINDS
    centres_mhz: tuple[float, ...]
    bandwidth_mhz: float
    tx_power_dbm: float  # EIRP
    duty_cycle: float  # fraction of time on the air, (0, 1]

    def __post_init__(self) -> None:
        if self.kind not in EMITTER_KINDS:
            raise ValueError(f"emitter kind must be one of {', '.join(EMITTER_KINDS)}")
        if not self.centres_mhz or not all(math.isfinite(c) and 0 < c < 100_000 for c in self.centres_mhz):
            raise ValueError("centres_mhz must list at least one frequency in (0, 100000) MHz")
        if not (math.isfinite(self.bandwidth_mhz) and 0 < self.bandwidth_mhz <= 1000):
            raise ValueError("bandwidth_mhz must be in (0, 1000]")
        if not (math.isfinite(self.tx_power_dbm) and -50 <= self.tx_power_dbm <= 60):
            raise ValueError("tx_power_dbm must be in [-50, 60]")
        if not 0 < self.duty_cycle <= 1:
            raise ValueError("duty_cycle must be in (0, 1]")

    @classmethod
    def of(cls, kind: str, **overrides: Any) -> "Emitter":
        """An emitter of ``kind`` with EMITTER_DEFAULTS for every value not given."""
        if kind not in EMITTER_DEFAULTS:
            raise ValueError(f"emitter kind must be one of {', '.join(EMITTER_KINDS)}")
        values = {**EMITTER_DEFAULTS[kind], **overrides}
        values["centres_mhz"] = tuple(float(c) for c in values["centres_mhz"])
        return cls(kind=kind, **values)


@dataclass(frozen=True)
class Interferer:
    """A fixed transmitter that is not a target (an access point, a telemetry link)."""

    name: str
    east_m: float
    north_m: float
    up_m: float
    emitter: Emitter


@dataclass(frozen=True)
class Target:
    """One moving object of the scenario."""

    name: str
    kind: str  # one of TARGET_KINDS
    rcs_dbsm: float  # radar cross-section, dB relative to 1 m²
    path: WaypointPath | OrbitPath
    emitters: tuple[Emitter, ...] = ()  # on the air while the target is present
    remote_id: RemoteIdSpec | None = None  # what it broadcasts as Remote ID / DroneID (towerd.sim.rid_spec)

    def __post_init__(self) -> None:
        if self.kind not in TARGET_KINDS:
            raise ValueError(f"kind must be one of {', '.join(TARGET_KINDS)}")
        if not 0 < len(self.name) <= 32:
            raise ValueError("name must have 1 to 32 characters")
        if not all(isinstance(e, Emitter) for e in self.emitters):
            raise ValueError("emitters must be Emitter instances")

    def state(self, t: float) -> tuple[bool, np.ndarray, np.ndarray]:
        """(present, pos_enu_m (3,), vel_enu_mps (3,)) at path time ``t`` s (no wrapping)."""
        return self.path.state(t)


@dataclass(frozen=True)
class ClutterPoint:
    """A static reflector (mast, roof edge, tree)."""

    east_m: float
    north_m: float
    up_m: float
    rcs_dbsm: float


@dataclass(frozen=True)
class MeasurementNoise:
    """One-sigma measurement errors a sensor adds to each plot."""

    range_sigma_m: float = 0.5
    azimuth_sigma_deg: float = 1.0
    elevation_sigma_deg: float = 2.0
    doppler_sigma_mps: float = 0.1

    def __post_init__(self) -> None:
        for f in fields(self):
            if not getattr(self, f.name) >= 0:
                raise ValueError(f"{f.name} must be >= 0")


@dataclass(frozen=True)
class Scenario:
    """Targets, clutter, false alarms and noise on one time axis (see module docstring)."""

    name: str
    targets: tuple[Target, ...] = ()
    clutter: tuple[ClutterPoint, ...] = ()
    false_alarms_per_frame: float = 0.0  # Poisson mean per sensor frame
    noise: MeasurementNoise = MeasurementNoise()
    duration_s: float | None = None  # time wraps modulo this; None: no wrap
    interferers: tuple[Interferer, ...] = ()  # fixed transmitters
    false_alarm_doppler_mps: float | None = None  # every false alarm's radial speed; None: the emulator's spread

    def __post_init__(self) -> None:
        if not self.false_alarms_per_frame >= 0:
            raise ValueError("false_alarms_per_frame must be >= 0")
        if self.false_alarm_doppler_mps is not None and not math.isfinite(self.false_alarm_doppler_mps):
            raise ValueError("false_alarm_doppler_mps must be finite or None")
        if self.duration_s is not None and not self.duration_s > 0:
            raise ValueError("duration_s must be > 0 or None")
        names = [t.name for t in self.targets]
        if len(set(names)) != len(names):
            raise ValueError("target names must be unique")

    def scenario_time(self, t_s: float) -> float:
        """Elapsed seconds -> scenario time (wrapped when duration_s is set)."""
        return t_s % self.duration_s if self.duration_s is not None else t_s

    def truth(self, t_s: float) -> np.ndarray:
        """True state of every target present at elapsed time ``t_s``: (n,) TRUTH_DTYPE."""
        t = self.scenario_time(t_s)
        rows = []
        for target in self.targets:
            present, pos, vel = target.state(t)
            if present:
                rows.append((target.name, target.kind, *pos, *vel))
        return np.array(rows, dtype=TRUTH_DTYPE)

    def clutter_enu_m(self) -> tuple[np.ndarray, np.ndarray]:
        """Clutter positions (n, 3) ENU metres and their RCS (n,) dBsm."""
        if not self.clutter:
            return np.zeros((0, 3)), np.zeros(0)
        table = np.array([(c.east_m, c.north_m, c.up_m, c.rcs_dbsm) for c in self.clutter], dtype=float)
        return table[:, :3], table[:, 3]

    def nearest(self, t_s: float, enu_m: np.ndarray) -> tuple[float, str, str]:
        """The real object nearest to ENU point ``enu_m`` (3,) at elapsed time ``t_s``:
        (distance m, name, kind), counting clutter (named ``clutter-<i>``, kind
        ``clutter``) as real: a radar sees a lamp post too. (nan, "", "") when empty."""
        truth = self.truth(t_s)
        clutter, _ = self.clutter_enu_m()
        points = np.concatenate([np.stack([truth["east_m"], truth["north_m"], truth["up_m"]], axis=-1), clutter])
        if len(points) == 0:
            return float("nan"), "", ""
        dist = np.linalg.norm(points - np.asarray(enu_m, dtype=float), axis=1)
        i = int(np.argmin(dist))
        if i < len(truth):
            return float(dist[i]), str(truth["name"][i]), str(truth["kind"][i])
        return float(dist[i]), f"clutter-{i - len(truth)}", "clutter"

    def emitters_at(self, t_s: float) -> list[tuple[Emitter, np.ndarray]]:
        """Every emitter on the air at elapsed time ``t_s`` with its ENU position (3,) m:
        those of present targets, then the interferers."""
        t = self.scenario_time(t_s)
        out: list[tuple[Emitter, np.ndarray]] = []
        for target in self.targets:
            if target.emitters:
                present, pos, _ = target.state(t)
                if present:
                    out.extend((e, pos) for e in target.emitters)
        for inter in self.interferers:
            out.append((inter.emitter, np.array([inter.east_m, inter.north_m, inter.up_m], dtype=float)))
        return out

    def rcs_dbsm(self, names: np.ndarray) -> np.ndarray:
        """RCS (n,) dBsm of the targets named in ``names`` (e.g. ``truth(t)["name"]``)."""
        by_name = {t.name: t.rcs_dbsm for t in self.targets}
        return np.array([by_name[str(n)] for n in names], dtype=float)


# --------------------------------------------------------------------------- YAML


def parse_scenario(raw: Any, source: str, default_name: str = "scenario") -> Scenario:
    """Build a Scenario from already-loaded YAML data; ConfigError lists every problem
    (validated by towerd.schema, see :mod:`towerd.sim.scenario_file`)."""
    from towerd.sim.scenario_file import parse_scenario as parse

    return parse(raw, source, default_name)


def load_scenario(path: str | Path) -> Scenario:
    """Read a scenario YAML file; ConfigError names the file and every bad key (see
    :mod:`towerd.sim.scenario_file`)."""
    from towerd.sim.scenario_file import load_scenario as load

    return load(path)


def builtin_scenario(name: str) -> Scenario:
    """A scenario shipped with towerd (also in config/scenarios/<name>.yaml)."""
    try:
        return _BUILTIN[name]()
    except KeyError:
        raise ConfigError(f"unknown built-in scenario {name!r}, expected one of: {', '.join(sorted(_BUILTIN))}") from None


def _demo() -> Scenario:
    """Three small drones for a radar at (0, 0, 10) m ENU looking north (boresight 0),
    all within about 30-150 m and inside a ±60° azimuth, ±30° elevation field of view;
    each carries its radio links, and a Wi-Fi access point stands 300 m away."""
    return Scenario(
        name="demo",
        duration_s=60.0,
        false_alarms_per_frame=1.0,
        noise=MeasurementNoise(range_sigma_m=0.5, azimuth_sigma_deg=1.0, elevation_sigma_deg=2.0,
                               doppler_sigma_mps=0.1),
        clutter=(
            ClutterPoint(15.0, 40.0, 8.0, 10.0),  # lamp post
            ClutterPoint(-50.0, 120.0, 5.0, 20.0),  # barn corner
            ClutterPoint(60.0, 100.0, 6.0, 0.0),  # tree
        ),
        targets=(
            Target("crossing", "uas", -20.0, WaypointPath((
                (0.0, -70.0, 90.0, 25.0),
                (28.0, 70.0, 90.0, 25.0),
                (56.0, -70.0, 90.0, 25.0),
            )), emitters=(
                Emitter.of("ocusync", centres_mhz=(2459.5,), bandwidth_mhz=10.0),
                Emitter.of("droneid"),
            )),
            Target("orbiter", "uas", -18.0, OrbitPath(
                centre_enu_m=(20.0, 60.0), radius_m=25.0, speed_mps=6.0, start_deg=180.0, up_m=28.0,
                t_start_s=0.0, t_end_s=None,
            ), emitters=(
                Emitter.of("elrs", centres_mhz=ELRS_EU868_MHZ, tx_power_dbm=14.0),
                Emitter.of("analog_video", centres_mhz=(5806.0,)),
            )),
            Target("climber", "uas", -15.0, WaypointPath((
                (5.0, -30.0, 50.0, 5.0),
                (12.0, -30.0, 50.0, 5.0),
                (32.0, -40.0, 70.0, 45.0),
                (50.0, -40.0, 70.0, 45.0),
            )), emitters=(
                Emitter.of("ocusync", centres_mhz=(5785.5,), bandwidth_mhz=20.0),
            )),
        ),
        interferers=(
            Interferer("farm-ap", -150.0, 260.0, 6.0, Emitter.of("wifi")),
        ),
    )


_BUILTIN = {"demo": _demo}
