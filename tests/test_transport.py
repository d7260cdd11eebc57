"""Transport: exclusive ports, who holds a busy port, stable names, and the driver's warning."""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys

import pytest
import serial

from towerd.drivers.nmea_radar.driver import NmeaRadarDriver, NmeaRadarSettings
from towerd.drivers.transport import (
    KNOWN_CULPRITS,
    explain_open_failure,
    open_port,
    port_holders,
    stable_names,
    unstable_name_hint,
)
from towerd.errors import DriverInitError

HOLDER = """
import ctypes, sys, serial
if len(sys.argv) > 2:  # take a program's name, as /proc/<pid>/comm shows it (prctl PR_SET_NAME)
    ctypes.CDLL(None).prctl(15, sys.argv[2].encode(), 0, 0, 0)
port = serial.Serial(sys.argv[1], 4800, exclusive=True)
print("holding", flush=True)
sys.stdin.readline()
port.close()
"""


@pytest.fixture
def holder(pty_pair, tmp_path, request):
    """Another process (a real subprocess) holding the pty exclusively, like gpsd would;
    indirect parametrisation gives it a program name."""
    name = [getattr(request, "param", None)] if getattr(request, "param", None) else []
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, pty_pair.path, *name], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "holding"
        yield proc
    finally:
        if not proc.stdin.closed:
            proc.stdin.close()
        proc.wait(10)
        proc.stdout.close()


def test_busy_port_names_the_holder_and_the_one_fix(pty_pair, holder, tmp_path):
    link = tmp_path / "radar0-data"
    os.symlink(pty_pair.path, link)  # opened through a udev-style symlink
    with pytest.raises(DriverInitError) as info:
        open_port(str(link), 921600, 0.1)
    message = str(info.value)
    name = next(h.name for h in port_holders(pty_pair.path) if h.pid == holder.pid)
    # Who holds it and the one fix; no advice about programs that are not involved, and
    # this process (which keeps the pty's slave open) is not blamed.
    assert message == (f"cannot open {link}: the port is busy: held by {name} (pid {holder.pid}): close that "
                       f"program (`kill {holder.pid}`)")
    assert len(message) < 200
    for culprit in KNOWN_CULPRITS:
        assert culprit not in message


@pytest.mark.parametrize("holder", ["gpsd", "ModemManager"], indirect=True)
def test_a_known_port_thief_gets_its_own_fix(pty_pair, holder):
    with pytest.raises(DriverInitError) as info:
        open_port(pty_pair.path, 4800, 0.1)
    message = str(info.value)
    (held,) = [h for h in port_holders(pty_pair.path) if h.pid == holder.pid]
    assert message.endswith(f"the port is busy: held by {held.name} (pid {holder.pid}): {KNOWN_CULPRITS[held.name]}")
    others = [c for c in KNOWN_CULPRITS if c != held.name]
    assert not any(KNOWN_CULPRITS[c] in message for c in others)


def test_port_holders_finds_processes_by_fd_like_fuser(pty_pair, holder):
    found = {h.pid: h for h in port_holders(pty_pair.path)}
    assert set(found) == {holder.pid, os.getpid()}  # the test holds the slave through PtyPair
    assert "python" in found[holder.pid].name.lower() and "this process" not in found[holder.pid].describe()
    assert "(this process)" in found[os.getpid()].describe()
    holder.stdin.close()
    holder.wait(10)
    assert {h.pid for h in port_holders(pty_pair.path)} == {os.getpid()}


def test_released_port_opens_again(pty_pair):
    first = open_port(pty_pair.path, 4800, 0.1)
    with pytest.raises(DriverInitError, match="busy"):
        open_port(pty_pair.path, 4800, 0.1)  # our own exclusive lock counts too
    first.close()
    open_port(pty_pair.path, 4800, 0.1).close()


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (serial.SerialException(errno.EACCES, "could not open port /dev/ttyUSB0: [Errno 13] Permission denied"),
         "permission denied: the user needs the port's group (usually `dialout`"),
        (serial.SerialException(errno.ENOENT, "could not open port /dev/ttyUSB0: [Errno 2] No such file"),
         "(unplugged, or another name after a replug?)"),
        (serial.SerialException(errno.EBUSY, "could not open port /dev/ttyUSB0: [Errno 16] Device or resource busy"),
         "the port is busy"),
        (ValueError("bad baud rate"), "bad baud rate"),
    ],
)
def test_open_failures_are_explained(exc, expected):
    assert expected in explain_open_failure("/dev/ttyUSB0", exc)


def test_unstable_names_are_recognised_and_stable_ones_suggested(tmp_path, pty_pair):
    assert unstable_name_hint("/dev/serial/by-id/usb-FTDI_FT232R_A9X1-if00-port0") is None
    assert unstable_name_hint("/dev/towerd/radar0-data") is None
    assert unstable_name_hint("/dev/ttyS0") is None
    hint = unstable_name_hint("/dev/ttyACM1", dirs=())
    assert hint.startswith("/dev/ttyACM1 is numbered in plug order") and "/dev/serial/by-id/" in hint
    assert unstable_name_hint("/dev/ttyUSB12", dirs=()) is not None
    by_id = tmp_path / "by-id"
    by_id.mkdir()
    link = by_id / "usb-Texas_Instruments_XDS110_R0001-if00"
    os.symlink(pty_pair.path, link)
    os.symlink("/dev/null", by_id / "usb-other")
    assert stable_names(pty_pair.path, dirs=(str(by_id),)) == [str(link)]


def test_driver_warns_once_about_a_bare_tty_name(caplog):
    driver = NmeaRadarDriver("arpa0", NmeaRadarSettings(port="/dev/ttyUSB97"))
    with caplog.at_level(logging.WARNING, logger="towerd.drivers.base"):
        for _ in range(2):
            with pytest.raises(DriverInitError, match="does not exist|No such file"):
                driver.open()
    warnings = [r.getMessage() for r in caplog.records if "numbered in plug order" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("sensor arpa0: /dev/ttyUSB97")
