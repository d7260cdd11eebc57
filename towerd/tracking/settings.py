"""Settings of radar tracking (the ``tracking:`` block): the tracker's components,
each with its own settings beside it."""

from __future__ import annotations

from dataclasses import dataclass

from towerd.schema import spec
from towerd.tracking.clutter import StaticClutterSettings
from towerd.tracking.doppler import DopplerSettings
from towerd.tracking.imm import ImmSettings
from towerd.tracking.initiator import InitiationSettings


@dataclass(frozen=True)
class TrackingSettings:
    """The ``tracking:`` block."""

    accel_noise_mps2: float = spec(3.0, doc="CV process noise, 1-sigma acceleration", unit="m/s^2", lo=0.01, hi=100.0)
    gate_probability: float = spec(0.999, doc="chi-square gate probability", lo=0.5, hi=0.999999)
    confirm_hits: int = spec(3, doc="M of M-of-N confirmation", lo=1, hi=64)
    confirm_window: int = spec(5, doc="N of M-of-N confirmation", lo=1, hi=64)
    tentative_max_misses: int = spec(2, doc="consecutive misses that drop a tentative track", lo=0, hi=100)
    confirmed_max_coast_s: float = spec(3.0, doc="time without update that ends a track", unit="s", lo=0.1, hi=600.0)
    coast_after_s: float = spec(0.5, doc="time without update that makes a track coasting", unit="s", lo=0.0, hi=600.0)
    imm: ImmSettings = spec(ImmSettings(), doc="interacting multiple model: CV + left/right constant turns")
    static_clutter: StaticClutterSettings = spec(
        StaticClutterSettings(), doc="static reflectors: withheld, learnt in a clutter map")
    initiation: InitiationSettings = spec(InitiationSettings(), doc="how new tracks start (maximum speed)")
    doppler: DopplerSettings = spec(DopplerSettings(), doc="radial speed in association and confirmation")

    def __post_init__(self) -> None:
        if self.confirm_hits > self.confirm_window:
            raise ValueError(
                f"confirm_hits ({self.confirm_hits}) must not exceed confirm_window ({self.confirm_window})"
            )
        if self.coast_after_s >= self.confirmed_max_coast_s:
            raise ValueError(
                f"coast_after_s ({self.coast_after_s}) must be below confirmed_max_coast_s ({self.confirmed_max_coast_s})"
            )
