"""Sharing rules for identity (ICD v1.1): a partner may get tracks without the serial
number, without the pilot position, without the operator ID, or no identity at all;
the YAML block is validated like the rest (unknown keys are errors, with line and path)."""

from __future__ import annotations

import numpy as np
import pytest

from towerd import icd
from test_config import GOOD
from towerd.config import parse_config
from towerd.errors import ConfigError
from towerd.icd import IdentityWithheld
from towerd.uplink.sharing import IdentitySharing, SharingRule, share_identities

BASE = GOOD + """\
    share:
      identity:
"""


def _identities() -> np.ndarray:
    rec = icd.empty_identity_records(2)
    rec["seq"] = [1, 2]
    rec["status"] = 1
    rec["id_type"] = 1
    rec["uas_id"] = b"1581F5FKD229400A1234"
    rec["operator_id"] = b"USA-OP-0042"
    rec["self_id"] = b"survey"
    rec["operator_lat_e7"] = 275_012_345
    rec["operator_lon_e7"] = -995_012_345
    rec["operator_alt_m"] = 140.0
    return rec


def test_default_shares_every_identity_field_unchanged():
    rec = _identities()
    assert share_identities(rec, SharingRule()) is rec
    assert SharingRule().shares_everything
    assert not SharingRule(identity=IdentitySharing(uas_id=False)).shares_everything


def test_serial_number_withheld():
    rec = _identities()
    out = share_identities(rec, SharingRule(identity=IdentitySharing(uas_id=False)))
    assert (out["uas_id"] == b"").all() and (out["id_type"] == 0).all()
    assert (out["withheld"] == IdentityWithheld.UAS_ID).all()
    assert (out["operator_lat_e7"] == rec["operator_lat_e7"]).all() and (out["operator_id"] == b"USA-OP-0042").all()
    assert (rec["uas_id"] == b"1581F5FKD229400A1234").all()  # the outbox's copy is not changed
    icd.encode_identities(1, out)  # still a valid record


def test_pilot_position_withheld_and_operator_id_withheld():
    rule = SharingRule(identity=IdentitySharing(operator_position=False, operator_id=False))
    out = share_identities(_identities(), rule)
    assert (out["operator_lat_e7"] == icd.LAT_LON_UNKNOWN).all()
    assert (out["operator_lon_e7"] == icd.LAT_LON_UNKNOWN).all() and np.isnan(out["operator_alt_m"]).all()
    assert (out["operator_id"] == b"").all() and (out["uas_id"] == b"1581F5FKD229400A1234").all()
    assert (out["withheld"] == IdentityWithheld.OPERATOR_POSITION | IdentityWithheld.OPERATOR_ID).all()


def test_coarsened_partner_gets_a_coarse_pilot_position():
    out = share_identities(_identities(), SharingRule(coarsen_m=1000.0))
    lat = out["operator_lat_e7"] / 1e7
    assert (out["operator_lat_e7"] != 275_012_345).all()
    assert np.abs(lat - 27.5012345).max() < 1000.0 / 111_000  # within one cell
    assert (out["withheld"] == 0).all()


def test_yaml_identity_block_parsed():
    cfg = parse_config(BASE + "        uas_id: false\n        operator_position: false\n", "t.yaml")
    ident = cfg.centrals[0].share.identity
    assert ident == IdentitySharing(uas_id=False, operator_position=False)
    cfg = parse_config(BASE + "        enabled: false\n", "t.yaml")
    assert cfg.centrals[0].share.identity.enabled is False


@pytest.mark.parametrize("text,needle", [
    ("        serial: false\n", "serial"),
    ("        uas_id: maybe\n", "uas_id"),
])
def test_yaml_identity_mistakes_are_errors(text, needle):
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + text, "t.yaml")
    assert any(needle in p and "identity" in p for p in info.value.problems), info.value.problems
