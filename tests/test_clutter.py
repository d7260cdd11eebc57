"""Static clutter: the stationarity test, exemptions, the clutter map and the initiator
that consults it."""

from __future__ import annotations

import numpy as np
from numpy.testing import assert_allclose

from towerd.detection.plots import Detections
from towerd.icd import Status
from towerd.tracking.associator import GnnAssociator
from towerd.tracking.clutter import ClutterMap, ClutterMapInitiator, StaticClutterFilter, StaticClutterSettings
from towerd.tracking.deleter import MissDeleter
from towerd.tracking.imm import ImmSettings, build_imm
from towerd.tracking.tracker import Tracker

SIGMA = np.array([1.0, 2.5, 3.0])  # m per axis: about 1 deg azimuth / 1.5 deg elevation at 120 m


def frame(t, positions, rng, radial=None) -> Detections:
    p = np.asarray(positions, dtype=float).reshape(-1, 3)
    n = len(p)
    z = p + rng.normal(0.0, SIGMA, (n, 3))
    rv = np.zeros(n) if radial is None else np.asarray(radial, dtype=float)
    return Detections("radar0", t, z, np.broadcast_to(np.diag(SIGMA**2), (n, 3, 3)).copy(), np.full(n, 20.0), rv)


def tracker(clutter_map: ClutterMap | None = None) -> Tracker:
    pred, upd = build_imm(ImmSettings(enabled=True))
    return Tracker(pred, upd, GnnAssociator(), ClutterMapInitiator(clutter_map=clutter_map),
                   MissDeleter(confirmed_max_coast_s=3.0, coast_after_s=0.5))


def test_static_reflectors_stay_static_and_movers_are_marked_moved_quickly():
    rng = np.random.default_rng(1)
    filt = StaticClutterFilter()
    trk = tracker()
    posts = np.array([[15.0, 40.0, 8.0], [-50.0, 120.0, 5.0], [60.0, 100.0, 6.0], [-20.0, 170.0, 12.0]])
    moved_at, confirmed = {}, set()
    for k in range(600):  # a minute at 10 Hz
        t = 0.1 * k
        drone = [-80.0 + 6.0 * t, 90.0, 30.0]  # appears at t = 0, 6 m/s east
        update = trk.step(frame(t, np.vstack([posts, drone]) if t < 20 else posts, rng))
        static = filt.update(update)
        confirmed.update(update.tracks.track_id[update.tracks.status != Status.TENTATIVE].tolist())
        for tid, s in zip(update.tracks.track_id.tolist(), static.tolist()):
            if not s and tid not in moved_at:
                moved_at[tid] = t
    assert confirmed == {1, 2, 3, 4, 5}  # four posts and the drone, each one track
    # The drone (track 5, started at t = 0) shows motion within a second and a half;
    # in a minute of noisy plots no lamp post ever did.
    assert list(moved_at) == [5] and moved_at[5] <= 1.5, moved_at
    # The map learnt the posts: most of each post's minute sits in the cell of its
    # track's mean position or next to it; a few cells hold the early, unsettled means.
    assert 4 <= len(filt.clutter_map) <= 40
    assert np.all(filt.clutter_map.dwell(posts, 60.0, neighbours=True) >= 20.0)
    assert filt.clutter_map.is_clutter(posts, np.zeros(4), 60.0).all()


def test_a_drone_that_flew_in_stays_reportable_when_it_hovers_and_exempt_tracks_are_never_static():
    rng = np.random.default_rng(2)
    filt = StaticClutterFilter()
    trk = tracker()
    for k in range(300):
        t = 0.1 * k
        pos = [-40.0 + 5.0 * min(t, 8.0), 100.0, 25.0]  # flies 8 s, then hovers
        update = trk.step(frame(t, [pos, [0.0, 150.0, 10.0]], rng))
        static = filt.update(update, exempt=np.isin(update.tracks.track_id, [2]))
    assert update.tracks.track_id.tolist() == [1, 2]
    assert static.tolist() == [False, False]  # 1 flew in; 2 is still, but exempt
    static = filt.update(update)
    assert static.tolist() == [False, True]  # without the exemption, 2 is static


