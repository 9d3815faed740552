"""Hand-made packet inputs (the shapes evaluation, the release gate and training write) and zip/PDF readers,
shared by the tests of regulatory/."""

from __future__ import annotations

import copy
import io
import re
import zipfile
from pathlib import Path

from PIL import Image, ImageDraw

from model_core.chexpert import CHEXPERT_LABELS, CRITICAL_FINDINGS
from model_core.config import GateConfig
from model_core.evaluation.gates import gate_decision
from model_core.sbom import MANIFEST_ROLE, ROLE_PROPERTY, SPLITS_ROLE
from regulatory import PacketInputs

CREATED = "2025-11-28T03:24:00Z"
# Strings that must never reach a packet (report text, an identifier, a made-up patient name).
CANARIES = ("FINDINGS: the heart size is normal", "IMPRESSION: no acute", "XXXX", "Jane Canary-Doe", "987-65-4321",
            "pixel_canary_blob")
# model_card["provenance"] as training records it (model_core.provenance.collect_provenance).
PROVENANCE = {"python": "3.11.9", "model_core": "0.1.0", "git_commit": "544817a" * 5 + "abcde", "git_dirty": False,
              "packages": {"torch": "2.13.0+cpu", "transformers": "4.57.6", "reportlab": "5.1.0", "numpy": "1.26.4"}}


SPLITS_SHA = "d" * 64
# A CycloneDX SBOM as model_core.sbom records it at training (a few components of each licence kind).
SBOM = {
    "bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1,
    "serialNumber": "urn:uuid:0b7c4d1e-6a3f-5c2b-9e8d-1f2a3b4c5d6e",
    "metadata": {"timestamp": "2025-11-28T02:10:00Z", "component": {"name": "radiology-report-generator"}},
    "components": [
        {"type": "library", "name": "torch", "version": "2.13.0+cpu", "purl": "pkg:pypi/torch@2.13.0%2Bcpu",
         "licenses": [{"expression": "Apache-2.0 AND BSD-3-Clause AND BSL-1.0 AND MIT"}]},
        {"type": "library", "name": "alibi-detect", "version": "0.13.0", "purl": "pkg:pypi/alibi-detect@0.13.0",
         "licenses": [{"license": {"id": "BUSL-1.1"}}]},
        {"type": "library", "name": "pylibjpeg-libjpeg", "version": "2.2.0",
         "purl": "pkg:pypi/pylibjpeg-libjpeg@2.2.0", "licenses": [{"license": {"id": "GPL-3.0-only"}}]},
        {"type": "library", "name": "huey", "version": "3.5.4", "purl": "pkg:pypi/huey@3.5.4", "licenses": []},
        {"type": "library", "name": "cryptography", "version": "50.0.2", "purl": "pkg:pypi/cryptography@50.0.2",
         "licenses": [{"expression": "Apache-2.0 OR BSD-3-Clause"}], "description": "pixel_canary_blob"},
        {"type": "library", "name": "numpy", "version": "1.26.4", "purl": "pkg:pypi/numpy@1.26.4",
         "licenses": [{"license": {"name": "BSD License"}}]},
        {"type": "data", "name": "manifest.csv", "hashes": [{"alg": "SHA-256", "content": "a" * 64}],
         "properties": [{"name": ROLE_PROPERTY, "value": MANIFEST_ROLE}]},
        {"type": "data", "name": "splits.csv", "hashes": [{"alg": "SHA-256", "content": SPLITS_SHA}],
         "properties": [{"name": ROLE_PROPERTY, "value": SPLITS_ROLE}]},
    ],
}
MODEL_FILES = {"model.pt": "e" * 64, "model_config.json": "f" * 64, "detection.json": "1" * 64}
# regulatory.evidence.separation_evidence of a clean run: split file unchanged, no evaluated study in train/val.
SEPARATION = {"split_file": "splits.csv", "split_sha256_at_training": SPLITS_SHA,
              "split_sha256_at_evaluation": SPLITS_SHA, "studies_in_split_file": 3444, "conflicting_studies": 0,
              "evaluated_studies": 382, "evaluated_in_training_splits": 0, "evaluated_outside_test_split": 0,
              "test_studies_sha256": "9" * 64}


def ci(value, low=None, high=None, n_boot=1000):
    return {"value": value, "ci_low": low, "ci_high": high, "n_boot": n_boot}


def critical(tp, fn, tn, fp, sens_ci, spec_ci, threshold=0.1):
    pos, neg = tp + fn, tn + fp
    return {"threshold": threshold, "sensitivity": tp / pos if pos else None, "sensitivity_ci": sens_ci,
            "specificity": tn / neg if neg else None, "specificity_ci": spec_ci, "tp": tp, "fn": fn, "tn": tn,
            "fp": fp, "ci_method": "Wilson score", "positives": pos, "negatives": neg,
            "flag_rate": (tp + fp) / (pos + neg)}


