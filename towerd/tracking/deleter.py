"""Track deletion: which tracks to drop (tentative) or end (confirmed)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from towerd.errors import ConfigError
from towerd.icd import Status
from towerd.tracking.state import TrackTable

log = logging.getLogger(__name__)


@dataclass
class MissDeleter:
    """Decides when a track has lost its target: coasting, ended, dropped.

    - A CONFIRMED track with no measurement for longer than ``coast_after_s`` is
      COASTING (ICD: "no recent measurement"); it is CONFIRMED again on its next hit.
      With a radar's detection probability below one, single misses are normal: a
      small ``coast_after_s`` would flip the status, and trigger a report, every few
      frames.

    - A TENTATIVE track that missed more than ``tentative_max_misses`` consecutive updates
      is dropped (it was never confirmed, so it was normally never reported).
    - A CONFIRMED or COASTING track with no measurement for longer than
      ``confirmed_max_coast_s`` seconds ends (status ENDED).
    - A TENTATIVE track with no measurement for longer than ``confirmed_max_coast_s`` is
      dropped too: when no detections arrive at all, misses are never counted, and this
      bounds how long a tentative track can outlive its last hit.

    Time is measured from ``t_last_update`` to the ``t_mono`` given (a step's detection
    time, or the daemon's clock in :meth:`~towerd.tracking.tracker.Tracker.expire`).
    """

    tentative_max_misses: int = 2
    confirmed_max_coast_s: float = 3.0
    coast_after_s: float = 0.0

    def __post_init__(self) -> None:
        if self.tentative_max_misses < 0:
            raise ConfigError(f"tentative_max_misses must be >= 0, got {self.tentative_max_misses!r}")
        if not np.isfinite(self.confirmed_max_coast_s) or self.confirmed_max_coast_s <= 0:
            raise ConfigError(f"confirmed_max_coast_s must be > 0, got {self.confirmed_max_coast_s!r}")
        if not 0.0 <= self.coast_after_s < self.confirmed_max_coast_s:
            raise ConfigError(
                f"coast_after_s must be in [0, confirmed_max_coast_s), got {self.coast_after_s!r}"
            )

    def coasting(self, tracks: TrackTable, t_mono: float) -> np.ndarray:
        """(K,) mask: no measurement for longer than ``coast_after_s``."""
        return (t_mono - tracks.t_last_update) > self.coast_after_s

    def stale(self, tracks: TrackTable, t_mono: float) -> np.ndarray:
        """(K,) mask: no measurement for longer than ``confirmed_max_coast_s``."""
        return (t_mono - tracks.t_last_update) > self.confirmed_max_coast_s

    def to_drop(self, tracks: TrackTable, t_mono: float) -> np.ndarray:
        """(K,) mask of TENTATIVE tracks to drop."""
        tentative = tracks.status == int(Status.TENTATIVE)
        return tentative & ((tracks.misses > self.tentative_max_misses) | self.stale(tracks, t_mono))

    def to_end(self, tracks: TrackTable, t_mono: float) -> np.ndarray:
        """(K,) mask of CONFIRMED / COASTING tracks to end."""
        return tracks.rows_with_status(Status.CONFIRMED, Status.COASTING) & self.stale(tracks, t_mono)

    def judge(self, tracks: TrackTable, t_mono: float) -> tuple[np.ndarray, np.ndarray]:
        """(coasting (K,), gone (K,)): :meth:`coasting` and :meth:`to_drop` | :meth:`to_end`
        in one pass over the time since each track's last measurement (the tracker's
        per-frame call)."""
        since = t_mono - tracks.t_last_update
        stale = since > self.confirmed_max_coast_s
        status = tracks.status
        gone = (stale | ((status == int(Status.TENTATIVE)) & (tracks.misses > self.tentative_max_misses)))
        gone &= status != int(Status.ENDED)  # stale: tentative, confirmed and coasting tracks alike
        return since > self.coast_after_s, gone

    def quiet_bounds(self, tracks: TrackTable) -> tuple[float, float, float] | None:
        """What :meth:`is_quiet` needs of ``tracks``, found once per table: (oldest last
        update of the live rows, oldest of the CONFIRMED rows, newest of the COASTING
        rows), ±inf for none; None when a row goes whatever the time (a tentative track
        over its misses, or a NaN update time)."""
        # Plain Python over the few rows: cheaper than a dozen NumPy calls on tiny arrays.
        oldest = oldest_confirmed = math.inf
        newest_coasting = -math.inf
        limit = self.tentative_max_misses
        for status, misses, t in zip(tracks.status.tolist(), tracks.misses.tolist(), tracks.t_last_update.tolist()):
            if t != t or (status == _TENTATIVE and misses > limit):
                return None  # NaN: never quiet (the full pass decides); over its misses: goes now
            if status == _ENDED:
                continue
            if t < oldest:
                oldest = t
            if status == _CONFIRMED:
                if t < oldest_confirmed:
                    oldest_confirmed = t
            elif status == _COASTING and t > newest_coasting:
                newest_coasting = t
        return oldest, oldest_confirmed, newest_coasting

    def is_quiet(self, bounds: tuple[float, float, float] | None, t_mono: float) -> bool:
        """True when :meth:`judge` at ``t_mono`` of the table whose :meth:`quiet_bounds`
        are ``bounds`` removes no row and changes no CONFIRMED / COASTING status. Exact:
        float subtraction is monotonic, so t − (oldest update) is the largest of the rows'
        t − t_last_update and t − (newest) the smallest; a NaN bound answers False."""
        if bounds is None:
            return False
        oldest, oldest_confirmed, newest_coasting = bounds
        return (t_mono - oldest <= self.confirmed_max_coast_s and t_mono - oldest_confirmed <= self.coast_after_s
                and t_mono - newest_coasting > self.coast_after_s)


_TENTATIVE, _CONFIRMED, _COASTING, _ENDED = (int(Status.TENTATIVE), int(Status.CONFIRMED), int(Status.COASTING),
                                             int(Status.ENDED))
