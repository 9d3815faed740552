"""The sections of the packet document read out of the inputs: performance, release gate, data, software
versions, monitoring. Whitelists: only known keys are copied, each through a reader of `regulatory.inputs`;
anything else in the inputs (report text, predictions, pixels) is ignored, never rendered.
"""

from __future__ import annotations

import numbers
from typing import Mapping

from model_core.chexpert import CHEXPERT_LABELS, CRITICAL_FINDINGS
from regulatory.inputs import (
    GIT_COMMIT_RE,
    NOT_INSTALLED,
    PACKAGE_NAME_RE,
    SHA256_RE,
    UNKNOWN_COMMIT,
    VERSION_RE,
    read_bool,
    read_ci,
    read_formatted,
    read_integer,
    read_interval,
    read_mapping,
    read_number,
    read_required,
    read_text,
    read_texts,
)
from regulatory.labeling import IU_XRAY_NOTE, REPRESENTATIVENESS_NOTE

SUMMARY_KEYS = ("BLEU-1", "BLEU-4", "ROUGE-L", "CE micro F1", "CE macro F1", "hallucination rate")
LOWER_IS_BETTER = frozenset({"hallucination rate"})
GATE_COMPARISONS = (">", ">=", "<", "<=")
SPLITS = (("train", "Training: model fitting"),
          ("val", "Validation: temperature scaling and critical-finding operating points"),
          ("test", "Test: held out; the performance figures of Section 5"))
NOT_RECORDED = "not recorded"