def make_metrics() -> dict:
    """A hand-made metrics dict in the shape model_core.evaluation.evaluate_model returns (382 IU test studies)."""
    per_label = {}
    for i, label in enumerate(CHEXPERT_LABELS):
        f1 = round(0.15 + 0.04 * i, 3)
        per_label[label] = {"precision": f1, "recall": f1, "f1": f1, "support": 5 + 7 * i,
                            "f1_ci_low": round(f1 - 0.08, 3), "f1_ci_high": round(f1 + 0.07, 3)}
    hall = {"rate": ci(0.021, 0.008, 0.037), "reports_with_unsupported_critical": 8, "reports": 382,
            "critical_assertions": 41, "unsupported_assertions": 9, "per_assertion_rate": 0.2195,
            "by_finding": {"Pneumothorax": 1, "Fracture": 2, "Lung Lesion": 4, "Pleural Effusion": 2}}
    return {
        "n_studies": 382,
        "bootstrap": {"n_boot": 1000, "seed": 0, "alpha": 0.05, "method": "percentile"},
        "nlg": {"BLEU-4": ci(0.112, 0.098, 0.127)},
        "clinical_efficacy": {"micro": {"f1": ci(0.412, 0.371, 0.455)}, "per_label": per_label},
        "critical_findings": {
            "Pneumothorax": critical(2, 1, 300, 79, (0.208, 0.939), (0.748, 0.829), 0.12),
            "Fracture": critical(9, 2, 260, 111, (0.523, 0.949), (0.653, 0.745), 0.08),
            "Lung Lesion": critical(15, 3, 240, 124, (0.608, 0.942), (0.609, 0.706), 0.10),
            "Pleural Effusion": critical(13, 1, 310, 58, (0.685, 0.987), (0.802, 0.876), 0.15),
        },
        "hallucination": {"vs_ground_truth": hall,
                          "vs_detection_head": {**hall, "rate": ci(0.034, 0.018, 0.052),
                                                "reports_with_unsupported_critical": 13}},
        "calibration": {"temperature": 1.37, "test_ece_uncalibrated": 0.0612, "test_ece": 0.0214},
        "latency": {"num_beams": 4, "threads": 2, "batch_1": {"p50_ms": 412.3, "p95_ms": 530.8, "n": 20},
                    "batch_8_per_report": {"p50_ms": 96.1, "p95_ms": 104.9, "n": 3}},
        "summary": {"BLEU-1": ci(0.402, 0.381, 0.424), "BLEU-4": ci(0.112, 0.098, 0.127),
                    "ROUGE-L": ci(0.331, 0.318, 0.345), "CE micro F1": ci(0.412, 0.371, 0.455),
                    "CE macro F1": ci(0.238, 0.197, 0.281), "hallucination rate": hall["rate"]},
        "baseline": {"BLEU-1": ci(0.311, 0.295, 0.327), "BLEU-4": ci(0.071, 0.062, 0.081),
                     "ROUGE-L": ci(0.287, 0.276, 0.299), "CE micro F1": ci(0.356, 0.318, 0.396),
                     "CE macro F1": ci(0.181, 0.149, 0.214)},
        "generation": {"num_beams": 4},
        "seconds": 812.4,
    }


def strong_metrics() -> dict:
    """Metrics good enough for the real release gate (model_core.evaluation.gates) at its default thresholds."""
    metrics = make_metrics()
    for finding in CRITICAL_FINDINGS:
        metrics["critical_findings"][finding] = critical(200, 0, 150, 32, (0.9812, 1.0), (0.763, 0.874))
    metrics["hallucination"]["vs_ground_truth"]["rate"] = ci(0.008, 0.002, 0.021)
    metrics["summary"]["hallucination rate"] = ci(0.008, 0.002, 0.021)
    return metrics


def real_gate(metrics: dict, **config) -> dict:
    """The decision of the real release gate on `metrics` (GateConfig defaults unless overridden)."""
    return gate_decision(metrics, GateConfig(**config))


