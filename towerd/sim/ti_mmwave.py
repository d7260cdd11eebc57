"""Emulated TI mmWave radar (SDK 3.x out-of-box demo, or SDK 2.x) writing its data UART to a pty.

:meth:`TiMmwaveEmulator.frame_bytes` turns a :class:`~towerd.sim.scenario.Scenario` at
time t into exactly the bytes an IWR6843 running the SDK 3.x demo (or an IWR1443/AWR1642
running SDK 2.x, see below) would send for one frame; :meth:`TiMmwaveEmulator.start` writes one such frame per frame period to a
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
  over the FOV, Doppler uniform in ±FALSE_ALARM_MAX_DOPPLER_MPS (or the scenario's
  ``false_alarm_doppler_mps`` for all);
- SNR (simple radar equation, R⁻⁴): snr_db = SNR_REF_DB + rcs_dbsm − 40 log10(r / 100 m),
  i.e. SNR_REF_DB for 1 m² at 100 m; false alarms get 10–13 dB; noise is NOISE_DB.
  Both are sent as signed int16 in 0.1 dB, so negative SNR stays negative.
Points are sent in increasing range, as the demo's range-ordered CFAR output is.

CLI (``start(pty, cli_pty)``): the emulator also plays the CLI UART on a second pty with
:class:`~towerd.sim.ti_cli.TiDemoCli` (echo, ``Done``/``Error``/not recognized, prompt
``mmwDemo:/>``, refusals as the firmware words them). Frames flow only between
``sensorStart`` and ``sensorStop``, as on the device; the configuration of the start
sets the frame rate (``frameCfg`` framePeriodicity, and numFrames when not 0) and the
TLVs (``guiMonitor``: detectedObjects, logMagRange -> TLV 2, noiseProfile -> TLV 3,
statsInfo -> TLV 6; range bins from ``profileCfg``). TLV order is the firmware's: 1, 7,
2, 3, 6. Without a CLI pty the radar streams from ``start`` with the constructor's
settings (a radar configured by other means). The field of view and maximum range stay
the constructor's: they model the site's radar, not the bench profile.

SDK 2.x (``version`` with major 2, e.g. ``SDK2_VERSION``; platform 0xA1443 for an IWR1443
or 0xA1642 for an AWR1642) sends what those demos sent (SDK 2.1 ``mmw_output.h`` and
``MmwDemo_transmitProcessedOutput``): the xWR14xx header has no subFrameNumber (36
bytes), TLV 1 is a descriptor (u16 numDetetedObj, u16 xyzQFormat) then per point u16
rangeIdx, int16 dopplerIdx, u16 peakVal, int16 x, y, z in Q ``SDK2_Q_FORMAT`` — sent
only when there are points — and there is no TLV 7. Doppler is quantised to
``doppler_resolution_mps`` per index, range to the profile's range resolution per
rangeIdx; peakVal is the linear SNR, saturated at 65535.

Range and noise profiles (TLV 2 and 3: u16 per range bin, log2 magnitude in Q9) are a
plain model: a flat noise floor, plus at each detection's range bin a peak of
SNR / 6.02 dB per log2 unit.
"""

from __future__ import annotations

import logging
import select
import struct
import threading
from typing import Any, ClassVar

import numpy as np

from towerd import geo
from towerd.clock import Clock, SystemClock
from towerd.sim.pty import PtyPair
from towerd.sim.writer import EmulatorThread
from towerd.sim.scenario import Scenario
from towerd.sim.ti_cli import TiDemoCli

log = logging.getLogger(__name__)

