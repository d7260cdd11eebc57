"""Radar plots (sensor frame, spherical) -> detections in local ENU with covariances.

A driver's :class:`~towerd.drivers.measurements.RadarPlots` are relative to the antenna:
slant range, azimuth clockwise from boresight and elevation above the antenna's own
horizontal plane. :class:`PlotConverter` knows how the antenna is mounted on the tower
and turns each plot into a point in the tower's local ENU frame with a 3x3 covariance,
which is what association and the Kalman update consume.

Conversion of one plot (range r, azimuth a, elevation e):

    s = (r cos e sin a, r cos e cos a, r sin e)          sensor frame (geo.spherical_to_cartesian)
    p = R s + m                                         ENU; R = geo.mount_rotation, m = mount position
    C = R J diag(σr², σa², σe²) Jᵀ Rᵀ                   J = ∂s/∂(r, a, e), angles in radians

    J = [[cos e sin a,   r cos e cos a,  -r sin e sin a],
         [cos e cos a,  -r cos e sin a,  -r sin e cos a],
         [sin e,          0,              r cos e      ]]

A radar that measures Cartesian points (TI mmWave: ``RadarPlots.cartesian``) gives s
itself: p = R s + m with no trigonometry, and J from s (h = hypot(x, y), r = |s|, since
cos e sin a = x / r, cos e cos a = y / r, sin e = z / r, r cos e = h):

    J = [[x / r,   y,  -z x / h],
         [y / r,  -x,  -z y / h],
         [z / r,   0,   h      ]]

(on the vertical axis, h = 0, the azimuth-0 limit x/h = 0, y/h = 1; at the antenna, r = 0,
boresight's (0, 1, 0) for s / r, as the spherical form has it).

Rows are independent; every step is one vectorised expression over all rows.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from towerd import geo
from towerd.drivers.measurements import GeoPlots, RadarPlots
from towerd.errors import ConfigError

log = logging.getLogger(__name__)

UNKNOWN_ELEVATION_SIGMA_DEG = 15.0
"""Elevation one-sigma used when a plot has no elevation (2D radar): about half the
elevation beamwidth of a typical 2D surveillance radar. At range r it spreads the
detection vertically by r · 0.26 (260 m at 1 km), so the tracker's height estimate is
weak until another sensor measures it, but association on the horizontal still works."""


@dataclass(frozen=True)
class SensorMount:
    """Where and how an antenna is mounted on the tower.

    position_enu_m: antenna position relative to the tower reference point (east, north,
    up, metres). boresight_azimuth_deg: clockwise from true north. tilt_deg: boresight
    elevation above the horizontal (positive up).
    """

    position_enu_m: tuple[float, float, float]
    boresight_azimuth_deg: float
    tilt_deg: float = 0.0

    def __post_init__(self) -> None:
        if len(self.position_enu_m) != 3 or not np.all(np.isfinite(self.position_enu_m)):
            raise ConfigError(f"sensor position_enu_m must be 3 finite numbers, got {self.position_enu_m!r}")
        if not np.isfinite(self.boresight_azimuth_deg) or not -90.0 <= self.tilt_deg <= 90.0:
            raise ConfigError(
                f"sensor boresight azimuth must be finite and tilt within [-90, 90] deg, got "
                f"{self.boresight_azimuth_deg!r} / {self.tilt_deg!r}"
            )


@dataclass(frozen=True)
class MeasurementNoise:
    """One-sigma measurement errors of a radar (metres, degrees, m/s).

    radial_speed_sigma_mps: one-sigma error of a plot's radial speed (measured Doppler,
    or derived from a reported ground velocity). unambiguous_speed_mps: A > 0 when the
    sensor measures radial speed only modulo 2A (a TI chirp profile folds Doppler beyond
    ±λ/(4 T_c)); 0 when radial speeds do not fold.
    """

    range_sigma_m: float
    azimuth_sigma_deg: float
    elevation_sigma_deg: float
    radial_speed_sigma_mps: float = 0.5
    unambiguous_speed_mps: float = 0.0

    def __post_init__(self) -> None:
        sigmas = (self.range_sigma_m, self.azimuth_sigma_deg, self.elevation_sigma_deg, self.radial_speed_sigma_mps)
        if not all(np.isfinite(s) and s > 0 for s in sigmas):
            raise ConfigError(f"measurement sigmas must be finite and > 0, got {sigmas!r}")
        if not (np.isfinite(self.unambiguous_speed_mps) and self.unambiguous_speed_mps >= 0):
            raise ConfigError(f"unambiguous_speed_mps must be finite and >= 0, got {self.unambiguous_speed_mps!r}")


@dataclass(frozen=True, eq=False)
class Detections:
    """Detections of one sensor frame in local ENU.

    sensor: sensor name; t_mono: monotonic seconds of the frame;
    pos_enu_m (N, 3): position east/north/up about the tower reference point, metres;
    cov_enu_m2 (N, 3, 3): position error covariance, m²;
    snr_db (N,): NaN when unknown; radial_vel_mps (N,): positive away, NaN when unknown;
    doppler_spread_mps (N,): standard deviation of the radial velocities of the points
    merged into the detection (rotor blades and wing beats spread a target's Doppler),
    NaN when unknown or a single point (None given: all NaN);
    radial_vel_var_mps2 (N,): variance of ``radial_vel_mps``, (m/s)², NaN when unknown
    (None given: all NaN; a radial speed without a variance is not used for gating);
    sensor_pos_enu_m (3,): where the antenna is (ENU m), the origin radial speeds are
    measured from (None given: the tower reference point);
    unambiguous_speed_mps: radial speeds are known modulo 2× this (0: no folding);
    height_measured (N,) bool: the sensor measured the row's height (elevation or
    height); False for a 2D radar's row placed at the antenna's height, whose up
    coordinate is an assumption and no feature of the target (None given: all True).
    """

    sensor: str
    t_mono: float
    pos_enu_m: np.ndarray
    cov_enu_m2: np.ndarray
    snr_db: np.ndarray
    radial_vel_mps: np.ndarray
    doppler_spread_mps: np.ndarray | None = None
    radial_vel_var_mps2: np.ndarray | None = None
    sensor_pos_enu_m: np.ndarray | None = None
    unambiguous_speed_mps: float = 0.0
    height_measured: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = self.pos_enu_m.shape[0]
        if self.height_measured is None:
            object.__setattr__(self, "height_measured", np.ones(n, dtype=bool))
        if self.height_measured.shape != (n,) or self.height_measured.dtype != np.bool_:
            raise ValueError(f"Detections: height_measured {self.height_measured.shape} {self.height_measured.dtype} "
                             f"(want ({n},) bool)")
        if self.doppler_spread_mps is None:
            object.__setattr__(self, "doppler_spread_mps", np.full(n, np.nan))
        if self.radial_vel_var_mps2 is None:
            object.__setattr__(self, "radial_vel_var_mps2", np.full(n, np.nan))
        if self.sensor_pos_enu_m is None:
            object.__setattr__(self, "sensor_pos_enu_m", np.zeros(3))
        if np.shape(self.sensor_pos_enu_m) != (3,) or self.radial_vel_var_mps2.shape != (n,):
            raise ValueError(
                f"Detections: sensor_pos_enu_m {np.shape(self.sensor_pos_enu_m)} (want (3,)), "
                f"radial_vel_var_mps2 {self.radial_vel_var_mps2.shape} for {n} rows"
            )
        if (
            self.pos_enu_m.shape != (n, 3)
            or self.cov_enu_m2.shape != (n, 3, 3)
            or self.snr_db.shape != (n,)
            or self.radial_vel_mps.shape != (n,)
            or self.doppler_spread_mps.shape != (n,)
        ):
            raise ValueError(
                "Detections arrays disagree: "
                f"pos {self.pos_enu_m.shape}, cov {self.cov_enu_m2.shape}, "
                f"snr {self.snr_db.shape}, radial_vel {self.radial_vel_mps.shape}, "
                f"doppler_spread {self.doppler_spread_mps.shape}"
            )

    def __len__(self) -> int:
        return self.pos_enu_m.shape[0]

    @classmethod
    def of(cls, sensor: str, t_mono: float, pos_enu_m: np.ndarray, cov_enu_m2: np.ndarray, snr_db: np.ndarray,
           radial_vel_mps: np.ndarray, doppler_spread_mps: np.ndarray, radial_vel_var_mps2: np.ndarray,
           sensor_pos_enu_m: np.ndarray, unambiguous_speed_mps: float, height_measured: np.ndarray) -> Detections:
        """The same object as the constructor with every field given, without its checks:
        for detection's own steps, whose arrays have the documented shapes by construction
        (the frozen dataclass's ``__init__`` and checks cost as much as a step of it)."""
        det = object.__new__(cls)
        det.__dict__.update(sensor=sensor, t_mono=t_mono, pos_enu_m=pos_enu_m, cov_enu_m2=cov_enu_m2, snr_db=snr_db,
                            radial_vel_mps=radial_vel_mps, doppler_spread_mps=doppler_spread_mps,
                            radial_vel_var_mps2=radial_vel_var_mps2, sensor_pos_enu_m=sensor_pos_enu_m,
                            unambiguous_speed_mps=unambiguous_speed_mps, height_measured=height_measured)
        return det

    @classmethod
    def empty(cls, sensor: str, t_mono: float) -> Detections:
        """No detections (a frame with nothing in it is still a scan: tracks miss)."""
        return cls(sensor, t_mono, np.zeros((0, 3)), np.zeros((0, 3, 3)), np.zeros(0), np.zeros(0))


def spherical_jacobian(range_m: np.ndarray, azimuth_deg: np.ndarray, elevation_deg: np.ndarray) -> np.ndarray:
    """(N,) r, a, e -> (N, 3, 3) ∂(x, y, z)/∂(r, a_rad, e_rad) of geo.spherical_to_cartesian."""
    a = np.radians(azimuth_deg)
    e = np.radians(elevation_deg)
    sa, ca, se, ce = np.sin(a), np.cos(a), np.sin(e), np.cos(e)
    r = range_m
    zero = np.zeros_like(r)
    return np.stack(
        [
            np.stack([ce * sa, r * ce * ca, -r * se * sa], axis=-1),
            np.stack([ce * ca, -r * ce * sa, -r * se * ca], axis=-1),
            np.stack([se, zero, r * ce], axis=-1),
        ],
        axis=-2,
    )


class PlotConverter:
    """Turns one sensor's :class:`RadarPlots` into :class:`Detections` in local ENU.

    Special rows:
    - ``azimuth_is_true``: the sensor has already referred the azimuth to true north (its
      own north alignment), so the boresight is not applied: the row is taken to be in the
      local horizontal frame (rotation = identity: no boresight azimuth and no tilt;
      elevation above the local horizontal). The mount position is still added.
    - NaN elevation (2D radar): the target is assumed to be at the antenna's height, i.e.
      on the horizontal plane through the antenna. With a tilted mount that is sensor
      elevation e = atan(-tan(tilt) cos(a)), not 0; untilted (and true-azimuth rows) it is
      e = 0. The elevation sigma of such rows is :data:`UNKNOWN_ELEVATION_SIGMA_DEG`, and
      their ``height_measured`` is False (the height is an assumption, not a reading).
    - Rows with a non-finite range or azimuth cannot be placed and are dropped (counted in
      :attr:`dropped`).

    Radial speed: the plot's ``radial_vel_mps`` (Doppler) when known; else, when the
    sensor reports a ground velocity (NMEA TTM speed and true course), its component
    along the line of sight from the antenna, v_r = û · v with
    v = speed (sin course, cos course, 0) and û = (p − m) / |p − m|. Its variance is
    ``noise.radial_speed_sigma_mps``²; rows with neither stay NaN.
    """

    def __init__(
        self,
        mount: SensorMount,
        noise: MeasurementNoise,
        *,
        unknown_elevation_sigma_deg: float = UNKNOWN_ELEVATION_SIGMA_DEG,
    ) -> None:
        self.mount = mount
        self.noise = noise
        self.unknown_elevation_sigma_deg = float(unknown_elevation_sigma_deg)
        self._rotation = geo.mount_rotation(mount.boresight_azimuth_deg, mount.tilt_deg)
        self._position = np.asarray(mount.position_enu_m, dtype=float)
        self._antenna = self._position.copy()
        self._antenna.flags.writeable = False
        """The Cartesian frames' ``sensor_pos_enu_m``: one read-only array, not a copy a frame."""
        self._variance = np.array([noise.range_sigma_m**2, np.radians(noise.azimuth_sigma_deg) ** 2,
                                   np.radians(noise.elevation_sigma_deg) ** 2])  # σr² m², σa², σe² rad²
        self.dropped = 0
        """Plots dropped so far because their range or azimuth was not finite."""

    def convert(self, plots: RadarPlots) -> Detections:
        """Convert every placeable plot of one frame; see the class docstring."""
        if plots.cartesian is not None:
            return self._convert_cartesian(plots)
        rows = plots.plots
        keep = np.isfinite(rows["range_m"]) & np.isfinite(rows["azimuth_deg"])
        if not np.all(keep):
            n_bad = int(np.count_nonzero(~keep))
            self.dropped += n_bad
            log.debug("%s: dropped %d plots without a finite range/azimuth", plots.sensor, n_bad)
            rows = rows[keep]

        r = rows["range_m"].astype(float)
        az = rows["azimuth_deg"].astype(float)
        el = rows["elevation_deg"].astype(float)
        is_true = rows["azimuth_is_true"].astype(bool)

        no_el = ~np.isfinite(el)
        tilt = np.radians(self.mount.tilt_deg)
        level_el = np.where(is_true, 0.0, np.degrees(np.arctan(-np.tan(tilt) * np.cos(np.radians(az)))))
        el = np.where(no_el, level_el, el)
        el_sigma = np.where(no_el, self.unknown_elevation_sigma_deg, self.noise.elevation_sigma_deg)

        # Per-row rotation: the mount's, or identity for true-north rows.
        rot = np.broadcast_to(self._rotation, (len(r), 3, 3)).copy()
        rot[is_true] = np.eye(3)

        s = geo.spherical_to_cartesian(r, az, el)  # (N, 3) sensor frame
        pos = np.einsum("nij,nj->ni", rot, s) + self._position

        var = np.stack(
            [
                np.full_like(r, self.noise.range_sigma_m**2),
                np.full_like(r, np.radians(self.noise.azimuth_sigma_deg) ** 2),
                np.radians(el_sigma) ** 2,
            ],
            axis=-1,
        )  # (N, 3): σr² m², σa² rad², σe² rad²
        jac = np.einsum("nij,njk->nik", rot, spherical_jacobian(r, az, el))  # R J
        cov = np.einsum("nik,nk,njk->nij", jac, var, jac)  # (R J) diag(var) (R J)ᵀ
        return self._detections(plots, pos, cov, rows["snr_db"], radial_speed(rows, pos, self._position), ~no_el)

    def _detections(self, plots: RadarPlots, pos: np.ndarray, cov: np.ndarray, snr_db: np.ndarray,
                    radial_vel_mps: np.ndarray, height_measured: np.ndarray | None = None) -> Detections:
        """The frame's Detections from placed points (cov symmetrised; height_measured
        None: every row's height was measured)."""
        rv = radial_vel_mps
        return Detections(
            sensor=plots.sensor,
            t_mono=plots.t_mono,
            pos_enu_m=pos,
            cov_enu_m2=0.5 * (cov + np.swapaxes(cov, -1, -2)),
            snr_db=snr_db.astype(float),
            radial_vel_mps=rv,
            radial_vel_var_mps2=np.where(np.isfinite(rv), self.noise.radial_speed_sigma_mps**2, np.nan),
            sensor_pos_enu_m=self._position.copy(),
            unambiguous_speed_mps=self.noise.unambiguous_speed_mps,
            height_measured=height_measured,
        )


    def _convert_cartesian(self, plots: RadarPlots) -> Detections:
        """Sensor-frame Cartesian points (the module docstring's second form)."""
        columns = _columns(plots.cartesian)  # x, y, z, radial speed, SNR
        s = columns[:, :3]
        if not math.isfinite(float(s.sum())):  # a float64 sum of float32 values overflows never
            keep = np.isfinite(s).all(axis=1)
            n_bad = int(np.count_nonzero(~keep))
            self.dropped += n_bad
            log.debug("%s: dropped %d points without a finite position", plots.sensor, n_bad)
            columns = columns[keep]
            s = columns[:, :3]
        n = len(s)
        c = np.ascontiguousarray(columns[:, :3].T)  # (3, N): x, y, z as rows
        x, y, z = c
        h = np.hypot(x, y)
        r = np.hypot(h, z)
        jac = np.empty((3, 3, n))  # jac[j, k] = J[:, j, k] over the points: every write a contiguous row
        if h.all():  # the usual frame: no point on the vertical axis (r >= h > 0)
            np.divide(c, r, out=jac[:, 0])  # x / r, y / r, z / r
            np.multiply(-z, c[:2] / h, out=jac[:2, 2])  # -z sin a, -z cos a
        else:
            on_axis = h == 0.0
            with np.errstate(invalid="ignore", divide="ignore"):
                sa = np.where(on_axis, 0.0, x / h)
                ca = np.where(on_axis, 1.0, y / h)
                at_antenna = r == 0.0  # the limit along boresight (a = e = 0), as the spherical form has it
                jac[0, 0], jac[1, 0], jac[2, 0] = (np.where(at_antenna, 0.0, x / r), np.where(at_antenna, 1.0, y / r),
                                                   np.where(at_antenna, 0.0, z / r))
            jac[0, 2], jac[1, 2] = -z * sa, -z * ca
        jac[0, 1], jac[1, 1], jac[2, 1], jac[2, 2] = y, -x, 0.0, h
        pos = s @ self._rotation.T + self._position
        cov = _rotated_covariance(self._rotation, jac, self._variance)
        rv = columns[:, 3]
        return Detections.of(plots.sensor, plots.t_mono, pos, cov, columns[:, 4], rv, _nan(len(rv)),
                             np.where(np.isfinite(rv), self.noise.radial_speed_sigma_mps**2, np.nan),
                             self._antenna, self.noise.unambiguous_speed_mps, all_true(len(rv)))


_COLUMNS = ("x_m", "y_m", "z_m", "radial_vel_mps", "snr_db")
_F4 = np.dtype("<f4")
_layout: tuple[np.dtype | None, int | None] = (None, None)
"""The last Cartesian plot dtype seen and the offset of its x_m when its five fields are
consecutive float32 in :data:`_COLUMNS`' order (TI's points), else None: a driver sends one
dtype, so the test is made once (compared by identity: hashing a structured dtype costs
more than the test)."""


def _columns(rows: np.ndarray) -> np.ndarray:
    """(N, 5) float64 x, y, z, radial speed, SNR of Cartesian plot rows (fields
    :data:`_COLUMNS`): one conversion of a strided view when the five are consecutive
    float32 (TI's points), else field by field (the same values)."""
    global _layout
    dtype = rows.dtype
    known, offset = _layout
    if dtype is not known:
        fields = dtype.fields
        offset = fields["x_m"][1]
        if not all(fields[name][0] == _F4 and fields[name][1] == offset + 4 * i for i, name in enumerate(_COLUMNS)):
            offset = None
        _layout = (dtype, offset)
    if offset is not None and rows.flags.c_contiguous and len(rows):
        try:
            return np.ndarray((len(rows), 5), _F4, rows, offset, (dtype.itemsize, 4)).astype(float)
        except (TypeError, ValueError):  # rows that export no buffer: field by field below
            pass
    out = np.empty((len(rows), 5))
    for i, name in enumerate(_COLUMNS):
        out[:, i] = rows[name]
    return out


def _rotated_covariance(rot: np.ndarray, jac: np.ndarray, var: np.ndarray) -> np.ndarray:
    """(N, 3, 3) symmetric C = (R J) diag(var) (R J)ᵀ of ``rot`` R (3, 3), ``jac`` (3, 3, N)
    (``jac[j, k]`` is J[:, j, k]: point-major last, so every step runs over contiguous rows)
    and ``var`` (3,): the sums over the inner index written out, term by term in index
    order from 0, as ``einsum("ij,njk->nik")`` and ``einsum("nik,k,njk->nij")`` add them
    (the same floats, for a fraction of the three-operand einsum's time), then (C + Cᵀ) / 2.
    Each sum is one reduction from an initial 0.0 over an axis that is not the innermost,
    which NumPy adds element by element in index order: ((0 + t₀) + t₁) + t₂, as einsum."""
    q = rot[:, :, None, None] * jac  # q[i, j, k] = R[i, j] J[j, k]
    rj = np.add.reduce(q, axis=1, initial=0.0)  # rj[i, k] = (R J)[i, k]
    a = rj * var[:, None]  # (R J)[i, k] var[k]
    p = a[:, None] * rj  # p[i, j, k] = ((R J)[i, k] var[k]) (R J)[j, k]
    cov = np.add.reduce(p, axis=2, initial=0.0)  # (3, 3, N)
    out = np.empty((cov.shape[2], 3, 3))
    np.multiply(cov + cov.transpose(1, 0, 2), 0.5, out=out.transpose(1, 2, 0))  # (C + Cᵀ) / 2, point-major
    return out


def _nan(n: int) -> np.ndarray:
    """(n,) NaN, read-only: a view of one shared array (see :func:`_shared`)."""
    return _shared(n, _NANS, np.nan)


def all_true(n: int) -> np.ndarray:
    """(n,) True, read-only: a view of one shared array (see :func:`_shared`)."""
    return _shared(n, _TRUES, True)


_NANS, _TRUES = [np.full(0, np.nan)], [np.ones(0, dtype=bool)]


def _shared(n: int, holder: list[np.ndarray], fill: float | bool) -> np.ndarray:
    """The first n elements of ``holder``'s read-only array of ``fill``, made longer (twice,
    at least n) when too short: the constant columns of a frame's detections (nothing
    writes into detections) without an allocation and a fill per frame."""
    array = holder[0]
    if array.shape[0] < n:
        array = np.full(max(n, 2 * array.shape[0]), fill, dtype=array.dtype)
        array.flags.writeable = False
        holder[0] = array
    return array[:n]


def radial_speed(rows: np.ndarray, pos_enu_m: np.ndarray, antenna_enu_m: np.ndarray) -> np.ndarray:
    """(N,) radial speed of plots ``rows`` (PLOT_DTYPE) at ENU positions ``pos_enu_m``
    (N, 3) seen from ``antenna_enu_m`` (3,), m/s positive away: the Doppler when known,
    else the line-of-sight component of a reported ground velocity (speed, true course;
    horizontal), else NaN. See :class:`PlotConverter`."""
    rv = rows["radial_vel_mps"].astype(float) if "radial_vel_mps" in rows.dtype.names else np.full(len(rows), np.nan)
    speed, course = rows["speed_mps"].astype(float), np.radians(rows["course_deg"].astype(float))
    derive = ~np.isfinite(rv) & np.isfinite(speed) & np.isfinite(course)
    if np.any(derive):
        d = pos_enu_m[derive] - antenna_enu_m
        rho = np.linalg.norm(d, axis=1)
        v = np.stack([speed[derive] * np.sin(course[derive]), speed[derive] * np.cos(course[derive]),
                      np.zeros(int(derive.sum()))], axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            rv[derive] = np.where(rho > 0, np.einsum("ni,ni->n", d, v) / rho, np.nan)
    return rv


class GeoPlotConverter:
    """Targets a sensor reports as WGS84 positions (NMEA TLL) -> ENU :class:`Detections`.

    Height: the sensor's when given, else the antenna's height (a 2D surface radar
    tracks at its own level), with a vertical sigma of ``unknown_elevation_sigma_deg``
    seen from the antenna at the target's horizontal range and ``height_measured`` False. Horizontal covariance:
    ``noise.range_sigma_m`` on both axes (the sensor already fused its own range and
    bearing, and does not say how well). Radial speed: the line-of-sight component of the
    reported speed and true course, as in :class:`PlotConverter`.
    """

    def __init__(self, site: geo.Site, mount: SensorMount, noise: MeasurementNoise, *,
                 unknown_elevation_sigma_deg: float = UNKNOWN_ELEVATION_SIGMA_DEG) -> None:
        self.site = site
        self.mount = mount
        self.noise = noise
        self.unknown_elevation_sigma_deg = unknown_elevation_sigma_deg
        self.dropped = 0

    def convert(self, plots: GeoPlots) -> Detections:
        p = plots.plots
        ok = np.isfinite(p["latitude_deg"]) & np.isfinite(p["longitude_deg"])
        self.dropped += int(np.count_nonzero(~ok))
        p = p[ok]
        antenna_up = self.site.height_m + self.mount.position_enu_m[2]
        height = np.where(np.isfinite(p["height_m"]), p["height_m"], antenna_up)
        enu = geo.geodetic_to_enu(self.site, p["latitude_deg"], p["longitude_deg"], height).reshape(-1, 3)
        n = len(enu)
        horizontal = np.hypot(enu[:, 0] - self.mount.position_enu_m[0], enu[:, 1] - self.mount.position_enu_m[1])
        sigma_up = np.where(np.isfinite(p["height_m"]), self.noise.range_sigma_m,
                            np.maximum(horizontal * np.radians(self.unknown_elevation_sigma_deg), 1.0))
        cov = np.zeros((n, 3, 3))
        cov[:, 0, 0] = cov[:, 1, 1] = self.noise.range_sigma_m**2
        cov[:, 2, 2] = sigma_up**2
        antenna = np.asarray(self.mount.position_enu_m, dtype=float)
        rv = radial_speed(p, enu, antenna)
        return Detections(plots.sensor, plots.t_mono, enu, cov, np.full(n, np.nan), rv,
                          radial_vel_var_mps2=np.where(np.isfinite(rv), self.noise.radial_speed_sigma_mps**2, np.nan),
                          sensor_pos_enu_m=antenna, unambiguous_speed_mps=self.noise.unambiguous_speed_mps,
                          height_measured=np.isfinite(p["height_m"]))
