"""The packet's risk analysis (ISO 14971 style): one row per hazard with cause, risk control, the linked
measurement, its acceptance criterion and the residual risk.

Residual risk is read off the release gate's own checks (passed: acceptable, failed: unacceptable, none:
needs review) and the monitoring evidence supplied; nothing is re-measured here.
"""

from __future__ import annotations

import re

from model_core.chexpert import CRITICAL_FINDINGS
from regulatory.formatting import ci_text, criterion_text, fmt, pair_text

_MISSED_CAUSES = {
    "Pneumothorax": "small or apical pneumothorax, supine AP projection, skin folds and support devices",
    "Fracture": "non-displaced or healing rib fractures, overlapping osseous structures",
    "Lung Lesion": "small nodules, lesions projecting over the heart, hila, ribs or diaphragm",
    "Pleural Effusion": "small effusions blunting only the costophrenic angle, layering effusion on supine AP films",
}


def _linked_checks(checks: list[dict], keywords: tuple[str, ...] = (), finding: str | None = None,
                   exclude: tuple[str, ...] = ()) -> list[dict]:
    """The gate checks that measure a hazard: one of `keywords` in the check's metric or name (any, when empty),
    none of `exclude`, and the same finding when one is given."""
    def has(c: dict, words: tuple[str, ...]) -> bool:  # whole words: "phi" in "phi_scan", not in "graphic"
        text = f"{c['metric']} {c['name']}".lower()
        return any(re.search(rf"(?<![a-z]){re.escape(w)}(?![a-z])", text) for w in words)

    return [c for c in checks
            if (not keywords or has(c, keywords)) and not has(c, exclude)
            and (finding is None or c["finding"] == finding)]


def _gate_fields(linked: list[dict], level: str, basis: str, default_criterion: str) -> dict:
    """The risk row's acceptance criterion (the linked gate checks', else `default_criterion`), residual risk,
    its basis and the linked checks' names."""
    return {"criterion": "; ".join(criterion_text(x) for x in linked) or default_criterion,
            "residual_risk": level, "basis": basis, "linked_checks": [x["name"] for x in linked]}


def _from_gate_or_missing(linked: list[dict], evidence, what: str) -> tuple[str, str, str] | None:
    """(level, basis, measured) of a monitoring hazard from its gate checks, or "needs review" when neither checks
    nor monitoring evidence were supplied; None when only the monitoring evidence is there (the caller reads it)."""
    if linked:
        level, basis = _residual_from_checks(linked)
        return level, basis, "; ".join(f"{x['metric']} = {fmt(x['value'])}" for x in linked)
    if evidence is None:
        return "needs review", f"no {what} evidence supplied", "not supplied"
    return None


def _residual_from_checks(checks: list[dict]) -> tuple[str, str]:
    if not checks:
        return "needs review", "no release-gate acceptance criterion covers this metric"
    failed = [c for c in checks if not c["passed"]]
    if failed:
        return "unacceptable", "gate check failed: " + "; ".join(c["name"] for c in failed)
    if any(c["value"] is None and c["ci_low"] is None for c in checks):
        return "needs review", "gate check passed without a measured value"
    return "acceptable", "gate check passed: " + "; ".join(c["name"] for c in checks)


