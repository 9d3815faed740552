"""The PCCP verdict per version, computed from the real release gate's decision: within the PCCP only when every
criterion is met; a version that fails any criterion (or whose evidence cannot show one) is outside the PCCP."""

from __future__ import annotations

import json

import pytest
from packet_inputs import SEPARATION, make_inputs, pdf_strings, read_zip, real_gate, strong_metrics

from model_core.config import GateConfig
from regulatory import build_packet, packet_document
from regulatory.labeling import DEFAULT_INTENDED_USE
from regulatory.pccp import ACCEPTANCE_LIMITS, AUTHORIZED_LABELING_SHA256


def _verdict(**overrides) -> dict:
    fields = {"metrics": strong_metrics(), "gate": real_gate(strong_metrics())}
    fields.update(overrides)
    return packet_document(make_inputs(True, **fields))["pccp"]["verdict"]


def _status(verdict: dict) -> dict[str, str]:
    return {c["criterion"].split(" (")[0]: c["status"] for c in verdict["criteria"]}


def test_a_version_meeting_every_criterion_is_within_the_pccp():
    verdict = _verdict()
    assert verdict["within"] is True and verdict["verdict"] == "within the PCCP"
    assert set(_status(verdict).values()) == {"met"} and len(verdict["criteria"]) == 5
    assert verdict["statement"].startswith("WITHIN the PCCP")


def test_the_pccp_limits_are_the_default_gate_configuration():
    """The gate the pipeline runs by default is exactly at the PCCP's limits (so a default run can be within)."""
    defaults = GateConfig()
    for key, (_, limit) in ACCEPTANCE_LIMITS.items():
        assert getattr(defaults, key) == limit, key


@pytest.mark.parametrize("case, criterion, status", [
    ("gate rejects", "Acceptance criteria met", "not met"),
    ("gate skips a finding's check", "Acceptance criteria met", "not met"),
    ("threshold loosened", "Acceptance criteria not loosened", "not met"),
    ("gate config not recorded", "Acceptance criteria not loosened", "not verifiable"),
    ("intended use changed", "Intended use unchanged", "not met"),
    ("split file changed after training", "Test set untouched by training", "not met"),
    ("evaluated study in training", "Test set untouched by training", "not met"),
    ("evaluated study outside the test split", "Test set untouched by training", "not met"),
    ("conflicting split", "Test set untouched by training", "not met"),
    ("split not recorded at training", "Test set untouched by training", "not verifiable"),
    ("no separation evidence", "Test set untouched by training", "not verifiable"),
])
def test_a_version_failing_a_criterion_is_outside_the_pccp(case, criterion, status):
    metrics, overrides, sep = strong_metrics(), {}, dict(SEPARATION)
    gate = real_gate(metrics)
    if case == "gate rejects":
        metrics["critical_findings"]["Fracture"]["sensitivity_ci"] = (0.95, 1.0)  # CI low <= 0.98 on one finding
        gate = real_gate(metrics)
        assert gate["decision"] == "reject"
    elif case == "gate skips a finding's check":
        gate["checks"] = [c for c in gate["checks"] if (c["finding"], c["metric"]) != ("Fracture", "specificity")]
        assert gate["passed"]
    elif case == "threshold loosened":
        gate = real_gate(metrics, critical_sensitivity_min=0.9)
        assert gate["passed"]  # the loosened gate passes: only the PCCP catches it
    elif case == "gate config not recorded":
        del gate["config"]
    elif case == "intended use changed":
        overrides["intended_use"] = DEFAULT_INTENDED_USE.replace("not intended for autonomous", "intended for")
    elif case == "split file changed after training":
        sep["split_sha256_at_evaluation"] = "0" * 64
    elif case == "evaluated study in training":
        sep["evaluated_in_training_splits"] = 1
    elif case == "evaluated study outside the test split":
        sep["evaluated_outside_test_split"] = 2
    elif case == "conflicting split":
        sep["conflicting_studies"] = 1
    elif case == "split not recorded at training":
        sep["split_sha256_at_training"] = None
    else:
        sep = None
    verdict = _verdict(metrics=metrics, gate=gate, test_separation=sep, **overrides)
    assert verdict["within"] is False and verdict["verdict"] == "outside the PCCP"
    assert verdict["statement"].startswith("OUTSIDE the PCCP") and criterion in verdict["statement"]
    failing = {k: v for k, v in _status(verdict).items() if v != "met"}
    assert failing == {criterion: status}
    if case == "gate skips a finding's check":
        assert "the gate did not check: specificity of Fracture" in verdict["criteria"][0]["evidence"]


def test_the_champions_test_set_and_labeling_are_the_reference(tmp_path):
    champion = json.loads(read_zip(build_packet(make_inputs(True, metrics=strong_metrics(),
                                                            gate=real_gate(strong_metrics())),
                                                tmp_path))["packet.json"])
    assert champion["pccp"]["labeling_sha256"] == AUTHORIZED_LABELING_SHA256
    assert _verdict(champion=champion)["within"] is True
    moved = dict(SEPARATION, test_studies_sha256="8" * 64)  # the test set changed since the champion
    verdict = _verdict(champion=champion, test_separation=moved)
    assert verdict["within"] is False and "differs from the champion's" in verdict["criteria"][3]["evidence"]


def test_the_packet_shows_the_verdict_and_the_plan(packets):
    files = read_zip(packets["fail"])
    doc = json.loads(files["packet.json"])
    html, pdf = files["packet.html"].decode(), pdf_strings(files["packet.pdf"])
    assert doc["pccp"]["verdict"]["within"] is False
    for text in ("OUTSIDE THE PCCP", "Description of modifications", "What may not change", "Modification protocol",
                 "Impact assessment", "Traceability", "Test-set separation evidence", "Real-world performance "
                 "monitoring"):
        assert text in html and text in pdf, text
    assert [p["component"] for p in doc["pccp"]["protocol"]] == [
        "Data management", "Retraining practice", "Performance evaluation", "Update procedures",
        "Real-world performance monitoring"]
