"""The honest pathway (De Novo for the generator; cleared triage devices for the detection-head claims only), the
eSTAR-style section manifest and the GMLP principles, computed from the packet document."""

from __future__ import annotations

import copy
import json

from packet_inputs import make_inputs, pdf_strings, read_zip

from regulatory import packet_document


def test_each_detection_claim_names_its_predicates_or_says_it_has_none():
    doc = packet_document(make_inputs(True))
    claims = {c["finding"]: c for c in doc["pathway"]["claims"]}
    assert claims["Pleural Effusion"]["predicates"] == ["K211733", "K230899", "K222179"]
    for finding in ("Fracture", "Lung Lesion"):
        assert claims[finding]["predicates"] == [] and "De Novo" in claims[finding]["status"]
    assert doc["pathway"]["generator_predicate"] is None
    assert "No chest X-ray device that generates radiology reports has been cleared" in doc["pathway"]["statement"]


def test_the_estar_manifest_says_why_a_section_does_not_apply(packets):
    files = read_zip(packets["pass"])
    doc = json.loads(files["packet.json"])
    rows = {r["section"]: r for r in doc["estar"]}
    for section in ("Sterility", "Biocompatibility", "Reprocessing", "Electrical safety and electromagnetic "
                    "compatibility", "Performance testing - animal"):
        assert rows[section]["status"] == "not applicable"
        assert rows[section]["detail"].startswith("not applicable because ")
    assert rows["Predetermined Change Control Plan"]["status"] == "included"
    assert "Section 10" in rows["Predetermined Change Control Plan"]["detail"]
    assert rows["Cybersecurity (SBOM, threat model)"]["status"] == "partial"
    assert rows["Performance testing - clinical"]["status"] == "to be completed"
    assert "not applicable because the device has no patient-contacting materials" in pdf_strings(
        files["packet.pdf"]).replace("\n", " ")
    without_sbom = packet_document(make_inputs(True, sbom=None))
    assert {r["section"]: r["status"] for r in without_sbom["estar"]}["Cybersecurity (SBOM, threat model)"] == \
        "to be completed"


def test_the_ten_gmlp_principles_follow_the_evidence():
    doc = packet_document(make_inputs(True))
    assert [r["principle"].split(".")[0] for r in doc["gmlp"]] == [str(i) for i in range(1, 11)]
    status = {int(r["principle"].split(".")[0]): r["status"] for r in doc["gmlp"]}
    assert status[3] == "gap"                          # IU X-ray demo data: not representative
    assert status[4] == "evidence in this packet"      # the test-set separation criterion is met
    assert status[7] == "gap"                          # no reader study
    separated = copy.deepcopy(make_inputs(True).test_separation)
    separated["evaluated_in_training_splits"] = 3
    leaky = packet_document(make_inputs(True, test_separation=separated, monitoring=None))
    leaky_status = {int(r["principle"].split(".")[0]): r["status"] for r in leaky["gmlp"]}
    assert leaky_status[4] == "gap" and leaky_status[10] == "partial"
