"""RF emitter tracking: M-of-N persistence, statuses, ids, hopping sets, and the drone-link
classes on synthetic scenes (drone links recognised; Wi-Fi and carriers not)."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from rf_synth import Emitter, Hopper, Scene
from towerd.drivers.measurements import Spectrum
from towerd.icd import Category, Status
from towerd.rf.cfar import CfarSettings
from towerd.rf.classify import ClassifierSettings, LinkKind, classify, is_drone_link
from towerd.rf.emitters import EMITTER_DTYPE
from towerd.rf.processor import RF_TRACK_ID_BASE, BandSettings, RfProcessor, RfSettings
from towerd.rf.tracker import BandTracker, RfTrackingSettings, TrackIds, empty_rf_tracks


def emitters(*rows: tuple[float, float]) -> np.ndarray:
    """Emitters (centre MHz, bandwidth MHz) at -80 dBm, 20 dB over the floor."""
    em = np.zeros(len(rows), dtype=EMITTER_DTYPE)
    for i, (c, bw) in enumerate(rows):
        em[i] = (c, bw, c - bw / 2, c + bw / 2, -78.0, c, -80.0, 20.0, np.nan, np.nan, max(1, int(bw / 0.25)), 0, c, 0.0, np.nan)
    return em


def tracker(**kw) -> BandTracker:
    return BandTracker(0, RfTrackingSettings(**kw), ClassifierSettings(), TrackIds(RF_TRACK_ID_BASE))


def step(bt: BandTracker, em: np.ndarray, t: float):
    return bt.step(em, t, cells=335, step_mhz=0.25, pfa=1e-3)


def test_m_of_n_persistence_confirms_on_the_mth_hit_within_n_sweeps():
    bt = tracker(confirm_hits=3, confirm_window=4, tentative_max_misses=2)
    on = [True, False, True, False, True]  # hits in sweeps 0, 2, 4: 2 of 4, then 3 of 5 but 2 of the last 4
    statuses = []
    for k, present in enumerate(on):
        res = step(bt, emitters((2440.0, 0.5)) if present else emitters(), k * 0.5)
        statuses.append(Status(res.tracks["status"][0]).name if len(res.tracks) else None)
    assert statuses == ["TENTATIVE"] * 5
    res = step(bt, emitters((2440.0, 0.5)), 2.5)  # hits in 2, 4, 5: 3 of the last 4
    assert res.tracks["status"].tolist() == [Status.CONFIRMED]
    assert res.tracks["hits"].tolist() == [4]


def test_a_single_sweep_blip_is_never_confirmed_and_is_dropped():
    bt = tracker(confirm_hits=2, confirm_window=3, tentative_max_misses=2)
    res = step(bt, emitters((2440.0, 0.5)), 0.0)
    tid = int(res.tracks["rf_track_id"][0])
    for k in range(1, 3):
        res = step(bt, emitters(), k * 0.5)
        assert res.tracks["status"].tolist() == [Status.TENTATIVE]
    res = step(bt, emitters(), 1.5)  # third consecutive miss > tentative_max_misses
    assert len(res.tracks) == 0
    assert res.ended["rf_track_id"].tolist() == [tid] and res.ended["status"].tolist() == [Status.ENDED]


def test_coasting_ending_and_ids_never_reused():
    bt = tracker(confirm_hits=2, confirm_window=3, coast_after_s=3.0, end_after_s=10.0)
    for k in range(6):
        res = step(bt, emitters((2440.0, 20.0)), k * 1.0)
    tid = int(res.tracks["rf_track_id"][0])
    assert res.tracks["status"].tolist() == [Status.CONFIRMED]
    assert_allclose(res.tracks["duty"], 1.0)
    res = step(bt, emitters(), 8.0)  # 3 s since the last hit at 5.0: not yet coasting
    assert res.tracks["status"].tolist() == [Status.CONFIRMED]
    assert_allclose(res.tracks["duty"], 6 / 7)
    res = step(bt, emitters(), 8.5)
    assert res.tracks["status"].tolist() == [Status.COASTING]
    res = bt.expire(15.5)  # more than 10 s since 5.0
    assert len(res.tracks) == 0 and res.ended["rf_track_id"].tolist() == [tid]
    res = step(bt, emitters((2440.0, 20.0)), 16.0)
    assert int(res.tracks["rf_track_id"][0]) == tid + 1


def test_association_follows_a_drifting_emitter_and_keeps_neighbours_apart():
    bt = tracker()
    ids = None
    for k in range(10):
        res = step(bt, emitters((2440.0 + 0.3 * k, 20.0), (2470.0, 0.25), (2471.0, 0.25)), k * 0.5)
        if ids is None:
            ids = sorted(res.tracks["rf_track_id"].tolist())
        assert sorted(res.tracks["rf_track_id"].tolist()) == ids  # no new tracks, none lost
    wide = res.tracks[res.tracks["bandwidth_mhz"] > 5][0]
    assert abs(wide["centre_mhz"] - 2442.7) < 1.0
    assert wide["centre_std_mhz"] > 0.1  # the drift shows in its history
    assert_allclose(sorted(res.tracks["centre_mhz"][res.tracks["bandwidth_mhz"] < 1]), [2470.0, 2471.0])


def run(scene: Scene, sweeps: int, seed: int, settings: RfSettings | None = None) -> tuple[RfProcessor, np.ndarray]:
    rng = np.random.default_rng(seed)
    proc = RfProcessor(settings or RfSettings(cfar=CfarSettings(looks=scene.looks)))
    for k in range(sweeps):
        update = proc.process(scene.sweep(k, rng))
    return proc, update.tracks


def near(tracks: np.ndarray, mhz: float, tol: float = 2.0) -> np.ndarray:
    return tracks[np.abs(tracks["centre_mhz"] - mhz) <= tol]


def established(tracks: np.ndarray) -> np.ndarray:
    return tracks[np.isin(tracks["status"], (Status.CONFIRMED, Status.COASTING))]


def test_noise_alone_confirms_no_track():
    # Pfa 1e-3 over 261 cells: about one false cell every four sweeps, never persistent.
    _, tracks = run(Scene(902.0, 0.1, 261, looks=1, period_s=0.25), 300, seed=31)
    assert len(established(tracks)) == 0


@pytest.mark.parametrize("looks", [1, 8])
def test_24ghz_ocusync_is_a_drone_link_wifi_and_a_carrier_are_not(looks):
    scene = Scene(
        2400.0, 0.25, 335, looks=looks,
        emitters=[
            Emitter(2445.5, 20.0, 15.0),  # OcuSync-like downlink on the DJI 1 MHz grid, continuous
            Emitter(2412.0, 20.0, 15.0, duty=0.35),  # Wi-Fi channel 1, bursty
            Emitter(2475.0, 0.25, 20.0, shape="cw"),  # steady narrowband carrier
        ],
    )
    _, tracks = run(scene, 40, seed=41 + looks)
    ocu = established(near(tracks, 2445.5))
    assert len(ocu) == 1
    assert ocu["kind"][0] == LinkKind.OFDM_VIDEO and ocu["category"][0] == Category.UAS
    assert ocu["confidence"][0] == 75
    assert abs(ocu["bandwidth_mhz"][0] - 20.0) < 1.0 and ocu["duty"][0] > 0.9
    carrier = established(near(tracks, 2475.0, 0.5))
    assert carrier["kind"].tolist() == [LinkKind.CARRIER]
    # Neither the bursty Wi-Fi channel nor the carrier, nor anything else, is a drone link.
    others = tracks[np.abs(tracks["centre_mhz"] - 2445.5) > 2.0]
    assert not np.any(is_drone_link(others["kind"]))
    assert np.all(others["category"] == Category.UNKNOWN)
    wifi = established(near(tracks, 2412.0))
    assert set(wifi["kind"].tolist()) <= {LinkKind.WIFI_LIKE}
    assert np.all(wifi["duty"] < 0.6)


def test_continuous_20mhz_on_a_wifi_channel_is_ofdm_video_with_less_confidence():
    scene = Scene(2400.0, 0.25, 335, looks=4, emitters=[Emitter(2437.0, 20.0, 15.0)])
    _, tracks = run(scene, 30, seed=5)
    t = established(near(tracks, 2437.0))
    assert t["kind"].tolist() == [LinkKind.OFDM_VIDEO] and t["confidence"].tolist() == [50]


@pytest.mark.parametrize("looks", [1, 8])
def test_58ghz_analog_fpv_and_ocusync_10mhz(looks):
    scene = Scene(
        5725.0, 0.5, 301, looks=looks,
        emitters=[
            Emitter(5806.0, 16.0, 20.0, shape="peaked"),  # Raceband R5-ish analog FPV, continuous
            Emitter(5756.5, 10.0, 12.0),  # 10 MHz OcuSync at 5.8 GHz
        ],
    )
    _, tracks = run(scene, 40, seed=51 + looks)
    fpv = established(near(tracks, 5806.0))
    assert fpv["kind"].tolist() == [LinkKind.ANALOG_VIDEO] and fpv["confidence"].tolist() == [80]
    ocu = established(near(tracks, 5756.5))
    assert ocu["kind"].tolist() == [LinkKind.OFDM_VIDEO]
    assert abs(ocu["bandwidth_mhz"][0] - 10.0) < 1.5


@pytest.mark.parametrize("looks", [1, 8])
def test_elrs_hopping_comb_is_a_drone_control_link_a_carrier_inside_it_is_not(looks):
    # ExpressLRS FCC: 40 LoRa channels 903.5-926.9 MHz, 500 kHz; a few hops caught per sweep.
    channels = np.linspace(903.5, 926.9, 40)
    scene = Scene(
        902.0, 0.1, 261, looks=looks, period_s=0.25,
        hoppers=[Hopper(channels, 0.5, 15.0, hops_per_sweep=3)],
        emitters=[Emitter(915.05, 0.1, 23.0, shape="cw")],
    )
    _, tracks = run(scene, 60, seed=61 + looks)
    comb = established(tracks[tracks["comb"]])
    assert len(comb) == 1
    c = comb[0]
    assert c["kind"] == LinkKind.FHSS_CONTROL and c["category"] == Category.UAS and c["confidence"] >= 70
    assert c["channels"] >= 6
    assert 903.0 < c["centre_min_mhz"] < 905.0 and 925.5 < c["centre_max_mhz"] < 927.5
    assert abs(c["channel_spacing_mhz"] - 0.6) < 0.35
    # The hops themselves are no tracks of their own; the steady carrier is one, not a drone.
    singles = established(tracks[~tracks["comb"]])
    assert singles["kind"].tolist() == [LinkKind.CARRIER]
    assert not is_drone_link(singles["kind"]).any()


def test_bursty_narrowband_on_a_few_fixed_channels_is_no_hopping_set():
    # LoRaWAN-like: 3 fixed channels within 1 MHz, bursty: too few channels, too narrow a span.
    scene = Scene(
        863.0, 0.05, 141, looks=1, period_s=0.25,
        emitters=[Emitter(f, 0.125, 15.0, shape="flat", duty=0.3) for f in (868.1, 868.3, 868.5)],
    )
    _, tracks = run(scene, 60, seed=71)
    assert not np.any(tracks["comb"])
    assert not np.any(is_drone_link(tracks["kind"]))


def test_sweeps_are_cut_into_the_band_plan_and_tracks_name_their_band():
    settings = RfSettings(bands=(BandSettings("2g4", 2400.0, 2483.5), BandSettings("x", 2520.0, 2540.0)))
    proc = RfProcessor(settings)
    rng = np.random.default_rng(3)
    scene = Scene(2350.0, 0.5, 401, looks=1, emitters=[Emitter(2440.5, 20.0, 15.0)], band="wide")
    for k in range(5):
        update = proc.process(scene.sweep(k, rng))
    assert [b.band for b in update.bands] == ["2g4", "x"]
    assert_allclose(update.bands[0].freq_mhz[[0, -1]], [2400.0, 2483.5])
    assert_allclose(update.bands[1].freq_mhz[[0, -1]], [2520.0, 2540.0])
    t = established(update.tracks)
    assert len(t) == 1 and proc.band_keys[t["band"][0]] == ("rfe", "2g4")
    assert t["rf_track_id"][0] >= RF_TRACK_ID_BASE


def test_processor_expires_and_ends_tracks_and_survives_bad_sweeps(caplog):
    proc = RfProcessor(RfSettings())
    rng = np.random.default_rng(8)
    scene = Scene(2400.0, 0.25, 335, looks=1, emitters=[Emitter(2440.5, 20.0, 15.0)])
    for k in range(6):
        proc.process(scene.sweep(k, rng))
    assert len(established(proc.tracks)) == 1
    bad = Spectrum("rfe", 3.0, 6, 2400.0, 0.25, np.full(335, np.nan, dtype=np.float32))
    assert len(proc.process(bad).bands) == 0
    assert "dropped" in caplog.text
    maxhold = Spectrum("rfe", 3.1, 7, 2400.0, 0.25, scene.sweep(7, rng).power_dbm, calculator="max-hold")
    proc.process(maxhold)
    assert "max-hold" in caplog.text
    update = proc.expire(3.1 + 15.0 + 0.1)  # end_after_s = 15 after the last hit
    assert len(update.tracks) == 0 and len(update.ended) >= 1
    assert np.all(update.ended["status"] == Status.ENDED)
    for k in range(3):
        proc.process(scene.sweep(40 + k, rng))
    update = proc.end_all(100.0)
    assert len(update.tracks) == 0 and len(update.ended) >= 1
    assert not update.tracks.flags.writeable


def test_classifier_waits_for_history_and_keeps_a_fading_link_with_hysteresis():
    s = ClassifierSettings(min_sweeps=8, continuous_duty=0.8, duty_hysteresis=0.15)  # keep down to 0.65
    t = empty_rf_tracks(3)
    t["centre_mhz"] = 2445.5
    t["bandwidth_mhz"] = 20.0
    t["sweeps"] = [7, 20, 20]
    t["duty"] = [1.0, 0.7, 0.7]
    t["kind"] = [LinkKind.UNKNOWN, LinkKind.UNKNOWN, LinkKind.OFDM_VIDEO]
    kind, conf = classify(t, s)
    assert kind.tolist() == [LinkKind.UNKNOWN, LinkKind.UNKNOWN, LinkKind.OFDM_VIDEO]
    assert conf.tolist() == [0, 0, 75]


def test_a_new_sweep_grid_relearns_the_floor_and_keeps_the_tracks(caplog):
    caplog.set_level("INFO")
    proc = RfProcessor(RfSettings())
    rng = np.random.default_rng(12)
    fine = Scene(2400.0, 0.25, 335, looks=1, emitters=[Emitter(2440.5, 20.0, 15.0)], band="2g4")
    coarse = Scene(2400.0, 0.75, 112, looks=1, emitters=[Emitter(2440.5, 20.0, 15.0)], band="2g4")
    for k in range(6):
        proc.process(fine.sweep(k, rng))
    before = established(proc.tracks)["rf_track_id"].tolist()
    for k in range(6, 12):
        update = proc.process(coarse.sweep(k, rng))
    assert "sweep grid changed" in caplog.text
    assert update.bands[0].freq_mhz.shape == (112,)
    assert established(proc.tracks)["rf_track_id"].tolist() == before == [RF_TRACK_ID_BASE]


@pytest.mark.parametrize("wide_piece", [False, True])
def test_narrow_pieces_of_a_bursting_wifi_channel_are_no_hopping_set(wide_piece):
    """What the vendor's Wi-Fi recording showed: a swept analyser cuts 802.11 bursts on
    channel 6 into pieces one cell wide, revisiting cells all over the channel, and now
    and then a wider piece. Without a wider piece they make a hopping set (channels one
    cell apart); with wider pieces inside the channel (burst_min_pieces, 2, within the hop
    window), none: the pieces collected before the second are dropped too."""
    rng = np.random.default_rng(7)
    cells = 2427.0 + 0.75 * np.arange(27)  # channel 6, 0.75 MHz cells
    bt = tracker()
    for k in range(60):
        rows = [(float(c), 0.75) for c in rng.choice(cells, size=2, replace=False)]
        if wide_piece and k % 10 == 3:
            rows.append((2436.0, 4.5))
        res = bt.step(emitters(*rows), k * 0.1, cells=112, step_mhz=0.75, pfa=1e-3)
    assert bool(np.any(res.tracks["comb"])) is not wide_piece


@pytest.mark.parametrize(("min_pieces", "comb"), [(1, False), (2, True)])
def test_one_joined_pair_of_hops_does_not_blind_a_channel(min_pieces, comb):
    """Two hops of one sweep joined over the noise between them look like a piece of an
    802.11 burst (ELRS 2.4: 3-4 in 15 s at 15 dB). With one piece enough (the rule before
    burst_min_pieces) it kept 2401-2433 MHz from the hopping-set test and the set, whose
    hops are in there, was missed; with two needed, one such piece does nothing."""
    rng = np.random.default_rng(3)
    grid = 2400.4 + np.arange(33)  # ELRS 2.4 channels 2400.4-2432.4 MHz
    bt = tracker(burst_min_pieces=min_pieces)
    for k in range(80):
        rows = [(float(rng.choice(grid)), 0.75)]
        if k == 2:
            rows.append((2416.9, 4.5))
        res = bt.step(emitters(*rows), k * 0.1, cells=112, step_mhz=0.75, pfa=1e-3)
    assert bool(np.any(res.tracks["comb"])) is comb


def wifi_channel_track(hole_excess: float, previous: LinkKind) -> np.ndarray:
    t = empty_rf_tracks(1)
    t["centre_mhz"], t["bandwidth_mhz"], t["duty"], t["sweeps"] = 2437.0, 19.5, 1.0, 60
    t["fill_ratio"], t["width_jitter_mhz"], t["hole_excess"], t["kind"] = 1.0, 1.0, hole_excess, previous
    return t


@pytest.mark.parametrize(("holes", "previous", "expected"), [
    (0.05, LinkKind.UNKNOWN, LinkKind.WIFI_LIKE),
    (0.03, LinkKind.UNKNOWN, LinkKind.OFDM_VIDEO),
    (0.03, LinkKind.WIFI_LIKE, LinkKind.WIFI_LIKE),  # a dip of a channel busy 90 %: still Wi-Fi
    (0.015, LinkKind.WIFI_LIKE, LinkKind.OFDM_VIDEO),  # below 0.04 - 0.02: a steady plateau after all
])
def test_wifi_like_keeps_its_class_through_a_dip_of_its_holes(holes, previous, expected):
    kind, _ = classify(wifi_channel_track(holes, previous), ClassifierSettings())
    assert kind[0] == expected
