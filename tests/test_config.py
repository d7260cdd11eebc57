"""Configuration: the shipped default is valid; every kind of mistake is named with its
line, column and key path, all at once; the CLI exits as documented."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from towerd.config import Config, load_config, parse_config
from towerd.errors import EX_CONFIG, ConfigError

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "config" / "towerd.yaml"

GOOD = """\
version: 1
tower:
  id: tx-test-001
  latitude_deg: 27.5
  longitude_deg: -99.5
  height_m: 130
sensors:
  - name: radar0
    driver: ti_mmwave
    settings:
      port: /dev/ttyACM1
    mount:
      boresight_azimuth_deg: 90
centrals:
  - name: hq
    endpoint: tcp://127.0.0.1:7700
    plain: true
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "t.yaml")
    return info.value.problems


def test_shipped_default_is_valid():
    loaded = load_config(SHIPPED)
    cfg = loaded.config
    assert isinstance(cfg, Config)
    assert cfg.tower.id == "tx-lrd-014"
    assert cfg.sensors[0].settings.port == "/dev/towerd/ti-data"
    assert cfg.sensors[0].mount.position_enu_m == (0.0, 0.0, 12.0)
    assert len(loaded.digest) == 64


def test_minimal_config_fills_documented_defaults():
    cfg = parse_config(GOOD, "t.yaml")
    assert cfg.sensors[0].settings.baudrate == 921600
    assert cfg.tracking.confirm_hits == 3
    assert cfg.state_dir == "/var/lib/towerd"
    assert cfg.tower.height_m == 130.0 and isinstance(cfg.tower.height_m, float)


def test_unknown_key_named_with_line_column_and_hint():
    text = GOOD.replace("  height_m: 130\n", "  height_m: 130\n  hieght_m: 3\n")
    assert problems_of(text) == ["t.yaml:7:3: tower.hieght_m: unknown key, did you mean 'height_m'?"]


def test_out_of_range_value():
    text = GOOD.replace("latitude_deg: 27.5", "latitude_deg: 127.5")
    assert problems_of(text) == ["t.yaml:4:17: tower.latitude_deg: 127.5 is out of range, expected -90..90 deg"]


def test_wrong_type_and_yaml11_boolean_for_a_string():
    text = GOOD.replace("id: tx-test-001", "id: on").replace("height_m: 130", "height_m: high")
    assert problems_of(text) == [
        't.yaml:3:7: tower.id: expected a string, got a boolean \'on\' (quote it: "on")',
        "t.yaml:6:13: tower.height_m: expected a number, got a string 'high'",
    ]


def test_duplicate_key_is_an_error_not_last_wins():
    text = GOOD.replace("  height_m: 130\n", "  height_m: 130\n  height_m: 140\n")
    assert problems_of(text) == ["t.yaml:7:3: tower.height_m: duplicate key (first given at line 6)"]


def test_missing_required_keys_all_reported():
    text = GOOD.replace("  latitude_deg: 27.5\n", "").replace("      boresight_azimuth_deg: 90\n",
                                                                 "      tilt_deg: 1\n")
    probs = problems_of(text)
    assert "t.yaml:3:3: tower.latitude_deg: required key is missing" in probs
    assert "t.yaml:12:7: sensors[0].mount.boresight_azimuth_deg: required key is missing" in probs
    assert len(probs) == 2


def test_all_problems_at_once_in_file_order():
    text = (GOOD.replace("version: 1", "version: 2")
            .replace("driver: ti_mmwave", "driver: ti_mmwav")
            .replace("plain: true", "plain: yes please"))
    probs = problems_of(text)
    assert probs[0] == "t.yaml:1:10: version: 2 is out of range, expected 1..1"
    assert probs[1].startswith("t.yaml:9:13: sensors[0].driver: unknown driver 'ti_mmwav', expected one of: ")
    assert probs[2] == "t.yaml:17:12: centrals[0].plain: expected a boolean (true/false), got a string 'yes please'"
    assert len(probs) == 3


def test_driver_settings_are_validated_by_the_driver_schema():
    text = GOOD.replace("      port: /dev/ttyACM1\n", "      port: /dev/ttyACM1\n      baud: 9600\n")
    assert problems_of(text) == ["t.yaml:12:7: sensors[0].settings.baud: unknown key, did you mean 'baudrate'?"]


def test_cross_key_rules():
    text = GOOD + "tracking:\n  confirm_hits: 6\n  confirm_window: 5\n"
    assert problems_of(text) == [
        "t.yaml:19:3: tracking: confirm_hits (6) must not exceed confirm_window (5)"
    ]
    text = GOOD.replace("centrals:", "  - name: radar0\n    driver: ti_mmwave\n    settings: {port: x}\n"
                        "    mount: {boresight_azimuth_deg: 0}\ncentrals:")
    assert problems_of(text) == ["t.yaml:14:5: sensors[1].name: duplicate name 'radar0'"]


