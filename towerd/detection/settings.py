"""Settings of detection (the ``detection:`` block): how the plots of one frame are
merged (:class:`towerd.detection.cluster.PointClusterer`)."""

from __future__ import annotations

from dataclasses import dataclass

from towerd.schema import spec


@dataclass(frozen=True)
class DetectionSettings:
    """The ``detection:`` block."""

    cluster_points: bool = spec(True, doc="merge the several plots one target gives in a frame")
    target_extent_m: float = spec(1.0, doc="one-sigma spread of one target's scatterers", unit="m", lo=0.0, hi=100.0)
    cluster_gate_probability: float = spec(0.99, doc="chi-square probability for merging plots", lo=0.5, hi=0.999999)
