"""RF Explorer scan plan as a pure state machine: configuration lines, resets and sweeps
in, commands out, on a clock the test moves (no port; the driver over a real pty is in
test_rfe_driver.py)."""

from __future__ import annotations

import pytest

from towerd.drivers.rfexplorer.protocol import (
    RfeConfig,
    cmd_analyzer_config,
    cmd_request_config,
    cmd_sweep_points,
)
from towerd.drivers.rfexplorer.scanplan import Band, RfExplorerSettings, ScanPlan
from towerd.errors import DriverInitError

B433 = Band("b433", start_mhz=433.0, end_mhz=435.0, dwell_s=1.0)
B868 = Band("b868", start_mhz=863.0, end_mhz=870.0, dwell_s=2.0)
B2G4 = Band("b2g4", centre_mhz=2441.75, span_mhz=83.5, dwell_s=3.0)


def config(band_or_lo: Band | float, hi_mhz: float | None = None, *, points: int = 112, max_mhz: float = 6100.0,
           max_span_mhz: float = 600.0) -> RfeConfig:
    """What the device says when tuned to a band (or lo-hi MHz)."""
    lo, hi = (band_or_lo.lo_mhz, band_or_lo.hi_mhz) if isinstance(band_or_lo, Band) else (band_or_lo, hi_mhz)
    step_hz = round((hi - lo) * 1e6 / (points - 1))
    return RfeConfig(start_khz=round(lo * 1000), step_hz=step_hz, amp_top_dbm=-10, amp_bottom_dbm=-120, points=points,
                     expansion_active=False, mode=0, min_khz=15_000, max_khz=round(max_mhz * 1000),
                     max_span_khz=round(max_span_mhz * 1000), rbw_khz=100, offset_db=0, calculator=0, line="")


def retune(band: Band) -> bytes:
    return cmd_analyzer_config(band.start_khz, band.end_khz, -10, -120)


def plan(**kw) -> ScanPlan:
    kw.setdefault("bands", (B433, B868, B2G4))
    kw.setdefault("command_gap_s", 0.0)
    return ScanPlan("rfe0", RfExplorerSettings(port="/dev/null", **kw))


def drain(p: ScanPlan, now: float) -> list[bytes]:
    """Every command due at ``now``, as the driver writes them."""
    out = []
    while (c := p.next_command(now)) is not None:
        out.append(c.data)
    return out


def opened(p: ScanPlan, device: RfeConfig, now: float = 0.0) -> list[bytes]:
    """The open: request the configuration, get ``device``'s, go live; the commands sent."""
    p.restart(now)
    sent = drain(p, now)
    p.on_config(device, now)
    p.go_live(now)
    return sent + drain(p, now)


def test_open_requests_the_configuration_then_tunes_the_first_band():
    p = plan()
    p.tick(100.0)
    assert drain(p, 100.0) == [] and not p.live  # nothing happens before an open
    assert opened(p, config(100.0, 200.0)) == [cmd_request_config(), retune(B433)]
    assert p.live and p.label == ""  # the device is off the plan until it confirms
    p.on_config(config(B433), 0.1)
    assert p.label == "b433" and p.counters.commands == 2 and p.counters.retunes == 1


def test_a_device_already_on_the_first_band_is_left_alone():
    p = plan()
    assert opened(p, config(B433)) == [cmd_request_config()]
    assert p.label == "b433"


def test_dwell_then_next_band_cycling_round_the_plan():
    p = plan()
    opened(p, config(B433))
    t = 0.0
    for band, nxt in ((B433, B868), (B868, B2G4), (B2G4, B433)):
        p.tick(t + band.dwell_s - 0.01)
        assert drain(p, t + band.dwell_s - 0.01) == []
        t += band.dwell_s
        p.tick(t)
        assert drain(p, t) == [retune(nxt)]
        p.on_config(config(nxt), t + 0.25)
        assert p.label == nxt.name
        t += 0.25
    assert p.counters.retunes == 3 and p.counters.retune_timeouts == 0