def risk_rows(perf: dict, gate: dict, monitoring: dict, data: dict) -> list[dict]:
    """The hazard rows, from the performance, gate, monitoring and data sections of the packet document."""
    checks = gate["checks"]
    rows = []
    for finding in CRITICAL_FINDINGS:
        c = perf["critical_findings"][finding]
        # every check on this finding except its specificity (e.g. sensitivity, minimum positives)
        linked = _linked_checks(checks, finding=finding, exclude=("specificity",))
        level, basis = _residual_from_checks(linked)
        if c["positives"] == 0 and level == "acceptable":
            level, basis = "needs review", "no test positives: sensitivity is unmeasured"
        rows.append({
            "hazard": f"Missed {finding.lower()} in the draft (false negative)",
            "cause": f"Detection head or generated text misses a present finding; {_MISSED_CAUSES[finding]}",
            "mitigation": "Operating point chosen on validation for the target sensitivity; release gate on test "
                          "sensitivity; radiologist interprets every image before sign-off (drafting aid only; "
                          "absence of a flag does not exclude the finding)",
            "metric": f"{finding} sensitivity, 95 % CI (Wilson)",
            "measured": f"{pair_text(c['sensitivity'], c['sensitivity_ci'])}; TP {c['tp']} of {c['positives']} "
                        "positives",
            **_gate_fields(linked, level, basis, "none in gate"),
        })

    hall = perf["hallucination"]["vs_ground_truth"]
    linked = _linked_checks(checks, ("hallucination",))
    level, basis = _residual_from_checks(linked)
    rows.append({
        "hazard": "Draft asserts a critical finding that is not present (hallucination)",
        "cause": "Language model generates text unsupported by the image (priors from training reports)",
        "mitigation": "Release gate on the hallucination rate; QA flag when text and detection head disagree; "
                      "radiologist edits the draft before sign-off",
        "metric": "Hallucination rate vs ground truth (share of drafts with an unsupported critical assertion), "
                  "95 % bootstrap CI",
        "measured": f"{ci_text(hall['rate'])}; {hall['reports_with_unsupported_critical']} of {hall['reports']} "
                    "drafts",
        **_gate_fields(linked, level, basis, "none in gate"),
    })

    linked = _linked_checks(checks, ("specificity",))
    level, basis = _residual_from_checks(linked)
    rows.append({
        "hazard": "Excess false-positive critical flags (unnecessary follow-up, alert fatigue)",
        "cause": "Low thresholds chosen for high sensitivity; prevalence differs from validation",
        "mitigation": "Specificity floor in the release gate; flag rate reported per finding; flags are review "
                      "aids only",
        "metric": "Specificity per critical finding, 95 % CI (Wilson)",
        "measured": "; ".join(f"{f}: {pair_text(c['specificity'], c['specificity_ci'])}"
                              for f, c in perf["critical_findings"].items()),
        **_gate_fields(linked, level, basis, "none in gate"),
    })

    det = perf["hallucination"].get("vs_detection_head")
    rows.append({
        "hazard": "Wrong laterality, or draft text contradicting the detection head",
        "cause": "Free text is not grounded per side; laterality is not captured by the 14-label labeler",
        "mitigation": "QA flag on text/detector disagreement routes the draft to radiologist review; the "
                      "radiologist verifies laterality on the image",
        "metric": "QA flag rate: drafts asserting a critical finding the detection head does not support",
        "measured": ci_text(det["rate"]) if det else "not reported",
        "criterion": "none (laterality is not measured automatically)",
        "residual_risk": "needs review",
        "basis": "no automated acceptance criterion; laterality errors require a reader study",
        "linked_checks": [],
    })

    linked = _linked_checks(checks, ("f1",))
    level, basis = _residual_from_checks(linked)
    s = perf["summary"]
    rows.append({
        "hazard": "Draft contains incorrect or omitted non-critical findings",
        "cause": "Limited clinical accuracy of the generator",
        "mitigation": "Radiologist reviews and edits every draft; accuracy reported with CIs against a "
                      "template baseline",
        "metric": "Clinical-efficacy F1 (micro, macro), 95 % bootstrap CI",
        "measured": f"micro {ci_text(s['CE micro F1'])}; macro {ci_text(s['CE macro F1'])}",
        **_gate_fields(linked, level, basis, "none in gate"),
    })

    cal = perf["calibration"]
    linked = _linked_checks(checks, ("ece", "calibration"))
    level, basis = _residual_from_checks(linked)
    rows.append({
        "hazard": "Misleading confidence in per-finding probabilities",
        "cause": "Over-confident detection head",
        "mitigation": "Temperature scaling fitted on validation; probabilities are not shown as diagnoses",
        "metric": "Expected calibration error (ECE) on test, after temperature scaling",
        "measured": (f"ECE {fmt(cal['test_ece'])} (before scaling {fmt(cal['test_ece_uncalibrated'])}), "
                     f"T = {fmt(cal['temperature'], 2)}") if cal else "not reported",
        **_gate_fields(linked, level, basis, "none in gate"),
    })

    drift = monitoring["drift"]
    linked = _linked_checks(checks, ("drift", "mmd"))
    found = _from_gate_or_missing(linked, drift, "drift-monitor")
    if found:
        level, basis, measured = found
    else:
        measured = _drift_measured(drift)
        if drift["drift_detected"] is False:
            level, basis = "acceptable", "drift monitor in place; no drift detected"
        elif drift.get("status") == "insufficient data":
            level, basis = "needs review", "the drift check had too few studies to test (insufficient data)"
        else:
            level, basis = "needs review", "drift detected or undetermined: re-evaluate before release"
    if data["is_iu_xray_demo"] and level == "acceptable":
        level = "needs review"
        basis += "; the test data (IU X-ray demo) are not representative of the intended-use population"
    rows.append({
        "hazard": "Performance degrades on data unlike the test set (dataset shift)",
        "cause": "New sites, equipment, protocols or patient populations",
        "mitigation": "MMD drift monitor on serving embeddings with alert and re-evaluation; labeling limits "
                      "the population (Section 2)",
        "metric": "Drift monitor (MMD two-sample test)",
        "measured": measured,
        **_gate_fields(linked, level, basis, "no drift at the monitor's threshold"),
    })

    phi = monitoring["phi"]
    linked = _linked_checks(checks, ("phi",))
    found = _from_gate_or_missing(linked, phi, "PHI-check")
    if found:
        level, basis, measured = found
    else:
        measured = (f"{'passed' if phi['passed'] else 'FAILED'}"
                    + (f", {phi['checks_run']} checks" if phi["checks_run"] is not None else "")
                    + (f" ({phi['method']})" if phi["method"] else ""))
        level, basis = (("acceptable", "PHI checks passed") if phi["passed"]
                        else ("unacceptable", "PHI checks failed"))
    rows.append({
        "hazard": "Protected health information leaks into drafts, logs or exported artifacts",
        "cause": "Identifiers in DICOM headers or burned into pixels; report text copied into artifacts",
        "mitigation": "PHI checks at ingestion and serving; this packet renders whitelisted summary fields only "
                      "and screens every text",
        "metric": "PHI checks",
        "measured": measured,
        **_gate_fields(linked, level, basis, "all PHI checks pass"),
    })

    rows.append({
        "hazard": "Radiologist over-relies on the draft (automation bias) and signs it without adequate review",
        "cause": "Fluent, plausible text; workload",
        "mitigation": "Labeling (drafting aid, review mandatory); draft shown as unsigned DRAFT with QA flags; "
                      "user training",
        "metric": "Not measurable from retrospective data: requires a reader study / human-factors validation "
                  "(IEC 62366-1)",
        "measured": "not measured",
        "criterion": "reader study",
        "residual_risk": "needs review", "basis": "no measurement available", "linked_checks": [],
    })
    return rows


