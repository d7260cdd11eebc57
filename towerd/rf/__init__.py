"""RF detection and tracking: spectrum-analyser sweeps -> emitters -> RF tracks.

The chain, per sweep (a :class:`towerd.drivers.measurements.Spectrum`) and per band of
the band plan:

    dBm -> linear power -> noise floor (:mod:`.floor`) -> whitened power
        -> CFAR across frequency (:mod:`.cfar`) -> contiguous cells merged into
        emitters (:mod:`.emitters`) -> emitter tracks with M-of-N persistence and
        hopping-set detection (:mod:`.tracker`) -> drone-link classes (:mod:`.classify`)

:class:`towerd.rf.processor.RfProcessor` composes it; :mod:`.fusion` associates RF
tracks with radar tracks by timing and turns RF-only tracks into ICD records.

Wiring (one processor and one reporter per tower; ``settings``: :class:`RfSettings`,
``rf:`` in the YAML)::

    rf = RfProcessor(settings)                      # RF track ids from 0x8000_0000 up
    rf_reporter = RfTrackReporter(settings.reports, ids=rf.ids)   # ids: for links a radar track lets go

    # a Spectrum reading:
    update = rf.process(spectrum)                   # RfUpdate: tracks, ended, bands
    fusion = associate(radar_tracks, update.tracks, settings.fusion, radar_category=cats)
    records = rf_reporter.build(update.tracks, update.ended, fusion.associated_rf_ids, clock)

    # after the radar reporter built its records:
    fusion = associate(TrackTable.concatenate([u.tracks, u.ended]), rf.tracks, settings.fusion,
                       radar_category=cats)
    annotate_radar_records(records, fusion)         # sources |= RF, rf_freq/bw/power

    # periodically and at stop, like the radar tracker:
    update = rf.expire(now)   /   update = rf.end_all(now)
    records = rf_reporter.build(update.tracks, update.ended, fusion.associated_rf_ids, clock)

``cats`` (optional): the radar tracks' ICD categories, when a classifier gives them.

With the pipeline's ``rf_fusion`` hook (``towerd.pipeline.RfFusion``: ``associate(tracks,
t_mono) -> RfLink``, asked before classification), use
``RadarLinkFusion(lambda: rf.tracks, settings.fusion)``: it returns the RfLink the radar
records carry (sources radar+RF, rf_*), takes the classifier's categories afterwards
through ``set_categories(track_ids, categories)`` for the sole-candidate rule, and its
``associated_rf_ids`` go to ``rf_reporter.build`` so a link travelling with a radar
track is not also reported on its own.
"""

from towerd.rf.fusion import (
    FusionResult,
    FusionSettings,
    RadarLinkFusion,
    RfReportSettings,
    RfTrackReporter,
    annotate_radar_records,
    associate,
    rf_track_records,
)
from towerd.rf.processor import RF_TRACK_ID_BASE, BandSettings, RfProcessor, RfSettings, RfUpdate
from towerd.rf.tracks import RF_TRACK_DTYPE

__all__ = [
    "RF_TRACK_DTYPE",
    "RF_TRACK_ID_BASE",
    "BandSettings",
    "FusionResult",
    "FusionSettings",
    "RadarLinkFusion",
    "RfProcessor",
    "RfReportSettings",
    "RfSettings",
    "RfTrackReporter",
    "RfUpdate",
    "annotate_radar_records",
    "associate",
    "rf_track_records",
]
