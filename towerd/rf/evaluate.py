"""How the RF chain does on real spectra and on emulated drone links (tests, benchmarks).

- :func:`play_capture`: a recorded RF Explorer serial stream (tests/captures/rfexplorer)
  through the real driver over a pseudo-terminal, the sweeps re-timed on the recording's
  sweep period (a recording has no clock the driver could see).
- :func:`drone_links`: sweeps through an :class:`~towerd.rf.processor.RfProcessor`:
  every track that became a confirmed drone link, and when.
- :func:`link_trial` (its sweeps: :func:`trial_spectra`): one emulated drone link at a stated in-band SNR (its power
  spectral density over the noise's when on the air), with optional non-drone
  neighbours, through the emulator's bytes, the driver's parser and the processor.

- :func:`false_alarms_on_quiet_cells` (cells: :func:`quiet_cells`): the CFAR's false
  alarms per cell on the cells of a real recording that held noise alone, by which
  ``cfar.looks`` is set.

SNR here is per unit bandwidth: a 10 MHz OFDM link at 10 dB puts 10 dB over the noise
into every cell it covers; an ELRS hop at 10 dB does so into the cells of its 500 kHz.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import numpy as np

from towerd.drivers.measurements import Spectrum
from towerd.drivers.rfexplorer.driver import Band, RfExplorerDriver, RfExplorerSettings
from towerd.drivers.rfexplorer.protocol import RfeConfig, RfeParser
from towerd.icd import Status
from towerd.rf.classify import LINK_NAMES, is_drone_link
from towerd.rf.processor import RfProcessor, RfSettings
from towerd.sim.pty import PtyPair
from towerd.sim.rfexplorer import RfExplorerEmulator, RfExplorerPlayer
from towerd.sim.scenario import Emitter, Interferer, Scenario


REAL_LOOKS = 2
"""Effective looks per point of a real RF Explorer: towerd.rf.cfar.estimate_looks on the
quiet cells of the vendor's recordings gives 2.0 (Wi-Fi, DTV), 2.2 (433 MHz), 2.7 (FM)
and 3.4 (signal generator); the emulator's default (8) is cleaner than the device."""


@dataclass(frozen=True)
class DroneLink:
    """A track that became a confirmed drone link."""

    rf_track_id: int
    kind: str
    confidence: int
    t_confirmed_s: float  # on the sweeps' clock
    centre_mhz: float
    bandwidth_mhz: float


def first_config(data: bytes) -> RfeConfig:
    """The first configuration line of a device -> host stream."""
    parser = RfeParser()
    _, messages = parser.feed(data[:4096])
    for m in messages:
        if isinstance(m, RfeConfig):
            return m
    raise ValueError("no #C2-F: line in the first 4 KiB of the capture")


def play_capture(data: bytes, period_s: float, *, loops: int = 1, timeout_s: float = 60.0,
                 sensor: str = "rfe") -> tuple[list[Spectrum], RfExplorerDriver]:
    """Play ``data`` (a recorded device -> host stream) ``loops`` times to the RF Explorer
    driver over a pty; return its Spectrum readings re-timed ``period_s`` apart (sweep k
    at k * period_s) and the (closed) driver, for its counters."""
    cfg = first_config(data)
    counter = RfeParser()
    counter.feed(data)
    want = counter.stats.sweeps * loops
    band = Band("recording", start_mhz=cfg.start_mhz, end_mhz=cfg.end_mhz, dwell_s=3600.0)
    pair = PtyPair.open()
    player = RfExplorerPlayer(data, loops=loops)
    out: list[Spectrum] = []
    try:
        player.start(pair)
        settings = RfExplorerSettings(port=pair.path, bands=(band,), command_gap_s=0.0, stall_timeout_s=3600.0)
        with RfExplorerDriver(sensor, settings) as driver:
            deadline = time.monotonic() + timeout_s
            while len(out) < want:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{len(out)} of {want} sweeps within {timeout_s:g} s")
                out += [r for r in driver.read() if isinstance(r, Spectrum)]
    finally:
        player.stop()
        pair.close()
    return [dataclasses.replace(s, t_mono=k * period_s) for k, s in enumerate(out)], driver


def drone_links(spectra: list[Spectrum], settings: RfSettings) -> list[DroneLink]:
    """Every RF track that was a confirmed (or coasting) drone link at some sweep, with
    the time it first was."""
    rf = RfProcessor(settings)
    found: dict[int, DroneLink] = {}
    for s in spectra:
        tracks = rf.process(s).tracks
        hit = tracks[is_drone_link(tracks["kind"]) & np.isin(tracks["status"], (Status.CONFIRMED, Status.COASTING))]
        for t in hit:
            tid = int(t["rf_track_id"])
            if tid not in found:
                found[tid] = DroneLink(tid, LINK_NAMES[int(t["kind"])], int(t["confidence"]), float(s.t_mono),
                                       float(t["centre_mhz"]), float(t["bandwidth_mhz"]))
    return list(found.values())