def test_mount_required_for_radars_only():
    text = GOOD.replace("    mount:\n      boresight_azimuth_deg: 90\n", "")
    assert problems_of(text) == [
        "t.yaml:8:5: sensors[0].mount: required for a ti_mmwave sensor (where the antenna is and looks)"]
    rf = GOOD.replace("centrals:", "  - name: rf0\n    driver: rfexplorer\n    settings: {port: /dev/x}\ncentrals:")
    assert parse_config(rf, "t.yaml").sensors[1].mount is None


def test_exponent_without_a_dot_is_a_number_unless_quoted():
    # PyYAML (YAML 1.1) would read 1e-3 as a string; operators write it that way.
    cfg = parse_config(GOOD.replace("height_m: 130", "height_m: 13e1"), "t.yaml")
    assert cfg.tower.height_m == 130.0
    assert problems_of(GOOD.replace("height_m: 130", 'height_m: "13e1"')) == [
        "t.yaml:6:13: tower.height_m: expected a number, got a string '13e1'"]


def test_malformed_yaml_and_empty_file():
    assert problems_of("tower: [unclosed\n") [0].startswith("t.yaml:2:1: malformed YAML:")
    assert problems_of("") == ["t.yaml:1:1: the file is empty"]
    assert problems_of("- a list\n") == ["t.yaml:1:1: expected a mapping of Config keys, got a list"]


def test_check_config_cli(towerd_exe, tmp_path):
    ok = subprocess.run([towerd_exe, "check-config", "--schema-only", str(SHIPPED)], capture_output=True, text=True,
                        timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "configuration OK" in ok.stdout and "schema only" in ok.stdout
    # -c as for every other command that reads a configuration
    same = subprocess.run([towerd_exe, "check-config", "--schema-only", "-c", str(SHIPPED)], capture_output=True,
                          text=True, timeout=60)
    assert same.returncode == 0 and same.stdout == ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("latitude_deg: 27.5", "latitude_deg: 127.5").replace("id: tx-test-001", "idd: x"))
    res = subprocess.run([towerd_exe, "check-config", str(bad)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert f"{bad}:3:3: tower.idd: unknown key" in res.stderr
    assert f"{bad}:4:17: tower.latitude_deg: 127.5 is out of range" in res.stderr
    assert f"{bad}:3:3: tower.id: required key is missing" in res.stderr
    assert "3 problems" in res.stderr


def test_run_with_bad_config_exits_ex_config(towerd_exe, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("version: 1", "version: one"))
    res = subprocess.run([towerd_exe, "run", "--config", str(bad)], capture_output=True, text=True, timeout=60)
    assert res.returncode == EX_CONFIG
    assert "version: expected an integer" in res.stderr
    missing = subprocess.run([towerd_exe, "run", "--config", str(tmp_path / "nope.yaml")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == EX_CONFIG
    assert "cannot read" in missing.stderr


def test_loading_is_bounded_in_depth_aliases_numbers_and_size(tmp_path):
    """Deep nesting (RecursionError), nested aliases ("billion laughs": minutes and
    gigabytes) and a 400-digit number for a float key (OverflowError) are located
    problems, found in well under a second; a file over 1 MiB is not read."""
    import time

    laughs = 'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
        f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]\n" for i in range(1, 9))
    cases = {
        GOOD + "threat:\n  zones: " + "[" * 600 + "]" * 600 + "\n": "nesting deeper than 32 levels",
        GOOD + "".join("  " * i + f"k{i}:\n" for i in range(600)) + "  " * 600 + "v: 1\n": "nesting deeper than",
        laughs + GOOD + "threat:\n  zones: *a8\n": "100000 values once aliases are expanded",
        GOOD.replace("latitude_deg: 27.5", "latitude_deg: 1" + "0" * 400): "out of range for a number",
    }
    for text, expected in cases.items():
        t0 = time.monotonic()
        problems = problems_of(text)
        assert time.monotonic() - t0 < 2.0
        assert any(expected in p for p in problems), problems
    big = tmp_path / "big.yaml"
    big.write_text(GOOD + "#" * (1 << 20))
    with pytest.raises(ConfigError, match="larger than 1048576 bytes"):
        load_config(big)
    assert parse_config(GOOD + "reports: &r {interval_s: 0.5}\n", "t.yaml").reports.interval_s == 0.5  # anchors stay
