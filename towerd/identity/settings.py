"""Settings of Remote ID fusion (``remote_id:`` in the YAML), beside the components they
configure (:mod:`towerd.identity`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from towerd.schema import spec


@dataclass(frozen=True)
class RadarCoverageSettings:
    """Where the radars see, for the spoof check: a broadcast position inside it with no
    radar echo is contradicted. Applied to every sensor with a mount (its position and
    boresight from ``sensors[].mount``)."""

    fov_azimuth_deg: float = spec(120.0, doc="full azimuth field of view about the boresight (360: all round)",
                                  unit="deg", lo=1.0, hi=360.0)
    fov_elevation_deg: float = spec(60.0, doc="full elevation field of view about the boresight", unit="deg",
                                    lo=1.0, hi=180.0)
    min_range_m: float = spec(2.0, doc="nearer than this the radar does not see", unit="m", lo=0.0, hi=100000.0)
    max_range_m: float = spec(200.0, doc="farther than this the radar does not see a small drone", unit="m",
                              lo=1.0, hi=100000.0)

    def __post_init__(self) -> None:
        if self.min_range_m >= self.max_range_m:
            raise ValueError(f"min_range_m ({self.min_range_m}) must be below max_range_m ({self.max_range_m})")


@dataclass(frozen=True)
class SensorCoverageSettings:
    """One radar's own coverage, in place of ``radar_coverage``."""

    sensor: str = spec(doc="name of a sensor with a mount (under sensors:)")
    coverage: RadarCoverageSettings = spec(doc="where that radar sees")


@dataclass(frozen=True)
class RemoteIdSettings:
    """Remote ID / DJI DroneID broadcasts fused with radar tracks (:mod:`towerd.identity`)."""

    transmitter_timeout_s: float = spec(10.0, doc="a transmitter not heard this long is forgotten (its ID-only "
                                        "track ends)", unit="s", lo=0.5, hi=3600.0)
    max_position_age_s: float = spec(3.0, doc="a broadcast position older than this is not used for association "
                                     "or the spoof check", unit="s", lo=0.1, hi=600.0)
    receiver_position_enu_m: tuple[float, float, float] = spec(
        (0.0, 0.0, 0.0), doc="receiver antenna east/north/up of the tower's reference point", unit="m",
        lo=-1000.0, hi=1000.0)
    receiver_range_m: float = spec(1000.0, doc="horizontal range within which the receivers hear a broadcasting "
                                   "drone (receiver coverage, for non-cooperative tracks; none without an enabled "
                                   "remoteid sensor)", unit="m", lo=1.0, hi=100000.0)
    receiver_silent_after_s: float = spec(60.0, doc="a receiver that has sent nothing at all (no broadcast, "
                                          "heartbeat or banner line) for this long does not count as covering: "
                                          "its silence is not taken for the absence of broadcasts (set it above "
                                          "the longest quiet spell of a firmware that prints only what it hears)",
                                          unit="s", lo=0.5, hi=86400.0)
    radar_coverage: RadarCoverageSettings = spec(RadarCoverageSettings(), doc="where the radars see (every radar "
                                                 "not listed under radars)")
    radars: tuple[SensorCoverageSettings, ...] = spec((), doc="radars with a coverage of their own, by sensor name")
    gate_probability: float = spec(0.999, doc="chi-square probability of the broadcast-to-track gate",
                                   lo=0.5, hi=0.999999)
    default_h_accuracy_m: float = spec(30.0, doc="horizontal accuracy (95 %) of a broadcast that gives none",
                                       unit="m", lo=0.1, hi=100000.0)
    default_v_accuracy_m: float = spec(45.0, doc="vertical accuracy (95 %) of a broadcast that gives none, or "
                                       "gives only a pressure altitude", unit="m", lo=0.1, hi=100000.0)
    default_speed_accuracy_mps: float = spec(10.0, doc="speed accuracy (95 %) of a broadcast that gives none",
                                             unit="m/s", lo=0.01, hi=1000.0)
    latency_s: float = spec(1.0, doc="how old a broadcast position may be when sent (F3411: 1 s); its speed "
                            "over this time is added to its position accuracy", unit="s", lo=0.0, hi=10.0)
    mismatch_after_s: float = spec(5.0, doc="a broadcast the radar contradicts this long raises rid_mismatch",
                                   unit="s", lo=0.0, hi=3600.0)
    mismatch_threat: Literal["none", "low", "medium", "high"] = spec(
        "high", doc="threat level of a track whose broadcast the radar contradicts")
    non_cooperative_after_s: float = spec(10.0, doc="a confirmed uas track in receiver coverage with no matching "
                                          "broadcast this long is non-cooperative", unit="s", lo=0.0, hi=3600.0)
    id_only_interval_s: float = spec(1.0, doc="report period of an ID-only track", unit="s", lo=0.05, hi=3600.0)
    identity_interval_s: float = spec(5.0, doc="a track's identity is sent when it changes and at least this "
                                      "often", unit="s", lo=0.1, hi=3600.0)

    def __post_init__(self) -> None:
        names = [r.sensor for r in self.radars]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"radars: a sensor listed twice: {', '.join(dup)}")

    def coverage_of(self, sensor: str) -> RadarCoverageSettings:
        """The coverage of the radar named ``sensor``."""
        return next((r.coverage for r in self.radars if r.sensor == sensor), self.radar_coverage)
