"""The 510(k) technical documentation packet of one evaluated model version.

`build_packet(inputs, out_dir)` writes `<out_dir>/510k_packet_<model_name>_v<version>.zip` holding
`packet.json` (the packet's content, the single source the two renderings are made from), `packet.html`,
`packet.pdf` and `SHA256SUMS` (sha256sum format, one line per other file). `verify_packet(zip_path)` re-hashes.

What the packet does and does not do
  * It RECEIVES the evaluation metrics (`model_core.evaluation.evaluate_model`), the release-gate decision,
    the data summary and the software versions; it computes no metric. Risk levels in Section 7 are read off
    the gate's own checks (passed / failed / absent), not re-derived.
  * No PHI: only known fields are copied out of the inputs (whitelist), numbers are type-checked, and every
    string that reaches the packet is screened for report-like text and identifiers. Report text, predictions
    and pixel data under any key are never rendered.
  * Reproducible: the creation timestamp is an input, every mapping is rendered in a fixed order, the PDF is
    built with reportlab's `invariant=1` and the zip with fixed member dates, so the same inputs give
    byte-identical files (and the same SHA256SUMS).
  * Atomic: everything is rendered in memory, zipped into a temporary folder beside the target, verified,
    then renamed into place; a failure leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import numbers
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from model_core.chexpert import CHEXPERT_LABELS, CRITICAL_FINDINGS

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PREDICATE_PATH = REPO_ROOT / "configs" / "predicate.yaml"
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"

SCHEMA = "rrg.510k-packet/1"
PACKET_FILES = ("packet.json", "packet.html", "packet.pdf")
SUMS_FILE = "SHA256SUMS"
PLACEHOLDER_RE = re.compile(r"<<FILL\b[^>]*>>")

SUMMARY_KEYS = ("BLEU-1", "BLEU-4", "ROUGE-L", "CE micro F1", "CE macro F1", "hallucination rate")
LOWER_IS_BETTER = frozenset({"hallucination rate"})
GATE_COMPARISONS = (">", ">=", "<", "<=")
SPLITS = (("train", "Training: model fitting"),
          ("val", "Validation: temperature scaling and critical-finding operating points"),
          ("test", "Test: held out; the performance figures of Section 5"))

# --------------------------------------------------------------------------- default labeling text
# Written for a report *drafting* aid. Callers may override each one in PacketInputs.

DEFAULT_DEVICE_DESCRIPTION = (
    "The device is standalone software (Software as a Medical Device) that analyzes a digital adult chest "
    "radiograph (frontal PA or AP view) and produces a preliminary, unsigned draft of a radiology report "
    "(findings and impression) for the interpreting radiologist. It also outputs per-finding probabilities for the "
    "14 CheXpert observations from a detection head, with validation-chosen operating points for four critical "
    "findings (pneumothorax, fracture, lung lesion, pleural effusion); the agreement between the draft text and "
    "the detection head is used for quality-assurance flags that route a draft to closer radiologist review. "
    "The draft is shown only to the radiologist within the reporting workflow. It is never released to the "
    "medical record, to the referring clinician or to the patient until a radiologist has reviewed the images, "
    "edited the draft as needed and signed the report. The algorithm is locked: it does not learn or change "
    "during clinical use; a new version requires re-evaluation through the release gate documented in this packet."
)
DEFAULT_INTENDED_USE = (
    "The device is intended to assist qualified radiologists in reporting adult frontal chest radiographs by "
    "generating a preliminary draft report. The draft is a starting point for the radiologist's own "
    "interpretation and must be reviewed, edited as needed, and approved by a radiologist before it becomes part "
    "of the medical record. The device is not intended for autonomous diagnosis, to replace or reduce the "
    "radiologist's review of the images, to rule out any condition, or to triage or prioritize worklists."
)
DEFAULT_INDICATIONS = (
    "The device is indicated for use by radiologists (or physicians qualified to interpret chest radiographs "
    "under local regulations) interpreting frontal (posteroanterior or anteroposterior) chest radiographs of adult "
    "patients (18 years of age or older) acquired with digital (DR) or computed (CR) radiography systems, in a "
    "reporting workflow in which a radiologist reviews the images and every draft before the report is signed."
)
DEFAULT_CONTRAINDICATIONS = (
    "Pediatric patients (under 18 years of age), including neonates: not evaluated.",
    "Radiographs of any region other than the chest (e.g. abdomen, spine, extremities), and chest studies "
    "without a frontal PA or AP view (e.g. lateral-only, decubitus or oblique views).",
    "Other modalities: computed tomography (CT), magnetic resonance (MR), ultrasound, fluoroscopy, mammography, "
    "nuclear medicine.",
    "Any use without radiologist review of each draft: autonomous reporting, release of drafts to the medical "
    "record, to referring clinicians or to patients, and use as a triage, notification or worklist-prioritization "
    "tool.",
)
DEFAULT_WARNINGS = (
    "The draft may omit findings that are present or describe findings that are not present (including critical "
    "findings). The radiologist must interpret the images independently and must not use the draft to rule out "
    "any condition.",
    "The absence of a critical-finding flag does not exclude that finding.",
    "Laterality, size, and change-over-time statements in the draft are not verified by the device and must be "
    "checked against the images and prior studies.",
    "Performance was characterized only on the data described in Section 4 and may not generalize to other "
    "sites, equipment, patient populations or disease prevalence.",
)
DEFAULT_TECHNOLOGY = (
    "Locked deep-learning model: vision-transformer image encoder, projection module and autoregressive language "
    "model that generates free text (beam search); multi-label detection head (14 CheXpert observations) with "
    "temperature-scaled probabilities and validation-chosen thresholds for the critical findings."
)
DEFAULT_INPUT = "Adult frontal (PA/AP) chest radiograph from digital (DR/CR) radiography, DICOM or derived grayscale image."
DEFAULT_OUTPUT = (
    "Unsigned draft free-text report (findings, impression) for radiologist review and editing; per-finding "
    "probabilities; quality-assurance flags when text and detection head disagree on a critical finding. No "
    "triage or notification output; nothing reaches the medical record before radiologist sign-off."
)
DEFAULT_SE_DISCUSSION = (
    "Substantial equivalence has not been established by this packet. Both devices analyse adult frontal chest "
    "radiographs with a locked machine-learning model and keep the radiologist responsible for interpretation. "
    "The subject device, however, generates free-text draft reports, whereas a triage/detection predicate "
    "outputs findings flags; this technological difference may raise different questions of safety and "
    "effectiveness (e.g. hallucinated or omitted findings in fluent text, automation bias). Regulatory Affairs "
    "must determine whether the 510(k) pathway is available or whether a Pre-Submission and a De Novo request "
    "are appropriate."
)
IU_XRAY_NOTE = (
    "The data are the bundled demonstration subset of the Indiana University Chest X-ray Collection (IU X-ray, "
    "Open-i), licensed CC BY-NC-ND 4.0 (Demner-Fushman D, et al. J Am Med Inform Assoc. 2016;23(2):304-310). "
    "This is a small, single-institution, retrospective public dataset with labels derived from MeSH annotations "
    "of the reports; it is NOT representative of the intended-use population, sites or equipment, and its use is "
    "limited to non-commercial evaluation. The performance in Section 5 demonstrates the evaluation pipeline, not "
    "clinical performance for a submission."
)
REPRESENTATIVENESS_NOTE = (
    "Representativeness of the data for the intended-use population (age, sex, race and ethnicity, sites, "
    "equipment, acquisition protocols, disease prevalence) is not established by this packet and must be "
    "documented from a multi-site, sequestered test set before submission."
)
PHI_STATEMENT = (
    "This packet contains no protected health information: no report text, no images or pixel data and no "
    "patient identifiers. Only known summary fields of the inputs are rendered, and every rendered text is "
    "screened for report-like content."
)

# Report-like text or identifiers in a string that is about to enter the packet.
_PHI_PATTERNS = (
    (re.compile(r"\b(findings|impression|indication|comparison|history|technique|examination)\s*:", re.I),
     "a radiology report section header"),
    (re.compile(r"\bX{4}\b"), "the IU X-ray de-identification mask 'XXXX' (report text)"),
    (re.compile(r"\b\d{3}-\d{2}-\d{4}\b"), "an SSN-like number"),
    (re.compile(r"\b(MRN|DOB|date of birth|accession number|patient name)\b", re.I), "a patient-identifier label"),
)
_SAFE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")
_SHA256_RE = re.compile(r"^(sha256:)?[0-9a-fA-F]{64}$")
_K_NUMBER_RE = re.compile(r"^(K\d{6}|DEN\d{6})$")


def _default_predicate() -> dict:
    return load_predicate()


@dataclass
class PacketInputs:
    """Everything the packet documents; the generator adds nothing measured of its own.

    run_id, model_name, model_version: the evaluated candidate (model_name/version end up in the file name:
        letters, digits and . _ + - only).
    created: ISO 8601 timestamp with a timezone (or an aware datetime), taken from the run, so that a rebuild
        is byte-identical.
    metrics: the dict `model_core.evaluation.evaluate_model` returns (see the module docstring of
        `model_core.evaluation`); unknown keys are ignored, never rendered.
    gate: the release-gate decision {"passed", "decision", "reasons", "checks", "config"}.
    data_summary: {"dataset", "licence", "studies_per_split": {"train", "val", "test"}, "manifest_sha256",
        "image_digest"} plus optional "citation", "label_source", "images_per_split", "splits_sha256".
    versions: {"python", "torch", "transformers", "git_commit"} plus optional "git_dirty" (bool), "model_core",
        "packages" {name: version}; `software_versions()` collects them from the running environment.
    monitoring: optional risk-control evidence, {"drift": {"method", "statistic", "p_value", "threshold",
        "drift_detected"}, "phi": {"passed", "checks_run", "method"}}; absent items make their risk "needs review".
    predicate: the predicate device entry (default: `configs/predicate.yaml`).
    """

    run_id: str
    model_name: str
    model_version: str
    created: str | datetime
    metrics: Mapping[str, Any]
    gate: Mapping[str, Any]
    data_summary: Mapping[str, Any]
    versions: Mapping[str, Any]
    monitoring: Mapping[str, Any] | None = None
    predicate: Mapping[str, Any] = field(default_factory=_default_predicate)
    device_description: str = DEFAULT_DEVICE_DESCRIPTION
    intended_use: str = DEFAULT_INTENDED_USE
    indications: str = DEFAULT_INDICATIONS
    contraindications: tuple[str, ...] = DEFAULT_CONTRAINDICATIONS
    warnings: tuple[str, ...] = DEFAULT_WARNINGS
    technology: str = DEFAULT_TECHNOLOGY
    input_description: str = DEFAULT_INPUT
    output_description: str = DEFAULT_OUTPUT
    equivalence_discussion: str = DEFAULT_SE_DISCUSSION


class PacketVerificationError(ValueError):
    """A packet whose files do not match its SHA256SUMS (or that lacks a file); the message names each file."""


# --------------------------------------------------------------------------- predicate

PREDICATE_FIELDS = ("device_name", "k_number", "manufacturer", "decision_date", "regulation_number",
                    "product_code", "device_class", "intended_use", "technology", "input", "output", "performance")
_PREDICATE_REQUIRED = ("device_name", "k_number", "manufacturer", "intended_use", "technology", "input", "output",
                       "performance")


def load_predicate(path: str | os.PathLike | None = None) -> dict:
    """The `predicate:` entry of a YAML file (default `configs/predicate.yaml`), validated."""
    import yaml

    path = Path(path) if path is not None else DEFAULT_PREDICATE_PATH
    if not path.is_file():
        raise ValueError(f"predicate file {path} does not exist")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"predicate file {path} is not valid YAML: {exc}") from exc
    if not isinstance(loaded, dict) or "predicate" not in loaded:
        raise ValueError(f"predicate file {path} has no top-level 'predicate' mapping")
    return _predicate(loaded["predicate"], f"{path.name}: predicate")


def _predicate(raw, where: str = "predicate") -> dict:
    raw = _mapping(raw, where)
    out = {}
    for key in PREDICATE_FIELDS:
        if key not in raw or raw[key] is None:
            if key in _PREDICATE_REQUIRED:
                raise ValueError(f"{where}[{key!r}] is missing (required)")
            continue
        value = raw[key]
        if isinstance(value, (date, int)) and not isinstance(value, bool):  # YAML: 2019-05-01, class 2
            value = value.isoformat() if isinstance(value, date) else str(value)
        out[key] = _text(value, f"{where}[{key!r}]", 2000)
    k_number = out["k_number"]
    if not PLACEHOLDER_RE.search(k_number) and not _K_NUMBER_RE.match(k_number.strip()):
        raise ValueError(f"{where}['k_number'] = {k_number!r} is neither a <<FILL ...>> placeholder nor a "
                         "K-number (K + 6 digits) or De Novo number (DEN + 6 digits); never guess one")
    return out


def predicate_placeholders(predicate: Mapping[str, str]) -> list[str]:
    """Names of the predicate fields that still hold a <<FILL ...>> placeholder."""
    return [key for key in PREDICATE_FIELDS if key in predicate and PLACEHOLDER_RE.search(predicate[key])]


# --------------------------------------------------------------------------- input readers
# Each names the exact key in its error, e.g. "metrics['critical_findings']['Pneumothorax']['sensitivity']".

def _mapping(value, where: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be a dict, got {type(value).__name__}")
    return value


def _required(mapping: Mapping, key: str, where: str):
    if key not in mapping:
        raise ValueError(f"{where}[{key!r}] is missing (required)")
    return mapping[key]


def _number(value, where: str, unit: bool = False) -> float | None:
    """A float or None (non-finite becomes None); `unit` demands [0, 1] (a rate, not a percentage)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{where} must be a number or None, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        return None
    if unit and not -1e-9 <= value <= 1 + 1e-9:
        raise ValueError(f"{where} = {value} is outside [0, 1]: rates must be proportions, not percentages")
    return value


