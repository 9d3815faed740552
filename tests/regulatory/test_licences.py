"""The SBOM section: the training environment's components and the licences that need attention (source-available,
copyleft, undeclared, the non-commercial data), never flagging a permissive licence by a look-alike name."""

from __future__ import annotations

import copy
import json

import pytest
from packet_inputs import SBOM, make_inputs, read_zip

from regulatory import packet_document
from regulatory.licences import licence_class


@pytest.mark.parametrize("licenses, expected", [
    ([{"expression": "Apache-2.0 AND BSD-3-Clause AND BSL-1.0 AND MIT"}], None),  # BSL-1.0 is Boost: permissive
    ([{"license": {"id": "BUSL-1.1"}}], "busl"),
    ([{"license": {"name": "Business Source License 1.1"}}], "busl"),
    ([{"license": {"id": "GPL-3.0-only"}}], "gpl"),
    ([{"expression": "MIT AND GPL-2.0-or-later"}], "gpl"),
    ([{"expression": "Apache-2.0 OR GPL-2.0-only"}], None),    # a permissive alternative exists
    ([{"license": {"id": "LGPL-3.0-only"}}], "lgpl"),
    ([{"license": {"id": "AGPL-3.0-only"}}], "agpl"),
    ([{"license": {"id": "CC-BY-NC-4.0"}}], "nc"),
    ([{"license": {"name": "Other/Proprietary License"}}], "unknown"),
    ([], "unknown"),
    ([{"license": {"name": "BSD License"}}, {"license": {"id": "Apache-2.0"}}], None),
])
def test_licence_classes(licenses, expected):
    assert licence_class(licenses) == expected


def test_what_needs_attention_is_flagged_with_why(packets):
    doc = json.loads(read_zip(packets["pass"])["packet.json"])
    sbom = doc["sbom"]
    assert sbom["recorded"] and sbom["components"] == 6 and sbom["spec_version"] == "1.5"
    flagged = {a["component"]: a for a in sbom["attention"]}
    assert set(flagged) == {"alibi-detect", "pylibjpeg-libjpeg", "huey",
                            "data: IU X-ray (Indiana University Chest X-ray Collection, Open-i), demo subset"}
    assert "Business Source License" in flagged["alibi-detect"]["reason"]
    assert "drift monitors" in flagged["alibi-detect"]["reason"]
    assert "GPL" in flagged["pylibjpeg-libjpeg"]["reason"] and "no licence declared" in flagged["huey"]["reason"]
    data = next(a for a in sbom["attention"] if a["component"].startswith("data:"))
    assert data["licence"] == "CC BY-NC-ND 4.0" and "non-commercial" in data["reason"]
    assert {d["name"]: d["roles"] for d in sbom["data_components"]} == {"manifest.csv": ["manifest"],
                                                                        "splits.csv": ["split-assignment"]}


def test_the_sbom_member_carries_known_fields_only(packets):
    member = json.loads(read_zip(packets["pass"])["sbom.cdx.json"])
    assert member["bomFormat"] == "CycloneDX" and member["specVersion"] == "1.5"
    names = [c["name"] for c in member["components"]]
    assert names[:6] == [c["name"] for c in SBOM["components"][:6]]
    assert "pixel_canary_blob" not in json.dumps(member)  # an unknown field ("description") is dropped
    assert member["components"][0]["purl"] == "pkg:pypi/torch@2.13.0%2Bcpu"


def test_not_recorded_says_so_and_bad_sboms_are_named():
    doc = packet_document(make_inputs(True, sbom=None))
    assert doc["sbom"]["recorded"] is False and doc["sbom"]["statement"].startswith("Not recorded")
    assert [a["component"][:5] for a in doc["sbom"]["attention"]] == ["data:"]  # the data licence still is
    bad = copy.deepcopy(SBOM)
    bad["components"][1]["version"] = "Jane Canary-Doe"
    with pytest.raises(ValueError, match=r"sbom\['components'\]\[1\]\['version'\] is not a version") as err:
        packet_document(make_inputs(True, sbom=bad))
    assert "Canary" not in str(err.value)
