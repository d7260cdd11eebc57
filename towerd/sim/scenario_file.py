"""Scenario files: the YAML schema of a scenario, validated by :mod:`towerd.schema`
(the project's one validator), and its translation into a :class:`Scenario`.

The schema is the frozen dataclasses below: unknown and duplicate keys, wrong types,
values out of range and missing keys are all reported at once, each naming the file and
the key path (and the line, for a file). The words are the ones scenario authors have
always read ("is required", "must be > 0"); what is checked is towerd.schema's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from towerd.errors import ConfigError
from towerd.schema import INVALID, Problem, Validator, Wording, compose, read_config_text, spec
from towerd.sim.rid_spec import RemoteIdSpec
from towerd.sim.scenario import (
    EMITTER_KINDS,
    TARGET_KINDS,
    ClutterPoint,
    Emitter,
    Interferer,
    MeasurementNoise,
    OrbitPath,
    Scenario,
    Target,
    WaypointPath,
)

MAX_SCENARIO_BYTES = 4 * 1024 * 1024

_PY_TYPE = {"tag:yaml.org,2002:str": "str", "tag:yaml.org,2002:int": "int", "tag:yaml.org,2002:float": "float",
            "tag:yaml.org,2002:bool": "bool", "tag:yaml.org,2002:null": "NoneType"}


def _type_name(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "dict"
    if isinstance(node, SequenceNode):
        return "list"
    return _PY_TYPE.get(node.tag, node.tag)


def _value(node: Node) -> str:
    if isinstance(node, ScalarNode):
        return repr(node.value) if node.tag == "tag:yaml.org,2002:str" else node.value
    return f"a {_type_name(node)}"


def _num(x: float) -> str:
    return f"{x:g}"


class ScenarioWording(Wording):
    """The words of scenario files' problems."""

    def not_mapping(self, node: Node, cls: type) -> str:
        return f"must be a mapping, got {_type_name(node)}"

    def required(self) -> str:
        return "is required"

    def not_list(self, node: Node) -> str:
        return "must be a list"

    def wrong_length(self, node: SequenceNode, n: int) -> str:
        return f"must be a list of {n} finite numbers, got {len(node.value)} items"

    def not_choice(self, node: Node, choices: tuple) -> str:
        return f"must be one of {', '.join(str(c) for c in choices)}, got {_value(node)}"

    def wrong_type(self, node: Node, tp: type) -> str:
        what = {float: "a finite number", int: "an integer", str: "a string", bool: "true or false"}[tp]
        return f"must be {what}, got {_value(node)}"

    def not_finite(self, node: ScalarNode) -> str:
        return f"must be a finite number, got {node.value}"

    def out_of_range(self, node: ScalarNode, lo: float | None, hi: float | None, gt: float | None,
                     unit: str | None) -> str:
        if gt is not None and hi is not None:
            rule = f"must be in ({_num(gt)}, {_num(hi)}]"
        elif gt is not None:
            rule = f"must be > {_num(gt)}"
        elif lo is not None and hi is not None:
            rule = f"must be in [{_num(lo)}, {_num(hi)}]"
        elif lo is not None:
            rule = f"must be >= {_num(lo)}"
        else:
            rule = f"must be <= {_num(hi)}"  # type: ignore[arg-type]
        return f"{rule}, got {node.value}"


_NAME = r".{1,32}"
_NAME_ERROR = "must be a string of 1 to 32 characters"


@dataclass(frozen=True)
class EmitterEntry:
    """An emitter of a target (``emitters:`` item); keys left out take the defaults of
    its kind (EMITTER_DEFAULTS)."""

    kind: Literal[EMITTER_KINDS] = spec(doc="what transmits")  # type: ignore[valid-type]
    centre_mhz: float | tuple[float, ...] | None = spec(
        None, doc="centre frequency, or the channels it hops among", unit="MHz", gt=0.0,
        error="must be a frequency or a list of frequencies > 0")
    bandwidth_mhz: float | None = spec(None, doc="width of its flat spectrum", unit="MHz", gt=0.0)
    tx_power_dbm: float | None = spec(None, doc="EIRP", unit="dBm")
    duty_cycle: float | None = spec(None, doc="fraction of time on the air", gt=0.0, hi=1.0)


@dataclass(frozen=True, kw_only=True)
class InterfererEntry(EmitterEntry):
    """A fixed transmitter (``interferers:`` item): where it stands, and its emitter's keys."""

    name: str = spec(doc="its name", pattern=_NAME, error=_NAME_ERROR)
    east_m: float = spec(doc="ENU east", unit="m")
    north_m: float = spec(doc="ENU north", unit="m")
    up_m: float = spec(doc="ENU up", unit="m")


