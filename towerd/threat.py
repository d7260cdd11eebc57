"""Threat: how much each track matters, from operator-defined zones, the track's
category and its behaviour.

Zones are WGS84 polygons given in the configuration (a border strip, a port of entry, a
prison yard), each with its own rules. A rule names the categories it applies to (and
the least classification confidence it needs), where the track must be — inside the
zone, approaching it (outside, heading in, reaching its edge within the zone's
``approach_time_s`` at its present horizontal velocity), or either — and optionally a
behaviour (hovering: the classifier's hover fraction at least ``min_hover_fraction``;
low: below ``max_height_m`` above ground). The track's threat is the highest level of
every rule of every zone it satisfies, and at least the ``baseline`` level of its
category (anywhere, in no zone).

Geometry is done once in local ENU: the polygon vertices are converted from WGS84 at
start, and per frame every track is tested against every edge of every zone in one vectorised
expression:
- inside: crossing-number (even-odd) test, edges (K, V) at once;
- time to zone: for a track at p with horizontal velocity v, the least t >= 0 with
  p + v t on an edge a→b: with e = b − a, w = a − p and cross(u, v) = uₑvₙ − uₙvₑ,
  t = cross(w, e) / cross(v, e) and s = cross(w, v) / cross(v, e), valid when
  0 <= s <= 1 and cross(v, e) != 0.
The tangent-plane approximation is good to centimetres over the few kilometres a tower
sees.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np

from towerd import geo
from towerd.icd import Category, Threat
from towerd.schema import spec

log = logging.getLogger(__name__)

LEVELS: dict[str, Threat] = {"none": Threat.NONE, "low": Threat.LOW, "medium": Threat.MEDIUM, "high": Threat.HIGH}
CATEGORY_NAMES: dict[str, Category] = {
    "unknown": Category.UNKNOWN,
    "uas": Category.UAS,
    "bird": Category.BIRD,
    "ground_vehicle": Category.GROUND_VEHICLE,
    "manned_aircraft": Category.MANNED_AIRCRAFT,
    "person": Category.PERSON,
}
ZONE_NAME_PATTERN = r"[a-z0-9][a-z0-9_-]{0,31}"
LevelName = Literal["none", "low", "medium", "high"]


def _check_categories(names: tuple[str, ...]) -> None:
    bad = [n for n in names if n not in CATEGORY_NAMES]
    if bad or not names:
        raise ValueError(f"categories must be a non-empty list of {', '.join(CATEGORY_NAMES)}; got {list(names)!r}")


@dataclass(frozen=True)
class ZoneRule:
    """One rule of a zone: who, where, how, and the threat level it sets."""

    categories: tuple[str, ...] = spec(doc="categories the rule applies to: " + ", ".join(CATEGORY_NAMES))
    level: LevelName = spec(doc="threat level the rule sets")
    where: Literal["inside", "approaching", "inside_or_approaching"] = spec(
        "inside_or_approaching", doc="inside the zone, approaching it (see approach_time_s), or either"
    )
    min_confidence: int = spec(0, doc="least category confidence for the rule to apply", unit="%", lo=0, hi=100)
    min_hover_fraction: float | None = spec(None, doc="behaviour: only tracks hovering at least this share", lo=0.0,
                                            hi=1.0)
    max_height_m: float | None = spec(None, doc="behaviour: only tracks below this height above ground", unit="m",
                                      lo=-1000.0, hi=100000.0)

    def __post_init__(self) -> None:
        _check_categories(self.categories)


@dataclass(frozen=True)
class ZoneSettings:
    """An operator-defined zone: a WGS84 polygon and its rules."""

    name: str = spec(doc="zone name (reports, sharing rules)", pattern=ZONE_NAME_PATTERN)
    polygon: tuple[tuple[float, float], ...] = spec(doc="vertices [latitude_deg, longitude_deg], in order",
                                                    unit="deg")
    rules: tuple[ZoneRule, ...] = spec(doc="what makes a track in or near this zone a threat")
    approach_time_s: float = spec(60.0, doc="a track reaching the zone within this time is approaching", unit="s",
                                  lo=0.0, hi=3600.0)
    min_approach_speed_mps: float = spec(0.5, doc="slower tracks are never approaching", unit="m/s", lo=0.0,
                                         hi=1000.0)

    def __post_init__(self) -> None:
        if len(self.polygon) < 3:
            raise ValueError(f"zone {self.name!r}: a polygon needs at least 3 vertices, got {len(self.polygon)}")
        for lat, lon in self.polygon:
            if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
                raise ValueError(f"zone {self.name!r}: vertex ({lat}, {lon}) is not a WGS84 latitude, longitude")


@dataclass(frozen=True)
class ThreatSettings:
    """``threat``: the zones and the baseline level of each category anywhere."""

    zones: tuple[ZoneSettings, ...] = spec((), doc="operator-defined zones, each with its rules")
    baseline_uas: LevelName = spec("low", doc="threat of a uas in no zone")
    baseline_unknown: LevelName = spec("none", doc="threat of an unclassified track in no zone")
    baseline_manned_aircraft: LevelName = spec("none", doc="threat of a manned aircraft in no zone")
    baseline_person: LevelName = spec("none", doc="threat of a person in no zone")
    baseline_ground_vehicle: LevelName = spec("none", doc="threat of a ground vehicle in no zone")
    baseline_bird: LevelName = spec("none", doc="threat of a bird in no zone")

    def __post_init__(self) -> None:
        names = [z.name for z in self.zones]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate zone names: {', '.join(dup)}")

    def baseline(self) -> np.ndarray:
        """(6,) u1 level indexed by category value."""
        out = np.zeros(len(Category), dtype=np.uint8)
        for name, cat in CATEGORY_NAMES.items():
            out[int(cat)] = LEVELS[getattr(self, f"baseline_{name}")]
        return out


def _category_table(names: tuple[str, ...]) -> np.ndarray:
    """(256,) bool, True at the u1 codes of the category ``names``: a rule's category test
    is one look-up per track."""
    table = np.zeros(256, dtype=bool)
    table[[int(CATEGORY_NAMES[c]) for c in names]] = True
    table.flags.writeable = False
    return table


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """z of the 2D cross product, broadcast over leading axes: aₑ bₙ − aₙ bₑ."""
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


@dataclass(frozen=True, eq=False)
class _Edges:
    """The edges of one or more polygons, for tests of many points against all of them in
    one expression: starts a (E, 2), the per-edge constants, and where each polygon's
    edges begin (P,) (its edges are a[first[i]:first[i + 1]])."""

    a: np.ndarray
    b: np.ndarray  # (E, 2) ends
    e: np.ndarray  # (E, 2) b − a
    first: np.ndarray

    @staticmethod
    def of(polygons: list[np.ndarray]) -> _Edges:
        a = np.concatenate(polygons) if polygons else np.zeros((0, 2))
        b = np.concatenate([np.roll(v, -1, axis=0) for v in polygons]) if polygons else np.zeros((0, 2))
        first = np.cumsum([0] + [len(v) for v in polygons[:-1]]).astype(np.intp)
        return _Edges(a, b, b - a, first)

    def contains(self, p: np.ndarray) -> np.ndarray:
        """(N, 2) east/north -> (N, P) inside each polygon (even-odd rule; points on an edge
        may go either way)."""
        a, e = self.a, self.e
        py = p[:, None, 1]
        ay = a[None, :, 1]
        straddles = (ay > py) != (self.b[None, :, 1] > py)  # (N, E)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_cross = a[None, :, 0] + (py - ay) * e[None, :, 0] / e[None, :, 1]
        crossings = straddles & (p[:, None, 0] < x_cross)
        return (np.add.reduceat(crossings, self.first, axis=1, dtype=np.intp) % 2) == 1

    def time_to_enter(self, p: np.ndarray, v: np.ndarray, inside: np.ndarray) -> np.ndarray:
        """(N, P) least time (s) for points (N, 2) moving at (N, 2) m/s to reach an edge of
        each polygon; inf when their line never meets one ahead, 0 where ``inside`` (N, P)."""
        e = self.e[None, :, :]  # (1, E, 2)
        w = self.a[None, :, :] - p[:, None, :]  # (N, E, 2)
        denom = _cross(v[:, None, :], e)  # (N, E)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = _cross(w, e) / denom
            s = _cross(w, v[:, None, :]) / denom
        ok = (denom != 0) & (t >= 0) & (s >= 0) & (s <= 1)
        return np.where(inside, 0.0, np.minimum.reduceat(np.where(ok, t, np.inf), self.first, axis=1))


@dataclass(frozen=True, eq=False)
class Zone:
    """A zone ready for per-frame tests: its polygon in local ENU (east, north), (V, 2)."""

    settings: ZoneSettings
    vertices_en_m: np.ndarray

    @property
    def name(self) -> str:
        return self.settings.name

    @cached_property
    def _edges(self) -> _Edges:
        return _Edges.of([self.vertices_en_m])

    def contains(self, en_m: np.ndarray) -> np.ndarray:
        """(N, 2) east/north -> (N,) inside (even-odd rule; points on an edge may go either way)."""
        return self._edges.contains(np.asarray(en_m, dtype=float).reshape(-1, 2))[:, 0]

    def time_to_enter(self, en_m: np.ndarray, vel_en_mps: np.ndarray, inside: np.ndarray | None = None) -> np.ndarray:
        """(N,) least time (s) for points (N, 2) moving at (N, 2) m/s to reach an edge;
        inf when their line never meets one ahead (0 for points inside; ``inside``: the
        points' :meth:`contains`, when the caller has it already)."""
        p = np.asarray(en_m, dtype=float).reshape(-1, 2)
        v = np.asarray(vel_en_mps, dtype=float).reshape(-1, 2)
        inside = self.contains(p) if inside is None else np.asarray(inside, dtype=bool)
        return self._edges.time_to_enter(p, v, inside[:, None])[:, 0]


@dataclass(frozen=True, eq=False)
class ThreatAssessment:
    """Per track: ``threat`` (K,) u1 (:class:`~towerd.icd.Threat`), ``inside`` (K, Z) bool
    and ``time_to_zone_s`` (K, Z) (0 inside, inf never), zones in ``zone_names`` order."""

    threat: np.ndarray
    inside: np.ndarray
    time_to_zone_s: np.ndarray
    zone_names: tuple[str, ...]


class ThreatAssessor:
    """Zones in local ENU plus the rules; see the module docstring."""

    def __init__(self, settings: ThreatSettings, site: geo.Site) -> None:
        self.settings = settings
        self.site = site
        self.zones = tuple(
            Zone(z, self._to_en(np.asarray(z.polygon, dtype=float))) for z in settings.zones
        )
        self._baseline = settings.baseline()
        self._rule_categories = tuple(tuple(_category_table(rule.categories) for rule in z.settings.rules)
                                      for z in self.zones)
        self._edges = _Edges.of([z.vertices_en_m for z in self.zones])
        self._approach_time_s = np.array([z.settings.approach_time_s for z in self.zones])
        self._min_approach_speed_mps = np.array([z.settings.min_approach_speed_mps for z in self.zones])

    @property
    def zone_names(self) -> tuple[str, ...]:
        return tuple(z.name for z in self.zones)

    def _to_en(self, lat_lon: np.ndarray) -> np.ndarray:
        """(N, 2) latitude, longitude -> (N, 2) east, north metres about the site."""
        enu = geo.geodetic_to_enu(self.site, lat_lon[:, 0], lat_lon[:, 1], np.full(len(lat_lon), self.site.height_m))
        return enu[:, :2]

    def zones_at(self, lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
        """(N,) WGS84 points -> (N, Z) bool: inside which zones (``zone_names`` order)."""
        en = self._to_en(np.column_stack([np.atleast_1d(lat_deg), np.atleast_1d(lon_deg)]).astype(float))
        return self.zones_at_enu(en)

    def zones_at_enu(self, en_m: np.ndarray) -> np.ndarray:
        """(N, 2 or 3) local ENU points -> (N, Z) bool."""
        p = np.asarray(en_m, dtype=float).reshape(len(en_m), -1)[:, :2]
        if not self.zones:
            return np.zeros((len(p), 0), dtype=bool)
        return self._edges.contains(p)

    def zone_of(self, lat_deg: float, lon_deg: float) -> set[str]:
        """Names of the zones containing one WGS84 point."""
        inside = self.zones_at(np.array([lat_deg]), np.array([lon_deg]))[0]
        return {name for name, hit in zip(self.zone_names, inside) if hit}

    def baseline_of(self, category: np.ndarray) -> np.ndarray:
        """(K,) u1 threat of K tracks of ``category`` (K,) u1 in no zone: the baseline
        level of each category (a new array)."""
        return self._baseline[np.minimum(category, len(self._baseline) - 1)]

    def assess(
        self,
        pos_enu_m: np.ndarray,
        vel_enu_mps: np.ndarray,
        category: np.ndarray,
        confidence: np.ndarray,
        *,
        hover_fraction: np.ndarray | None = None,
        height_m: np.ndarray | None = None,
    ) -> ThreatAssessment:
        """Threat of K tracks: pos_enu_m (K, 3), vel_enu_mps (K, 3), category (K,) u1,
        confidence (K,) 0–100, hover_fraction (K,) and height above ground (K,) m (NaN or
        None: unknown, and a rule that needs them does not apply)."""
        k = len(pos_enu_m)
        category = np.asarray(category, dtype=np.uint8)
        threat = self.baseline_of(category)
        if not self.zones:  # the baseline alone
            return ThreatAssessment(threat, np.zeros((k, 0), dtype=bool), np.zeros((k, 0)), ())
        confidence = np.asarray(confidence)
        hover = np.full(k, np.nan) if hover_fraction is None else np.asarray(hover_fraction, dtype=float)
        height = np.full(k, np.nan) if height_m is None else np.asarray(height_m, dtype=float)
        p, v = np.asarray(pos_enu_m, dtype=float)[:, :2], np.asarray(vel_enu_mps, dtype=float)[:, :2]
        inside = self._edges.contains(p)  # (K, Z): every zone's edges at once
        ttz = self._edges.time_to_enter(p, v, inside)
        speed = np.hypot(v[:, 0], v[:, 1])
        approaching = ~inside & (ttz <= self._approach_time_s) & (speed[:, None] >= self._min_approach_speed_mps)
        for j, zone in enumerate(self.zones):
            for rule, in_rule in zip(zone.settings.rules, self._rule_categories[j]):
                ok = in_rule[category] & (confidence >= rule.min_confidence)
                if rule.where == "inside":
                    ok &= inside[:, j]
                elif rule.where == "approaching":
                    ok &= approaching[:, j]
                else:
                    ok &= inside[:, j] | approaching[:, j]
                if rule.min_hover_fraction is not None:
                    ok &= hover >= rule.min_hover_fraction
                if rule.max_height_m is not None:
                    ok &= height < rule.max_height_m
                threat = np.where(ok, np.maximum(threat, np.uint8(LEVELS[rule.level])), threat)
        return ThreatAssessment(threat.astype(np.uint8), inside, ttz, self.zone_names)
