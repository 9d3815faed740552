"""The risk table: each hazard's residual risk follows the release-gate checks linked to it."""

from __future__ import annotations

from packet_inputs import make_gate, make_inputs

from regulatory import packet_document


def test_risk_levels_follow_the_linked_gate_checks():
    gate = make_gate(True)
    gate["checks"] += [
        {"name": "min_positives:Pneumothorax", "finding": "Pneumothorax", "metric": "positives", "value": 3,
         "ci_low": None, "threshold": 10, "comparison": ">=", "passed": False, "reason": "3 test positives < 10"},
        {"name": "phi_scan", "finding": None, "metric": "phi findings", "value": 0, "ci_low": None, "threshold": 1,
         "comparison": "<", "passed": True, "reason": "no identifiers found"},
        {"name": "graphics_smoke", "finding": None, "metric": "graphic", "value": 1, "ci_low": None,
         "threshold": 0, "comparison": ">", "passed": True, "reason": "unrelated check"},
    ]
    gate.update(passed=False, decision="reject", reasons=["min_positives:Pneumothorax failed"])
    doc = packet_document(make_inputs(False, gate=gate, monitoring=None))
    rows = {r["hazard"].split(" (")[0]: r for r in doc["risk_analysis"]["rows"]}
    ptx = rows["Missed pneumothorax in the draft"]
    assert ptx["residual_risk"] == "unacceptable"
    assert ptx["linked_checks"] == ["critical_sensitivity:Pneumothorax", "min_positives:Pneumothorax"]
    assert rows["Missed fracture in the draft"]["residual_risk"] == "acceptable"
    phi = next(r for r in doc["risk_analysis"]["rows"] if r["hazard"].startswith("Protected health"))
    assert phi["linked_checks"] == ["phi_scan"] and phi["residual_risk"] == "acceptable"
    laterality = next(r for r in doc["risk_analysis"]["rows"] if r["hazard"].startswith("Wrong laterality"))
    assert laterality["residual_risk"] == "needs review" and "0.034" in laterality["measured"]
    assert doc["risk_analysis"]["overall"].startswith("UNACCEPTABLE")