@dataclass(frozen=True)
class OrbitEntry:
    """A horizontal circle (``orbit:``)."""

    centre_enu_m: tuple[float, float] = spec(doc="(east_m, north_m) of the centre", unit="m")
    radius_m: float = spec(doc="radius", unit="m", gt=0.0)
    speed_mps: float = spec(doc="speed, positive clockwise seen from above", unit="m/s")
    start_deg: float = spec(0.0, doc="compass bearing of the start point from the centre", unit="deg")
    up_m: float = spec(0.0, doc="height", unit="m")
    t_start_s: float = spec(0.0, doc="when it appears", unit="s")
    t_end_s: float | None = spec(None, doc="when it disappears (null: never)", unit="s")


@dataclass(frozen=True)
class TargetEntry:
    """A moving object (``targets:`` item), on exactly one of ``waypoints`` or ``orbit``."""

    name: str = spec(doc="unique name", pattern=_NAME, error=_NAME_ERROR)
    kind: Literal[TARGET_KINDS] = spec(doc="what it is")  # type: ignore[valid-type]
    rcs_dbsm: float = spec(doc="radar cross-section", unit="dBsm")
    waypoints: tuple[tuple[float, float, float, float], ...] | None = spec(
        None, doc="[t_s, east_m, north_m, up_m] rows, times increasing")
    orbit: OrbitEntry | None = spec(None, doc="a circle instead of waypoints")
    emitters: tuple[EmitterEntry, ...] | None = spec((), doc="its radio links")
    remote_id: RemoteIdSpec | None = spec(None, doc="its Remote ID / DroneID broadcast (towerd.sim.rid_spec)")

    def __post_init__(self) -> None:
        if (self.waypoints is None) == (self.orbit is None):
            raise ValueError("needs exactly one of 'waypoints' or 'orbit'")


@dataclass(frozen=True)
class ClutterEntry:
    """A static reflector (``clutter:`` item)."""

    east_m: float = spec(doc="ENU east", unit="m")
    north_m: float = spec(doc="ENU north", unit="m")
    up_m: float = spec(doc="ENU up", unit="m")
    rcs_dbsm: float = spec(doc="radar cross-section", unit="dBsm")


@dataclass(frozen=True)
class NoiseEntry:
    """One-sigma measurement errors (``noise:``)."""

    range_sigma_m: float = spec(MeasurementNoise.range_sigma_m, unit="m", lo=0.0)
    azimuth_sigma_deg: float = spec(MeasurementNoise.azimuth_sigma_deg, unit="deg", lo=0.0)
    elevation_sigma_deg: float = spec(MeasurementNoise.elevation_sigma_deg, unit="deg", lo=0.0)
    doppler_sigma_mps: float = spec(MeasurementNoise.doppler_sigma_mps, unit="m/s", lo=0.0)


@dataclass(frozen=True)
class ScenarioFile:
    """A scenario file (see :mod:`towerd.sim.scenario` for what each part means)."""

    targets: tuple[TargetEntry, ...] = spec(doc="the moving objects")
    name: str | None = spec(None, doc="its name (default: the file's stem)", pattern=r".+",
                            error="must be a non-empty string")
    duration_s: float | None = spec(None, doc="time wraps modulo this (null: never)", unit="s", gt=0.0)
    false_alarms_per_frame: float = spec(0.0, doc="Poisson mean per sensor frame", lo=0.0)
    false_alarm_doppler_mps: float | None = spec(None, doc="every false alarm's radial speed (null: the "
                                                 "emulator's spread)", unit="m/s")
    noise: NoiseEntry = spec(NoiseEntry(), doc="measurement noise")
    clutter: tuple[ClutterEntry, ...] | None = spec((), doc="static reflectors")
    interferers: tuple[InterfererEntry, ...] | None = spec((), doc="fixed transmitters")


def _child(node: Node | None, key: str | int) -> Node | None:
    """The value node under ``key`` (a mapping key or a list index), or None."""
    if isinstance(node, MappingNode) and isinstance(key, str):
        return next((v for k, v in node.value if isinstance(k, ScalarNode) and k.value == key), None)
    if isinstance(node, SequenceNode) and isinstance(key, int) and 0 <= key < len(node.value):
        return node.value[key]
    return None


def _at(root: Node, *keys: str | int) -> tuple[int, int]:
    """(line, column) of the node at ``keys`` under ``root``, or of its deepest parent found."""
    node = root
    for key in keys:
        child = _child(node, key)
        if child is None:
            break
        node = child
    mark = node.start_mark
    return (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)


def _emitter(entry: EmitterEntry) -> Emitter:
    values: dict[str, Any] = {}
    if entry.centre_mhz is not None:
        centres = entry.centre_mhz if isinstance(entry.centre_mhz, tuple) else (entry.centre_mhz,)
        values["centres_mhz"] = centres
    for key in ("bandwidth_mhz", "tx_power_dbm", "duty_cycle"):
        if getattr(entry, key) is not None:
            values[key] = getattr(entry, key)
    return Emitter.of(entry.kind, **values)


