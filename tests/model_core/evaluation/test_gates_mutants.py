"""The gate decision as a record, exactly (issue 12, item 5): the decision is what MLflow tags, the signed gate record
and the 510(k) packet carry, so every figure, CI end, threshold, comparison and reason is asserted as a literal,
each finding with different numbers (mutants that swap keys, CI ends or findings, or change a reason, survived
tests that checked only `passed`). Run by benchmarks/mutation_safety.py (modules gates, gate_record)."""

from __future__ import annotations

import json

import pytest

from model_core.config import GateConfig
from model_core.evaluation.gate_record import require_promoted, verify_gate_record, write_gate_record
from model_core.evaluation.gates import gate_decision
from model_core.signing import load_signer


def _det(positives, tp, sens_ci, spec, spec_ci, threshold, flag_rate):
    return {"positives": positives, "tp": tp, "sensitivity": tp / positives if positives else None,
            "sensitivity_ci": sens_ci, "specificity": spec, "specificity_ci": spec_ci, "threshold": threshold,
            "flag_rate": flag_rate}


def _mixed_metrics() -> dict:
    """One finding failing each way, one passing, with numbers that differ everywhere."""
    return {"critical_findings": {
        "Pneumothorax": _det(1, 1, (0.21, 1.0), 0.91, (0.86, 0.94), 0.25, 0.11),        # 1 positive: fails closed
        "Fracture": _det(100, 99, (0.946, 0.998), 0.81, (0.72, 0.87), 0.35, 0.12),      # CI low 0.946 <= 0.98
        "Lung Lesion": _det(200, 200, (0.9812, 1.0), 0.55, (0.48, 0.61), 0.45, 0.13),  # specificity 0.55 < 0.6
        "Pleural Effusion": _det(300, 300, (0.9874, 1.0), 0.6, (0.52, 0.67), 0.55, 0.14)},   # spec == floor
        "hallucination": {"vs_ground_truth": {"rate": {"value": 0.02, "ci_low": 0.011, "ci_high": 0.034}}}}


def _sens(finding, value, low, high, gated, positives, passed, reason):
    return {"name": "critical_sensitivity", "finding": finding, "metric": "sensitivity", "value": value,
            "ci_low": low, "ci_high": high, "gated_value": gated, "positives": positives, "threshold": 0.98,
            "comparison": ">", "passed": passed, "reason": reason}


def _spec(finding, value, low, high, passed, reason):
    return {"name": "specificity_floor", "finding": finding, "metric": "specificity", "value": value,
            "ci_low": low, "ci_high": high, "gated_value": value, "threshold": 0.6, "comparison": ">=",
            "passed": passed, "reason": reason}


def test_the_conservative_decision_is_the_exact_record():
    decision = gate_decision(_mixed_metrics(), GateConfig())
    pneumo = "Pneumothorax: only 1 positive test study (< 10); sensitivity cannot be estimated, gate fails closed"
    fracture = "Fracture: sensitivity 95% CI lower bound 0.946 <= 0.98 (99/100 detected)"
    lesion_spec = "Lung Lesion: specificity 0.550 < 0.6 at threshold 0.450"
    hallucination = "hallucination rate 95% CI upper bound 0.034 >= 0.03"
    assert decision["checks"] == [
        _sens("Pneumothorax", 1.0, 0.21, 1.0, 0.21, 1, False, pneumo),
        _spec("Pneumothorax", 0.91, 0.86, 0.94, True, "Pneumothorax: specificity 0.910 >= 0.6 at threshold 0.250"),
        _sens("Fracture", 0.99, 0.946, 0.998, 0.946, 100, False, fracture),
        _spec("Fracture", 0.81, 0.72, 0.87, True, "Fracture: specificity 0.810 >= 0.6 at threshold 0.350"),
        _sens("Lung Lesion", 1.0, 0.9812, 1.0, 0.9812, 200, True,
              "Lung Lesion: sensitivity 95% CI lower bound 0.981 > 0.98 (200/200 detected)"),
        _spec("Lung Lesion", 0.55, 0.48, 0.61, False, lesion_spec),
        _sens("Pleural Effusion", 1.0, 0.9874, 1.0, 0.9874, 300, True,
              "Pleural Effusion: sensitivity 95% CI lower bound 0.987 > 0.98 (300/300 detected)"),
        _spec("Pleural Effusion", 0.6, 0.52, 0.67, True,
              "Pleural Effusion: specificity 0.600 >= 0.6 at threshold 0.550"),
        {"name": "hallucination_rate", "finding": None, "metric": "hallucination rate", "value": 0.02,
         "ci_low": 0.011, "ci_high": 0.034, "gated_value": 0.034, "threshold": 0.03, "comparison": "<",
         "passed": False, "reason": hallucination}]
    assert decision["passed"] is False and decision["decision"] == "reject"
    assert decision["reasons"] == [pneumo, fracture, lesion_spec, hallucination]
    assert decision["review_rate"] == {
        "per_finding_flag_rate": {"Pneumothorax": 0.11, "Fracture": 0.12, "Lung Lesion": 0.13,
                                  "Pleural Effusion": 0.14},
        "note": "share of test studies the detection head flags for each critical finding at its operating point: "
                "the radiologist-review load that operating point implies"}
    assert decision["config"] == {"operating_point_sensitivity": 0.98, "critical_sensitivity_min": 0.98,
                                  "hallucination_rate_max": 0.03, "specificity_floor": 0.6,
                                  "gate_on_ci_lower_bound": True, "min_positives": 10}