def distance_for_snr(emitter: Emitter, snr_db: float, noise_dbm_per_mhz: float) -> float:
    """Metres at which ``emitter`` (on the air) is ``snr_db`` over the noise density."""
    centre = float(np.median(emitter.centres_mhz))
    fspl = emitter.tx_power_dbm - 10.0 * math.log10(emitter.bandwidth_mhz) - noise_dbm_per_mhz - snr_db
    return 1000.0 * 10.0 ** ((fspl - 20.0 * math.log10(centre) - 32.44) / 20.0)


def trial_spectra(link: Emitter | None, snr_db: float, band: tuple[float, float], *, rng: np.random.Generator,
                  sweeps: int = 100, period_s: float = 0.1, others: tuple[tuple[Emitter, float], ...] = (),
                  looks: int = REAL_LOOKS, hops: str = "timed") -> tuple[list[Spectrum], float]:
    """The emulated sweeps of :func:`link_trial` (through the emulator's bytes and the
    driver's parser) and the distance the link was placed at (m)."""
    noise = -105.0
    placed = []
    d_link = float("nan")
    for i, (e, snr) in enumerate(((link, snr_db),) + others if link is not None else others):
        d = distance_for_snr(e, snr, noise)
        if i == 0 and link is not None:
            d_link = d
        placed.append(Interferer(f"e{i}", east_m=d, north_m=0.0, up_m=0.0, emitter=e))
    em = RfExplorerEmulator(Scenario("trial", interferers=tuple(placed)), rng=rng, noise_floor_dbm_per_mhz=noise,
                            looks=looks, hops=hops,
                            boot_start_mhz=band[0], boot_end_mhz=band[1], sweep_rate_hz=1.0 / period_s,
                            min_mhz=15.0, max_mhz=6100.0, streaming=True)
    driver = RfExplorerDriver("rfe", RfExplorerSettings(
        port="loop://", bands=(Band("trial", start_mhz=band[0], end_mhz=band[1]),)))
    spectra = driver.feed(em.model_line() + em.config_line(), 0.0)
    for k in range(sweeps):
        spectra += driver.feed(em.sweep_bytes(k * period_s), k * period_s)
    return [s for s in spectra if isinstance(s, Spectrum)], d_link


def link_trial(link: Emitter | None, snr_db: float, band: tuple[float, float], *, rng: np.random.Generator,
               settings: RfSettings, sweeps: int = 100, period_s: float = 0.1,
               others: tuple[tuple[Emitter, float], ...] = (), looks: int = REAL_LOOKS,
               hops: str = "timed") -> tuple[list[DroneLink], float]:
    """Drone links found in ``sweeps`` emulated sweeps of ``band`` (MHz edges) with
    ``link`` at ``snr_db`` (None: no link) and ``others`` (emitter, SNR dB) beside it;
    also the distance the link was placed at (m). ``looks``: the emulated device's
    averaging (see REAL_LOOKS); ``hops``: how the emulator renders hoppers ("timed", the
    default: in time, as the device sees them; "dwell", "look": earlier models, see
    towerd.sim.rfexplorer)."""
    spectra, d_link = trial_spectra(link, snr_db, band, rng=rng, sweeps=sweeps, period_s=period_s, others=others,
                                    looks=looks, hops=hops)
    return drone_links(spectra, settings), d_link


def quiet_cells(power_dbm: np.ndarray, *, level_db: float = 2.0, burst_db: float = 12.0, guard: int = 3) -> np.ndarray:
    """(cells,) bool: the cells of a recording (``power_dbm`` (sweeps, cells)) that held
    noise alone: their median over the sweeps within ``level_db`` of the recording's
    20th percentile of medians, never ``burst_db`` over their own median, and at least
    ``guard`` cells from any cell that is not quiet (an emitter's skirts)."""
    p = np.asarray(power_dbm, dtype=float)
    med = np.median(p, axis=0)
    loud = (med > np.percentile(med, 20) + level_db) | (p.max(axis=0) >= med + burst_db)
    near = np.convolve(loud.astype(float), np.ones(2 * guard + 1), mode="same") > 0
    return ~near


def false_alarms_on_quiet_cells(spectra: list[Spectrum], settings: RfSettings, *,
                                skip_sweeps: int = 10) -> tuple[int, int]:
    """(detections, cell-sweeps) of the RF processor on the :func:`quiet_cells` of a
    recording, leaving out the first ``skip_sweeps`` sweeps (the floor being learnt):
    the CFAR's false-alarm rate on a real device's noise, to set ``cfar.looks`` by."""
    power = np.array([s.power_dbm for s in spectra], dtype=float)
    quiet = quiet_cells(power)
    rf = RfProcessor(settings)
    hits = cells = 0
    for k, s in enumerate(spectra):
        for band in rf.process(s).bands:
            if k < skip_sweeps:
                continue
            sel = np.isin(np.round(band.freq_mhz, 6), np.round(np.asarray(s.freq_mhz)[quiet], 6))
            hits += int(np.count_nonzero(band.detected & sel))
            cells += int(np.count_nonzero(sel))
    return hits, cells
