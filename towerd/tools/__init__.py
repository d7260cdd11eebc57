"""Technician tools: ``towerd sim``, ``towerd tap``, ``towerd record``, ``towerd replay``.

:func:`register` adds their subcommands to towerd's command line (``COMMAND_MODULES``
in :mod:`towerd.cli`). Heavy imports happen when a command runs, not at start-up.
"""

from __future__ import annotations

from typing import Any


def register(subparsers: Any) -> None:
    """Add the sim, tap, record and replay subcommands."""
    from towerd.tools.live import register_live
    from towerd.tools.replay import register_replay
    from towerd.tools.sim import register_sim

    register_sim(subparsers)
    register_live(subparsers)
    register_replay(subparsers)
