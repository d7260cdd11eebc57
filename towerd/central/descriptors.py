"""File descriptors of the reference central: the soft limit raised at start, and a
log line when they run short (libzmq takes one per connection)."""

from __future__ import annotations

import logging
import os
import resource

log = logging.getLogger(__name__)

_FD_CHECK_S = 0.5
_NOFILE_WANTED = 65536
"""Descriptor limit the central raises its soft limit to (within the hard limit): libzmq
needs one per connection, and the default soft limit of 1024 is reached by about 1,000
idle TCP connections."""


def _raise_nofile() -> tuple[int, int]:
    """Raise the soft descriptor limit towards _NOFILE_WANTED within the hard limit;
    returns the limits in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = _NOFILE_WANTED if hard == resource.RLIM_INFINITY else min(hard, _NOFILE_WANTED)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError) as exc:
            log.warning("central: cannot raise the descriptor limit from %d to %d: %s", soft, want, exc)
    return soft, hard


class DescriptorsMixin:
    """The part of :class:`~towerd.central.server.CentralServer` that watches its
    descriptors."""

    def _check_descriptors(self) -> None:
        """Log when descriptors run short (every _FD_CHECK_S). libzmq takes one per
        connection and cannot be told to stop accepting (unbinding would close every
        connection it accepted, genuine towers' too); at the limit it retries accept()
        in a tight loop until a descriptor is free. What bounds the use: the handshake
        timeout closes connections that never speak, the soft limit is raised at start
        (``towerd central``), and the allow-list keeps its last good state when it
        cannot be read."""
        now = self._clock.monotonic()
        if now < self._next_fd_check:
            return
        self._next_fd_check = now + _FD_CHECK_S
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return
        try:
            used = len(os.listdir("/proc/self/fd")) - 1  # less the one listing
        except FileNotFoundError:
            return  # no /proc
        except OSError:  # EMFILE itself
            used = soft
        short = used >= soft - max(8, soft // 32)
        if short:
            if not self._fd_short:
                self._stats["fd_exhausted"] += 1
            self._limited(logging.ERROR, "descriptors", "central: %d of %d descriptors in use: new connections "
                          "cannot be accepted until idle ones close (after %g s without a handshake); connected "
                          "towers keep working", used, soft, self._limits.handshake_timeout_s)
        elif self._fd_short:
            log.warning("central: %d of %d descriptors in use: accepting connections again", used, soft)
        self._fd_short = short