def test_commands_wait_for_the_command_gap():
    p = plan(command_gap_s=0.5, sweep_points=224)
    p.restart(0.0)
    assert drain(p, 0.0) == [cmd_request_config()]
    p.on_config(config(2400.0, 2483.5), 0.1)
    p.go_live(0.1)
    assert drain(p, 0.1) == []
    assert drain(p, 0.5) == [cmd_sweep_points(224)]  # points before the retune (a retune after would be reset)
    assert drain(p, 0.9) == []
    assert drain(p, 1.0) == [retune(B433)]


def test_sweep_points_are_sent_once_per_session():
    p = plan(sweep_points=224)
    assert opened(p, config(B433)) == [cmd_request_config(), cmd_sweep_points(224), retune(B433)]
    p.on_config(config(B433, points=112), 0.1)  # the device kept 112: warned, not asked again
    assert drain(p, 0.2) == [] and p.label == "b433"
    assert opened(p, config(B433), now=10.0) == [cmd_request_config(), cmd_sweep_points(224), retune(B433)]


def test_bands_the_device_cannot_tune_are_skipped_and_none_left_is_an_init_error():
    p = plan()
    opened(p, config(B868, max_mhz=2000.0))  # no 2.4 GHz module; 433 MHz fits
    assert [b.name for b in p.bands] == ["b433", "b868"] and p.counters.bands_skipped == 1
    p = plan(bands=(B2G4,))
    p.restart(0.0)
    p.on_config(config(B433, max_mhz=1000.0), 0.0)
    with pytest.raises(DriverInitError, match="no band of the scan plan fits"):
        p.go_live(0.0)


def test_an_unconfirmed_retune_is_sent_again_then_the_band_is_skipped_this_cycle():
    p = plan(retune_timeout_s=2.0, retune_attempts=2)
    opened(p, config(2400.0, 2483.5))  # retune to b433 sent at 0
    p.tick(1.9)
    assert drain(p, 1.9) == []
    p.tick(2.0)
    assert drain(p, 2.0) == [retune(B433)]  # second attempt
    p.tick(4.0)
    assert drain(p, 4.0) == [retune(B868)]  # given up: the next band
    assert (p.counters.retune_timeouts, p.counters.bands_failed, p.counters.retunes) == (2, 1, 3)
    p.on_config(config(B868), 4.1)
    assert p.label == "b868"


def test_no_sweep_for_the_stall_timeout_asks_for_the_configuration_again():
    p = plan(bands=(B433,), stall_timeout_s=5.0)  # one band: no retunes
    opened(p, config(B433))
    p.on_sweep(1.0)
    p.tick(5.9)
    assert drain(p, 5.9) == []
    p.tick(6.0)
    assert drain(p, 6.0) == [cmd_request_config()] and p.counters.requeries == 1
    p.tick(6.5)
    assert drain(p, 6.5) == []  # one request at a time
    p.tick(6.0 + 3.0)  # config_timeout_s without an answer: ask again
    assert drain(p, 9.0) == [cmd_request_config()] and p.counters.requeries == 2


def test_a_reset_banner_means_a_new_configuration_and_a_new_set_up():
    p = plan()
    opened(p, config(B433))
    p.on_reset("(C) Ariel Rocholl 2010", 1.0)
    p.on_reset("RF Explorer", 1.0)  # the banner's further lines are one restart
    assert p.counters.resets == 1 and p.label == "" and p.config is None
    assert drain(p, 1.0) == [cmd_request_config()]
    p.on_config(config(2400.0, 2483.5), 1.5)  # the device's own defaults
    assert drain(p, 1.5) == [retune(B433)]


def test_a_configuration_changed_from_the_front_panel_is_set_up_again():
    p = plan()
    opened(p, config(B433))
    p.on_config(config(100.0, 200.0), 0.5)
    assert p.label == "" and drain(p, 0.5) == [retune(B433)]


def test_without_an_open_configurations_only_label_the_sweeps():
    """Replay: the plan labels by band and never asks for anything."""
    p = plan()
    p.on_config(config(B868), 0.0)
    assert p.label == "b868"
    p.tick(1000.0)
    p.on_reset("(C) Ariel Rocholl 2010", 1000.0)
    assert drain(p, 1000.0) == [] and p.counters.commands == 0
