"""What kind of link an RF track is: drone video/control link, Wi-Fi-like, carrier, unknown.

Rules, in order, applied to each track once it has ``min_sweeps`` sweeps of history in
its band (before that: unknown, confidence 0). "Continuous" means a duty cycle (the
fraction of the band's sweeps with the emitter detected, over the last up to 64) of at
least ``continuous_duty``; a track already given a continuous class keeps it down to
``continuous_duty − duty_hysteresis``, so a fading link does not flap.

1. A hopping set (many narrow emitters revisiting a channel set, or on one grid, see
   :mod:`towerd.rf.tracker`): **fhss-control** (ELRS / LoRa / FrSky-like control link),
   confidence ``fhss_confidence`` plus 2 per revisited channel beyond the tracker's
   minimum (at most 95). Inside ``fhss_shared_bands_mhz`` (2.4 GHz, where Bluetooth
   hops) by its hop grid: the circular mean offset of its hops' centres from
   ``reference_grid_mhz`` (Bluetooth: 2402 + k MHz), decided when hops x resultant² ≥
   ln(1 / ``grid_false_alarm``) (Rayleigh). Within ``grid_tolerance_mhz`` of that grid:
   **bluetooth-like**, not a drone; beyond it (ELRS 2.4: 2400.4 + k MHz, 0.4 MHz off):
   fhss-control; undecided: unknown (no alarm).
2. Narrower than ``narrow_max_mhz``: **carrier** when continuous, else unknown.
3. Inside ``video_bands_mhz`` with a width in ``video_min_mhz``..``video_max_mhz``:
   - continuous, inside ``analog_bands_mhz`` and peaked (centre third of the occupied
     band at least ``analog_centre_excess_db`` above the outer thirds, smoothed over
     sweeps): **analog-video** (FPV), confidence ``analog_confidence``. (Not the width:
     the occupied width of a peaked FM spectrum grows with its SNR.)
   - continuous otherwise (and not bursty on a Wi-Fi channel): **ofdm-video** (DJI OcuSync-like downlink), confidence
     ``ofdm_confidence``, less ``shared_band_penalty`` when centred within
     ``wifi_tolerance_mhz`` of a Wi-Fi channel with a Wi-Fi width (20 or 40 MHz within
     25 %): a busy Wi-Fi link looks the same there;
   - not continuous and centred on a Wi-Fi channel, or bursty inside a 20 MHz Wi-Fi
     channel (its occupied width departs from its smoothed width by at least
     ``wifi_bursty_width_fraction`` of it, on average over its hits: 802.11 traffic seen by a swept analyser
     is pieces of the channel, as wide as the cells swept while a burst lasted, where a
     video link's plateau keeps its width; or, busy and strong enough to span its
     channel, the CFAR detects its cells no more than ``wifi_max_fill_ratio`` as often
     as a steady emitter of its mean power: see ``fill_ratio`` in
     :mod:`towerd.rf.emitters`; or its inner cells fall to the noise floor at least
     ``wifi_min_hole_excess`` of them more often than a steady emitter's would, on
     average over its hits: the channel's off moments, holes in a plateau whose width
     and fill are a video link's, see ``hole_excess`` there): **wifi-like**, not a
     drone (and stays so while its holes stay above ``wifi_min_hole_excess`` less
     ``wifi_hole_hysteresis``). Inside such a channel no video class is given before ``wifi_min_sweeps``
     sweeps, so the burstiness has been seen (the hole and fill means are running
     means over the first hits: by then over ten or more of them). A channel busy
     nearly all the time (above about 90 %, where its holes are too few) is a plateau
     like a video link's: it stays ofdm-video with the Wi-Fi penalty;
   - else unknown.
4. Anything else: unknown.

Bandwidth alone never makes a drone: a bursty 20 MHz channel at 2437 MHz is wifi-like.

What a swept analyser (112 points over ~100 MHz, a sweep of tens of ms) can and cannot
tell: Bluetooth BR/EDR (79 x 1 MHz on 2402 + k MHz, 1,600 hops/s) and ExpressLRS 2.4 (80
x 0.81 MHz on 2400.4 + k MHz) hop over the same ~79 MHz, and the hits per sweep are the
duty whatever the hop rate, so neither the span nor the hit rate separates them. Their
grids are 0.4 MHz apart, half a cell: a hop that lights two or three cells (it stays on
for the whole pass over its channel) is placed within a cell by their power ratio, and
over tens of hops the offset shows. A Wi-Fi channel busy 80 % of the time fills its 20 MHz
sweep after sweep as a video link does (width 19.6 +- 0.9 MHz, fill 1.05, against 20.3 +-
0.2 and 1.09 for a 20 MHz OcuSync link at 20 dB): what tells it is that its off moments
leave cells at the noise floor inside the plateau, about (1 - busy) x 0.9 of them, where
a video plateau's cells stay near its mean power. A Wi-Fi channel busy nearly all the
time is a steady plateau like an OFDM video link on that channel: ofdm-video, less
``shared_band_penalty``.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

import numpy as np

from towerd.icd import Category
from towerd.rf.tracks import select_rows
from towerd.schema import spec

log = logging.getLogger(__name__)


class LinkKind(enum.IntEnum):
    UNKNOWN = 0
    CARRIER = 1
    WIFI_LIKE = 2
    OFDM_VIDEO = 3
    ANALOG_VIDEO = 4
    FHSS_CONTROL = 5
    BLUETOOTH_LIKE = 6


LINK_NAMES = {
    LinkKind.UNKNOWN: "unknown",
    LinkKind.CARRIER: "carrier",
    LinkKind.WIFI_LIKE: "wifi-like",
    LinkKind.OFDM_VIDEO: "ofdm-video",
    LinkKind.ANALOG_VIDEO: "analog-video",
    LinkKind.FHSS_CONTROL: "fhss-control",
    LinkKind.BLUETOOTH_LIKE: "bluetooth-like",
}
"""Stable names of the link kinds (logs, events, diagnostics)."""

DRONE_LINKS = frozenset({LinkKind.OFDM_VIDEO, LinkKind.ANALOG_VIDEO, LinkKind.FHSS_CONTROL})
_DRONE_LINK_VALUES = np.array(sorted(int(k) for k in DRONE_LINKS), dtype=np.uint8)

WIFI_CHANNELS_MHZ = (2412.0, 2437.0, 2462.0, 5745.0, 5765.0, 5785.0, 5805.0, 5825.0, 5755.0, 5795.0)
"""2.4 GHz channels 1/6/11 and the 5.8 GHz 20 MHz (149-165) and 40 MHz (151, 159) centres."""


_DRONE_LINK_LUT = np.zeros(256, dtype=bool)
_DRONE_LINK_LUT[_DRONE_LINK_VALUES] = True
_DRONE_LINK_LUT.flags.writeable = False


def is_drone_link(kind: np.ndarray) -> np.ndarray:
    """Boolean mask of the link kinds that are drone links (a table look-up for u1 kinds)."""
    kind = np.asarray(kind)
    if kind.dtype == np.uint8:
        return _DRONE_LINK_LUT[kind]
    return np.isin(kind, _DRONE_LINK_VALUES)


_CATEGORY_LUT = np.where(_DRONE_LINK_LUT, int(Category.UAS), int(Category.UNKNOWN)).astype(np.uint8)
_CATEGORY_LUT.flags.writeable = False


def category_of(kind: np.ndarray) -> np.ndarray:
    """ICD category per link kind: uas for drone links, unknown otherwise (u1; a table
    look-up for u1 kinds)."""
    kind = np.asarray(kind)
    if kind.dtype == np.uint8:
        return _CATEGORY_LUT[kind]
    return np.where(is_drone_link(kind), int(Category.UAS), int(Category.UNKNOWN)).astype(np.uint8)


@dataclass(frozen=True)
class ClassifierSettings:
    """Drone-link recognition rules (see :mod:`towerd.rf.classify`)."""

    min_sweeps: int = spec(8, doc="band sweeps of history before a track gets a class", lo=1, hi=64)
    continuous_duty: float = spec(
        0.75, doc="duty cycle from which an emitter is continuous (a single-look detector at 20 dB SNR "
        "sees a continuous carrier in about 90 % of sweeps)", lo=0.1, hi=1.0,
    )
    duty_hysteresis: float = spec(
        0.15, doc="a continuous class is kept down to continuous_duty minus this", lo=0.0, hi=0.5
    )
    narrow_max_mhz: float = spec(2.0, doc="emitters up to this wide are narrowband", unit="MHz", lo=0.01, hi=50.0)
    video_bands_mhz: tuple[tuple[float, float], ...] = spec(
        ((2400.0, 2483.5), (5645.0, 5945.0)),
        doc="where video downlinks are (DJI OcuSync at 2.4/5.8 GHz, analog FPV 5645-5945 MHz)",
        unit="MHz", lo=1.0, hi=30000.0,
    )
    video_min_mhz: float = spec(7.0, doc="narrowest video link", unit="MHz", lo=0.1, hi=100.0)
    video_max_mhz: float = spec(45.0, doc="widest video link (40 MHz OcuSync)", unit="MHz", lo=1.0, hi=200.0)
    analog_bands_mhz: tuple[tuple[float, float], ...] = spec(
        ((5645.0, 5945.0),), doc="where analog FPV video is", unit="MHz", lo=1.0, hi=30000.0
    )
    analog_centre_excess_db: float = spec(
        1.5, doc="centre third over outer thirds from which a video link is analog (peaked)", unit="dB", lo=0.5, hi=30.0
    )
    wifi_channels_mhz: tuple[float, ...] = spec(
        WIFI_CHANNELS_MHZ, doc="Wi-Fi channel centres", unit="MHz", lo=1.0, hi=30000.0
    )
    wifi_tolerance_mhz: float = spec(
        1.5, doc="how close to a Wi-Fi channel centre counts as on it", unit="MHz", lo=0.0, hi=10.0
    )
    wifi_max_fill_ratio: float = spec(
        0.7, doc="an emitter inside a Wi-Fi channel whose cells the CFAR detects this fraction or less as often "
        "as a steady emitter of its mean power would (smoothed) is bursty 802.11 traffic: busy, strong Wi-Fi "
        "fills its channel's width sweep after sweep, but only its duty of the cells", lo=0.05, hi=1.0,
    )
    wifi_min_sweeps: int = spec(
        24, doc="sweeps of history an emitter inside a 20 MHz Wi-Fi channel needs before it can be a video "
        "link (to see whether its width is bursty)", lo=1, hi=64,
    )
    wifi_min_hole_excess: float = spec(
        0.04, doc="an emitter inside a Wi-Fi channel whose inner cells fall near the noise floor (holes, see "
        "hole_db) this fraction of them more often than a steady emitter's would (mean over its hits) is bursty "
        "802.11 traffic: a busy channel's off moments are holes in its plateau where the width and fill look "
        "like a video link's (80 % busy: about 0.1-0.18; a video plateau: 0 or below)", lo=0.0, hi=1.0,
    )
    wifi_hole_hysteresis: float = spec(
        0.02, doc="a track already called wifi-like stays bursty down to wifi_min_hole_excess minus this (the "
        "smoothed hole fraction of a channel busy 90 % of the time wanders 0.04-0.11 at 10 dB; a video plateau's "
        "stays at 0 or below)", lo=0.0, hi=1.0,
    )
    wifi_bursty_width_fraction: float = spec(
        0.25, doc="an emitter inside a Wi-Fi channel whose occupied width departs from its smoothed width by this "
        "fraction of it or more (mean over its hits) is bursty 802.11 traffic, not a video link", lo=0.01, hi=2.0,
    )
    fhss_shared_bands_mhz: tuple[tuple[float, float], ...] = spec(
        ((2400.0, 2483.5),),
        doc="bands where other hopping systems (Bluetooth) are common",
        unit="MHz", lo=1.0, hi=30000.0,
    )
    fhss_confidence: int = spec(
        70, doc="confidence of fhss-control at the minimum channel count", unit="%", lo=0, hi=100
    )
    ofdm_confidence: int = spec(75, doc="confidence of ofdm-video", unit="%", lo=0, hi=100)
    analog_confidence: int = spec(80, doc="confidence of analog-video", unit="%", lo=0, hi=100)
    reference_grid_mhz: tuple[float, float] = spec(
        (2402.0, 1.0), doc="origin and pitch of the hop grid of the common non-drone hopper in fhss_shared_bands_mhz "
        "(Bluetooth BR/EDR and LE: 2402 + k MHz); a hopping set's hop centres are measured against it", unit="MHz",
        lo=0.001, hi=30000.0,
    )
    grid_tolerance_mhz: float = spec(
        0.2, doc="a hopping set whose hops' mean offset from the reference grid is within this is on that grid "
        "(Bluetooth); beyond it, on another grid (ExpressLRS 2.4: 2400.4 + k MHz, 0.4 MHz off)", unit="MHz",
        lo=0.0, hi=10.0,
    )
    grid_false_alarm: float = spec(
        1e-3, doc="chance that hops spread over every offset (no grid) pass as on a grid (Rayleigh test: "
        "hops x resultant^2 >= ln(1 / this))", lo=1e-12, hi=0.5,
    )
    shared_band_penalty: int = spec(
        25, doc="confidence taken off where a non-drone system looks the same", unit="%", lo=0, hi=100
    )

    def __post_init__(self) -> None:
        for name in ("video_bands_mhz", "analog_bands_mhz", "fhss_shared_bands_mhz"):
            for lo, hi in getattr(self, name):
                if not lo < hi:
                    raise ValueError(f"{name}: band ({lo}, {hi}) must have low < high")
        if not self.reference_grid_mhz[1] > 0:
            raise ValueError("reference_grid_mhz: the pitch must be positive")
        if self.video_min_mhz >= self.video_max_mhz:
            raise ValueError("video_min_mhz must be below video_max_mhz")


def _in_bands(f: np.ndarray, bands: tuple[tuple[float, float], ...]) -> np.ndarray:
    out = np.zeros(f.shape, dtype=bool)
    for lo, hi in bands:
        out |= (f >= lo) & (f <= hi)
    return out


def classify(
    tracks: np.ndarray, settings: ClassifierSettings, hop_min_channels: int = 6
) -> tuple[np.ndarray, np.ndarray]:
    """(kind u1, confidence u1 0..100) per row of ``tracks`` (RF_TRACK_DTYPE), by the
    rules of the module docstring. Uses the fields comb, channels, sweeps, duty, kind
    (the previous class, for hysteresis), centre_mhz, bandwidth_mhz, centre_excess_db,
    fill_ratio, width_jitter_mhz, hole_excess, grid_offset_mhz, grid_resultant, grid_hops.
    ``hop_min_channels``: the tracker's minimum of revisited channels for a hopping set."""
    n = tracks.shape[0]
    mature = tracks["sweeps"] >= settings.min_sweeps
    if mature.all():
        return _classify_mature(tracks, settings, hop_min_channels)
    # Rows too young for a class are unknown whatever they hold: classify the others alone.
    kind = np.zeros(n, dtype=np.uint8)  # LinkKind.UNKNOWN
    conf = np.zeros(n, dtype=np.uint8)
    if mature.any():
        kind[mature], conf[mature] = _classify_mature(select_rows(tracks, mature), settings, hop_min_channels)
    return kind, conf