def performance_section(metrics) -> dict:
    """Summary metrics with CIs, per-label efficacy (CheXpert order), critical findings, hallucination, baseline,
    calibration, latency: as evaluation measured them."""
    m = read_mapping(metrics, "metrics")
    summary_raw = read_mapping(read_required(m, "summary", "metrics"), "metrics['summary']")
    summary = {k: read_ci(read_required(summary_raw, k, "metrics['summary']"), f"metrics['summary'][{k!r}]")
               for k in SUMMARY_KEYS}

    ce = read_mapping(read_required(m, "clinical_efficacy", "metrics"), "metrics['clinical_efficacy']")
    per_raw = read_mapping(read_required(ce, "per_label", "metrics['clinical_efficacy']"),
                       "metrics['clinical_efficacy']['per_label']")
    per_label = {}
    for label in CHEXPERT_LABELS:  # known labels only, in CheXpert order; anything else is ignored
        if label not in per_raw:
            per_label[label] = None
            continue
        where = f"metrics['clinical_efficacy']['per_label'][{label!r}]"
        row = read_mapping(per_raw[label], where)
        per_label[label] = {
            **{k: read_number(read_required(row, k, where), f"{where}[{k!r}]", unit=True)
               for k in ("precision", "recall", "f1")},
            "support": read_integer(read_required(row, "support", where), f"{where}['support']"),
            "f1_ci_low": read_number(row.get("f1_ci_low"), f"{where}['f1_ci_low']", unit=True),
            "f1_ci_high": read_number(row.get("f1_ci_high"), f"{where}['f1_ci_high']", unit=True),
        }

    crit_raw = read_mapping(read_required(m, "critical_findings", "metrics"), "metrics['critical_findings']")
    critical = {}
    for label in CRITICAL_FINDINGS:
        where = f"metrics['critical_findings'][{label!r}]"
        row = read_mapping(read_required(crit_raw, label, "metrics['critical_findings']"), where)
        for key in ("threshold", "sensitivity", "sensitivity_ci", "specificity", "specificity_ci", "tp", "fn", "tn",
                    "fp", "positives", "negatives", "flag_rate"):
            read_required(row, key, where)
        critical[label] = {
            "threshold": read_number(row["threshold"], f"{where}['threshold']", unit=True),
            "sensitivity": read_number(row["sensitivity"], f"{where}['sensitivity']", unit=True),
            "sensitivity_ci": read_interval(row["sensitivity_ci"], f"{where}['sensitivity_ci']"),
            "specificity": read_number(row["specificity"], f"{where}['specificity']", unit=True),
            "specificity_ci": read_interval(row["specificity_ci"], f"{where}['specificity_ci']"),
            **{k: read_integer(row[k], f"{where}[{k!r}]") for k in ("tp", "fn", "tn", "fp", "positives", "negatives")},
            "flag_rate": read_number(row["flag_rate"], f"{where}['flag_rate']", unit=True),
        }

    hall_raw = read_mapping(read_required(m, "hallucination", "metrics"), "metrics['hallucination']")
    hallucination = {"vs_ground_truth": _hallucination(
        read_required(hall_raw, "vs_ground_truth", "metrics['hallucination']"),
        "metrics['hallucination']['vs_ground_truth']")}
    if hall_raw.get("vs_detection_head") is not None:
        hallucination["vs_detection_head"] = _hallucination(hall_raw["vs_detection_head"],
                                                            "metrics['hallucination']['vs_detection_head']")

    baseline = None
    if m.get("baseline") is not None:
        b = read_mapping(m["baseline"], "metrics['baseline']")
        baseline = {k: (read_ci(b[k], f"metrics['baseline'][{k!r}]", require_bounds=False) if b.get(k) is not None
                        else None) for k in SUMMARY_KEYS}

    calibration = None
    if m.get("calibration") is not None:
        c = read_mapping(m["calibration"], "metrics['calibration']")
        calibration = {
            "temperature": read_number(c.get("temperature"), "metrics['calibration']['temperature']"),
            "test_ece_uncalibrated": read_number(c.get("test_ece_uncalibrated"),
                                             "metrics['calibration']['test_ece_uncalibrated']", unit=True),
            "test_ece": read_number(read_required(c, "test_ece", "metrics['calibration']"),
                                "metrics['calibration']['test_ece']", unit=True),
        }

    latency = None
    if m.get("latency") is not None:
        lat = read_mapping(m["latency"], "metrics['latency']")
        latency = {"num_beams": read_integer(lat.get("num_beams"), "metrics['latency']['num_beams']", optional=True),
                   "threads": read_integer(lat.get("threads"), "metrics['latency']['threads']", optional=True)}
        for key in ("batch_1", "batch_8_per_report"):
            if key == "batch_1":
                read_required(lat, key, "metrics['latency']")
            if lat.get(key) is None:
                latency[key] = None
                continue
            where = f"metrics['latency'][{key!r}]"
            row = read_mapping(lat[key], where)
            latency[key] = {"p50_ms": read_number(read_required(row, "p50_ms", where), f"{where}['p50_ms']"),
                            "p95_ms": read_number(read_required(row, "p95_ms", where), f"{where}['p95_ms']"),
                            "n": read_integer(row.get("n"), f"{where}['n']", optional=True)}

    bootstrap = None
    if isinstance(m.get("bootstrap"), Mapping):
        bootstrap = {"n_boot": read_integer(m["bootstrap"].get("n_boot"), "metrics['bootstrap']['n_boot']", True),
                     "seed": read_integer(m["bootstrap"].get("seed"), "metrics['bootstrap']['seed']", True),
                     "alpha": read_number(m["bootstrap"].get("alpha"), "metrics['bootstrap']['alpha']", unit=True)}

    return {
        "n_studies": read_integer(read_required(m, "n_studies", "metrics"), "metrics['n_studies']"),
        "summary": summary,
        "baseline": baseline,
        "per_label": per_label,
        "critical_findings": critical,
        "hallucination": hallucination,
        "calibration": calibration,
        "latency": latency,
        "bootstrap": bootstrap,
    }


def _hallucination(raw, where: str) -> dict:
    """One hallucination measurement (vs ground truth or vs the detection head)."""
    raw = read_mapping(raw, where)
    out = {
        "rate": read_ci(read_required(raw, "rate", where), f"{where}['rate']"),
        "reports_with_unsupported_critical": read_integer(
            read_required(raw, "reports_with_unsupported_critical", where),
            f"{where}['reports_with_unsupported_critical']"),
        "reports": read_integer(read_required(raw, "reports", where), f"{where}['reports']"),
        "critical_assertions": read_integer(raw.get("critical_assertions"), f"{where}['critical_assertions']", True),
        "unsupported_assertions": read_integer(raw.get("unsupported_assertions"), f"{where}['unsupported_assertions']",
                                           True),
        "per_assertion_rate": read_number(raw.get("per_assertion_rate"), f"{where}['per_assertion_rate']", unit=True),
        "by_finding": None,
    }
    if isinstance(raw.get("by_finding"), Mapping):
        out["by_finding"] = {f: read_integer(raw["by_finding"].get(f), f"{where}['by_finding'][{f!r}]", True)
                             for f in CRITICAL_FINDINGS}
    return out