def make_gate(passed: bool) -> dict:
    """A gate decision; the failing one misses the 0.98 sensitivity target on the CI lower bound."""
    target = 0.98 if not passed else 0.20
    checks = []
    for finding in CRITICAL_FINDINGS:
        low = make_metrics()["critical_findings"][finding]["sensitivity_ci"][0]
        sens = make_metrics()["critical_findings"][finding]["sensitivity"]
        ok = low >= target
        checks.append({"name": f"critical_sensitivity:{finding}", "finding": finding, "metric": "sensitivity",
                       "value": sens, "ci_low": low, "threshold": target, "comparison": ">=", "passed": ok,
                       "reason": f"{finding} sensitivity CI lower bound {low:.3f} "
                                 f"{'>=' if ok else '<'} {target}"})
    checks.append({"name": "hallucination_rate", "finding": None, "metric": "hallucination rate", "value": 0.021,
                   "ci_low": 0.008, "threshold": 0.03 if not passed else 0.05, "comparison": "<",
                   "passed": passed, "reason": "CI upper bound 0.037 vs the maximum"})
    checks.append({"name": "specificity_floor:Pleural Effusion", "finding": "Pleural Effusion",
                   "metric": "specificity", "value": 0.842, "ci_low": 0.802, "threshold": 0.6, "comparison": ">=",
                   "passed": True, "reason": "CI lower bound 0.802 >= 0.6"})
    failed = [c["name"] for c in checks if not c["passed"]]
    return {"passed": not failed, "decision": "reject" if failed else "promote",
            "reasons": [f"{name} failed" for name in failed],
            "checks": checks,
            "config": {"critical_sensitivity_target": target, "hallucination_rate_max": 0.03,
                       "specificity_floor": 0.6, "gate_on_ci_lower_bound": True, "min_positives": 10}}


CATEGORIES = ("missed_finding", "hallucinated_finding", "wrong_laterality", "severity_mismatch",
              "incomplete_description")
FINDINGS = tuple(label for label in CHEXPERT_LABELS if label != "No Finding")


def make_error_summary() -> dict:
    """ERROR_SUMMARY in the shape `model_core.evaluation.error_analysis.analyse_errors` writes (382 studies)."""
    by_finding = {}
    for i, finding in enumerate(FINDINGS):
        positives = 3 * i
        counts = dict(zip(CATEGORIES, (i, 2 * i % 7, i % 2, i % 3, i % 4)))
        by_finding[finding] = {"positives": positives, "prevalence": positives / 382, **counts,
                               "miss_rate": counts["missed_finding"] / positives if positives else None,
                               "false_alarm_rate": counts["hallucinated_finding"] / (382 - positives),
                               "error_rate": sum(counts.values()) / 382}
    correlation = {"correlation": ci(-0.12, -0.21, -0.02), "mean_with_error": 0.41, "mean_without_error": 0.44}
    return {
        "studies": 382, "studies_with_errors": 205, "study_error_rate": ci(0.537, 0.487, 0.586),
        "categories": {c: {"studies": 10 + k, "errors": 12 + k, "study_rate": ci((10 + k) / 382, 0.01, 0.05)}
                       for k, c in enumerate(CATEGORIES)},
        "by_finding": by_finding,
        "confusion_critical": {f: {"tp": 5, "fn": 7, "fp": 3, "tn": 367} for f in CRITICAL_FINDINGS},
        "truth": "study label vectors (MeSH-derived for IU X-ray); uncertain counted positive",
        "definitions": {c: f"definition of {c.replace('_', ' ')}" for c in CATEGORIES},
        "image_quality": {"statistics": {"exposure": "mean grey level of the model input in [0, 1]",
                                         "contrast": "RMS contrast: standard deviation of the grey levels in [0, 1]"},
                          "any_error": {"exposure": correlation, "contrast": correlation},
                          "missed_finding": {"exposure": correlation, "contrast": correlation}},
    }


def _subgroup(studies: int, positives: int, sensitivity: float | None, below: bool | None) -> dict:
    if studies < 30:
        return {"positives": positives, "negatives": studies - positives, "estimate": "too few to estimate"}
    return {"positives": positives, "negatives": studies - positives, "threshold": 0.1, "flag_rate": 0.4,
            "sensitivity": "too few to estimate" if sensitivity is None else sensitivity,
            "sensitivity_ci": None if sensitivity is None else [max(sensitivity - 0.2, 0.0),
                                                                min(sensitivity + 0.1, 1.0)],
            "specificity": 0.7, "specificity_ci": [0.65, 0.75], "below_threshold": below}


