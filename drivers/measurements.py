"""What drivers produce: sensor-relative radar plots in one common form.

Every radar driver, whatever its wire format, yields :class:`RadarPlots` whose ``plots``
array has :data:`PLOT_DTYPE`. Positions are in the sensor's own frame; turning them into
earth coordinates is the detection layer's job (it knows the mounting).
"""

from __future__ import annotations

import enum
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


CARTESIAN_PLOT_DTYPE = np.dtype(
    [
        ("x_m", "<f4"),  # sensor frame: right of boresight, metres
        ("y_m", "<f4"),  # along boresight
        ("z_m", "<f4"),  # up
        ("radial_vel_mps", "<f4"),  # Doppler velocity, positive moving away; NaN when unknown
        ("snr_db", "<f4"),  # NaN when unknown
    ]
)
"""One row per plot of a radar that measures Cartesian points (TI mmWave's point cloud,
float32 as the radar sends them). A reading may carry a view of a parser's own rows with
these fields at other offsets (:func:`cartesian_dtype`): consumers read the fields by name."""


def cartesian_dtype(rows: np.dtype, names: dict[str, str]) -> np.dtype:
    """The dtype that views structured rows of dtype ``rows`` (no copy) as a Cartesian
    plot: ``names`` maps each CARTESIAN_PLOT_DTYPE field name to the field of ``rows`` it is."""
    fields = rows.fields
    return np.dtype({
        "names": list(names), "formats": [fields[src][0] for src in names.values()],
        "offsets": [fields[src][1] for src in names.values()], "itemsize": rows.itemsize,
    })


def spherical_plots(cartesian: np.ndarray) -> np.ndarray:
    """CARTESIAN_PLOT_DTYPE rows -> PLOT_DTYPE rows (sensor frame x right, y boresight, z up):

        range_m       = sqrt(x² + y² + z²)
        azimuth_deg   = atan2(x, y)           clockwise from boresight, in (-180, 180]
        elevation_deg = atan2(z, hypot(x, y))
    """
    x, y, z = (cartesian[name].astype(np.float64) for name in ("x_m", "y_m", "z_m"))
    horiz = np.hypot(x, y)
    azimuth = np.degrees(np.arctan2(x, y))
    plots = empty_plots(len(cartesian))
    plots["range_m"] = np.hypot(horiz, z)
    plots["azimuth_deg"] = np.where(azimuth <= -180.0, azimuth + 360.0, azimuth)
    plots["elevation_deg"] = np.degrees(np.arctan2(z, horiz))
    plots["radial_vel_mps"] = cartesian["radial_vel_mps"]
    plots["snr_db"] = cartesian["snr_db"]
    return plots


class _PlotsOf:
    """``RadarPlots.plots``: as given, or, for a reading made from Cartesian points, derived
    from them on first access (the pipeline reads the points themselves and never pays for
    the conversion; tools and the web console that show range/azimuth/elevation do)."""

    def __get__(self, obj: object, owner: type | None = None) -> np.ndarray | None:
        if obj is None:
            return None  # the dataclass field's default
        plots = obj.__dict__.get("_plots")
        if plots is None:
            cartesian = obj.__dict__.get("cartesian")
            plots = spherical_plots(cartesian) if cartesian is not None else empty_plots(0)
            obj.__dict__["_plots"] = plots
        return plots

    def __set__(self, obj: object, value: np.ndarray | None) -> None:
        obj.__dict__["_plots"] = value


@dataclass(frozen=True)
class RadarPlots:
    """The plots of one radar frame (scan): ``plots`` (PLOT_DTYPE, spherical), or, from a
    radar that measures Cartesian points, ``cartesian`` (CARTESIAN_PLOT_DTYPE), the form
    detection uses as it is; ``plots`` is then derived from it when read."""

    sensor: str
    t_mono: float  # monotonic seconds when the frame's last byte was read
    frame_number: int
    plots: np.ndarray = _PlotsOf()  # type: ignore[assignment]  # shape (n,), dtype PLOT_DTYPE
    cartesian: np.ndarray | None = None  # shape (n,), CARTESIAN_PLOT_DTYPE, or None

    @classmethod
    def of(cls, sensor: str, t_mono: float, frame_number: int, cartesian: np.ndarray) -> RadarPlots:
        """``RadarPlots(sensor, t_mono, frame_number, cartesian=cartesian)``, made for a driver
        at its frame rate without the frozen dataclass's per-field ``object.__setattr__``
        (``plots`` is derived when read, as it is then)."""
        reading = object.__new__(cls)
        fields = reading.__dict__  # four stores: a third cheaper than update() with keywords
        fields["sensor"] = sensor
        fields["t_mono"] = t_mono
        fields["frame_number"] = frame_number
        fields["cartesian"] = cartesian
        return reading


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

    @classmethod
    def of(cls, sensor: str, t_mono: float, sweep_number: int, start_freq_mhz: float, step_freq_mhz: float,
           power_dbm: np.ndarray, band: str, rbw_khz: float, calculator: str) -> Spectrum:
        """The same object as the constructor with every field given, made for a driver at
        its sweep rate: the frozen dataclass's ``__init__`` (one ``object.__setattr__`` per
        field) costs more than decoding a short sweep."""
        spectrum = object.__new__(cls)
        spectrum.__dict__.update(sensor=sensor, t_mono=t_mono, sweep_number=sweep_number,
                                 start_freq_mhz=start_freq_mhz, step_freq_mhz=step_freq_mhz, power_dbm=power_dbm,
                                 band=band, rbw_khz=rbw_khz, calculator=calculator)
        return spectrum

    @classmethod
    def sweeps(cls, sensor: str, t_mono: float, first_number: int, start_freq_mhz: float, step_freq_mhz: float,
               power_dbm: np.ndarray, band: str, rbw_khz: float, calculator: str) -> list[Spectrum]:
        """One spectrum per row of ``power_dbm`` (shape (sweeps, n)), numbered from
        ``first_number``, the same objects as :meth:`of` would make one by one (a device
        streams a run of short sweeps per read: their common fields are set once)."""
        common = {"sensor": sensor, "t_mono": t_mono, "start_freq_mhz": start_freq_mhz,
                  "step_freq_mhz": step_freq_mhz, "band": band, "rbw_khz": rbw_khz, "calculator": calculator}
        spectra, new = [], object.__new__
        for number, row in enumerate(power_dbm, first_number):
            spectrum = new(cls)
            fields = spectrum.__dict__
            fields.update(common)
            fields["sweep_number"] = number
            fields["power_dbm"] = row
            spectra.append(spectrum)
        return spectra


