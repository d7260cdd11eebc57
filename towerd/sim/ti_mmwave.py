"""Emulated TI mmWave radar (SDK 3.x out-of-box demo) writing its data UART to a pty.

:meth:`TiMmwaveEmulator.frame_bytes` turns a :class:`~towerd.sim.scenario.Scenario` at
time t into exactly the bytes an IWR6843 running the SDK 3.x demo would send for one
frame; :meth:`TiMmwaveEmulator.start` writes one such frame per frame period to a
:class:`~towerd.sim.pty.PtyPair` from a background thread, paced on monotonic deadlines.

The bytes are built here with ``struct`` and NumPy from the vendor layout, independently
of ``towerd.drivers.ti_mmwave.protocol``, so that tests cross-check two implementations:

    magic 02 01 04 03 06 05 08 07, then u32 version, totalPacketLen, platform,
    frameNumber, timeCpuCycles, numDetectedObj, numTLVs, subFrameNumber;
    TLVs (u32 type, u32 payload length, payload); padding to a multiple of 32 (0x0F).

TLV choice follows ``MmwDemo_transmitProcessedOutput`` (SDK 3.x ``mmw_mss.c``) for the
``guiMonitor`` detectedObjects setting ``detected_objects_mode``: 1 (TI's default) sends
TLV 1 in every frame — with length 0 when nothing was detected — and TLV 7 only when
there are points; 2 sends TLV 1 only when there are points and never TLV 7; 0 sends
neither. ``stats_tlv`` adds TLV 6 (six u32 timing/load figures).

Measurement model, per frame at scenario time t (sensor frame via the transpose of
:func:`towerd.geo.mount_rotation`: s = Rᵀ (p − m)):
- every present target inside the field of view (range in [min, max], |azimuth| and
  |elevation| within half the FOV) yields 1..3 points: range, azimuth and elevation of
  its true position plus Gaussian noise with the scenario's sigmas; radial velocity =
  v_s · ŝ (positive moving away) plus Gaussian noise;
- every clutter point in the FOV yields one point with the same position noise and
  Doppler exactly 0;
- Poisson(false_alarms_per_frame) false alarms, uniform in range, azimuth and elevation
  over the FOV, Doppler uniform in ±FALSE_ALARM_MAX_DOPPLER_MPS;
- SNR (simple radar equation, R⁻⁴): snr_db = SNR_REF_DB + rcs_dbsm − 40 log10(r / 100 m),
  i.e. SNR_REF_DB for 1 m² at 100 m; false alarms get 10–13 dB; noise is NOISE_DB.
  Both are sent as signed int16 in 0.1 dB, so negative SNR stays negative.
Points are sent in increasing range, as the demo's range-ordered CFAR output is.
"""

from __future__ import annotations

import logging
import struct
import threading

import numpy as np

from towerd import geo
from towerd.clock import Clock, SystemClock
from towerd.sim.pty import PtyPair
from towerd.sim.scenario import Scenario

log = logging.getLogger(__name__)

SYNC_WORD = bytes([0x02, 0x01, 0x04, 0x03, 0x06, 0x05, 0x08, 0x07])
SDK_VERSION = (3 << 24) | (5 << 16) | (0 << 8) | 4
"""0x03050004: mmWave SDK 3.5.0.4, as ``header.version`` carries it."""
SEGMENT = 32
PAD_BYTE = 0x0F
CPU_HZ = 200e6
"""Clock whose cycle counter fills timeCpuCycles (the xWR68xx MSS R4F runs at 200 MHz)."""
SNR_REF_DB = 35.0
"""SNR of a 1 m² (0 dBsm) target at 100 m."""
NOISE_DB = 45.0
FALSE_ALARM_SNR_DB = (10.0, 13.0)
FALSE_ALARM_MAX_DOPPLER_MPS = 8.0
MIN_RANGE_M = 1.0


