"""Tracking settings for the tracker tests, whose detections are bare positions."""

from __future__ import annotations

import math

from towerd.config import TrackingConfig
from towerd.gates import chi2_quantile
from towerd.tracking.doppler import DopplerSettings
from towerd.tracking.imm import ImmSettings
from towerd.tracking.initiator import InitiationSettings
from towerd.tracking.score import ScoreSettings

INITIAL_VELOCITY_SIGMA_MPS = 15.0


def tracker_settings(accel_noise_mps2: float, gate_probability: float, confirm_hits: int, confirm_window: int,
                     tentative_max_misses: int, confirmed_max_coast_s: float, coast_after_s: float = 0.0, *,
                     imm: ImmSettings | None = None) -> TrackingConfig:
    """Settings for towerd.tracking.compose.build_tracker, the production composition: a
    constant-velocity filter unless ``imm`` is given and enabled; no radial-speed gate
    (these detections carry no radial speed); no track score; tracks start at any range; new tracks get a
    velocity sigma of 15 m/s (initiation.max_speed_mps = 15 sqrt(gate), the speed bound
    that gives it)."""
    gate = chi2_quantile(gate_probability, 3) if 0.0 < gate_probability < 1.0 else 1.0
    return TrackingConfig(
        accel_noise_mps2=accel_noise_mps2, gate_probability=gate_probability, confirm_hits=confirm_hits,
        confirm_window=confirm_window, tentative_max_misses=tentative_max_misses,
        confirmed_max_coast_s=confirmed_max_coast_s, coast_after_s=coast_after_s,
        imm=imm if imm is not None else ImmSettings(enabled=False),
        initiation=InitiationSettings(max_speed_mps=INITIAL_VELOCITY_SIGMA_MPS * math.sqrt(gate), min_range_m=0.0),
        doppler=DopplerSettings(enabled=False),
        score=ScoreSettings(enabled=False),
    )
