"""Sensing: RF false links on real spectra, beside the emulated drone links' Pd.

Real spectra: every tests/captures/rfexplorer/real_*.bin (the RF Explorer vendor's public
sample recordings re-encoded into the device's serial stream; origin in each .json) is
played through the RF Explorer driver over a pty, looped to last at least twice the
longest confirmation (hop window plus M-of-N), the sweeps timed at the recording's
sweep period, and run through the RF processor with the shipped config/towerd.yaml:
its band plan for the 2.4 GHz Wi-Fi recording (as a tower runs), the shipped thresholds
over the recording's whole span for the others (the shipped plan does not cover FM,
TV or 1400 MHz, so the plan alone would hide them).

Emulated links (towerd.sim.rfexplorer through the driver's parser, 112 points, 10
sweeps/s, 15 s per trial): probability of detection (a confirmed drone link of the
right kind within the trial) and median time to confirm at in-band SNRs (the link's
power spectral density over the noise's when on the air), over seeded trials; and the
non-drone emitters the emulator renders (802.11 bursts, Bluetooth BR/EDR) with the
fraction of trials that gave any drone link.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from pathlib import Path

import numpy as np

from benchmarks.common import Figure, Section
from towerd.config import load_config
from towerd.rf.evaluate import drone_links, link_trial, play_capture
from towerd.sim.scenario import ELRS_ISM2G4_MHZ, Emitter

REPO = Path(__file__).resolve().parent.parent
CAPTURES = REPO / "tests" / "captures" / "rfexplorer"
BAND_2G4 = (2400.0, 2483.5)
LINKS = (
    ("OFDM video (OcuSync 10 MHz, 2459.5 MHz)", Emitter.of("ocusync"), BAND_2G4, {"ofdm-video"}),
    ("OFDM video (OcuSync 20 MHz on Wi-Fi channel 6, 2437 MHz)",
     Emitter.of("ocusync", centres_mhz=(2437.0,), bandwidth_mhz=20.0), BAND_2G4, {"ofdm-video"}),
    ("analog FPV (16 MHz FM, 5806 MHz)", Emitter.of("analog_video"), (5725.0, 5875.0), {"analog-video"}),
    ("ELRS 915 (40 x 500 kHz)", Emitter.of("elrs"), (902.0, 928.0), {"fhss-control"}),
    ("ELRS 2.4 (80 x 812.5 kHz)", Emitter.of("elrs", centres_mhz=ELRS_ISM2G4_MHZ, bandwidth_mhz=0.8125), BAND_2G4,
     {"fhss-control"}),
    ("ELRS 915, hops dwelling", Emitter.of("elrs"), (902.0, 928.0), {"fhss-control"}, True),
    ("ELRS 2.4, hops dwelling", Emitter.of("elrs", centres_mhz=ELRS_ISM2G4_MHZ, bandwidth_mhz=0.8125), BAND_2G4,
     {"fhss-control"}, True),
)
NON_DRONE = (
    ("802.11 ch 6, busy 10 %", Emitter.of("wifi", duty_cycle=0.1)),
    ("802.11 ch 6, busy 30 %", Emitter.of("wifi", duty_cycle=0.3)),
    ("802.11 ch 6, busy 50 %", Emitter.of("wifi", duty_cycle=0.5)),
    ("802.11 ch 6, busy 80 %", Emitter.of("wifi", duty_cycle=0.8)),
    ("Bluetooth BR/EDR, 79 x 1 MHz", Emitter.of("bluetooth")),
    ("Bluetooth BR/EDR, hops dwelling", Emitter.of("bluetooth"), True),
)


def real_rows(settings) -> list[str]:
    rows = []
    t, c = settings.tracking, settings.classify
    for path in sorted(CAPTURES.glob("real_*.bin")):
        meta = json.loads(path.with_suffix(".json").read_text())
        period = meta["sweep_period_s"]
        need = 2.0 * (t.hop_window_s + (c.min_sweeps + t.confirm_window) * period)
        n = meta["stats"]["sweeps"]
        loops = max(1, math.ceil(need / (n * period)))
        spectra, driver = play_capture(path.read_bytes(), period, loops=loops)
        covered = path.stem == "real_wifi_2g4"
        links = drone_links(spectra, settings if covered else dataclasses.replace(settings, bands=()))
        what = meta["description"].split(";")[0].removeprefix("REAL RECORDING: ")
        rows.append(f"| {path.stem} | {what} | {len(spectra)} ({loops}x) | {len(spectra) * period:.0f} s "
                    f"| {'shipped plan' if covered else 'recording span'} | {driver.counters.resyncs} "
                    f"| **{len(links)}** |")
    return rows


def trials(emitter, snr, band, n, settings, *, link: bool, dwell: bool = False) -> tuple[list, list]:
    outs = []
    for seed in range(n):
        rng = np.random.default_rng(1000 + seed)
        if link:
            found, _ = link_trial(emitter, snr, band, rng=rng, settings=settings, sweeps=150, hop_dwell=dwell)
        else:
            found, _ = link_trial(None, 0.0, band, rng=rng, settings=settings, sweeps=150, others=((emitter, snr),),
                                  hop_dwell=dwell)
        outs.append(found)
    return outs


def run(quick: bool) -> Section:
    settings = load_config(REPO / "config" / "towerd.yaml").config.rf
    n = 5 if quick else 10
    snrs = (6.0, 10.0, 15.0, 20.0, 25.0)
    lines = ["Real recordings through the driver (pty) and the RF processor, shipped thresholds:", "",
             "| capture | what | sweeps played | time | band plan | resyncs | drone links |",
             "|---|---|---|---|---|---|---|", *real_rows(settings), "",
             "Before this change (commit 90bf4e8) the Wi-Fi recording, played at 10 sweeps/s, gave one "
             "fhss-control link (uas, confidence 45) confirmed at 5.0 s, alive to the end; the others gave none.",
             "", f"Emulated drone links, {n} seeded trials of 15 s per cell: Pd / median time to confirm:", "",
             "| link | " + " | ".join(f"{s:g} dB" for s in snrs) + " |", "|---" * (len(snrs) + 1) + "|"]
    for name, emitter, band, kinds, *dwell in LINKS:
        cells = []
        for snr in snrs:
            outs = trials(emitter, snr, band, n, settings, link=True, dwell=bool(dwell))
            hits = [min(lk.t_confirmed_s for lk in o if lk.kind in kinds) for o in outs
                    if any(lk.kind in kinds for lk in o)]
            pd = len(hits) / n
            cells.append(f"{pd:.2f} / {statistics.median(hits):.1f} s" if hits else f"{pd:.2f} / -")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"Emulated non-drone emitters, {n} trials of 15 s: fraction of trials with any drone link "
              "(and the kinds given):", "", "| emitter | " + " | ".join(f"{s:g} dB" for s in snrs) + " |",
              "|---" * (len(snrs) + 1) + "|"]
    for name, emitter, *dwell in NON_DRONE:
        cells = []
        for snr in snrs:
            outs = trials(emitter, snr, BAND_2G4, n, settings, link=False, dwell=bool(dwell))
            kinds = sorted({f"{lk.kind} {lk.confidence}" for o in outs for lk in o})
            cells.append(f"{sum(bool(o) for o in outs) / n:.2f}" + (f" ({', '.join(kinds)})" if kinds else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Before this change (commit a941ea8), 20 trials per cell, emulator hops independent per look: "
              "ELRS 915 0.00 / 0.00 / 0.25 / 0.80 / 0.85 and ELRS 2.4 0.00 / 0.00 / 0.00 / 0.00 / 0.10 at 6-25 dB; "
              "Bluetooth gave fhss-control (confidence 45-53) in 0.00 / 0.10 / 0.45 / 0.50 / 0.40 of trials; "
              "802.11 busy 50 % gave ofdm-video 50 in 1.00 of trials at 15 dB and 0.35 at 20 dB. "
              "Before the hole test (commit 6bd27d5), 10 trials per cell: 802.11 busy 50 % gave ofdm-video 50 in "
              "1.00 of trials at 15 dB and 0.30 at 20 dB; busy 80 % (first measured with this change, 3 seeds each "
              "of tests/test_rf_real_spectra.py) ofdm-video 50 in 3 of 3 at 15 dB and at 20 dB. A channel that busy "
              "is as wide and as filled as a video plateau (19.6 +- 0.9 MHz and fill 1.05 at 80 % / 15 dB, against "
              "20.3 +- 0.2 and 1.09 for a 20 MHz OcuSync link at 20 dB); what tells it is the cells its off moments "
              "leave at the noise floor inside the plateau (hole_excess, see towerd.rf.emitters). With the shipped "
              "cfar.looks (1) the steady model expects more such cells than the 2-look device gives, so the test "
              "errs toward video: busy 80 % at 10 dB still gives ofdm-video 50, as does a channel busy 90 %."
              " The 20 MHz OcuSync row on channel 6 is new with this change; its one miss at 10 dB (1 of 10 seeds) is the same with the hole test switched off (wifi_min_hole_excess 1.0), measured on the same seeds.",
              "", "Hopping sets in 2.4 GHz are told apart by their hop grid: each hop's centre is the power "
              "centroid of its cells and one neighbour each side; the circular mean of (centre - 2402) mod 1 MHz "
              "over the set's hops is near 0 for Bluetooth (2402 + k MHz), near 0.4 MHz for ELRS 2.4 "
              "(2400.4 + k MHz). Only a set whose offset is shown (Rayleigh test, 1e-3) to be off the Bluetooth "
              "grid is a drone link there; on it, bluetooth-like; undecided, unknown. \"Hops dwelling\": the "
              "emulator renders each hop on for the whole pass over its channel (the device's view: a 100 MHz "
              "sweep of 50 ms passes a channel in ~0.6 ms, under an ELRS dwell of 2-160 ms), so a hop lights "
              "its 1-3 cells together and the cell ratio places it; the other rows keep the historic model "
              "(each cell an independent look, which multiplies hits per sweep by the cells per channel and "
              "hides the cell ratio). With single-cell independent looks the grid offset is too weak to "
              "decide (resultant 0.1-0.3), so ELRS 2.4 in that model is no longer reported."
              " ELRS 915 with dwelling hops gives about duty (0.25) hops per sweep over its 40 channels, not 0.25 x the ~2.6 cells per channel of the independent-look model: its set is confirmed at 15-17 s (2 seeds at 25 dB, 25 s runs), just past the 15 s trials."]
    return Section(title="Sensing: RF false links on real spectra", text="\n".join(lines))