def test_point_estimate_reasons_name_no_bound_and_a_pass_says_so():
    metrics = _mixed_metrics()
    metrics["critical_findings"]["Pneumothorax"] = _det(2, 2, (0.34, 1.0), 0.91, (0.86, 0.94), 0.25, 0.11)
    metrics["hallucination"]["vs_ground_truth"]["rate"] = {"value": 0.02, "ci_low": 0.011, "ci_high": 0.034}
    decision = gate_decision(metrics, GateConfig(gate_on_ci_lower_bound=False, min_positives=2,
                                                 specificity_floor=0.5))
    reasons = {(c["name"], c["finding"]): c["reason"] for c in decision["checks"]}
    assert reasons[("critical_sensitivity", "Pneumothorax")] == "Pneumothorax: sensitivity 1.000 > 0.98 (2/2 detected)"
    assert reasons[("critical_sensitivity", "Fracture")] == "Fracture: sensitivity 0.990 > 0.98 (99/100 detected)"
    assert reasons[("hallucination_rate", None)] == "hallucination rate 0.020 < 0.03"
    assert [c["gated_value"] for c in decision["checks"] if c["name"] == "critical_sensitivity"] == [1.0, 0.99, 1.0,
                                                                                                    1.0]
    assert decision["passed"] is True and decision["decision"] == "promote"
    assert decision["reasons"] == ["all clinical safety checks passed"]


def test_two_to_nine_positives_are_studies_in_the_reason():
    metrics = _mixed_metrics()
    metrics["critical_findings"]["Fracture"] = _det(2, 2, (0.34, 1.0), 0.81, (0.72, 0.87), 0.35, 0.12)
    reason = gate_decision(metrics, GateConfig())["checks"][2]["reason"]
    assert reason == ("Fracture: only 2 positive test studies (< 10); sensitivity cannot be estimated, gate fails "
                      "closed")


def test_a_missing_specificity_or_sensitivity_fails_and_reads_n_a():
    metrics = _mixed_metrics()
    metrics["critical_findings"]["Fracture"] = _det(100, 99, (None, None), None, (None, None), 0.35, 0.12)
    checks = gate_decision(metrics, GateConfig())["checks"]
    assert checks[2]["passed"] is False and checks[2]["gated_value"] is None
    assert checks[2]["reason"] == "Fracture: sensitivity 95% CI lower bound n/a <= 0.98 (99/100 detected)"
    assert checks[3]["passed"] is False
    assert checks[3]["reason"] == "Fracture: specificity n/a < 0.6 at threshold 0.350"


def test_a_missing_hallucination_bound_falls_back_to_the_point_and_a_missing_rate_fails():
    metrics = _mixed_metrics()
    metrics["hallucination"]["vs_ground_truth"]["rate"] = {"value": 0.02}
    check = gate_decision(metrics, GateConfig())["checks"][-1]
    assert (check["gated_value"], check["ci_low"], check["ci_high"], check["passed"]) == (0.02, None, None, True)
    metrics["hallucination"]["vs_ground_truth"]["rate"] = {"value": None, "ci_high": None}
    check = gate_decision(metrics, GateConfig())["checks"][-1]
    assert check["passed"] is False and check["reason"] == "hallucination rate 95% CI upper bound n/a >= 0.03"


@pytest.mark.parametrize("finding", ["Pneumothorax", "Fracture", "Lung Lesion", "Pleural Effusion"])
def test_a_missing_finding_is_named(finding):
    metrics = _mixed_metrics()
    del metrics["critical_findings"][finding]
    with pytest.raises(ValueError) as err:
        gate_decision(metrics, GateConfig())
    assert str(err.value) == f"gate needs metrics['critical_findings'][{finding!r}]"


def test_missing_hallucination_metrics_are_named():
    with pytest.raises(ValueError) as err:
        gate_decision({"critical_findings": _mixed_metrics()["critical_findings"]}, GateConfig())
    assert str(err.value) == "gate needs metrics['hallucination'] from model_core.evaluation.evaluate_model"


def test_the_real_decision_is_what_the_signed_record_carries(tmp_path):
    """gate_decision output → write_gate_record → verify: the record holds the decision unchanged."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model.pt").write_bytes(b"weights")
    metrics_file = tmp_path / "metrics.json"
    metrics_file.write_text(json.dumps(_mixed_metrics()))
    decision = gate_decision(_mixed_metrics(), GateConfig())
    record_path = write_gate_record(decision, model_dir, tmp_path / "gate", load_signer(), metrics_file=metrics_file)
    assert verify_gate_record(tmp_path / "gate", model_dir) == "reject"
    record = json.loads(record_path.read_text())
    assert {k: record[k] for k in decision} == json.loads(json.dumps(decision))
    with pytest.raises(ValueError, match=r"the signed gate decision is reject \(Pneumothorax: only 1 positive test "
                                         r"study \(< 10\)"):
        require_promoted(tmp_path / "gate", model_dir)