def gate_section(raw) -> dict:
    """The release-gate decision as the gate made it; a decision that contradicts its own checks is refused."""
    g = read_mapping(raw, "gate")
    passed = read_bool(read_required(g, "passed", "gate"), "gate['passed']")
    decision = read_required(g, "decision", "gate")
    if decision not in ("promote", "reject"):
        raise ValueError("gate['decision'] must be 'promote' or 'reject'")
    if passed != (decision == "promote"):
        raise ValueError(f"gate['passed'] = {passed} contradicts gate['decision'] = {decision!r}")
    checks_raw = read_required(g, "checks", "gate")
    if not isinstance(checks_raw, (list, tuple)):
        raise ValueError(f"gate['checks'] must be a list, got {type(checks_raw).__name__}")
    checks = []
    for i, c in enumerate(checks_raw):
        where = f"gate['checks'][{i}]"
        c = read_mapping(c, where)
        for key in ("name", "metric", "value", "threshold", "comparison", "passed", "reason"):
            read_required(c, key, where)
        if c["comparison"] not in GATE_COMPARISONS:
            raise ValueError(f"{where}['comparison'] must be one of {GATE_COMPARISONS}")
        threshold = read_number(c["threshold"], f"{where}['threshold']")
        if threshold is None:
            raise ValueError(f"{where}['threshold'] must be a finite number")
        checks.append({
            "name": read_text(c["name"], f"{where}['name']"),
            "finding": None if c.get("finding") is None else read_text(c["finding"], f"{where}['finding']"),
            "metric": read_text(c["metric"], f"{where}['metric']"),
            "value": read_number(c["value"], f"{where}['value']"),
            "ci_low": read_number(c.get("ci_low"), f"{where}['ci_low']"),
            "threshold": threshold,
            "comparison": c["comparison"],
            "passed": read_bool(c["passed"], f"{where}['passed']"),
            "reason": read_text(c["reason"], f"{where}['reason']", 1000),
        })
    failed = [c["name"] for c in checks if not c["passed"]]
    if passed and failed:
        raise ValueError(f"gate['passed'] is true but gate check(s) {failed} failed")
    config = {}
    if g.get("config") is not None:
        for key, value in sorted(read_mapping(g["config"], "gate['config']").items(), key=lambda kv: str(kv[0])):
            if not isinstance(value, (bool, numbers.Real, str)) and value is not None:
                continue  # nested structures are not rendered
            key = read_text(str(key), "a key of gate['config']")  # screened before it appears in a message
            where = f"gate['config'][{key!r}]"
            if isinstance(value, bool) or value is None:
                config[key] = value
            elif isinstance(value, numbers.Integral):
                config[key] = int(value)
            elif isinstance(value, numbers.Real):
                config[key] = read_number(value, where)
            else:
                config[key] = read_text(value, where)
    return {"passed": passed, "decision": decision,
            "reasons": read_texts(read_required(g, "reasons", "gate"), "gate['reasons']"),
            "checks": checks, "config": config}


def data_section(raw, n_evaluated: int) -> dict:
    """Dataset, licence, hashes and studies per split, with the representativeness notes the data call for."""
    d = read_mapping(raw, "data_summary")
    out = {
        "dataset": read_text(read_required(d, "dataset", "data_summary"), "data_summary['dataset']"),
        "licence": read_text(read_required(d, "licence", "data_summary"), "data_summary['licence']"),
        "citation": None if d.get("citation") is None else read_text(d["citation"], "data_summary['citation']", 500),
        "label_source": None if d.get("label_source") is None else read_text(d["label_source"],
                                                                         "data_summary['label_source']", 500),
    }
    for key in ("manifest_sha256", "image_digest", "splits_sha256"):
        value = d.get(key) if key == "splits_sha256" else read_required(d, key, "data_summary")
        if value is None:
            out[key] = None
            continue
        if not isinstance(value, str) or not SHA256_RE.match(value):
            raise ValueError(f"data_summary[{key!r}] must be a SHA-256 hex digest (64 hex characters, optionally "
                             "prefixed 'sha256:')")
        out[key] = value.lower()
    studies = read_mapping(read_required(d, "studies_per_split", "data_summary"), "data_summary['studies_per_split']")
    for split in ("train", "test"):
        read_required(studies, split, "data_summary['studies_per_split']")
    out["studies_per_split"] = {s: read_integer(studies.get(s), f"data_summary['studies_per_split'][{s!r}]", True)
                                for s, _ in SPLITS}
    images = d.get("images_per_split")
    images = read_mapping(images, "data_summary['images_per_split']") if images is not None else {}
    out["images_per_split"] = {s: read_integer(images.get(s), f"data_summary['images_per_split'][{s!r}]", True)
                               for s, _ in SPLITS}
    text = f"{out['dataset']} {out['licence']}".lower()
    out["is_iu_xray_demo"] = any(k in text for k in ("iu x-ray", "iu xray", "indiana", "open-i"))
    notes = [IU_XRAY_NOTE] if out["is_iu_xray_demo"] else []
    notes.append(REPRESENTATIVENESS_NOTE)
    test = out["studies_per_split"]["test"]
    if test != n_evaluated:
        notes.append(f"The test split lists {test} studies but {n_evaluated} were evaluated (metrics['n_studies']); "
                     "the performance figures cover the evaluated studies only.")
    out["notes"] = notes
    return out