def make_bias_audit(flagged: bool = False) -> dict:
    """BIAS_AUDIT in the shape `model_core.evaluation.bias_audit.bias_audit` writes; `flagged`: one subgroup's
    fracture sensitivity below the gate's minimum."""
    def groups(sizes: dict) -> dict:
        return {g: {"studies": n, "findings": {f: _subgroup(n, 12 if n >= 100 else 4,
                                                            (0.75 if flagged and f == "Fracture" else 1.0)
                                                            if n >= 100 else None,
                                                            flagged and f == "Fracture" if n >= 100 else None)
                                               for f in CRITICAL_FINDINGS}} for g, n in sizes.items()}
    gap = {"value": 0.08, "ci_low": 0.02, "ci_high": 0.15, "n_boot": 1000}
    attributes = {
        "sex": {"counts": {"F": 120, "M": 100, "not stated": 162},
                "groups": groups({"F": 120, "M": 100, "not stated": 162}),
                "fairness": {f: {"groups_compared_parity": ["F", "M"], "groups_compared_odds": ["F", "M"],
                                 "demographic_parity_difference": gap, "equalized_odds_difference": gap}
                             for f in CRITICAL_FINDINGS}},
        "age band": {"counts": {"not stated": 382}, "groups": groups({"not stated": 382}),
                     "fairness": {f: {"groups_compared_parity": [], "groups_compared_odds": [],
                                      "demographic_parity_difference": "too few to estimate",
                                      "equalized_odds_difference": "too few to estimate"} for f in CRITICAL_FINDINGS}},
        "implants / devices": {"counts": {"no": 360, "yes": 22}, "groups": groups({"no": 360, "yes": 22}),
                               "fairness": {}},
    }
    return {"studies": 382, "attributes": attributes,
            "flagged": [{"attribute": "sex", "group": g, "finding": "Fracture", "sensitivity": 0.75, "positives": 12,
                         "threshold": 0.98} for g in ("F", "M")] if flagged else [],
            "age": "age stated for 0 of 382 studies (IU X-ray redacts age): no age band can be estimated",
            "sex": "sex stated for 220 of 382 studies",
            "settings": {"sensitivity_min": 0.98, "min_positives": 10, "min_group": 30, "n_boot": 1000, "seed": 0,
                         "ci": "Wilson 95 % (rates); percentile bootstrap 95 % (gaps)",
                         "predictions": "detection head at the validation-chosen operating thresholds"},
            "edge_cases": {"implants / devices": ["catheters, indwelling", "medical device"]}}


def chart_png(colour: str = "#3b6ea8", size: tuple[int, int] = (320, 200)) -> bytes:
    """A small chart-like PNG (bars on white) standing in for a matplotlib figure."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    for k in range(4):
        draw.rectangle([20 + 70 * k, size[1] - 30 - 35 * k, 70 + 70 * k, size[1] - 20], fill=colour)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


EVIDENCE_FIGURE_NAMES = ("error_confusion_critical.png", "error_rate_vs_prevalence.png", "error_vs_image_quality.png",
                         "bias_audit_sensitivity.png")


def make_evidence(flagged: bool = False) -> dict:
    """PacketInputs fields of a run whose clinical_evidence step ran: error_summary, bias_audit, figures."""
    return {"error_summary": make_error_summary(), "bias_audit": make_bias_audit(flagged),
            "figures": {name: chart_png(colour) for name, colour in zip(EVIDENCE_FIGURE_NAMES, (
                "#3b6ea8", "#c0392b", "#27ae60", "#8e44ad"))}}


def make_inputs(passed: bool = True, **overrides) -> PacketInputs:
    fields = dict(
        run_id="run-20251128-0324", model_name="rrg-demo", model_version="0.1.0+544817a", created=CREATED,
        metrics=make_metrics(), gate=make_gate(passed),
        data_summary={"dataset": "IU X-ray (Indiana University Chest X-ray Collection, Open-i), demo subset",
                      "licence": "CC BY-NC-ND 4.0",
                      "citation": "Demner-Fushman D, et al. J Am Med Inform Assoc. 2016;23(2):304-310",
                      "label_source": "MeSH-derived CheXpert labels",
                      "studies_per_split": {"train": 2473, "val": 275, "test": 382},
                      "images_per_split": {"train": 2473, "val": 275, "test": 382},
                      "manifest_sha256": "a" * 64, "image_digest": "sha256:" + "b" * 64, "splits_sha256": "c" * 64},
        versions=copy.deepcopy(PROVENANCE),
        monitoring={"drift": {"method": "MMD (permutation test)", "statistic": 0.0031, "p_value": 0.41,
                              "threshold": 0.05, "drift_detected": False},
                    "phi": {"passed": True, "checks_run": 6, "method": "DICOM header + OCR screen"}},
        sbom=copy.deepcopy(SBOM), model_files=dict(MODEL_FILES), test_separation=dict(SEPARATION),
        **make_evidence(),
    )
    fields.update(overrides)
    return PacketInputs(**fields)


def read_zip(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def pdf_strings(pdf: bytes) -> str:
    """The literal text strings of an uncompressed reportlab PDF (enough to search for rendered words)."""
    raw = re.findall(rb"\(((?:[^()\\]|\\.)*)\)\s*Tj", pdf)
    return " ".join(r.replace(rb"\(", b"(").replace(rb"\)", b")").decode("cp1252") for r in raw)


def rewrite_zip(src: Path, dst: Path, change: dict[str, bytes | None]) -> None:
    """Copy a packet, replacing (bytes) or dropping (None) members: a tampered packet."""
    files = read_zip(src)
    with zipfile.ZipFile(dst, "w") as zf:
        for name, data in files.items():
            if name in change:
                if change[name] is None:
                    continue
                data = change[name]
            zf.writestr(name, data)
