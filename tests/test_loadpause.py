"""The load generator's gap accounting (towerd.central.loadpause): a collection is
booked to the part of the loop it interrupted, never taken off another part."""

from __future__ import annotations

import gc

from towerd.central.loadpause import Pauses


def _closed_window(p: Pauses) -> dict:
    p.read_ends(p.read_begins())
    p.window(1.0, 0, [])
    return p.windows[-1]["gap"]


def test_a_collection_between_parts_is_not_taken_off_the_next_part():
    p = Pauses()
    try:
        p.read_ends(p.read_begins())
        gc.collect()  # in no part: the loop's own code between two parts
        p.part("write", p.begin())
        gap = _closed_window(p)
        assert gap["gc"] > 0.0
        assert gap["write"] >= 0.0  # was booked as minus the collection's time
    finally:
        p.close()


def test_a_collection_inside_a_part_is_booked_to_gc_not_to_the_part():
    p = Pauses()
    try:
        p.read_ends(p.read_begins())
        began = p.begin()
        gc.collect()
        began = p.part("write", began)
        p.part("send", began)
        gap = _closed_window(p)
        assert gap["gc"] > 0.0
        assert 0.0 <= gap["write"] < 0.5 * gap["gc"]  # the part's own time: almost none
        assert gap["send"] >= 0.0
    finally:
        p.close()
