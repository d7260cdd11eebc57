"""What drivers produce: sensor-relative radar plots in one common form.

Every radar driver, whatever its wire format, yields :class:`RadarPlots` whose ``plots``
array has :data:`PLOT_DTYPE`. Positions are in the sensor's own frame; turning them into
earth coordinates is the detection layer's job (it knows the mounting).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PLOT_DTYPE = np.dtype(
    [
        ("range_m", "<f8"),  # slant range from the sensor, metres
        ("azimuth_deg", "<f8"),  # clockwise from boresight, or from true north if azimuth_is_true
        ("elevation_deg", "<f8"),  # above the sensor's horizontal plane; NaN when unknown
        ("radial_vel_mps", "<f8"),  # Doppler velocity, positive moving away; NaN when unknown
        ("speed_mps", "<f8"),  # ground speed reported by the sensor's own tracker; NaN if none
        ("course_deg", "<f8"),  # course over ground, true, reported by the sensor; NaN if none
        ("snr_db", "<f8"),  # signal to noise ratio, dB; NaN when unknown
        ("azimuth_is_true", "?"),  # True: azimuth_deg is from true north, not from boresight
        ("target_id", "<i4"),  # the sensor's own target number, -1 when it has none
    ]
)
"""One row per radar plot (detection) in the sensor frame."""


def empty_plots(n: int = 0) -> np.ndarray:
    """Plots array of length ``n`` with every optional field unknown (NaN / -1)."""
    plots = np.zeros(n, dtype=PLOT_DTYPE)
    for name in ("elevation_deg", "radial_vel_mps", "speed_mps", "course_deg", "snr_db"):
        plots[name] = np.nan
    plots["target_id"] = -1
    return plots


@dataclass(frozen=True)
class RadarPlots:
    """The plots of one radar frame (scan)."""

    sensor: str
    t_mono: float  # monotonic seconds when the frame's last byte was read
    frame_number: int
    plots: np.ndarray  # shape (n,), dtype PLOT_DTYPE


GEO_PLOT_DTYPE = np.dtype(
    [
        ("latitude_deg", "<f8"),  # WGS84, south negative
        ("longitude_deg", "<f8"),  # WGS84, west negative
        ("height_m", "<f8"),  # WGS84 ellipsoidal height; NaN when the sensor does not say (2D radar)
        ("speed_mps", "<f8"),  # ground speed reported by the sensor; NaN if none
        ("course_deg", "<f8"),  # course over ground, true; NaN if none
        ("target_id", "<i4"),  # the sensor's own target number, -1 when it has none
    ]
)
"""One row per target a sensor reports as an earth position rather than relative to itself."""


def empty_geo_plots(n: int = 0) -> np.ndarray:
    """Geo plots array of length ``n`` with every optional field unknown (NaN / -1)."""
    plots = np.zeros(n, dtype=GEO_PLOT_DTYPE)
    for name in ("height_m", "speed_mps", "course_deg"):
        plots[name] = np.nan
    plots["target_id"] = -1
    return plots


@dataclass(frozen=True, eq=False)
class GeoPlots:
    """Targets of one scan given as WGS84 positions (e.g. NMEA TLL sentences).

    Not sensor-relative: the sensor has already placed them on the earth, so the
    detection layer converts them to local ENU with the tower's site (no mounting). A
    driver cannot turn them into range/bearing itself, since it does not know where the
    sensor is.
    """

    sensor: str
    t_mono: float  # monotonic seconds when the scan's last sentence was read
    frame_number: int  # counts scans of this sensor
    plots: np.ndarray  # shape (n,), dtype GEO_PLOT_DTYPE


@dataclass(frozen=True, eq=False)
class Spectrum:
    """One sweep of a spectrum analyser: power at evenly spaced frequencies.

    Frequency of point i is ``start_freq_mhz + i * step_freq_mhz``. ``power_dbm`` is
    what the device reports per point (for an RF Explorer: the amplitude byte decoded,
    plus the configured offset), already in dBm over the device's resolution bandwidth.
    """

    sensor: str
    t_mono: float  # monotonic seconds when the sweep's last byte was read
    sweep_number: int  # counts sweeps of this sensor since it opened
    start_freq_mhz: float
    step_freq_mhz: float
    power_dbm: np.ndarray  # shape (n,), float32, dBm per point
    band: str = ""  # scan-plan band the device was tuned to, "" when none
    rbw_khz: float = float("nan")  # resolution bandwidth, NaN when the device does not say
    calculator: str = "normal"  # device trace mode: normal | max | avg | overwrite | max-hold

    @property
    def freq_mhz(self) -> np.ndarray:
        """(n,) centre frequency of each point, MHz."""
        return self.start_freq_mhz + self.step_freq_mhz * np.arange(len(self.power_dbm))