def test_disabled_filter_calls_nothing_static():
    rng = np.random.default_rng(3)
    filt = StaticClutterFilter(StaticClutterSettings(enabled=False))
    update = tracker().step(frame(0.0, [[0.0, 50.0, 5.0]], rng))
    assert filt.update(update).tolist() == [False]


def test_clutter_map_learns_forgets_and_is_bounded():
    s = StaticClutterSettings(map_cell_m=5.0, map_learn_s=10.0, map_forget_s=100.0, map_max_cells=3,
                              map_max_doppler_mps=0.5)
    cmap = ClutterMap(s)
    post = np.array([[12.0, 42.0, 7.0]])
    expected = 0.0
    for k in range(121):  # 12 s of a static track at 10 Hz (the first sighting adds 0)
        cmap.learn(post, np.array([0.1 if k else 0.0]), 0.1 * k)
        expected = expected * np.exp(-0.1 / 100.0) + 0.1 if k else 0.0
    assert_allclose(cmap.dwell(post, 12.0), [expected])  # 11.31 s: 12 s, fading meanwhile
    # A detection in the cell or a neighbouring one, slow or without Doppler, is clutter;
    # a fast one, or one two cells away, is not.
    dets = np.array([[12.0, 42.0, 7.0], [16.0, 44.0, 7.0], [12.0, 42.0, 7.0], [12.0, 42.0, 7.0], [24.0, 42.0, 7.0]])
    rv = np.array([0.0, 0.3, np.nan, -2.0, 0.0])
    assert cmap.is_clutter(dets, rv, 12.0).tolist() == [True, True, True, False, False]
    # Dwell fades with map_forget_s: after 100 s, 11.3/e = 4.2 s < 10 s: forgotten.
    assert_allclose(cmap.dwell(post, 112.0), [expected / np.e])
    assert not cmap.is_clutter(post, np.zeros(1), 112.0)[0]
    # A long gap between sightings does not count as dwell (at most 1 s per sighting).
    cmap.learn(post, np.array([88.0]), 200.0)
    assert_allclose(cmap.dwell(post, 200.0), [expected * np.exp(-(200.0 - 12.0) / 100.0) + 1.0])
    # At most map_max_cells cells: the weakest go.
    for i in range(5):
        cmap.learn(np.array([[100.0 * (i + 1), 0.0, 0.0]]), np.array([0.5]), 200.0 + i)
    assert len(cmap) == 3


def test_clutter_map_initiator_refuses_slow_detections_in_clutter_cells():
    rng = np.random.default_rng(4)
    filt = StaticClutterFilter(StaticClutterSettings(map_learn_s=5.0))
    trk = tracker(filt.clutter_map)
    post = [15.0, 40.0, 8.0]
    for k in range(100):  # 10 s: the post's track is static and its cell learnt
        filt.update(trk.step(frame(0.1 * k, [post], rng)))
    assert trk.next_track_id == 2
    trk.end_all(10.0)  # the tracker restarts (or lost the post)
    update = trk.step(frame(10.1, [post], rng))
    assert len(update.tracks) == 0 and filt.clutter_map.refused == 1
    # A target moving fast enough (radial 3 m/s) in the same cell starts a track.
    update = trk.step(frame(10.2, [post], rng, radial=[3.0]))
    assert update.tracks.track_id.tolist() == [2]


