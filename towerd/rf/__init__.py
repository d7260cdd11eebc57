"""RF detection and tracking: spectrum-analyser sweeps -> emitters -> RF tracks.

The chain, per sweep (a :class:`towerd.drivers.measurements.Spectrum`) and per band of
the band plan:

    dBm -> linear power -> noise floor (:mod:`.floor`) -> whitened power
        -> CFAR across frequency (:mod:`.cfar`) -> contiguous cells merged into
        emitters (:mod:`.emitters`) -> emitter tracks with M-of-N persistence and
        hopping-set detection (:mod:`.tracker`) -> drone-link classes (:mod:`.classify`)

:class:`towerd.rf.processor.RfProcessor` composes it; :mod:`.fusion` associates RF
tracks with radar tracks by timing and turns RF-only tracks into ICD records.
"""