def _classify_mature(
    tracks: np.ndarray, settings: ClassifierSettings, hop_min_channels: int
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`classify` for rows that all have ``min_sweeps`` of history (each row's class
    depends on that row alone)."""
    s = settings
    n = tracks.shape[0]
    kind = np.zeros(n, dtype=np.uint8)  # LinkKind.UNKNOWN
    conf = np.zeros(n, dtype=np.int32)
    if n == 0:
        return kind, conf.astype(np.uint8)
    f = tracks["centre_mhz"]
    bw = tracks["bandwidth_mhz"]
    prev = tracks["kind"]
    duty = tracks["duty"]
    # (enum members as ints: NumPy probes an IntEnum member's class first, ~3 µs a time)
    was_continuous = ((prev == int(LinkKind.CARRIER)) | (prev == int(LinkKind.OFDM_VIDEO))
                      | (prev == int(LinkKind.ANALOG_VIDEO)))
    continuous = duty >= np.where(was_continuous, s.continuous_duty - s.duty_hysteresis, s.continuous_duty)
    mature = tracks["sweeps"] >= s.min_sweeps
    comb = tracks["comb"]

    wifi = np.asarray(s.wifi_channels_mhz, dtype=float)
    if wifi.size:
        on_wifi = np.min(np.abs(f[:, None] - wifi[None, :]), axis=1) <= s.wifi_tolerance_mhz
    else:
        on_wifi = np.zeros(n, dtype=bool)
    wifi_width = (np.abs(bw - 20.0) <= 5.0) | (np.abs(bw - 40.0) <= 10.0)

    # 1. hopping sets
    fh = comb & mature
    kind[fh] = LinkKind.FHSS_CONTROL
    extra = 2 * np.maximum(tracks["channels"].astype(np.int32) - hop_min_channels, 0)
    shared = _in_bands(f, s.fhss_shared_bands_mhz)
    hops = tracks["grid_hops"].astype(float)
    res = np.nan_to_num(tracks["grid_resultant"], nan=0.0)
    on_grid_test = hops * res**2 >= np.log(1.0 / s.grid_false_alarm)
    offset = np.abs(np.nan_to_num(tracks["grid_offset_mhz"], nan=np.inf))
    on_ref = on_grid_test & (offset <= s.grid_tolerance_mhz)
    off_ref = on_grid_test & (offset > s.grid_tolerance_mhz)
    c_fh = np.minimum(s.fhss_confidence + extra, 95)
    conf[fh] = c_fh[fh]
    bt = fh & shared & on_ref
    kind[bt] = LinkKind.BLUETOOTH_LIKE
    undecided = fh & shared & ~off_ref & ~on_ref
    kind[undecided] = LinkKind.UNKNOWN
    conf[bt | undecided] = 0

    single = ~comb & mature
    # 2. narrowband
    narrow = single & (bw <= s.narrow_max_mhz)
    kind[narrow & continuous] = LinkKind.CARRIER
    # 3. video-width emitters in video bands
    video = single & ~narrow & _in_bands(f, s.video_bands_mhz) & (bw >= s.video_min_mhz) & (bw <= s.video_max_mhz)
    excess = tracks["centre_excess_db"]
    analog = (
        video & continuous & _in_bands(f, s.analog_bands_mhz)
        & np.isfinite(excess) & (excess >= s.analog_centre_excess_db)
    )
    # Inside a 20 MHz Wi-Fi channel (the pieces of its bursts wander within it): such an
    # emitter needs wifi_min_sweeps of history before it can be a video link, so that
    # its burstiness (the smoothed std of its width) has been seen.
    if wifi.size:
        half = 10.0 + s.wifi_tolerance_mhz
        inside_wifi = np.any(((f - bw / 2)[:, None] >= wifi[None, :] - half)
                             & ((f + bw / 2)[:, None] <= wifi[None, :] + half), axis=1)
    else:
        inside_wifi = np.zeros(n, dtype=bool)
    # A track already called wifi-like keeps its holes down to wifi_min_hole_excess less
    # wifi_hole_hysteresis: the smoothed hole fraction of a channel busy 90 % of the time
    # wanders 0.04-0.11 at 10 dB, and one dip must not make it a video link.
    was_wifi = prev == int(LinkKind.WIFI_LIKE)
    min_holes = np.where(was_wifi, s.wifi_min_hole_excess - s.wifi_hole_hysteresis, s.wifi_min_hole_excess)
    bursty = inside_wifi & (
        (tracks["width_jitter_mhz"] >= s.wifi_bursty_width_fraction * bw)
        | (tracks["fill_ratio"] <= s.wifi_max_fill_ratio)
        | (tracks["hole_excess"] >= min_holes)
    )
    unsettled = inside_wifi & (tracks["sweeps"] < s.wifi_min_sweeps)
    ofdm = video & continuous & ~analog & ~bursty & ~unsettled
    kind[analog] = LinkKind.ANALOG_VIDEO
    conf[analog] = s.analog_confidence
    kind[ofdm] = LinkKind.OFDM_VIDEO
    conf[ofdm] = s.ofdm_confidence - np.where(on_wifi[ofdm] & wifi_width[ofdm], s.shared_band_penalty, 0)
    kind[video & ~analog & (~continuous | bursty) & (on_wifi | inside_wifi)] = LinkKind.WIFI_LIKE
    # Non-drone classes: confidence 0 (the ICD's confidence is that of the category,
    # and their category is unknown).
    return kind, np.clip(conf, 0, 100).astype(np.uint8)
