"""Settings of track reports (the ``reports:`` block, :class:`towerd.reports.tracks.TrackReporter`)."""

from __future__ import annotations

from dataclasses import dataclass

from towerd.schema import spec


@dataclass(frozen=True)
class ReportsSettings:
    """The ``reports:`` block."""

    interval_s: float = spec(1.0, doc="report period of a confirmed track", unit="s", lo=0.05, hi=3600.0)
    include_tentative: bool = spec(False)