def test_motion_test_by_cofactors_gives_the_decisions_of_a_linear_solve():
    """The motion test inverts its 3x3 matrices by cofactors: the same evidence as
    np.linalg.solve, and d² and v² equal to rounding, for anchors and velocities spread
    across the gate."""
    rng = np.random.default_rng(7)
    filt = StaticClutterFilter()
    n = 4000
    a = rng.normal(size=(2, n, 3, 3))
    spd = a @ np.swapaxes(a, -1, -2) + 0.1 * np.eye(3)  # (2, n, 3, 3) covariances
    P = np.zeros((n, 6, 6))
    P[:, :3, :3], P[:, 3:, 3:] = spd[0], spd[1]
    R0 = np.broadcast_to(np.diag(SIGMA**2), (n, 3, 3))
    x = np.concatenate([rng.normal(size=(n, 3)) * rng.uniform(0.0, 15.0, (n, 1)),
                        rng.normal(size=(n, 3)) * rng.uniform(0.0, 6.0, (n, 1))], axis=1)
    z0 = np.zeros((n, 3))
    d = x[:, :3]
    d2 = np.einsum("ni,ni->n", d, np.linalg.solve(P[:, :3, :3] + R0, d[..., None])[..., 0])
    v = x[:, 3:]
    v2 = np.einsum("ni,ni->n", v, np.linalg.solve(P[:, 3:, 3:], v[..., None])[..., 0])
    s = filt.settings
    want = (((d2 > filt._gate) & (np.linalg.norm(d, axis=1) > s.radius_m))
            | ((v2 > filt._gate) & (np.linalg.norm(v, axis=1) > s.max_speed_mps)))
    assert 0.2 < want.mean() < 0.8  # both sides of the gate are exercised
    np.testing.assert_array_equal(filt._motion_evidence(x, P, z0, R0), want)


def test_clutter_map_learning_of_known_cells_equals_the_general_path():
    """Learning into cells the map knows, one track each (the per-frame case, without
    np.unique), leaves the map exactly as the general path does."""
    rng = np.random.default_rng(3)
    fast, general = ClutterMap(StaticClutterSettings()), ClutterMap(StaticClutterSettings())
    posts = rng.uniform(-100.0, 100.0, (6, 3))
    for k in range(50):
        t = 0.1 * k
        pos = posts + rng.normal(0.0, 0.3, posts.shape)
        dwell = rng.uniform(0.0, 0.2, len(pos))
        fast.learn(pos, dwell, t)
        general._learn_cells(general._pack(general.cell_index(pos)), np.clip(dwell, 0.0, 1.0), t)
    assert len(fast) >= len(posts)
    np.testing.assert_array_equal(fast._keys, general._keys)
    assert fast._dwell.tobytes() == general._dwell.tobytes() and fast._t.tobytes() == general._t.tobytes()


def test_labeller_static_clutter_follows_exempt_tracks_changed_after_observe():
    """Labeller.labels() answers from what observe() decided, unless the exempt tracks changed since."""
    from towerd.geo import Site
    from towerd.labeller import Labeller
    from towerd.threat import ThreatAssessor, ThreatSettings
    from towerd.tracking.classify import ClassificationSettings

    rng = np.random.default_rng(2)
    trk = tracker()
    labeller = Labeller(ClassificationSettings(), StaticClutterFilter(StaticClutterSettings(exempt_uas_confidence=101)),
                        ThreatAssessor(ThreatSettings(), Site(0, 0, 0)))
    exempt = {"ids": np.zeros(0, dtype=np.uint32)}
    labeller.exempt_tracks = lambda: exempt["ids"]
    for k in range(100):
        update = trk.step(frame(0.1 * k, [[0.0, 150.0, 10.0]], rng))  # a lamp post
        labeller.observe(update)
    rows = np.flatnonzero(update.tracks.status == Status.CONFIRMED)
    assert len(rows) == 1
    assert labeller.labels(rows).reportable.tolist() == [False]  # static clutter
    exempt["ids"] = update.tracks.track_id[rows].astype(np.uint32)  # a Remote ID pairing, after observe()
    assert labeller.labels(rows).reportable.tolist() == [True]
    exempt["ids"] = np.zeros(0, dtype=np.uint32)
    assert labeller.labels(rows).reportable.tolist() == [False]