def _drift_measured(drift: dict) -> str:
    """The drift evidence as the risk table cites it: the test, its figures, the window and what it was run on."""
    detected = "n/a" if drift["drift_detected"] is None else ("yes" if drift["drift_detected"] else "no")
    sizes = ", ".join(f"{label} {drift[key]}" for key, label in (
        ("window", "window"), ("n_reference", "reference")) if drift.get(key) is not None)
    return (f"{drift['method']}: statistic {fmt(drift['statistic'], 5)}, p = {fmt(drift['p_value'])}, "
            f"threshold {fmt(drift['threshold'], 5)}"
            + (f" (alpha {fmt(drift['alpha'])})" if drift.get("alpha") is not None else "")
            + f", drift detected: {detected}"
            + (f" [{drift['status']}]" if drift.get("status") == "insufficient data" else "")
            + (f"; {sizes} studies" if sizes else "")
            + (f", {drift['permutations']} permutations" if drift.get("permutations") is not None else "")
            + (f"; {drift['design']}" if drift.get("design") else ""))


def overall_risk(rows: list[dict], gate: dict) -> str:
    """One sentence: unacceptable when the gate failed, else how many hazards still need review."""
    review = sum(r["residual_risk"] == "needs review" for r in rows)
    if not gate["passed"]:
        return ("UNACCEPTABLE: the release gate failed; the overall residual risk of this candidate is not "
                "acceptable and the candidate is not promoted.")
    if review:
        return (f"Acceptable for the hazards covered by release-gate checks; {review} hazard(s) need review by the "
                "risk-management team (ISO 14971) before any clinical release.")
    return "Acceptable: every hazard is covered by a passed acceptance criterion."
