"""RF Explorer spectrum analyser: the host commands (``#`` + size byte + ASCII). Sources:
:mod:`towerd.drivers.rfexplorer.protocol`.

Disagreements with the project notes and other clients, and what is done here:

- ``CJ`` (set sweep points): the notes say ``chr((n-16)/16)`` (as third-party libraries
  ``zleytus/rfe`` and a Go client also do); the vendor's ``SendCommand_SweepDataPoints``
  sends ``chr(n/16)``. The vendor wins: :func:`cmd_sweep_points` sends ``n // 16`` and,
  like the ``$s`` count byte, 0 for 4096 (the vendor's ``chr(256)`` cannot be sent; 0 for
  4096 is this module's reading of the ``$s`` convention, not a vendor statement).
- Amplitude top/bottom in ``C2-F``: the vendor's ``UpdateDeviceConfig`` pads the
  3-character form, which turns -10 into ``0-10``; the notes, the device's own ``#C2-F:``
  reply and other clients write ``-010``. :func:`cmd_analyzer_config` writes ``-010``.
"""

from __future__ import annotations

from towerd.drivers.rfexplorer.messages import MAX_SWEEP_POINTS


def command(payload: bytes) -> bytes:
    """Frame a command: ``#``, one size byte counting the whole command, the payload."""
    size = len(payload) + 2
    if size > 64:
        raise ValueError(f"command of {size} bytes; the device takes at most 64")
    return b"#" + bytes([size]) + payload


def cmd_request_config() -> bytes:
    """``#\\x04C0``: send ``Current_Config`` (and start sending sweeps)."""
    return command(b"C0")


def cmd_hold() -> bytes:
    """``#\\x04CH``: stop the sweep dump."""
    return command(b"CH")


def cmd_analyzer_config(start_khz: int, end_khz: int, amp_top_dbm: int, amp_bottom_dbm: int) -> bytes:
    """``#\\x20C2-F:Sssssss,Eeeeeee,tttt,bbbb``: start and END frequency in kHz (7 digits),
    amplitude top and bottom in dBm (4 characters, sign first: ``-010``)."""
    for name, value, lo, hi in (("start_khz", start_khz, 0, 9_999_999), ("end_khz", end_khz, 0, 9_999_999),
                                ("amp_top_dbm", amp_top_dbm, -999, 9999),
                                ("amp_bottom_dbm", amp_bottom_dbm, -999, 9999)):
        if not lo <= value <= hi:
            raise ValueError(f"{name} {value} does not fit its field")
    text = f"C2-F:{start_khz:07d},{end_khz:07d},{amp_top_dbm:04d},{amp_bottom_dbm:04d}"
    return command(text.encode("ascii"))


def cmd_sweep_points(points: int) -> bytes:
    """Sweep points: ``#\\x05CJ`` + one byte ``points // 16`` (vendor
    ``SendCommand_SweepDataPoints``; 4096 -> 0) for multiples of 16 up to 4096, else
    ``#\\x06Cj`` + big-endian u16 (the large-sweep command, up to 65535)."""
    if not 16 <= points <= MAX_SWEEP_POINTS:
        raise ValueError(f"sweep points {points} outside 16..{MAX_SWEEP_POINTS}")
    if points <= 4096 and points % 16 == 0:
        return command(b"CJ" + bytes([(points // 16) & 0xFF]))
    return command(b"Cj" + points.to_bytes(2, "big"))