SYNC_WORD = bytes([0x02, 0x01, 0x04, 0x03, 0x06, 0x05, 0x08, 0x07])
SDK_VERSION = (3 << 24) | (5 << 16) | (0 << 8) | 4
"""0x03050004: mmWave SDK 3.5.0.4, as ``header.version`` carries it."""
SDK2_VERSION = (2 << 24) | (1 << 16) | (0 << 8) | 4
"""0x02010004: mmWave SDK 2.1.0.4 (xWR14xx/xWR16xx)."""
SDK2_Q_FORMAT = 7
"""x/y/z in metres * 2**7: int16 spans +-256 m, enough for the emulator's 200 m."""
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
NOISE_FLOOR_Q9 = 10 * 512
"""Range/noise profile floor: log2 magnitude 10, in Q9."""


class TiMmwaveEmulator(EmulatorThread):
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
        doppler_resolution_mps: float = 0.125,
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
        self.doppler_resolution_mps = float(doppler_resolution_mps)
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
        self._stall_until = -np.inf
        self.frames_stalled = 0  # frame slots not sent because of an injected stall
        self.range_profile = False  # TLV 2 in each frame
        self.noise_profile = False  # TLV 3 in each frame
        self.range_bins = 256
        self.range_resolution_m = 0.044
        self.cli: TiDemoCli | None = None
        """The emulated CLI when started with a CLI pty (its state: started, applied, ...)."""
        self.stream_first_frame = 1
        """frameNumber of the first frame since the stream last started."""
        self.stream_t0_s = 0.0
        """Scenario time of that frame: frame n carries stream_t0_s + (n - stream_first_frame) / frame_rate_hz."""
        self._streaming = False
        self._stream_t0_mono = 0.0
        self._k = 0
        self._frames_this_start = 0
        self._max_frames = 0
        self._cli_starts_seen = 0
        self._init_thread()

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
            if scenario.false_alarm_doppler_mps is not None:  # same draws, one radial speed for all
                doppler[:] = scenario.false_alarm_doppler_mps
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

    def _sdk2_objects(self, points: np.ndarray) -> bytes:
        """SDK 2.x TLV 1 payload: descriptor, then MmwDemo_detectedObj per point."""
        n = len(points)
        objs = np.zeros(n, dtype=[("r", "<u2"), ("d", "<i2"), ("p", "<u2"), ("x", "<i2"), ("y", "<i2"), ("z", "<i2")])
        rng_m = np.linalg.norm(points[:, :3], axis=1)
        objs["r"] = np.clip(np.rint(rng_m / self.range_resolution_m), 0, 65535)
        objs["d"] = np.clip(np.rint(points[:, 3] / self.doppler_resolution_mps), -32768, 32767)
        objs["p"] = np.clip(np.rint(10.0 ** (points[:, 4] / 10.0)), 0, 65535)
        for i, axis in enumerate("xyz"):
            objs[axis] = np.clip(np.rint(points[:, i] * (1 << SDK2_Q_FORMAT)), -32768, 32767)
        return struct.pack("<2H", n, SDK2_Q_FORMAT) + objs.tobytes()

    def _encode_parts(self, points: np.ndarray, t_s: float, frame_number: int) -> tuple[bytes, bytes, bytes]:
        """(header, TLVs, padding) of one frame: header 40 bytes, 36 for SDK 2.x xWR14xx."""
        n = len(points)
        tlvs: list[bytes] = []
        mode = self.detected_objects_mode
        sdk2 = self.version >> 24 == 2
        if sdk2:
            if mode in (1, 2) and n > 0:
                payload = self._sdk2_objects(points)
                tlvs.append(struct.pack("<II", 1, len(payload)) + payload)
        elif mode == 1 or (mode == 2 and n > 0):
            xyzv = np.ascontiguousarray(points[:, :4], dtype="<f4")
            tlvs.append(struct.pack("<II", 1, 16 * n) + xyzv.tobytes())
        if mode == 1 and n > 0 and not sdk2:
            tenths = np.clip(np.rint(points[:, 4:6] * 10.0), -32768, 32767).astype("<i2")
            tlvs.append(struct.pack("<II", 7, 4 * n) + np.ascontiguousarray(tenths).tobytes())
        if self.range_profile:
            tlvs.append(struct.pack("<II", 2, 2 * self.range_bins) + self._profile(points, peaks=True))
        if self.noise_profile:
            tlvs.append(struct.pack("<II", 3, 2 * self.range_bins) + self._profile(points, peaks=False))
        if self.stats_tlv:
            # interFrameProcessingTime, transmitOutputTime, interFrameProcessingMargin,
            # interChirpProcessingMargin (us), activeFrameCPULoad, interFrameCPULoad (%)
            tlvs.append(struct.pack("<II", 6, 24) + struct.pack("<6I", 1800 + 20 * n, 400 + 30 * n, 95000, 12, 31, 9))
        body = b"".join(tlvs)
        fields = [self.version, 0, self.platform, frame_number & 0xFFFFFFFF, int(t_s * CPU_HZ) & 0xFFFFFFFF, n,
                  len(tlvs)]
        if not (sdk2 and self.platform == 0xA1443):
            fields.append(0)  # subFrameNumber (xWR14xx SDK 2.x headers have none)
        unpadded = len(SYNC_WORD) + 4 * len(fields) + len(body)
        fields[1] = total = -(-unpadded // SEGMENT) * SEGMENT
        header = SYNC_WORD + struct.pack(f"<{len(fields)}I", *fields)
        return header, body, bytes([PAD_BYTE]) * (total - unpadded)

    def _profile(self, points: np.ndarray, *, peaks: bool) -> bytes:
        """TLV 2/3 payload: (range_bins,) u16 log2 magnitude in Q9 (see the module docstring)."""
        profile = np.full(self.range_bins, float(NOISE_FLOOR_Q9))
        if peaks and len(points):
            bins = np.rint(np.linalg.norm(points[:, :3], axis=1) / self.range_resolution_m).astype(int)
            inside = bins < self.range_bins
            np.maximum.at(profile, bins[inside], NOISE_FLOOR_Q9 + np.maximum(points[inside, 4], 0.0) / 6.02 * 512.0)
        return np.clip(np.rint(profile), 0, 65535).astype("<u2").tobytes()

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

    def inject_stall(self, seconds: float) -> None:
        """Send nothing for ``seconds`` (frames due meanwhile are lost, as when the radar's
        processing hangs), then carry on."""
        with self._lock:
            self._stall_until = self.clock.monotonic() + max(0.0, float(seconds))

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

    # ------------------------------------------------------------------ towerd sim

    has_cli_port: ClassVar[bool] = True
    """``towerd sim --cli`` gives it a second pty, the CLI UART."""

    @classmethod
    def from_sim_args(cls, scenario: Scenario, args: Any, rng: np.random.Generator) -> "TiMmwaveEmulator":
        """The emulator for ``towerd sim``'s options (boresight, tilt, position, rate)."""
        return cls(scenario, boresight_azimuth_deg=args.boresight, tilt_deg=args.tilt,
                   position_enu_m=tuple(args.position), frame_rate_hz=args.rate, rng=rng)

    def sim_status(self) -> str:
        """One line for ``towerd sim``'s ``status`` command."""
        started = "" if self.cli is None else f", sensor {'started' if self.cli.started else 'stopped'}"
        return f"frames sent {self.frames_sent}, skipped {self.frames_skipped}, stalled {self.frames_stalled}{started}"

    # ------------------------------------------------------------------ thread

    def start(self, pty: PtyPair, cli_pty: PtyPair | None = None) -> None:
        """Start the device on ``pty`` (data UART) and, when given, ``cli_pty`` (CLI UART).

        Without a CLI, one frame per 1/frame_rate_hz from now (frame k at t0 + k/rate,
        scenario time k/rate, frameNumber k + 1). With a CLI, the banner and prompt are
        written to it and frames start at the first successful ``sensorStart`` (frame j
        after a start at time ts: ts + j/rate, scenario time ts - t0 + j/rate, numbers
        continuing from the last frame sent).

        Pacing waits in real time (``Event.wait``/``select``) for deadlines read from
        ``clock``, so the clock must advance in real time (SystemClock); slots missed while
        the thread was late are skipped and counted in ``frames_skipped``, never sent in
        a burst."""
        self._begin()
        self.t0_mono = self.clock.monotonic()
        self.t0_utc_us = self.clock.utc_us(self.t0_mono)
        if cli_pty is not None:
            self.cli = TiDemoCli()
            cli_pty.write(self.cli.boot())
            self._streaming = False
        else:
            self._start_stream(self.t0_mono)
        self._launch(self._run, (pty, cli_pty), "ti-emulator")

    def _start_stream(self, now: float) -> None:
        assert self.t0_mono is not None
        self.stream_first_frame = self.frames_sent + self.frames_skipped + self.frames_stalled + 1
        self._stream_t0_mono = now
        self.stream_t0_s = now - self.t0_mono
        self._k = 0
        self._frames_this_start = 0
        self._streaming = True

    def _apply_cli_state(self, now: float) -> None:
        """Follow the CLI: sensorStart applies the configuration and starts the stream,
        sensorStop ends it."""
        cli = self.cli
        assert cli is not None
        if cli.started and not self._streaming and cli.starts > self._cli_starts_seen:
            applied = cli.applied
            assert applied is not None
            with self._lock:
                if applied.frame_period_ms and applied.frame_period_ms > 0:
                    self.frame_rate_hz = 1000.0 / applied.frame_period_ms
                self._max_frames = applied.num_frames
                self.detected_objects_mode = applied.detected_objects
                self.range_profile = applied.range_profile
                self.noise_profile = applied.noise_profile
                self.stats_tlv = applied.stats
                self.range_bins = applied.range_bins
                self.range_resolution_m = applied.range_resolution_m
                self.doppler_resolution_mps = applied.doppler_resolution_mps
            self._cli_starts_seen = cli.starts
            self._start_stream(now)
            log.info("TI emulator: sensorStart, %.3g frames/s", self.frame_rate_hz)
        elif not cli.started and self._streaming:
            self._streaming = False
            log.info("TI emulator: sensorStop after %d frames", self._frames_this_start)

    def _serve_cli(self, cli_pty: PtyPair, timeout_s: float) -> None:
        ready, _, _ = select.select([cli_pty.master_fd], [], [], max(0.0, timeout_s))
        if not ready:
            return
        data = cli_pty.read(4096)
        if data:
            assert self.cli is not None
            cli_pty.write(self.cli.receive(data))
            self._apply_cli_state(self.clock.monotonic())

    def _run(self, pty: PtyPair, cli_pty: PtyPair | None) -> None:
        while not self._stop.is_set():
            now = self.clock.monotonic()
            if self._streaming:
                period = 1.0 / self.frame_rate_hz
                wait = self._stream_t0_mono + self._k * period - now
            else:
                period, wait = 0.0, 0.1
            if wait > 0:
                if cli_pty is not None:
                    self._serve_cli(cli_pty, min(wait, 0.1))
                else:
                    self._stop.wait(min(wait, 0.1))
                continue
            behind = int((now - self._stream_t0_mono) / period) - self._k
            if behind > 0:
                self.frames_skipped += behind
                self._k += behind
            if now < self._stall_until:
                self.frames_stalled += 1
                self._k += 1
                continue
            number = self.stream_first_frame + self._k
            data = self.next_chunk(self.stream_t0_s + self._k * period, number)
            try:
                written = pty.write(data)
            except OSError as exc:
                self.error = exc
                log.error("TI emulator: writing to the pty failed, stopping: %s", exc)
                return
            self.bytes_dropped += len(data) - written
            self.frames_sent += 1
            self._frames_this_start += 1
            self._k += 1
            if self._max_frames and self._frames_this_start >= self._max_frames:
                self._streaming = False  # frameCfg numFrames reached: the device stops framing

    def __enter__(self) -> "TiMmwaveEmulator":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
