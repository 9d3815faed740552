"""Clinical safety gates: may this model version be promoted to `champion`?

Checks (thresholds from `GateConfig`):
- critical-finding sensitivity > 0.98 for each of pneumothorax, fracture, lung lesion (mass) and pleural
  effusion, at the validation-chosen threshold; with `gate_on_ci_lower_bound` the Wilson 95 % lower
  bound must clear it, not the point estimate;
- specificity at that operating point ≥ the floor (0.60), so that flagging everything cannot pass;
- hallucination rate (critical findings asserted in generated reports that the ground truth does not
  support) < 0.03; with `gate_on_ci_lower_bound` the CI's upper bound (the conservative end) must clear it.
A finding with fewer than `min_positives` test positives cannot be estimated: the gate fails closed and
says so. The decision carries every number behind it, for MLflow tags and the 510(k) packet.
"""

from __future__ import annotations

from dataclasses import asdict

from model_core.chexpert import CRITICAL_FINDINGS
from model_core.config import GateConfig


def gate_decision(metrics: dict, cfg: GateConfig) -> dict:
    """metrics: `evaluate_model` output. Returns {passed, decision, reasons, checks, review_rate, config}."""
    for key in ("critical_findings", "hallucination"):
        if key not in metrics:
            raise ValueError(f"gate needs metrics[{key!r}] from model_core.evaluation.evaluate_model")
    conservative = cfg.gate_on_ci_lower_bound
    checks = []
    for finding in CRITICAL_FINDINGS:
        det = metrics["critical_findings"].get(finding)
        if det is None:
            raise ValueError(f"gate needs metrics['critical_findings'][{finding!r}]")
        positives = det["positives"]
        low = det["sensitivity_ci"][0]
        value = low if conservative else det["sensitivity"]
        if positives == 0 and cfg.min_positives == 0:
            passed = True  # explicit opt-out for development data; the production config keeps min_positives >= 10
            reason = f"{finding}: no positive test studies; not gated (min_positives: 0, development setting)"
        elif positives < cfg.min_positives:
            passed = False
            reason = (f"{finding}: only {positives} positive test stud{'y' if positives == 1 else 'ies'} "
                      f"(< {cfg.min_positives}); sensitivity cannot be estimated, gate fails closed")
        else:
            passed = value is not None and value > cfg.critical_sensitivity_min
            reason = (f"{finding}: sensitivity {'95% CI lower bound ' if conservative else ''}"
                      f"{_fmt(value)} {'>' if passed else '<='} {cfg.critical_sensitivity_min} "
                      f"({det['tp']}/{positives} detected)")
        checks.append({"name": "critical_sensitivity", "finding": finding, "metric": "sensitivity",
                       "value": det["sensitivity"], "ci_low": low, "ci_high": det["sensitivity_ci"][1],
                       "gated_value": value, "positives": positives, "threshold": cfg.critical_sensitivity_min,
                       "comparison": ">", "passed": passed, "reason": reason})
        spec = det["specificity"]
        spec_ok = spec is not None and spec >= cfg.specificity_floor
        checks.append({"name": "specificity_floor", "finding": finding, "metric": "specificity", "value": spec,
                       "ci_low": det["specificity_ci"][0], "ci_high": det["specificity_ci"][1], "gated_value": spec,
                       "threshold": cfg.specificity_floor, "comparison": ">=", "passed": spec_ok,
                       "reason": f"{finding}: specificity {_fmt(spec)} {'>=' if spec_ok else '<'} "
                                 f"{cfg.specificity_floor} at threshold {det['threshold']:.3f}"})
    rate = metrics["hallucination"]["vs_ground_truth"]["rate"]
    gated = rate["ci_high"] if conservative and rate.get("ci_high") is not None else rate["value"]
    hall_ok = gated is not None and gated < cfg.hallucination_rate_max
    checks.append({"name": "hallucination_rate", "finding": None, "metric": "hallucination rate",
                   "value": rate["value"], "ci_low": rate.get("ci_low"), "ci_high": rate.get("ci_high"),
                   "gated_value": gated,
                   "threshold": cfg.hallucination_rate_max, "comparison": "<", "passed": hall_ok,
                   "reason": f"hallucination rate {'95% CI upper bound ' if conservative else ''}{_fmt(gated)} "
                             f"{'<' if hall_ok else '>='} {cfg.hallucination_rate_max}"})
    passed = all(c["passed"] for c in checks)
    flag_rates = {f: metrics["critical_findings"][f]["flag_rate"] for f in CRITICAL_FINDINGS}
    return {
        "passed": passed,
        "decision": "promote" if passed else "reject",
        "reasons": [c["reason"] for c in checks if not c["passed"]] or ["all clinical safety checks passed"],
        "checks": checks,
        "review_rate": {"per_finding_flag_rate": flag_rates,
                        "note": "share of test studies the detection head flags for each critical finding at its "
                                "operating point: the radiologist-review load that operating point implies"},
        "config": asdict(cfg),
    }


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"