def _integer(value, where: str, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{where} must be an integer, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{where} must not be negative, got {value}")
    return int(value)


def _bool(value, where: str) -> bool:
    import numpy as np

    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{where} must be true or false, got {type(value).__name__}")
    return bool(value)


def _text(value, where: str, max_len: int = 200) -> str:
    """A string that may enter the packet: type- and length-checked, screened for report text and identifiers."""
    if not isinstance(value, str):
        raise ValueError(f"{where} must be a string, got {type(value).__name__}")
    if len(value) > max_len:
        raise ValueError(f"{where} is {len(value)} characters long (at most {max_len}); free text such as "
                         "report content must not enter the packet")
    for pattern, what in _PHI_PATTERNS:
        if pattern.search(value):
            raise ValueError(f"{where} looks like it contains {what}; the packet must not contain report text "
                             "or patient identifiers")
    return value


def _texts(value, where: str, max_len: int = 1000) -> list[str]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ValueError(f"{where} must be a list of strings, got {type(value).__name__}")
    return [_text(item, f"{where}[{i}]", max_len) for i, item in enumerate(value)]


def _ci(raw, where: str, require_bounds: bool = True) -> dict:
    """{value, ci_low, ci_high, n_boot} of a metric (rates in [0, 1])."""
    raw = _mapping(raw, where)
    keys = ("value", "ci_low", "ci_high") if require_bounds else ("value",)
    for key in keys:
        _required(raw, key, where)
    return {
        "value": _number(raw["value"], f"{where}['value']", unit=True),
        "ci_low": _number(raw.get("ci_low"), f"{where}['ci_low']", unit=True),
        "ci_high": _number(raw.get("ci_high"), f"{where}['ci_high']", unit=True),
        "n_boot": _integer(raw.get("n_boot"), f"{where}['n_boot']", optional=True),
    }


def _interval(raw, where: str) -> list[float | None]:
    if raw is None:
        return [None, None]
    if isinstance(raw, (str, bytes)) or not isinstance(raw, (list, tuple)) or len(raw) != 2:
        raise ValueError(f"{where} must be a [low, high] pair (or None), got {type(raw).__name__}")
    return [_number(raw[0], f"{where}[0]", unit=True), _number(raw[1], f"{where}[1]", unit=True)]


def _created(value) -> str:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"created = {value!r} is not an ISO 8601 timestamp") from exc
    if not isinstance(value, datetime):
        raise ValueError(f"created must be an ISO 8601 string or a datetime, got {type(value).__name__}")
    if value.tzinfo is None:
        raise ValueError("created must carry a timezone (e.g. '2025-01-31T12:00:00Z'), so the packet is unambiguous")
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- section readers (whitelists)

