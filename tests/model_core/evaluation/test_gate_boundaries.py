"""Gate boundaries, one critical finding at a time (issue 12: mutants of `>`/`>=`/`<` and of min_positives
survived tests that gave all four findings the same numbers). Every CI here is computed from the counts."""

from __future__ import annotations

import pytest

from model_core.chexpert import CRITICAL_FINDINGS
from model_core.config import GateConfig
from model_core.evaluation.gates import gate_decision
from model_core.stats import wilson_interval

POINT = GateConfig(gate_on_ci_lower_bound=False)   # boundaries on point estimates: exact equalities are reachable


def _det(tp: int, positives: int, tn: int, negatives: int) -> dict:
    return {"positives": positives, "tp": tp, "sensitivity": tp / positives if positives else None,
            "sensitivity_ci": wilson_interval(tp, positives), "specificity": tn / negatives,
            "specificity_ci": wilson_interval(tn, negatives), "threshold": 0.5, "flag_rate": 0.3}


def _metrics(overrides: dict | None = None, hallucinated: int = 0, reports: int = 1000) -> dict:
    good = _det(1000, 1000, 90, 100)                      # sensitivity 1.0 (Wilson low 0.996), specificity 0.9
    findings = {f: dict(good) for f in CRITICAL_FINDINGS} | (overrides or {})
    low, high = wilson_interval(hallucinated, reports)
    return {"critical_findings": findings, "hallucination": {"vs_ground_truth": {
        "rate": {"value": hallucinated / reports, "ci_low": low, "ci_high": high}}}}


def _failed(decision: dict) -> list[tuple[str, str | None]]:
    return [(c["name"], c["finding"]) for c in decision["checks"] if not c["passed"]]


def test_the_all_good_metrics_pass_both_ways():
    assert gate_decision(_metrics(), GateConfig())["passed"] and gate_decision(_metrics(), POINT)["passed"]


@pytest.mark.parametrize("finding", CRITICAL_FINDINGS)
def test_sensitivity_equal_to_the_threshold_fails_and_just_above_passes(finding):
    at = gate_decision(_metrics({finding: _det(98, 100, 90, 100)}), POINT)          # 0.98 == threshold: not >
    assert _failed(at) == [("critical_sensitivity", finding)] and at["decision"] == "reject"
    above = gate_decision(_metrics({finding: _det(991, 1000, 90, 100)}), POINT)     # 0.991 > 0.98
    assert above["passed"]


@pytest.mark.parametrize("finding", CRITICAL_FINDINGS)
def test_the_ci_lower_bound_is_gated_not_the_point(finding):
    det = _det(99, 100, 90, 100)                                                    # point 0.99, Wilson low 0.945
    assert det["sensitivity_ci"][0] < 0.98 < det["sensitivity"]
    assert _failed(gate_decision(_metrics({finding: det}), GateConfig())) == [("critical_sensitivity", finding)]
    assert gate_decision(_metrics({finding: det}), POINT)["passed"]


@pytest.mark.parametrize("finding", CRITICAL_FINDINGS)
def test_specificity_equal_to_the_floor_passes_and_just_below_fails(finding):
    assert gate_decision(_metrics({finding: _det(1000, 1000, 60, 100)}), POINT)["passed"]      # 0.60 >= 0.60
    below = gate_decision(_metrics({finding: _det(1000, 1000, 599, 1000)}), POINT)             # 0.599
    assert _failed(below) == [("specificity_floor", finding)]


@pytest.mark.parametrize("finding", CRITICAL_FINDINGS)
def test_nine_positives_fail_closed_and_ten_are_gated(finding):
    nine = gate_decision(_metrics({finding: _det(9, 9, 90, 100)}), POINT)
    assert _failed(nine) == [("critical_sensitivity", finding)]
    assert any("only 9 positive test studies (< 10)" in r for r in nine["reasons"])
    ten = gate_decision(_metrics({finding: _det(10, 10, 90, 100)}), POINT)             # 10 positives: estimated
    assert ten["passed"]


def test_hallucination_equal_to_the_maximum_fails_and_just_below_passes():
    at = gate_decision(_metrics(hallucinated=30, reports=1000), POINT)                # 0.03 == max: not <
    assert _failed(at) == [("hallucination_rate", None)]
    assert gate_decision(_metrics(hallucinated=29, reports=1000), POINT)["passed"]


def test_hallucination_is_gated_on_its_upper_bound():
    metrics = _metrics(hallucinated=20, reports=1000)                               # 0.02, Wilson high 0.031
    assert metrics["hallucination"]["vs_ground_truth"]["rate"]["ci_high"] > 0.03
    assert _failed(gate_decision(metrics, GateConfig())) == [("hallucination_rate", None)]
    assert gate_decision(metrics, POINT)["passed"]
