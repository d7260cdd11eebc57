"""RF expiry skips a band's time rules and classification when they would change no row
(BandTracker._quiet): the same tracks and ENDED rows as the full pass, at random times
and exactly on the coasting and ending boundaries."""

from __future__ import annotations

import numpy as np

from rf_synth import Emitter, Scene
from towerd.icd import Status
from towerd.rf.cfar import CfarSettings
from towerd.rf.processor import RfProcessor, RfSettings
from towerd.rf.tracker import BandTracker, RfTrackingSettings

SCENE = Scene(2400.0, 0.25, 335, looks=1, period_s=0.1, emitters=[
    Emitter(2445.5, 20.0, 15.0),  # continuous video link
    Emitter(2412.0, 20.0, 15.0, duty=0.35),  # bursty Wi-Fi
    Emitter(2437.0, 20.0, 12.0, duty=0.8),  # fades in and out of "continuous": its class has hysteresis
    Emitter(2475.0, 0.25, 20.0, shape="cw", duty=0.7),
    Emitter(2460.0, 5.0, 15.0, first_sweep=20, last_sweep=60),  # comes and goes: coasts and ends
])
SETTINGS = RfSettings(cfar=CfarSettings(looks=1), tracking=RfTrackingSettings(coast_after_s=0.3, end_after_s=1.5))


def _run() -> tuple[list[bytes], int, set[int]]:
    """Every sweep's and expiry's tracks and ended rows as bytes; the expiries that kept the
    same array (skipped); the statuses seen."""
    rng = np.random.default_rng(11)
    proc = RfProcessor(SETTINGS)
    out, kept, statuses = [], 0, set()
    for k in range(120):
        spectrum = SCENE.sweep(k, rng)
        if k % 40 < 30:  # silent spells: tracks coast and end
            update = proc.process(spectrum)
            out += [update.tracks.tobytes(), update.ended.tobytes()]
        t = spectrum.t_mono
        last = proc.tracks["last_seen_mono"].tolist()
        times = list(t + np.random.default_rng(k).uniform(0.0, 0.5, 2))
        times += [x + d for x in last[:3] for d in (0.3, 1.5)]
        for when in sorted(times):
            before = proc.tracks
            update = proc.expire(when)
            kept += update.tracks is before and len(before) > 0
            out += [update.tracks.tobytes(), update.ended.tobytes()]
            statuses.update(update.tracks["status"].tolist() + update.ended["status"].tolist())
    return out, kept, statuses


def test_quiet_rf_expiry_gives_what_the_full_pass_gives(monkeypatch):
    quick, kept, statuses = _run()
    with monkeypatch.context() as m:
        m.setattr(BandTracker, "_quiet", lambda self, t: False)  # the full pass at every expiry
        full, kept_full, _ = _run()
    assert quick == full
    assert kept > 0 and kept_full == 0
    assert {int(Status.CONFIRMED), int(Status.COASTING), int(Status.ENDED)} <= statuses


def test_a_class_that_changed_its_hysteresis_group_is_classified_again():
    # A continuous-looking carrier that widened into a Wi-Fi channel, too young there for a
    # video class, with a duty (0.7) that only a continuous class's hysteresis keeps
    # continuous: classify calls it unknown, and again (no longer continuous) Wi-Fi-like.
    # Expiry must run classify again as the full pass does, not keep the first answer.
    def band_with_the_row() -> BandTracker:
        bt = BandTracker(0, RfTrackingSettings(), SETTINGS.classify, RfProcessor(SETTINGS).ids)
        row = np.zeros(1, dtype=bt.tracks.dtype)
        row["rf_track_id"], row["status"], row["kind"] = 1, Status.CONFIRMED, 1  # LinkKind.CARRIER
        row["centre_mhz"], row["bandwidth_mhz"], row["sweeps"] = 2437.0, 19.5, 10
        row["hit_history"] = 0b1111111000  # 7 of the last 10 sweeps
        row["fill_ratio"], row["width_jitter_mhz"], row["hole_excess"] = 1.0, 0.0, 0.0
        bt.tracks = row
        return bt

    quick = band_with_the_row()
    kinds = [int(quick.expire(0.1).tracks["kind"][0]), int(quick.expire(0.2).tracks["kind"][0])]
    assert kinds == [0, 2]  # LinkKind.UNKNOWN, then WIFI_LIKE: what two full passes give