class TiMmwaveEmulator:
    """Scenario -> SDK 3.x data-UART frames, on demand or paced onto a pty."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        boresight_azimuth_deg: float,
        tilt_deg: float = 0.0,
        position_enu_m: tuple[float, float, float] = (0.0, 0.0, 0.0),
        frame_rate_hz: float = 10.0,
        rng: np.random.Generator,
        max_range_m: float = 200.0,
        fov_azimuth_deg: float = 120.0,
        fov_elevation_deg: float = 60.0,
        points_per_target: tuple[int, int] = (1, 3),
        platform: int = 0xA6843,
        version: int = SDK_VERSION,
        detected_objects_mode: int = 1,
        stats_tlv: bool = False,
        clock: Clock | None = None,
    ) -> None:
        if not frame_rate_hz > 0:
            raise ValueError("frame_rate_hz must be > 0")
        lo, hi = points_per_target
        if not 1 <= lo <= hi:
            raise ValueError("points_per_target must be (lo, hi) with 1 <= lo <= hi")
        if detected_objects_mode not in (0, 1, 2):
            raise ValueError("detected_objects_mode must be 0, 1 or 2 (guiMonitor detectedObjects)")
        if not max_range_m > MIN_RANGE_M:
            raise ValueError(f"max_range_m must be > {MIN_RANGE_M}")
        self.scenario = scenario
        self.rotation = geo.mount_rotation(boresight_azimuth_deg, tilt_deg)  # enu = R @ sensor
        self.position_enu_m = np.asarray(position_enu_m, dtype=float).reshape(3)
        self.frame_rate_hz = float(frame_rate_hz)
        self.rng = rng
        self.max_range_m = float(max_range_m)
        self.half_fov_az_deg = fov_azimuth_deg / 2.0
        self.half_fov_el_deg = fov_elevation_deg / 2.0
        self.points_per_target = (int(lo), int(hi))
        self.platform = platform
        self.version = version
        self.detected_objects_mode = detected_objects_mode
        self.stats_tlv = stats_tlv
        self.clock: Clock = clock or SystemClock()

        self.t0_mono: float | None = None
        self.t0_utc_us: int | None = None
        self.frames_sent = 0
        self.frames_skipped = 0  # frame slots missed because the thread ran late
        self.bytes_dropped = 0  # bytes the pty did not take (nobody reading)
        self.error: BaseException | None = None
        self._lock = threading.Lock()  # guards rng and the fault-injection state
        self._pending_garbage = 0
        self._truncate_next = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ frames

    def _to_sensor(self, enu_m: np.ndarray) -> np.ndarray:
        """(n, 3) ENU -> (n, 3) sensor frame: s = Rᵀ (p − m), as rows (p − m) R."""
        return (enu_m - self.position_enu_m) @ self.rotation

    @staticmethod
    def _spherical(s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        horiz = np.hypot(s[:, 0], s[:, 1])
        return (
            np.hypot(horiz, s[:, 2]),
            np.degrees(np.arctan2(s[:, 0], s[:, 1])),
            np.degrees(np.arctan2(s[:, 2], horiz)),
        )

    def _in_fov(self, rng_m: np.ndarray, az: np.ndarray, el: np.ndarray) -> np.ndarray:
        return (
            (rng_m >= MIN_RANGE_M)
            & (rng_m <= self.max_range_m)
            & (np.abs(az) <= self.half_fov_az_deg)
            & (np.abs(el) <= self.half_fov_el_deg)
        )

    def _noisy_xyz(self, rng_m: np.ndarray, az: np.ndarray, el: np.ndarray) -> np.ndarray:
        noise = self.scenario.noise
        n = len(rng_m)
        r = rng_m + self.rng.normal(0.0, noise.range_sigma_m, n)
        a = az + self.rng.normal(0.0, noise.azimuth_sigma_deg, n)
        e = el + self.rng.normal(0.0, noise.elevation_sigma_deg, n)
        return geo.spherical_to_cartesian(np.maximum(r, 0.0), a, e)

    def detections(self, t_s: float) -> np.ndarray:
        """The points the radar reports at elapsed time ``t_s``: (n, 6) float64 columns
        x_m, y_m, z_m, doppler_mps, snr_db, noise_db, sorted by range.

        Draws from ``rng``; not locked (frame_bytes and the writer thread lock around it)."""
        scenario = self.scenario
        noise = scenario.noise
        chunks: list[np.ndarray] = []

        truth = scenario.truth(t_s)
        if len(truth):
            pos = np.column_stack([truth["east_m"], truth["north_m"], truth["up_m"]])
            vel = np.column_stack([truth["vel_east_mps"], truth["vel_north_mps"], truth["vel_up_mps"]])
            s = self._to_sensor(pos)
            v_s = vel @ self.rotation
            r, az, el = self._spherical(s)
            seen = self._in_fov(r, az, el)
            if seen.any():
                lo, hi = self.points_per_target
                counts = self.rng.integers(lo, hi + 1, size=int(seen.sum()))
                idx = np.repeat(np.flatnonzero(seen), counts)
                xyz = self._noisy_xyz(r[idx], az[idx], el[idx])
                radial = np.einsum("ij,ij->i", v_s[idx], s[idx] / r[idx, None])
                doppler = radial + self.rng.normal(0.0, noise.doppler_sigma_mps, len(idx))
                rcs = scenario.rcs_dbsm(truth["name"])[idx]
                chunks.append(np.column_stack([xyz, doppler, self._snr_db(r[idx], rcs), np.full(len(idx), NOISE_DB)]))

        clutter_enu, clutter_rcs = scenario.clutter_enu_m()
        if len(clutter_enu):
            r, az, el = self._spherical(self._to_sensor(clutter_enu))
            seen = self._in_fov(r, az, el)
            if seen.any():
                xyz = self._noisy_xyz(r[seen], az[seen], el[seen])
                k = len(xyz)
                chunks.append(
                    np.column_stack([xyz, np.zeros(k), self._snr_db(r[seen], clutter_rcs[seen]), np.full(k, NOISE_DB)])
                )

        n_fa = int(self.rng.poisson(scenario.false_alarms_per_frame)) if scenario.false_alarms_per_frame > 0 else 0
        if n_fa:
            r = self.rng.uniform(MIN_RANGE_M, self.max_range_m, n_fa)
            az = self.rng.uniform(-self.half_fov_az_deg, self.half_fov_az_deg, n_fa)
            el = self.rng.uniform(-self.half_fov_el_deg, self.half_fov_el_deg, n_fa)
            doppler = self.rng.uniform(-FALSE_ALARM_MAX_DOPPLER_MPS, FALSE_ALARM_MAX_DOPPLER_MPS, n_fa)
            snr = self.rng.uniform(*FALSE_ALARM_SNR_DB, n_fa)
            chunks.append(
                np.column_stack([geo.spherical_to_cartesian(r, az, el), doppler, snr, np.full(n_fa, NOISE_DB)])
            )

        if not chunks:
            return np.zeros((0, 6))
        points = np.concatenate(chunks)
        return points[np.argsort(np.linalg.norm(points[:, :3], axis=1), kind="stable")]

    @staticmethod
    def _snr_db(range_m: np.ndarray, rcs_dbsm: np.ndarray) -> np.ndarray:
        """snr_db = SNR_REF_DB + rcs_dbsm − 40 log10(r / 100 m)."""
        return SNR_REF_DB + rcs_dbsm - 40.0 * np.log10(np.maximum(range_m, MIN_RANGE_M) / 100.0)

    def encode(self, points: np.ndarray, t_s: float, frame_number: int) -> bytes:
        """One complete frame carrying ``points`` ((n, 6) as from :meth:`detections`)."""
        header, body, padding = self._encode_parts(points, t_s, frame_number)
        return header + body + padding

    def _encode_parts(self, points: np.ndarray, t_s: float, frame_number: int) -> tuple[bytes, bytes, bytes]:
        """(40-byte header, TLVs, padding) of one frame."""
        n = len(points)
        tlvs: list[bytes] = []
        mode = self.detected_objects_mode
        if mode == 1 or (mode == 2 and n > 0):
            xyzv = np.ascontiguousarray(points[:, :4], dtype="<f4")
            tlvs.append(struct.pack("<II", 1, 16 * n) + xyzv.tobytes())
        if mode == 1 and n > 0:
            tenths = np.clip(np.rint(points[:, 4:6] * 10.0), -32768, 32767).astype("<i2")
            tlvs.append(struct.pack("<II", 7, 4 * n) + np.ascontiguousarray(tenths).tobytes())
        if self.stats_tlv:
            # interFrameProcessingTime, transmitOutputTime, interFrameProcessingMargin,
            # interChirpProcessingMargin (us), activeFrameCPULoad, interFrameCPULoad (%)
            tlvs.append(struct.pack("<II", 6, 24) + struct.pack("<6I", 1800 + 20 * n, 400 + 30 * n, 95000, 12, 31, 9))
        body = b"".join(tlvs)
        unpadded = 40 + len(body)
        total = -(-unpadded // SEGMENT) * SEGMENT
        header = SYNC_WORD + struct.pack(
            "<8I",
            self.version,
            total,
            self.platform,
            frame_number & 0xFFFFFFFF,
            int(t_s * CPU_HZ) & 0xFFFFFFFF,
            n,
            len(tlvs),
            0,
        )
        return header, body, bytes([PAD_BYTE]) * (total - unpadded)

    def frame_bytes(self, t_s: float, frame_number: int) -> bytes:
        """A complete SDK 3.x frame for elapsed scenario time ``t_s``."""
        with self._lock:
            points = self.detections(t_s)
        return self.encode(points, t_s, frame_number)

    # ------------------------------------------------------------ fault injection

    def inject_garbage(self, n_bytes: int) -> None:
        """Send ``n_bytes`` random bytes just before the next frame."""
        with self._lock:
            self._pending_garbage += max(0, int(n_bytes))

    def inject_truncated(self) -> None:
        """Cut the next frame short: mid-way through its TLVs (mid-header if it has none),
        as a UART glitch or a reset would."""
        with self._lock:
            self._truncate_next = True

    def next_chunk(self, t_s: float, frame_number: int) -> bytes:
        """What goes on the wire for the next frame slot, faults included."""
        with self._lock:
            points = self.detections(t_s)
            garbage = self.rng.integers(0, 256, self._pending_garbage, dtype=np.uint8).tobytes()
            truncate = self._truncate_next
            self._pending_garbage = 0
            self._truncate_next = False
        header, body, padding = self._encode_parts(points, t_s, frame_number)
        if truncate:
            frame = header + body[: len(body) // 2] if len(body) >= 2 else header[:20]
        else:
            frame = header + body + padding
        return garbage + frame

    # ------------------------------------------------------------------ thread

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, pty: PtyPair) -> None:
        """Start writing one frame per 1/frame_rate_hz to ``pty`` (frame k at t0 + k/rate,
        scenario time k/rate, frameNumber k + 1).

        Pacing waits in real time (``Event.wait``) for deadlines read from ``clock``, so the
        clock must advance in real time (SystemClock); slots missed while the thread was
        late are skipped and counted in ``frames_skipped``, never sent in a burst."""
        if self._thread is not None:
            raise RuntimeError("emulator already started")
        self._stop.clear()
        self.t0_mono = self.clock.monotonic()
        self.t0_utc_us = self.clock.utc_us(self.t0_mono)
        self._thread = threading.Thread(target=self._run, args=(pty,), name="ti-emulator", daemon=False)
        self._thread.start()

    def stop(self) -> None:
        """Stop the writer and wait for it; safe to call any number of times."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join()
        self._thread = None

    def _run(self, pty: PtyPair) -> None:
        period = 1.0 / self.frame_rate_hz
        t0 = self.t0_mono
        assert t0 is not None
        k = 0
        while not self._stop.is_set():
            remaining = t0 + k * period - self.clock.monotonic()
            if remaining > 0:
                self._stop.wait(remaining)
                continue
            behind = int((self.clock.monotonic() - t0) / period) - k
            if behind > 0:
                self.frames_skipped += behind
                k += behind
            data = self.next_chunk(k * period, k + 1)
            try:
                written = pty.write(data)
            except OSError as exc:
                self.error = exc
                log.error("TI emulator: writing to the pty failed, stopping: %s", exc)
                return
            self.bytes_dropped += len(data) - written
            self.frames_sent += 1
            k += 1

    def __enter__(self) -> "TiMmwaveEmulator":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