def _performance(metrics) -> dict:
    m = _mapping(metrics, "metrics")
    summary_raw = _mapping(_required(m, "summary", "metrics"), "metrics['summary']")
    summary = {k: _ci(_required(summary_raw, k, "metrics['summary']"), f"metrics['summary'][{k!r}]")
               for k in SUMMARY_KEYS}

    ce = _mapping(_required(m, "clinical_efficacy", "metrics"), "metrics['clinical_efficacy']")
    per_raw = _mapping(_required(ce, "per_label", "metrics['clinical_efficacy']"),
                       "metrics['clinical_efficacy']['per_label']")
    per_label = {}
    for label in CHEXPERT_LABELS:  # known labels only, in CheXpert order; anything else is ignored
        if label not in per_raw:
            per_label[label] = None
            continue
        where = f"metrics['clinical_efficacy']['per_label'][{label!r}]"
        row = _mapping(per_raw[label], where)
        per_label[label] = {
            **{k: _number(_required(row, k, where), f"{where}[{k!r}]", unit=True)
               for k in ("precision", "recall", "f1")},
            "support": _integer(_required(row, "support", where), f"{where}['support']"),
            "f1_ci_low": _number(row.get("f1_ci_low"), f"{where}['f1_ci_low']", unit=True),
            "f1_ci_high": _number(row.get("f1_ci_high"), f"{where}['f1_ci_high']", unit=True),
        }

    crit_raw = _mapping(_required(m, "critical_findings", "metrics"), "metrics['critical_findings']")
    critical = {}
    for label in CRITICAL_FINDINGS:
        where = f"metrics['critical_findings'][{label!r}]"
        row = _mapping(_required(crit_raw, label, "metrics['critical_findings']"), where)
        for key in ("threshold", "sensitivity", "sensitivity_ci", "specificity", "specificity_ci", "tp", "fn", "tn",
                    "fp", "positives", "negatives", "flag_rate"):
            _required(row, key, where)
        critical[label] = {
            "threshold": _number(row["threshold"], f"{where}['threshold']", unit=True),
            "sensitivity": _number(row["sensitivity"], f"{where}['sensitivity']", unit=True),
            "sensitivity_ci": _interval(row["sensitivity_ci"], f"{where}['sensitivity_ci']"),
            "specificity": _number(row["specificity"], f"{where}['specificity']", unit=True),
            "specificity_ci": _interval(row["specificity_ci"], f"{where}['specificity_ci']"),
            **{k: _integer(row[k], f"{where}[{k!r}]") for k in ("tp", "fn", "tn", "fp", "positives", "negatives")},
            "flag_rate": _number(row["flag_rate"], f"{where}['flag_rate']", unit=True),
        }

    hall_raw = _mapping(_required(m, "hallucination", "metrics"), "metrics['hallucination']")
    hallucination = {"vs_ground_truth": _hallucination(
        _required(hall_raw, "vs_ground_truth", "metrics['hallucination']"),
        "metrics['hallucination']['vs_ground_truth']")}
    if hall_raw.get("vs_detection_head") is not None:
        hallucination["vs_detection_head"] = _hallucination(hall_raw["vs_detection_head"],
                                                            "metrics['hallucination']['vs_detection_head']")

    baseline = None
    if m.get("baseline") is not None:
        b = _mapping(m["baseline"], "metrics['baseline']")
        baseline = {k: (_ci(b[k], f"metrics['baseline'][{k!r}]", require_bounds=False) if b.get(k) is not None
                        else None) for k in SUMMARY_KEYS}

    calibration = None
    if m.get("calibration") is not None:
        c = _mapping(m["calibration"], "metrics['calibration']")
        calibration = {
            "temperature": _number(c.get("temperature"), "metrics['calibration']['temperature']"),
            "test_ece_uncalibrated": _number(c.get("test_ece_uncalibrated"),
                                             "metrics['calibration']['test_ece_uncalibrated']", unit=True),
            "test_ece": _number(_required(c, "test_ece", "metrics['calibration']"),
                                "metrics['calibration']['test_ece']", unit=True),
        }

    latency = None
    if m.get("latency") is not None:
        lat = _mapping(m["latency"], "metrics['latency']")
        latency = {"num_beams": _integer(lat.get("num_beams"), "metrics['latency']['num_beams']", optional=True),
                   "threads": _integer(lat.get("threads"), "metrics['latency']['threads']", optional=True)}
        for key in ("batch_1", "batch_8_per_report"):
            if key == "batch_1":
                _required(lat, key, "metrics['latency']")
            if lat.get(key) is None:
                latency[key] = None
                continue
            where = f"metrics['latency'][{key!r}]"
            row = _mapping(lat[key], where)
            latency[key] = {"p50_ms": _number(_required(row, "p50_ms", where), f"{where}['p50_ms']"),
                            "p95_ms": _number(_required(row, "p95_ms", where), f"{where}['p95_ms']"),
                            "n": _integer(row.get("n"), f"{where}['n']", optional=True)}

    bootstrap = None
    if isinstance(m.get("bootstrap"), Mapping):
        bootstrap = {"n_boot": _integer(m["bootstrap"].get("n_boot"), "metrics['bootstrap']['n_boot']", True),
                     "seed": _integer(m["bootstrap"].get("seed"), "metrics['bootstrap']['seed']", True),
                     "alpha": _number(m["bootstrap"].get("alpha"), "metrics['bootstrap']['alpha']", unit=True)}

    return {
        "n_studies": _integer(_required(m, "n_studies", "metrics"), "metrics['n_studies']"),
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
    raw = _mapping(raw, where)
    out = {
        "rate": _ci(_required(raw, "rate", where), f"{where}['rate']"),
        "reports_with_unsupported_critical": _integer(_required(raw, "reports_with_unsupported_critical", where),
                                                      f"{where}['reports_with_unsupported_critical']"),
        "reports": _integer(_required(raw, "reports", where), f"{where}['reports']"),
        "critical_assertions": _integer(raw.get("critical_assertions"), f"{where}['critical_assertions']", True),
        "unsupported_assertions": _integer(raw.get("unsupported_assertions"), f"{where}['unsupported_assertions']",
                                           True),
        "per_assertion_rate": _number(raw.get("per_assertion_rate"), f"{where}['per_assertion_rate']", unit=True),
        "by_finding": None,
    }
    if isinstance(raw.get("by_finding"), Mapping):
        out["by_finding"] = {f: _integer(raw["by_finding"].get(f), f"{where}['by_finding'][{f!r}]", True)
                             for f in CRITICAL_FINDINGS}
    return out


def _gate(raw) -> dict:
    g = _mapping(raw, "gate")
    passed = _bool(_required(g, "passed", "gate"), "gate['passed']")
    decision = _required(g, "decision", "gate")
    if decision not in ("promote", "reject"):
        raise ValueError(f"gate['decision'] must be 'promote' or 'reject', got {decision!r}")
    if passed != (decision == "promote"):
        raise ValueError(f"gate['passed'] = {passed} contradicts gate['decision'] = {decision!r}")
    checks_raw = _required(g, "checks", "gate")
    if not isinstance(checks_raw, (list, tuple)):
        raise ValueError(f"gate['checks'] must be a list, got {type(checks_raw).__name__}")
    checks = []
    for i, c in enumerate(checks_raw):
        where = f"gate['checks'][{i}]"
        c = _mapping(c, where)
        for key in ("name", "metric", "value", "threshold", "comparison", "passed", "reason"):
            _required(c, key, where)
        if c["comparison"] not in GATE_COMPARISONS:
            raise ValueError(f"{where}['comparison'] must be one of {GATE_COMPARISONS}, got {c['comparison']!r}")
        threshold = _number(c["threshold"], f"{where}['threshold']")
        if threshold is None:
            raise ValueError(f"{where}['threshold'] must be a finite number")
        checks.append({
            "name": _text(c["name"], f"{where}['name']"),
            "finding": None if c.get("finding") is None else _text(c["finding"], f"{where}['finding']"),
            "metric": _text(c["metric"], f"{where}['metric']"),
            "value": _number(c["value"], f"{where}['value']"),
            "ci_low": _number(c.get("ci_low"), f"{where}['ci_low']"),
            "threshold": threshold,
            "comparison": c["comparison"],
            "passed": _bool(c["passed"], f"{where}['passed']"),
            "reason": _text(c["reason"], f"{where}['reason']", 1000),
        })
    failed = [c["name"] for c in checks if not c["passed"]]
    if passed and failed:
        raise ValueError(f"gate['passed'] is true but gate check(s) {failed} failed")
    config = {}
    if g.get("config") is not None:
        for key, value in sorted(_mapping(g["config"], "gate['config']").items(), key=lambda kv: str(kv[0])):
            where = f"gate['config'][{key!r}]"
            if isinstance(value, bool) or value is None:
                config[_text(str(key), where)] = value
            elif isinstance(value, numbers.Integral):
                config[_text(str(key), where)] = int(value)
            elif isinstance(value, numbers.Real):
                config[_text(str(key), where)] = _number(value, where)
            elif isinstance(value, str):
                config[_text(str(key), where)] = _text(value, where)
            # nested structures are not rendered
    return {"passed": passed, "decision": decision,
            "reasons": _texts(_required(g, "reasons", "gate"), "gate['reasons']"),
            "checks": checks, "config": config}


def _data_summary(raw, n_evaluated: int) -> dict:
    d = _mapping(raw, "data_summary")
    out = {
        "dataset": _text(_required(d, "dataset", "data_summary"), "data_summary['dataset']"),
        "licence": _text(_required(d, "licence", "data_summary"), "data_summary['licence']"),
        "citation": None if d.get("citation") is None else _text(d["citation"], "data_summary['citation']", 500),
        "label_source": None if d.get("label_source") is None else _text(d["label_source"],
                                                                         "data_summary['label_source']", 500),
    }
    for key in ("manifest_sha256", "image_digest", "splits_sha256"):
        value = d.get(key) if key == "splits_sha256" else _required(d, key, "data_summary")
        if value is None:
            out[key] = None
            continue
        if not isinstance(value, str) or not _SHA256_RE.match(value):
            raise ValueError(f"data_summary[{key!r}] must be a SHA-256 hex digest (64 hex characters, optionally "
                             "prefixed 'sha256:')")
        out[key] = value.lower()
    studies = _mapping(_required(d, "studies_per_split", "data_summary"), "data_summary['studies_per_split']")
    for split in ("train", "test"):
        _required(studies, split, "data_summary['studies_per_split']")
    out["studies_per_split"] = {s: _integer(studies.get(s), f"data_summary['studies_per_split'][{s!r}]", True)
                                for s, _ in SPLITS}
    images = d.get("images_per_split")
    images = _mapping(images, "data_summary['images_per_split']") if images is not None else {}
    out["images_per_split"] = {s: _integer(images.get(s), f"data_summary['images_per_split'][{s!r}]", True)
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


def _versions(raw) -> dict:
    v = _mapping(raw, "versions")
    out = {key: _text(_required(v, key, "versions"), f"versions[{key!r}]")
           for key in ("python", "torch", "transformers", "git_commit")}
    out["git_dirty"] = None if v.get("git_dirty") is None else _bool(v["git_dirty"], "versions['git_dirty']")
    out["model_core"] = None if v.get("model_core") is None else _text(v["model_core"], "versions['model_core']")
    packages = v.get("packages") or {}
    packages = _mapping(packages, "versions['packages']")
    out["packages"] = {_text(str(k), "versions['packages'] key"): _text(packages[k], f"versions['packages'][{k!r}]")
                       for k in sorted(packages, key=lambda k: str(k).lower())}
    return out


def _monitoring(raw) -> dict:
    out = {"drift": None, "phi": None}
    if raw is None:
        return out
    m = _mapping(raw, "monitoring")
    if m.get("drift") is not None:
        d = _mapping(m["drift"], "monitoring['drift']")
        out["drift"] = {
            "method": _text(_required(d, "method", "monitoring['drift']"), "monitoring['drift']['method']"),
            "statistic": _number(d.get("statistic"), "monitoring['drift']['statistic']"),
            "p_value": _number(d.get("p_value"), "monitoring['drift']['p_value']", unit=True),
            "threshold": _number(d.get("threshold"), "monitoring['drift']['threshold']"),
            "drift_detected": (None if d.get("drift_detected") is None
                               else _bool(d["drift_detected"], "monitoring['drift']['drift_detected']")),
        }
    if m.get("phi") is not None:
        p = _mapping(m["phi"], "monitoring['phi']")
        out["phi"] = {
            "passed": _bool(_required(p, "passed", "monitoring['phi']"), "monitoring['phi']['passed']"),
            "checks_run": _integer(p.get("checks_run"), "monitoring['phi']['checks_run']", optional=True),
            "method": None if p.get("method") is None else _text(p["method"], "monitoring['phi']['method']", 300),
        }
    return out


# --------------------------------------------------------------------------- formatting

def fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def fmt_ci(value: float | None, low: float | None, high: float | None, digits: int = 3) -> str:
    """'0.912 (0.850–0.951)'; 'n/a' when there is no value; the interval as n/a when it is missing."""
    if value is None:
        return "n/a"
    if low is None or high is None:
        return f"{fmt(value, digits)} (CI n/a)"
    return f"{fmt(value, digits)} ({fmt(low, digits)}–{fmt(high, digits)})"


def _ci_text(ci: Mapping | None) -> str:
    return "n/a" if ci is None else fmt_ci(ci["value"], ci.get("ci_low"), ci.get("ci_high"))


def _pair_text(value, interval) -> str:
    return fmt_ci(value, interval[0], interval[1])


def _criterion(check: Mapping) -> str:
    return f"{check['metric']} {check['comparison']} {fmt(check['threshold'])}"


# --------------------------------------------------------------------------- risk analysis (ISO 14971 style)

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
    return {"criterion": "; ".join(_criterion(x) for x in linked) or default_criterion,
            "residual_risk": level, "basis": basis, "linked_checks": [x["name"] for x in linked]}


def _from_gate_or_missing(linked: list[dict], evidence, what: str, fmt) -> tuple[str, str, str] | None:
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


def _risk_rows(perf: dict, gate: dict, monitoring: dict, data: dict) -> list[dict]:
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
            "measured": f"{_pair_text(c['sensitivity'], c['sensitivity_ci'])}; TP {c['tp']} of {c['positives']} "
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
        "measured": f"{_ci_text(hall['rate'])}; {hall['reports_with_unsupported_critical']} of {hall['reports']} "
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
        "measured": "; ".join(f"{f}: {_pair_text(perf['critical_findings'][f]['specificity'], perf['critical_findings'][f]['specificity_ci'])}"
                              for f in CRITICAL_FINDINGS),
        **_gate_fields(linked, level, basis, "none in gate"),
    })

    det = perf["hallucination"].get("vs_detection_head")
    rows.append({
        "hazard": "Wrong laterality, or draft text contradicting the detection head",
        "cause": "Free text is not grounded per side; laterality is not captured by the 14-label labeler",
        "mitigation": "QA flag on text/detector disagreement routes the draft to radiologist review; the "
                      "radiologist verifies laterality on the image",
        "metric": "QA flag rate: drafts asserting a critical finding the detection head does not support",
        "measured": _ci_text(det["rate"]) if det else "not reported",
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
        "measured": f"micro {_ci_text(s['CE micro F1'])}; macro {_ci_text(s['CE macro F1'])}",
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
    found = _from_gate_or_missing(linked, drift, "drift-monitor", fmt)
    if found:
        level, basis, measured = found
    else:
        measured = (f"{drift['method']}: statistic {fmt(drift['statistic'])}, p = {fmt(drift['p_value'])}, "
                    f"threshold {fmt(drift['threshold'])}, drift detected: "
                    f"{'n/a' if drift['drift_detected'] is None else ('yes' if drift['drift_detected'] else 'no')}")
        if drift["drift_detected"] is False:
            level, basis = "acceptable", "drift monitor in place; no drift detected"
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
    found = _from_gate_or_missing(linked, phi, "PHI-check", fmt)
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


def _overall_risk(rows: list[dict], gate: dict) -> str:
    review = sum(r["residual_risk"] == "needs review" for r in rows)
    if not gate["passed"]:
        return ("UNACCEPTABLE: the release gate failed; the overall residual risk of this candidate is not "
                "acceptable and the candidate is not promoted.")
    if review:
        return (f"Acceptable for the hazards covered by release-gate checks; {review} hazard(s) need review by the "
                "risk-management team (ISO 14971) before any clinical release.")
    return "Acceptable: every hazard is covered by a passed acceptance criterion."


# --------------------------------------------------------------------------- the packet document

def packet_document(inputs: PacketInputs) -> dict:
    """The validated, whitelisted content of the packet (what packet.json holds and both renderings show)."""
    if not isinstance(inputs, PacketInputs):
        raise ValueError(f"inputs must be a PacketInputs, got {type(inputs).__name__}")
    for key in ("model_name", "model_version"):
        value = getattr(inputs, key)
        if not isinstance(value, str) or not _SAFE_NAME_RE.match(value):
            raise ValueError(f"{key} = {value!r} must be 1-100 characters of letters, digits and . _ + - "
                             "(it becomes part of the packet's file name)")
    perf = _performance(inputs.metrics)
    gate = _gate(inputs.gate)
    data = _data_summary(inputs.data_summary, perf["n_studies"])
    monitoring = _monitoring(inputs.monitoring)
    predicate = _predicate(inputs.predicate)
    placeholders = predicate_placeholders(predicate)
    risk = _risk_rows(perf, gate, monitoring, data)
    rejected = not gate["passed"]
    doc = {
        "schema": SCHEMA,
        "packet": {
            "run_id": _text(inputs.run_id, "run_id"),
            "model_name": inputs.model_name,
            "model_version": inputs.model_version,
            "created": _created(inputs.created),
            "status": "rejected" if rejected else "promoted",
            "predicate_complete": not placeholders,
        },
        "device": {
            "description": _text(inputs.device_description, "device_description", 4000),
            "intended_use": _text(inputs.intended_use, "intended_use", 2000),
            "indications": _text(inputs.indications, "indications", 2000),
            "contraindications": _texts(inputs.contraindications, "contraindications"),
            "warnings": _texts(inputs.warnings, "warnings"),
            "technology": _text(inputs.technology, "technology", 1000),
            "input": _text(inputs.input_description, "input_description", 1000),
            "output": _text(inputs.output_description, "output_description", 1000),
        },
        "predicate": {**predicate, "placeholders": placeholders,
                      "equivalence_discussion": _text(inputs.equivalence_discussion, "equivalence_discussion",
                                                       2000)},
        "data": data,
        "performance": perf,
        "gate": gate,
        "risk_analysis": {"rows": risk, "overall": _overall_risk(risk, gate)},
        "monitoring": monitoring,
        "versions": _versions(inputs.versions),
        "release_statement": _release_statement(inputs, gate),
        "phi_statement": PHI_STATEMENT,
    }
    return doc


def _release_statement(inputs: PacketInputs, gate: dict) -> str:
    who = f"{inputs.model_name} version {inputs.model_version} (run {inputs.run_id})"
    if not gate["passed"]:
        return (f"REJECTED CANDIDATE - NOT PROMOTED. {who} did not pass the release gate (Section 6). It is not "
                "promoted, must not be deployed, served or used clinically, and is not the subject device of any "
                "submission. This packet documents a rejected candidate for the design history file only.")
    return (f"{who} passed the automated release gate (Section 6); the gate decision is PROMOTE. "
            "Passing the gate is necessary but not sufficient for clinical release: release requires review and "
            "sign-off by Quality and Regulatory Affairs, including the items marked 'needs review' in Section 7.")


# --------------------------------------------------------------------------- view model (shared by HTML and PDF)

def _cell(text: str, tone: str | None = None) -> dict:
    return {"text": text, "tone": tone}


_RISK_TONE = {"acceptable": "good", "needs review": "warn", "unacceptable": "bad"}


def _table(header: list[str] | None, rows: list[list], widths: list[float], kv: bool = False,
           tall: bool = False) -> dict:
    """A table block; `widths` are fractions of the text width (sum 1); a cell's "\n" is a line break;
    `tall` rows leave room for handwriting (signatures)."""
    rows = [[c if isinstance(c, dict) else _cell(str(c)) for c in row] for row in rows]
    return {"kind": "table", "header": header, "rows": rows, "widths": widths, "kv": kv, "tall": tall}


def _view(doc: dict) -> dict:
    """Titles, banners and sections as generic blocks (h, p, note, list, banner, table) both renderers draw."""
    p, dev, pred, data, perf, gate = (doc[k] for k in ("packet", "device", "predicate", "data", "performance",
                                                       "gate"))
    rejected = p["status"] == "rejected"
    title = "510(k) Premarket Notification - Technical Documentation Packet"
    cover = [_table(None, [
        ["Device (model)", p["model_name"]],
        ["Version", p["model_version"]],
        ["Evaluation run", p["run_id"]],
        ["Packet created (UTC)", p["created"]],
        ["Release-gate decision", _cell(gate["decision"].upper() + (" - NOT PROMOTED" if rejected else ""),
                                        "bad" if rejected else "good")],
        ["Packet schema", doc["schema"]],
    ], [0.3, 0.7], kv=True)]
    if rejected:
        cover.append({"kind": "banner", "tone": "bad", "text": doc["release_statement"]})
    if pred["placeholders"]:
        cover.append({"kind": "banner", "tone": "warn", "text":
                      "NOT SUBMISSION-READY: the predicate entry (configs/predicate.yaml) still holds placeholders "
                      f"for: {', '.join(pred['placeholders'])}."})
    cover.append({"kind": "note", "text": doc["phi_statement"]})

    sections = []
    sections.append({"title": "Device description and intended use", "blocks": [
        {"kind": "h", "text": "Device description"}, {"kind": "p", "text": dev["description"]},
        {"kind": "h", "text": "Intended use"}, {"kind": "p", "text": dev["intended_use"]},
    ]})
    sections.append({"title": "Indications for use and contraindications", "blocks": [
        {"kind": "h", "text": "Indications for use"}, {"kind": "p", "text": dev["indications"]},
        {"kind": "h", "text": "Contraindications"}, {"kind": "list", "items": dev["contraindications"]},
        {"kind": "h", "text": "Warnings and precautions"}, {"kind": "list", "items": dev["warnings"]},
    ]})

    crit = perf["critical_findings"]
    summ = perf["summary"]
    subject_perf = (f"Test set, {perf['n_studies']} studies. Critical-finding sensitivity (95 % CI): "
                    + "; ".join(f"{f} {_pair_text(crit[f]['sensitivity'], crit[f]['sensitivity_ci'])}"
                                for f in CRITICAL_FINDINGS)
                    + f". Hallucination rate {_ci_text(summ['hallucination rate'])}. "
                    f"CE micro F1 {_ci_text(summ['CE micro F1'])}.")
    pred_name = f"{pred['device_name']} ({pred['k_number']})"
    blocks = []
    if pred["placeholders"]:
        blocks.append({"kind": "banner", "tone": "warn", "text":
                       "Predicate fields marked <<FILL ...>> are placeholders that Regulatory Affairs must replace "
                       "with the predicate's cleared data; no K-number has been assumed."})
    ident = [f"Manufacturer: {pred['manufacturer']}"]
    for key, label in (("decision_date", "Decision date"), ("regulation_number", "Regulation"),
                       ("product_code", "Product code"), ("device_class", "Class")):
        if key in pred:
            ident.append(f"{label}: {pred[key]}")
    blocks.append(_table(["Attribute", "Subject device", "Predicate device"], [
        [_cell("Device", "strong"), f"{p['model_name']} v{p['model_version']}",
         f"{pred_name}. " + ". ".join(ident)],
        [_cell("Intended use", "strong"), dev["intended_use"], pred["intended_use"]],
        [_cell("Technology", "strong"), dev["technology"], pred["technology"]],
        [_cell("Input", "strong"), dev["input"], pred["input"]],
        [_cell("Output", "strong"), dev["output"], pred["output"]],
        [_cell("Performance", "strong"), subject_perf, pred["performance"]],
    ], [0.15, 0.425, 0.425]))
    blocks += [{"kind": "h", "text": "Substantial-equivalence discussion"},
               {"kind": "p", "text": pred["equivalence_discussion"]}]
    sections.append({"title": "Predicate device comparison", "blocks": blocks})

    roles = dict(SPLITS)
    split_rows = [[s, roles[s], "n/a" if data["studies_per_split"][s] is None else str(data["studies_per_split"][s]),
                   "n/a" if data["images_per_split"][s] is None else str(data["images_per_split"][s])]
                  for s, _ in SPLITS]
    kv = [["Dataset", data["dataset"]], ["License", data["licence"]]]
    if data["citation"]:
        kv.append(["Citation", data["citation"]])
    if data["label_source"]:
        kv.append(["Label source", data["label_source"]])
    blocks = [_table(None, kv, [0.25, 0.75], kv=True),
              {"kind": "h", "text": "Studies per split"},
              _table(["Split", "Role", "Studies", "Images"], split_rows, [0.12, 0.58, 0.15, 0.15]),
              {"kind": "h", "text": "Data integrity hashes (SHA-256)"},
              _table(["Artifact", "SHA-256"], [
                  ["Manifest (all splits)", _cell(data["manifest_sha256"], "mono")],
                  ["Image digest", _cell(data["image_digest"], "mono")],
                  ["Split assignment", _cell(data["splits_sha256"] or "n/a", "mono")],
              ], [0.24, 0.76]),
              {"kind": "h", "text": "Representativeness"}]
    for i, note in enumerate(data["notes"]):
        blocks.append({"kind": "banner", "tone": "warn", "text": note} if i == 0 and data["is_iu_xray_demo"]
                      else {"kind": "p", "text": note})
    sections.append({"title": "Training, validation and test data", "blocks": blocks})

    sections.append({"title": "Clinical performance", "blocks": _performance_blocks(perf)})
    sections.append({"title": "Release-gate decision", "blocks": _gate_blocks(gate, rejected)})

    risk = doc["risk_analysis"]
    risk_rows = [[r["hazard"], r["cause"], r["mitigation"], f"{r['metric']}:\n{r['measured']}", r["criterion"],
                  _cell(f"{r['residual_risk'].upper()}\n{r['basis']}", _RISK_TONE[r["residual_risk"]])]
                 for r in risk["rows"]]
    sections.append({"title": "Risk analysis", "blocks": [
        {"kind": "p", "text": "Hazard, cause, risk control and residual risk per hazard (ISO 14971). Each residual "
                              "risk is read off the measured metric and its acceptance criterion: acceptable when "
                              "the linked release-gate check passed, unacceptable when it failed, needs review when "
                              "no acceptance criterion or measurement exists."},
        _table(["Hazard", "Cause", "Risk control (mitigation)", "Linked measurement", "Acceptance criterion",
                "Residual risk"], risk_rows, [0.14, 0.15, 0.2, 0.22, 0.13, 0.16]),
        {"kind": "banner", "tone": "bad" if rejected else "warn", "text": "Overall residual risk: " + risk["overall"]},
    ]})

    v = doc["versions"]
    kv = [["Python", v["python"]], ["torch", v["torch"]], ["transformers", v["transformers"]],
          ["Git commit", _cell(v["git_commit"], "mono")]]
    if v["git_dirty"] is not None:
        kv.append(["Uncommitted changes at build", _cell("yes (not reproducible from the commit alone)", "bad")
                   if v["git_dirty"] else "no"])
    if v["model_core"]:
        kv.append(["model_core", v["model_core"]])
    blocks = [_table(None, kv, [0.3, 0.7], kv=True)]
    if v["packages"]:
        blocks += [{"kind": "h", "text": "Package versions"},
                   _table(["Package", "Version"], [[k, val] for k, val in v["packages"].items()], [0.5, 0.5])]
    sections.append({"title": "Software and model versions", "blocks": blocks})

    sections.append({"title": "Release status", "blocks": [
        {"kind": "banner", "tone": "bad" if rejected else "good", "text": doc["release_statement"]},
        {"kind": "h", "text": "Review and approval"},
        _table(["Role", "Name", "Signature", "Date"],
               [["Prepared by (ML engineering)", "", "", ""], ["Reviewed by (Regulatory Affairs)", "", "", ""],
                ["Approved by (Quality Assurance)", "", "", ""]], [0.34, 0.26, 0.24, 0.16], tall=True),
        {"kind": "note", "text": "Reproducibility: rebuilding this packet from the same run inputs yields "
                                 "byte-identical packet.json, packet.html and packet.pdf; SHA256SUMS lists each "
                                 "file's hash."},
    ]})
    for number, section in enumerate(sections, 1):
        section["number"] = number
    status = "REJECTED CANDIDATE - NOT PROMOTED" if rejected else "promoted by release gate"
    return {"title": title, "subtitle": f"{p['model_name']} v{p['model_version']} - run {p['run_id']} - {p['created']}",
            "cover": cover, "sections": sections, "rejected": rejected,
            "running_head": f"510(k) packet - {p['model_name']} v{p['model_version']} - {status}",
            "footer": "DRAFT - confidential - contains no PHI"}


def _performance_blocks(perf: dict) -> list[dict]:
    blocks = [{"kind": "p", "text":
               f"Held-out test set: {perf['n_studies']} studies. The figures below were computed by the evaluation "
               "pipeline (model_core.evaluation) and are reproduced unchanged. Intervals are 95 % study-level "
               "percentile bootstrap intervals"
               + (f" (n_boot = {perf['bootstrap']['n_boot']}, seed {perf['bootstrap']['seed']})"
                  if perf["bootstrap"] and perf["bootstrap"]["n_boot"] is not None else "")
               + ", except sensitivity and specificity (Wilson score). n/a: not defined (e.g. no positive cases) or "
                 "not reported."}]

    base = perf["baseline"]
    rows = []
    for key in SUMMARY_KEYS:
        ci = perf["summary"][key]
        rows.append([_cell(key, "strong"), "lower" if key in LOWER_IS_BETTER else "higher", _ci_text(ci),
                     "n/a" if ci["n_boot"] is None else str(ci["n_boot"]),
                     "not reported" if base is None or base[key] is None else _ci_text(base[key])])
    blocks += [{"kind": "h", "text": "Report quality and baseline comparison"},
               _table(["Metric", "Better", "Model (95 % CI)", "n_boot", "Template baseline (95 % CI)"], rows,
                      [0.2, 0.1, 0.27, 0.1, 0.33])]

    rows = []
    for f in CRITICAL_FINDINGS:
        c = perf["critical_findings"][f]
        rows.append([_cell(f, "strong"), fmt(c["threshold"]), _pair_text(c["sensitivity"], c["sensitivity_ci"]),
                     _pair_text(c["specificity"], c["specificity_ci"]), f"{c['tp']} / {c['fn']}",
                     f"{c['tn']} / {c['fp']}", f"{c['positives']} / {c['negatives']}", fmt(c["flag_rate"])])
    blocks += [{"kind": "h", "text": "Critical findings: detection at the validation-chosen operating points"},
               _table(["Finding", "Threshold", "Sensitivity (95 % CI)", "Specificity (95 % CI)", "TP / FN",
                       "TN / FP", "Pos / Neg", "Flag rate"], rows,
                      [0.15, 0.09, 0.19, 0.19, 0.09, 0.1, 0.1, 0.09])]

    rows = []
    for label in CHEXPERT_LABELS:
        r = perf["per_label"][label]
        name = _cell(label + (" *" if label in CRITICAL_FINDINGS else ""), "strong")
        if r is None:
            rows.append([name, "n/a", "n/a", "n/a", "not reported"])
        else:
            rows.append([name, str(r["support"]), fmt(r["precision"]), fmt(r["recall"]),
                         fmt_ci(r["f1"], r["f1_ci_low"], r["f1_ci_high"])])
    blocks += [{"kind": "h", "text": "Per-finding clinical efficacy (labeler on the draft vs reference labels)"},
               _table(["Finding (* critical)", "Support", "Precision", "Recall", "F1 (95 % CI)"], rows,
                      [0.32, 0.12, 0.14, 0.14, 0.28])]

    h = perf["hallucination"]
    gt = h["vs_ground_truth"]
    rows = [["Hallucination rate vs ground truth", _ci_text(gt["rate"])],
            ["Drafts with an unsupported critical assertion", f"{gt['reports_with_unsupported_critical']} of "
                                                              f"{gt['reports']}"],
            ["Unsupported / all critical assertions",
             "n/a" if gt["critical_assertions"] is None else
             f"{'n/a' if gt['unsupported_assertions'] is None else gt['unsupported_assertions']} / "
             f"{gt['critical_assertions']} (per-assertion rate {fmt(gt['per_assertion_rate'])})"]]
    if gt["by_finding"]:
        rows.append(["Unsupported assertions by finding", "; ".join(
            f"{f} {'n/a' if n is None else n}" for f, n in gt["by_finding"].items())])
    if "vs_detection_head" in h:
        rows.append(["Text vs detection head disagreement (QA flag rate)", _ci_text(h["vs_detection_head"]["rate"])])
    blocks += [{"kind": "h", "text": "Hallucination of critical findings"},
               _table(None, rows, [0.42, 0.58], kv=True)]

    cal = perf["calibration"]
    blocks.append({"kind": "h", "text": "Calibration of the detection head"})
    if cal is None:
        blocks.append({"kind": "p", "text": "Calibration: not reported."})
    else:
        blocks.append(_table(None, [["Temperature (fitted on validation)", fmt(cal["temperature"], 3)],
                                    ["Test ECE before temperature scaling", fmt(cal["test_ece_uncalibrated"], 4)],
                                    ["Test ECE after temperature scaling", fmt(cal["test_ece"], 4)]],
                             [0.42, 0.58], kv=True))

    lat = perf["latency"]
    blocks.append({"kind": "h", "text": "Generation latency"})
    if lat is None:
        blocks.append({"kind": "p", "text": "Latency: not reported."})
    else:
        rows = []
        for key, label in (("batch_1", "Batch 1, per report"), ("batch_8_per_report", "Batch 8, per report")):
            r = lat[key]
            rows.append([label] + (["n/a", "n/a", "n/a"] if r is None else
                                   [fmt(r["p50_ms"], 0), fmt(r["p95_ms"], 0), "n/a" if r["n"] is None else str(r["n"])]))
        blocks.append(_table(["Setting", "p50 (ms)", "p95 (ms)", "n"], rows, [0.4, 0.2, 0.2, 0.2]))
        blocks.append({"kind": "note", "text": f"Beam search with {'n/a' if lat['num_beams'] is None else lat['num_beams']} "
                                               f"beams, {'n/a' if lat['threads'] is None else lat['threads']} CPU "
                                               "threads, on the evaluation machine (not the deployment hardware)."})
    return blocks


def _gate_blocks(gate: dict, rejected: bool) -> list[dict]:
    blocks = [{"kind": "banner", "tone": "bad" if rejected else "good",
               "text": f"Decision: {gate['decision'].upper()} (gate {'FAILED' if rejected else 'passed'})"}]
    if gate["reasons"]:
        blocks += [{"kind": "h", "text": "Reasons"}, {"kind": "list", "items": gate["reasons"]}]
    rows = [[c["name"], c["finding"] or "-", c["metric"], fmt(c["value"]), fmt(c["ci_low"]),
             f"{c['comparison']} {fmt(c['threshold'])}",
             _cell("PASS" if c["passed"] else "FAIL", "good" if c["passed"] else "bad"), c["reason"]]
            for c in gate["checks"]]
    blocks += [{"kind": "h", "text": f"Checks ({len(gate['checks'])})"},
               _table(["Check", "Finding", "Metric", "Value", "CI low", "Criterion", "Result", "Reason"],
                      rows or [["(no checks recorded)", "", "", "", "", "", "", ""]],
                      [0.2, 0.11, 0.12, 0.065, 0.065, 0.095, 0.065, 0.28]),
               {"kind": "note", "text": "Value is the point estimate and CI low the lower 95 % bound as supplied with "
                                        "each check; the gate may compare a confidence bound rather than the point "
                                        "estimate (see Reason and the gate configuration). Result is the gate's own "
                                        "decision, reproduced unchanged."}]
    if gate["config"]:
        blocks += [{"kind": "h", "text": "Gate configuration"},
                   _table(None, [[k, "n/a" if v is None else str(v)] for k, v in gate["config"].items()],
                          [0.45, 0.55], kv=True)]
    return blocks


# --------------------------------------------------------------------------- renderers

def render_json(doc: dict) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


def render_html(doc: dict) -> bytes:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    return env.get_template("packet.html.j2").render(v=_view(doc)).encode("utf-8")


# The PDF uses the standard Type 1 fonts (nothing to embed, nothing machine-dependent); they cover cp1252.
_PDF_REPLACEMENTS = {"≥": ">=", "≤": "<=", "→": "->", "←": "<-", "↔": "<->", "≠": "!=", "×": "x", "µ": "u",
                     "\u00a0": " "}


def _pdf_text(text: str, font: str | None = None, size: float = 0, width: float = 0) -> str:
    """Paragraph markup of plain text: cp1252-safe, escaped, "\n" as a line break. With a font and a width,
    a word too wide for the column (an identifier such as 'critical_sensitivity:Pneumothorax') is broken after
    ':', '_' or '/' instead of at an arbitrary character."""
    from xml.sax.saxutils import escape

    for old, new in _PDF_REPLACEMENTS.items():
        text = text.replace(old, new)
    text = text.encode("cp1252", errors="replace").decode("cp1252")
    if not font:
        return "<br/>".join(escape(line) for line in text.split("\n"))
    from reportlab.pdfbase.pdfmetrics import stringWidth

    def word(w: str) -> str:
        if stringWidth(w, font, size) <= width:
            return escape(w)
        lines, current = [], ""
        for piece in re.split(r"(?<=[:_/])", w):
            if current and stringWidth(current + piece, font, size) > width:
                lines.append(current)
                current = piece
            else:
                current += piece
        lines.append(current)
        return "<br/>".join(escape(line) for line in lines)

    return "<br/>".join(" ".join(word(w) for w in line.split(" ")) for line in text.split("\n"))


def render_pdf(doc: dict) -> bytes:
    from reportlab.lib import colors
    from reportlab.lib.enums import TA_LEFT
    from reportlab.lib.pagesizes import LETTER
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import inch
    from reportlab.pdfgen import canvas as rl_canvas
    from reportlab.platypus import CondPageBreak, KeepTogether, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    view = _view(doc)
    margin = 0.75 * inch
    width = LETTER[0] - 2 * margin
    tones = {"bad": (colors.HexColor("#f8d7da"), colors.HexColor("#842029")),
             "warn": (colors.HexColor("#fff3cd"), colors.HexColor("#664d03")),
             "good": (colors.HexColor("#d1e7dd"), colors.HexColor("#0f5132"))}
    body = ParagraphStyle("body", fontName="Helvetica", fontSize=9, leading=11.5, spaceAfter=4, alignment=TA_LEFT)
    styles = {
        "title": ParagraphStyle("title", parent=body, fontName="Helvetica-Bold", fontSize=15, leading=19,
                                spaceAfter=4),
        "subtitle": ParagraphStyle("subtitle", parent=body, fontSize=9.5, textColor=colors.HexColor("#444444"),
                                   spaceAfter=8),
        "h2": ParagraphStyle("h2", parent=body, fontName="Helvetica-Bold", fontSize=12, leading=15, spaceBefore=10,
                             spaceAfter=5, textColor=colors.HexColor("#1f3a5f")),
        "h3": ParagraphStyle("h3", parent=body, fontName="Helvetica-Bold", fontSize=9.5, leading=12, spaceBefore=6,
                             spaceAfter=3),
        "p": body,
        "note": ParagraphStyle("note", parent=body, fontName="Helvetica-Oblique", fontSize=8, leading=10,
                               textColor=colors.HexColor("#444444")),
        "li": ParagraphStyle("li", parent=body, leftIndent=12, bulletIndent=2, spaceAfter=2),
        "cell": ParagraphStyle("cell", parent=body, fontSize=7.5, leading=9, spaceAfter=0),
        "cellb": ParagraphStyle("cellb", parent=body, fontName="Helvetica-Bold", fontSize=7.5, leading=9,
                                spaceAfter=0),
        "mono": ParagraphStyle("mono", parent=body, fontName="Courier", fontSize=7, leading=9, spaceAfter=0),
    }

    def cell_flowable(cell: dict, col_width: float, header: bool = False, key: bool = False):
        tone = cell["tone"]
        bold = header or key or tone in ("strong", "bad", "good")
        style = styles["mono"] if tone == "mono" else styles["cellb"] if bold else styles["cell"]
        if tone in tones:
            style = ParagraphStyle(f"cell-{tone}-{style.name}", parent=style, textColor=tones[tone][1])
        markup = _pdf_text(cell["text"], style.fontName, style.fontSize, col_width - 6)
        return Paragraph(markup or "&nbsp;", style)

    def table_flowable(block: dict):
        data, commands = [], [
            ("GRID", (0, 0), (-1, -1), 0.4, colors.HexColor("#9aa5b1")),
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ("LEFTPADDING", (0, 0), (-1, -1), 3), ("RIGHTPADDING", (0, 0), (-1, -1), 3),
            ("TOPPADDING", (0, 0), (-1, -1), 2), ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
        ]
        offset = 0
        col_widths = [w * width for w in block["widths"]]
        if block["header"]:
            data.append([cell_flowable(_cell(h), col_widths[j], header=True) for j, h in enumerate(block["header"])])
            commands.append(("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e3e8ef")))
            offset = 1
        for r, row in enumerate(block["rows"]):
            data.append([cell_flowable(c, col_widths[j], key=block["kv"] and j == 0) for j, c in enumerate(row)])
            for j, c in enumerate(row):
                if c["tone"] in tones:
                    commands.append(("BACKGROUND", (j, r + offset), (j, r + offset), tones[c["tone"]][0]))
            if block["kv"]:
                commands.append(("BACKGROUND", (0, r + offset), (0, r + offset), colors.HexColor("#f1f3f6")))
        heights = [None] * offset + [26] * len(block["rows"]) if block["tall"] else None
        table = Table(data, colWidths=col_widths, rowHeights=heights, repeatRows=offset, hAlign="LEFT")
        table.setStyle(TableStyle(commands))
        return table

    def banner_flowable(block: dict):
        fill, ink = tones[block["tone"]]
        style = ParagraphStyle(f"banner-{block['tone']}", parent=body, fontName="Helvetica-Bold", textColor=ink,
                               spaceAfter=0)
        table = Table([[Paragraph(_pdf_text(block["text"]), style)]], colWidths=[width], hAlign="LEFT")
        table.setStyle(TableStyle([("BACKGROUND", (0, 0), (-1, -1), fill), ("BOX", (0, 0), (-1, -1), 0.8, ink),
                                   ("LEFTPADDING", (0, 0), (-1, -1), 6), ("RIGHTPADDING", (0, 0), (-1, -1), 6),
                                   ("TOPPADDING", (0, 0), (-1, -1), 5), ("BOTTOMPADDING", (0, 0), (-1, -1), 5)]))
        return table

    def flowables(block: dict) -> list:
        kind = block["kind"]
        if kind == "h":
            return [CondPageBreak(1.0 * inch), Paragraph(_pdf_text(block["text"]), styles["h3"])]
        if kind in ("p", "note"):
            return [Paragraph(_pdf_text(block["text"]), styles[kind])]
        if kind == "list":
            return [Paragraph(_pdf_text(item), styles["li"], bulletText="\u2022") for item in block["items"]]
        if kind == "banner":
            return [Spacer(1, 3), banner_flowable(block), Spacer(1, 5)]
        if kind == "table":
            return [table_flowable(block), Spacer(1, 6)]
        raise AssertionError(f"unknown block kind {kind}")

    story = [Paragraph(_pdf_text(view["title"]), styles["title"]),
             Paragraph(_pdf_text(view["subtitle"]), styles["subtitle"])]
    for block in view["cover"]:
        story += flowables(block)
    for section in view["sections"]:
        heading = Paragraph(_pdf_text(f"{section['number']}. {section['title']}"), styles["h2"])
        first, *rest = section["blocks"]
        lead = flowables(first)
        story += [CondPageBreak(1.5 * inch), KeepTogether([heading, *lead[:2]]), *lead[2:]]
        for block in rest:
            story += flowables(block)

    head, foot, rejected = _pdf_text(view["running_head"]), _pdf_text(view["footer"]), view["rejected"]

    class NumberedCanvas(rl_canvas.Canvas):
        """Draws the running head and 'page x of y' once the page count is known."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._pages = []

        def showPage(self):
            self._pages.append(dict(self.__dict__))
            self._startPage()

        def save(self):
            total = len(self._pages)
            for state in self._pages:
                self.__dict__.update(state)
                self.saveState()
                self.setFont("Helvetica-Bold" if rejected else "Helvetica", 7.5)
                self.setFillColor(tones["bad"][1] if rejected else colors.HexColor("#555555"))
                self.drawString(margin, LETTER[1] - 0.5 * inch, head)
                self.setFillColor(colors.HexColor("#555555"))
                self.setFont("Helvetica", 7.5)
                self.drawString(margin, 0.5 * inch, foot)
                self.drawRightString(LETTER[0] - margin, 0.5 * inch, f"Page {self._pageNumber} of {total}")
                self.restoreState()
                super().showPage()
            super().save()

    buffer = io.BytesIO()
    p = doc["packet"]
    pdf = SimpleDocTemplate(buffer, pagesize=LETTER, leftMargin=margin, rightMargin=margin, topMargin=margin,
                            bottomMargin=margin, invariant=1, pageCompression=0,
                            title=f"510(k) packet {p['model_name']} v{p['model_version']}",
                            author="rrg regulatory packet generator", creator="rrg regulatory packet generator",
                            subject=f"run {p['run_id']}, created {p['created']}")
    pdf.build(story, canvasmaker=NumberedCanvas)
    return buffer.getvalue()


# --------------------------------------------------------------------------- packet files

def packet_filename(model_name: str, model_version: str) -> str:
    return f"510k_packet_{model_name}_v{model_version}.zip"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sums(files: Mapping[str, bytes]) -> bytes:
    return "".join(f"{_sha256(files[name])}  {name}\n" for name in sorted(files)).encode("ascii")


def build_packet(inputs: PacketInputs, out_dir: str | os.PathLike) -> Path:
    """Validate, render and write `<out_dir>/510k_packet_<model_name>_v<version>.zip`; returns its path.

    Raises ValueError (naming the key) for bad inputs, before anything is written. An existing packet of the
    same name is replaced atomically.
    """
    doc = packet_document(inputs)
    files = {"packet.json": render_json(doc), "packet.html": render_html(doc), "packet.pdf": render_pdf(doc)}
    files[SUMS_FILE] = _sums(files)
    created = datetime.strptime(doc["packet"]["created"], "%Y-%m-%dT%H:%M:%SZ")
    date_time = (min(max(created.year, 1980), 2107), created.month, created.day, created.hour, created.minute,
                 created.second)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / packet_filename(inputs.model_name, inputs.model_version)
    staging = Path(tempfile.mkdtemp(prefix=".510k_packet.", suffix=".partial", dir=out))
    try:
        partial = staging / target.name
        with open(partial, "wb") as fh:
            with zipfile.ZipFile(fh, "w") as zf:
                for name in (*PACKET_FILES, SUMS_FILE):
                    info = zipfile.ZipInfo(name, date_time=date_time)
                    info.compress_type = zipfile.ZIP_DEFLATED
                    info.create_system = 3  # Unix, whatever the building platform
                    info.external_attr = 0o644 << 16
                    zf.writestr(info, files[name], compresslevel=9)
            fh.flush()
            os.fsync(fh.fileno())
        verify_packet(partial)
        os.chmod(partial, 0o644)
        os.replace(partial, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def verify_packet(zip_path: str | os.PathLike) -> dict:
    """Re-hash every file of a packet against its SHA256SUMS.

    Returns {"zip", "ok": True, "files": {name: sha256}, "model_name", "model_version", "run_id", "decision"}.
    Raises PacketVerificationError naming every missing, extra, duplicated or mismatching file.
    """
    path = Path(zip_path)
    if not path.is_file():
        raise PacketVerificationError(f"packet {path} does not exist")
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise PacketVerificationError(f"packet {path} is not a zip archive: {exc}") from exc
    problems = []
    with zf:
        names = zf.namelist()
        duplicated = sorted({n for n in names if names.count(n) > 1})
        problems += [f"{n}: appears more than once in the archive" for n in duplicated]
        if SUMS_FILE not in names:
            raise PacketVerificationError(f"packet {path.name} failed verification: {SUMS_FILE}: missing from the "
                                          "archive")
        expected = {}
        for n, line in enumerate(zf.read(SUMS_FILE).decode("ascii", errors="replace").splitlines(), 1):
            digest, sep, name = line.partition("  ")
            if not sep or not re.fullmatch(r"[0-9a-f]{64}", digest) or not name:
                problems.append(f"{SUMS_FILE}: line {n} is not '<sha256>  <file>'")
                continue
            expected[name] = digest
        actual = {}
        for name in PACKET_FILES:
            if name not in expected:
                problems.append(f"{name}: not listed in {SUMS_FILE}")
        for name in sorted(set(expected) | set(names) - {SUMS_FILE}):
            if name not in names:
                problems.append(f"{name}: missing from the archive")
                continue
            if name not in expected:
                problems.append(f"{name}: in the archive but not listed in {SUMS_FILE}")
                continue
            try:
                actual[name] = _sha256(zf.read(name))
            except (zipfile.BadZipFile, OSError, ValueError) as exc:  # a corrupted member fails its CRC check
                problems.append(f"{name}: unreadable ({exc})")
                continue
            if actual[name] != expected[name]:
                problems.append(f"{name}: sha256 mismatch (SHA256SUMS lists {expected[name][:16]}..., the file "
                                f"hashes to {actual[name][:16]}...)")
        if problems:
            raise PacketVerificationError(f"packet {path.name} failed verification: " + "; ".join(problems))
        meta = json.loads(zf.read("packet.json"))
    return {"zip": str(path), "ok": True, "files": actual,
            "model_name": meta["packet"]["model_name"], "model_version": meta["packet"]["model_version"],
            "run_id": meta["packet"]["run_id"], "decision": meta["gate"]["decision"]}


# --------------------------------------------------------------------------- versions

def software_versions(packages: tuple[str, ...] = ("numpy", "scikit-learn", "scipy", "pycocoevalcap", "tokenizers",
                                                   "reportlab", "Jinja2", "PyYAML")) -> dict:
    """The `versions` input from the running environment: python, torch, transformers, git commit, packages."""
    import platform
    import subprocess
    from importlib import metadata

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    def git(*args: str) -> str | None:
        try:
            result = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return result.stdout.strip() if result.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain")
    return {"python": platform.python_version(), "torch": version("torch"), "transformers": version("transformers"),
            "git_commit": commit or "unknown", "git_dirty": None if status is None else bool(status),
            "model_core": version("radiology-report-generator"),
            "packages": {name: version(name) for name in packages}}