def versions_section(raw) -> dict:
    """The software provenance recorded with the model at training time; None (an older model directory without
    provenance) gives "not recorded" for each item. Versions and the commit are checked by their own formats."""
    if raw is None:
        return {"recorded": False, "python": NOT_RECORDED, "model_core": NOT_RECORDED, "git_commit": NOT_RECORDED,
                "git_dirty": None, "packages": None}
    v = read_mapping(raw, "versions")
    out = {"recorded": True}
    for key in ("python", "model_core"):
        out[key] = read_formatted(read_required(v, key, "versions"), f"versions[{key!r}]", VERSION_RE,
                                  "not a version string (letters, digits and . + ! _ -)")
    commit = read_required(v, "git_commit", "versions")
    out["git_commit"] = (UNKNOWN_COMMIT if commit == UNKNOWN_COMMIT else read_formatted(
        commit, "versions['git_commit']", GIT_COMMIT_RE, f"neither a git commit hash nor {UNKNOWN_COMMIT!r}"))
    out["git_dirty"] = None if v.get("git_dirty") is None else read_bool(v["git_dirty"], "versions['git_dirty']")
    packages = read_mapping(v.get("packages") or {}, "versions['packages']")
    out["packages"] = {}
    for name in sorted(packages, key=lambda k: str(k).lower()):
        read_formatted(name, "a key of versions['packages']", PACKAGE_NAME_RE, "not a package name")
        version = packages[name]
        out["packages"][name] = version if version == NOT_INSTALLED else read_formatted(
            version, f"versions['packages'][{name!r}]", VERSION_RE,
            f"neither a version string nor {NOT_INSTALLED!r}")
    return out


def monitoring_section(raw) -> dict:
    """Drift and PHI-check evidence, each None when not supplied."""
    out = {"drift": None, "phi": None}
    if raw is None:
        return out
    m = read_mapping(raw, "monitoring")
    if m.get("drift") is not None:
        d = read_mapping(m["drift"], "monitoring['drift']")
        out["drift"] = {
            "method": read_text(read_required(d, "method", "monitoring['drift']"), "monitoring['drift']['method']"),
            "statistic": read_number(d.get("statistic"), "monitoring['drift']['statistic']"),
            "p_value": read_number(d.get("p_value"), "monitoring['drift']['p_value']", unit=True),
            "threshold": read_number(d.get("threshold"), "monitoring['drift']['threshold']"),
            "drift_detected": (None if d.get("drift_detected") is None
                               else read_bool(d["drift_detected"], "monitoring['drift']['drift_detected']")),
            "alpha": read_number(d.get("alpha"), "monitoring['drift']['alpha']", unit=True),
            "status": None if d.get("status") is None else read_text(d["status"], "monitoring['drift']['status']", 40),
            **{k: read_integer(d.get(k), f"monitoring['drift'][{k!r}]", optional=True)
               for k in ("window", "n_reference", "permutations")},
            "design": None if d.get("design") is None else read_text(d["design"], "monitoring['drift']['design']",
                                                                     300),
        }
    if m.get("phi") is not None:
        p = read_mapping(m["phi"], "monitoring['phi']")
        out["phi"] = {
            "passed": read_bool(read_required(p, "passed", "monitoring['phi']"), "monitoring['phi']['passed']"),
            "checks_run": read_integer(p.get("checks_run"), "monitoring['phi']['checks_run']", optional=True),
            "method": None if p.get("method") is None else read_text(p["method"], "monitoring['phi']['method']", 300),
        }
    return out
