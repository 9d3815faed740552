import pytest

from model_core.chexpert import CRITICAL_FINDINGS
from model_core.config import GateConfig
from model_core.evaluation.gates import gate_decision


def _metrics(positives=200, tp=200, specificity=0.9, hallucination=(0.005, 0.0, 0.01)):
    det = {"positives": positives, "tp": tp, "sensitivity": tp / positives if positives else None,
           "sensitivity_ci": (0.985, 1.0) if tp == positives else (0.80, 0.95), "specificity": specificity,
           "specificity_ci": (specificity - 0.05, specificity + 0.05), "threshold": 0.3, "flag_rate": 0.2}
    value, low, high = hallucination
    return {"critical_findings": {f: dict(det) for f in CRITICAL_FINDINGS},
            "hallucination": {"vs_ground_truth": {"rate": {"value": value, "ci_low": low, "ci_high": high}}}}


def test_passing_metrics_promote():
    decision = gate_decision(_metrics(), GateConfig())
    assert decision["passed"] and decision["decision"] == "promote"
    assert len(decision["checks"]) == 2 * len(CRITICAL_FINDINGS) + 1


def test_lower_bound_gating_rejects_a_point_estimate_that_would_pass():
    metrics = _metrics()
    for det in metrics["critical_findings"].values():
        det["sensitivity_ci"] = (0.95, 1.0)  # point 1.0, lower bound 0.95
    assert not gate_decision(metrics, GateConfig())["passed"]
    assert gate_decision(metrics, GateConfig(gate_on_ci_lower_bound=False))["passed"]


def test_too_few_positives_fail_closed():
    decision = gate_decision(_metrics(positives=3, tp=3), GateConfig())
    assert not decision["passed"]
    assert any("cannot be estimated, gate fails closed" in r for r in decision["reasons"])


def test_flag_everything_fails_the_specificity_floor():
    decision = gate_decision(_metrics(specificity=0.1), GateConfig())
    assert not decision["passed"] and any("specificity" in r for r in decision["reasons"])


def test_hallucination_upper_bound_is_gated():
    decision = gate_decision(_metrics(hallucination=(0.02, 0.01, 0.04)), GateConfig())
    assert not decision["passed"] and any("hallucination" in r for r in decision["reasons"])


def test_missing_metrics_are_named():
    with pytest.raises(ValueError, match="critical_findings"):
        gate_decision({}, GateConfig())


def test_min_positives_zero_is_an_explicit_development_opt_out():
    metrics = _metrics(positives=0, tp=0)
    for det in metrics["critical_findings"].values():
        det["sensitivity_ci"] = (None, None)
    assert not gate_decision(metrics, GateConfig())["passed"]
    relaxed = gate_decision(metrics, GateConfig(min_positives=0))
    assert relaxed["passed"] and any("not gated" in c["reason"] for c in relaxed["checks"])
