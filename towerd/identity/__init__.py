"""Remote ID (ASTM F3411) and DJI DroneID broadcasts fused with radar tracks: who a
tracked drone is, where its pilot stands, and what the radar says against a broadcast.

One job per module:

- :mod:`.settings`: ``remote_id:`` in the YAML;
- :mod:`.transmitters`: readings merged per transmitter, forgotten after a timeout;
- :mod:`.broadcasts`: a transmitter's latest position as a measurement with the variances
  of its own accuracy fields;
- :mod:`.gating`: Mahalanobis distance of broadcasts to radar tracks (their covariance
  plus the broadcast's);
- :mod:`.assign`: gated global nearest neighbour;
- :mod:`.coverage`: where the radars see and the receivers hear;
- :mod:`.rules`: a broadcast judged against the radar (rid_mismatch), silent tracks
  (non-cooperative);
- :mod:`.records`: ID-only tracks as ICD records, the remote-id mark on radar records;
- :mod:`.identities`: which :class:`~towerd.reports.identity.TrackIdentity` are due;
- :mod:`.fusion`: :class:`RemoteIdFusion`, their composition (matched, ID-only,
  ``rid_mismatch``, non-cooperative: its module docstring).

Wiring (the pipeline does this)::

    # mounts: {sensor name: SensorMount}; listening: the tower has a Remote ID receiver
    fusion = RemoteIdFusion(config.remote_id, site, mounts, clock, threat_assessor, listening=True)
    records = fusion.ingest(reading)                           # a RemoteIdReading: ID-only records due
    records = fusion.on_radar(update, categories, records)     # after the radar reporter
    records = fusion.expire(now)  /  fusion.end_all(now)      # periodically / at stop
    fusion.pop_events()        # (code, severity, message, fields) for the outbox
    fusion.pop_identities()    # TrackIdentity objects due for the uplink
"""

from towerd.identity.fusion import EVENT_MISMATCH, EVENT_NON_COOPERATIVE, RemoteIdFusion
from towerd.identity.records import ID_ONLY_TRACK_ID_BASE
from towerd.identity.settings import RadarCoverageSettings, RemoteIdSettings, SensorCoverageSettings

__all__ = [
    "EVENT_MISMATCH",
    "EVENT_NON_COOPERATIVE",
    "ID_ONLY_TRACK_ID_BASE",
    "RadarCoverageSettings",
    "RemoteIdFusion",
    "RemoteIdSettings",
    "SensorCoverageSettings",
]