class RidSource(enum.IntEnum):
    """How a Remote ID broadcast reached the receiver (the ICD carries the number)."""

    UNKNOWN = 0
    BLUETOOTH_LEGACY = 1  # ASTM F3411 over Bluetooth 4 advertising
    BLUETOOTH_LONG_RANGE = 2  # ASTM F3411 over Bluetooth 5 coded PHY / extended advertising
    WIFI_BEACON = 3  # ASTM F3411 in a Wi-Fi beacon vendor element
    WIFI_NAN = 4  # ASTM F3411 over Wi-Fi Neighbour Awareness Networking
    DJI_DRONEID = 5  # DJI's own DroneID broadcast (Wi-Fi or OcuSync)


@dataclass(frozen=True, eq=False)
class RemoteIdReading:
    """What one received Remote ID broadcast said (one JSON line, or one F3411 message or
    message pack), in one form whatever the receiver's dialect.

    A broadcast often carries only part of the picture (a Basic ID message has no
    position, a Location message no serial number): fields it did not carry stay at their
    "unknown" value ("" for text, NaN for numbers, 0 for the enumerations, whose 0 is
    F3411's "none/undeclared"). Whoever consumes readings merges them per
    ``transmitter``. Numbers are in SI units, positions WGS84; F3411's scalings, accuracy
    classes (taken as the class's bound) and "unknown" encodings are already undone.
    """

    sensor: str
    t_mono: float  # monotonic seconds when the broadcast's last byte was read
    transmitter: str  # the broadcaster's MAC address, lower case "aa:bb:cc:dd:ee:ff"; "" if not given
    source: RidSource = RidSource.UNKNOWN
    rssi_dbm: float = float("nan")
    uas_id: str = ""  # serial number / registration as broadcast (<= 20 chars); UUID / session id as hex (<= 40)
    id_type: int = 0  # F3411 ID type: 0 none, 1 serial (CTA-2063-A), 2 CAA registration, 3 UTM UUID, 4 session id
    ua_type: int = 0  # F3411 UA type: 0 none, 1 aeroplane, 2 helicopter/multirotor, ... 15 other
    status: int = 0  # F3411 operational status: 0 undeclared, 1 ground, 2 airborne, 3 emergency, 4 RID failure
    lat_deg: float = float("nan")  # the drone's WGS84 position as broadcast
    lon_deg: float = float("nan")
    alt_geo_m: float = float("nan")  # geodetic (WGS84 ellipsoid) altitude
    alt_baro_m: float = float("nan")  # pressure altitude
    height_m: float = float("nan")  # height above take-off or ground (see height_above_takeoff)
    height_above_takeoff: bool = True
    speed_mps: float = float("nan")  # horizontal ground speed
    course_deg: float = float("nan")  # direction of travel, true north, clockwise
    vertical_speed_mps: float = float("nan")  # positive up
    h_accuracy_m: float = float("nan")  # horizontal position accuracy (class bound, 95 %)
    v_accuracy_m: float = float("nan")  # vertical (geodetic altitude) accuracy
    speed_accuracy_mps: float = float("nan")
    broadcast_time_s: float = float("nan")  # F3411 timestamp: seconds after the full UTC hour
    operator_lat_deg: float = float("nan")  # where the pilot stands (F3411 System msg / DJI app position)
    operator_lon_deg: float = float("nan")
    operator_alt_m: float = float("nan")
    operator_location_type: int = 0  # F3411: 0 take-off, 1 live GNSS, 2 fixed
    operator_id: str = ""  # F3411 Operator ID message text
    self_id: str = ""  # F3411 Self ID description text
    home_lat_deg: float = float("nan")  # DJI DroneID home point
    home_lon_deg: float = float("nan")