def _build(doc: ScenarioFile, root: Node, default_name: str, problems: list[Problem]) -> Scenario | None:
    """The Scenario ``doc`` describes; the checks that span several keys add to ``problems``."""

    def problem(path: str, message: str, *keys: str | int) -> None:
        problems.append(Problem(*_at(root, *keys), path, message))

    def emitter(entry: EmitterEntry, path: str, *keys: str | int) -> Emitter | None:
        try:
            return _emitter(entry)
        except ValueError as exc:
            problem(path, str(exc), *keys)
            return None

    targets: list[Target] = []
    seen: set[str] = set()
    for i, t in enumerate(doc.targets):
        key = f"targets[{i}]"
        path: WaypointPath | OrbitPath | None = None
        if t.waypoints is not None:
            rows = t.waypoints
            bad = [j for j in range(1, len(rows)) if rows[j][0] <= rows[j - 1][0]]
            if len(rows) < 2:
                problem(f"{key}.waypoints", "must be a list of at least two [t_s, east_m, north_m, up_m]",
                        "targets", i, "waypoints")
            elif bad:
                j = bad[0]
                problem(f"{key}.waypoints[{j}]", f"time {rows[j][0]} does not increase on {rows[j - 1][0]}",
                        "targets", i, "waypoints", j)
            else:
                path = WaypointPath(rows)
        elif t.orbit is not None:
            o = t.orbit
            if o.t_end_s is not None and not o.t_end_s > o.t_start_s:
                problem(f"{key}.orbit.t_end_s", f"must be after t_start_s ({o.t_start_s}), got {o.t_end_s}",
                        "targets", i, "orbit", "t_end_s")
            else:
                path = OrbitPath(o.centre_enu_m, o.radius_m, o.speed_mps, o.start_deg, o.up_m, o.t_start_s, o.t_end_s)
        emitters = [emitter(e, f"{key}.emitters[{j}]", "targets", i, "emitters", j)
                    for j, e in enumerate(t.emitters or ())]
        if t.name in seen:
            problem(f"{key}.name", f"duplicate target name {t.name!r}", "targets", i, "name")
        seen.add(t.name)
        if path is not None and None not in emitters:
            targets.append(Target(name=t.name, kind=t.kind, rcs_dbsm=t.rcs_dbsm, path=path,
                                  emitters=tuple(emitters), remote_id=t.remote_id))  # type: ignore[arg-type]
    interferers = []
    for i, entry in enumerate(doc.interferers or ()):
        em = emitter(entry, f"interferers[{i}]", "interferers", i)
        if em is not None:
            interferers.append(Interferer(entry.name, entry.east_m, entry.north_m, entry.up_m, em))
    if problems:
        return None
    noise = doc.noise
    return Scenario(
        name=doc.name if doc.name is not None else default_name,
        targets=tuple(targets),
        clutter=tuple(ClutterPoint(c.east_m, c.north_m, c.up_m, c.rcs_dbsm) for c in doc.clutter or ()),
        false_alarms_per_frame=doc.false_alarms_per_frame,
        noise=MeasurementNoise(noise.range_sigma_m, noise.azimuth_sigma_deg, noise.elevation_sigma_deg,
                               noise.doppler_sigma_mps),
        duration_s=doc.duration_s,
        interferers=tuple(interferers),
        false_alarm_doppler_mps=doc.false_alarm_doppler_mps,
    )


def _format(source: str, p: Problem) -> str:
    text = f"{source}: {p.path}: {p.message}" if p.path else f"{source}: {p.message}"
    return f"{text} (line {p.line})" if p.line else text


def scenario_from_node(root: Node | None, source: str, default_name: str = "scenario") -> Scenario:
    """Validate the YAML node tree of a scenario and build it; ConfigError lists every
    problem, each as ``<source>: <key path>: <what is wrong>``."""
    problems: list[Problem] = []
    scenario = None
    if root is None:
        problems.append(Problem(1, 1, "", "must be a mapping, got NoneType"))
    else:
        v = Validator(wording=ScenarioWording())
        doc = v.build(root, ScenarioFile)
        problems = v.problems
        if doc is not INVALID and not problems:
            scenario = _build(doc, root, default_name, problems)
    if scenario is None:
        raise ConfigError([_format(source, p) for p in sorted(problems, key=lambda p: (p.line, p.column))])
    return scenario


def parse_scenario(raw: Any, source: str, default_name: str = "scenario") -> Scenario:
    """Build a Scenario from already-loaded YAML data (mappings, lists, scalars);
    ConfigError lists every problem."""
    return scenario_from_node(yaml.SafeDumper("").represent_data(raw), source, default_name)


def load_scenario(path: str | Path) -> Scenario:
    """Read a scenario YAML file; ConfigError names the file and every bad key."""
    path = Path(path)
    text, _ = read_config_text(path, MAX_SCENARIO_BYTES, "scenario")
    root, problems = compose(text, str(path))
    if problems:
        raise ConfigError([f"{path}:{p.line}:{p.column}: not valid YAML: {p.message}" for p in problems])
    return scenario_from_node(root, str(path), default_name=path.stem)
