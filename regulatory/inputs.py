"""What a packet is built from (`PacketInputs`), the predicate device entry, and the readers that let a value in.

Each reader checks one value's type, range or format and names the exact key in its error, e.g.
"metrics['critical_findings']['Pneumothorax']['sensitivity']", without echoing a string it refuses.

Free text (gate reasons, dataset description, labeling text, predicate descriptions) is screened with
`model_core.phi` for report text and patient identifiers. Values that have a format of their own (run ids,
K-numbers, dates, hashes, timestamps, versions, commits) are checked against that strict format instead: a
K-number or a commit hash holds a long run of digits and a timestamp holds a calendar date, which the identifier
screen rightly refuses in free text.
"""

from __future__ import annotations

import math
import numbers
import os
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import yaml

from model_core.chexpert import CRITICAL_FINDINGS
from model_core.phi import describe, find_phi, find_report_text
from regulatory.labeling import (
    DEFAULT_CONTRAINDICATIONS,
    DEFAULT_DEVICE_DESCRIPTION,
    DEFAULT_INDICATIONS,
    DEFAULT_INPUT,
    DEFAULT_INTENDED_USE,
    DEFAULT_OUTPUT,
    DEFAULT_SE_DISCUSSION,
    DEFAULT_TECHNOLOGY,
    DEFAULT_WARNINGS,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PREDICATE_PATH = REPO_ROOT / "configs" / "predicate.yaml"

PLACEHOLDER_RE = re.compile(r"<<FILL\b[^>]*>>")
SAFE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")
SHA256_RE = re.compile(r"^(sha256:)?[0-9a-fA-F]{64}$")
K_NUMBER_RE = re.compile(r"^(K\d{6}|DEN\d{6})$")
ISO_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+!_-]{0,63}$")  # PEP 440 and local labels: 2.13.0+cpu
PACKAGE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
GIT_COMMIT_RE = re.compile(r"^[0-9a-f]{7,40}$")
NOT_INSTALLED = "not installed"  # what model_core.provenance records for a package that is absent
UNKNOWN_COMMIT = "unknown"       # what model_core.provenance records outside a git checkout


def _default_predicates() -> list[dict]:
    return load_predicates()


@dataclass
class PacketInputs:
    """Everything the packet documents; the generator adds nothing measured of its own.

    run_id, model_name, model_version: the evaluated candidate (letters, digits and . _ + - only; model_name and
        model_version end up in the file name).
    created: ISO 8601 timestamp with a timezone (or an aware datetime), taken from the run, so that a rebuild
        is byte-identical.
    metrics: the dict `model_core.evaluation.evaluate_model` returns (see the module docstring of
        `model_core.evaluation`); unknown keys are ignored, never rendered.
    gate: the release-gate decision {"passed", "decision", "reasons", "checks", "config"}.
    data_summary: {"dataset", "licence", "studies_per_split": {"train", "val", "test"}, "manifest_sha256",
        "image_digest"} plus optional "citation", "label_source", "images_per_split", "splits_sha256".
    versions: the software provenance recorded with the model at training time (`model_card["provenance"]`,
        from `model_core.provenance.collect_provenance`): {"python", "model_core", "git_commit"} plus optional
        "git_dirty" (bool or None) and "packages" {name: version}. None: not recorded (the packet says so; it
        never samples the environment it is built in).
    monitoring: optional risk-control evidence, {"drift": {"method", "statistic", "p_value", "threshold",
        "drift_detected"} plus optional "alpha", "status", "window", "n_reference", "permutations", "design" (the
        pipeline passes `monitoring.holdout.holdout_drift_check`'s drift_check.json), "phi": {"passed",
        "checks_run", "method"}}; absent items make their risk "needs review".
    predicates: the cleared triage devices cited for the detection-head claims (default: `configs/predicate.yaml`).
    sbom: the CycloneDX SBOM recorded with the model at training (`model_core.sbom`), None: not recorded.
    model_files: {file name: SHA-256} of the model directory's weights, configs and thresholds.
    test_separation: evidence that the test set was untouched by training (`regulatory.evidence.separation_evidence`).
    champion: the packet.json document of the current champion's packet (already verified), None: no champion.
    champion_problem: why the champion's packet could not be used (it failed verification); None otherwise.
    error_summary: the error analysis's aggregates (`model_core.evaluation.error_analysis` ERROR_SUMMARY: no study
        id, no text); None: not run (the packet says so).
    bias_audit: the bias audit (`model_core.evaluation.bias_audit` BIAS_AUDIT: counts and rates per subgroup);
        None: not run.
    figures: {file name: PNG bytes} of the evidence charts (`regulatory.clinical_evidence.PACKET_FIGURES`); the
        example images with heatmaps (patient images) are refused.
    evidence_missing: file names of the clinical evidence that was expected but absent (the packet names them,
        and the evidence does not count).
    """

    run_id: str
    model_name: str
    model_version: str
    created: str | datetime
    metrics: Mapping[str, Any]
    gate: Mapping[str, Any]
    data_summary: Mapping[str, Any]
    versions: Mapping[str, Any] | None
    monitoring: Mapping[str, Any] | None = None
    predicates: Sequence[Mapping[str, Any]] = field(default_factory=_default_predicates)
    sbom: Mapping[str, Any] | None = None
    model_files: Mapping[str, str] | None = None
    test_separation: Mapping[str, Any] | None = None
    champion: Mapping[str, Any] | None = None
    champion_problem: str | None = None
    error_summary: Mapping[str, Any] | None = None
    bias_audit: Mapping[str, Any] | None = None
    figures: Mapping[str, bytes] | None = None
    evidence_missing: Sequence[str] = ()
    device_description: str = DEFAULT_DEVICE_DESCRIPTION
    intended_use: str = DEFAULT_INTENDED_USE
    indications: str = DEFAULT_INDICATIONS
    contraindications: tuple[str, ...] = DEFAULT_CONTRAINDICATIONS
    warnings: tuple[str, ...] = DEFAULT_WARNINGS
    technology: str = DEFAULT_TECHNOLOGY
    input_description: str = DEFAULT_INPUT
    output_description: str = DEFAULT_OUTPUT
    equivalence_discussion: str = DEFAULT_SE_DISCUSSION


# --------------------------------------------------------------------------- predicates

PREDICATE_FIELDS = ("device_name", "k_number", "manufacturer", "decision_date", "regulation_number",
                    "product_code", "device_class", "claims", "cleared_for", "intended_use", "technology", "input",
                    "output", "performance", "verification")
_PREDICATE_REQUIRED = ("device_name", "k_number", "manufacturer", "claims", "cleared_for", "intended_use", "output",
                       "performance", "verification")


def load_predicates(path: str | os.PathLike | None = None) -> list[dict]:
    """The `predicates:` list of a YAML file (default `configs/predicate.yaml`), each entry validated."""
    path = Path(path) if path is not None else DEFAULT_PREDICATE_PATH
    if not path.is_file():
        raise ValueError(f"predicate file {path} does not exist")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"predicate file {path} is not valid YAML: {exc}") from exc
    if not isinstance(loaded, dict) or not isinstance(loaded.get("predicates"), list) or not loaded["predicates"]:
        raise ValueError(f"predicate file {path} has no top-level 'predicates' list")
    return read_predicates(loaded["predicates"], f"{path.name}: predicates")


def read_predicates(raw, where: str = "predicates") -> list[dict]:
    if isinstance(raw, (str, bytes, Mapping)) or not isinstance(raw, Sequence):
        raise ValueError(f"{where} must be a list of predicate entries, got {type(raw).__name__}")
    return [read_predicate(entry, f"{where}[{i}]") for i, entry in enumerate(raw)]


def read_predicate(raw, where: str = "predicate") -> dict:
    """One predicate entry: known fields only; the K-number is a <<FILL ...>> placeholder or a real K-number
    (never guessed), the decision date a placeholder or YYYY-MM-DD, `claims` the critical findings of this
    device's detection head the predicate is cited for, the rest screened free text."""
    raw = read_mapping(raw, where)
    out = {}
    for key in PREDICATE_FIELDS:
        if key not in raw or raw[key] is None:
            if key in _PREDICATE_REQUIRED:
                raise ValueError(f"{where}[{key!r}] is missing (required)")
            continue
        value = raw[key]
        if isinstance(value, (date, int)) and not isinstance(value, bool):  # YAML: 2019-05-01, class 2
            value = value.isoformat() if isinstance(value, date) else str(value)
        field_where = f"{where}[{key!r}]"
        if key == "claims":
            if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
                raise ValueError(f"{field_where} must be a non-empty list of critical findings")
            unknown = [i for i, v in enumerate(value) if v not in CRITICAL_FINDINGS]
            if unknown:
                raise ValueError(f"{field_where}[{unknown[0]}] is not one of the critical findings "
                                 f"{list(CRITICAL_FINDINGS)}")
            out[key] = [f for f in CRITICAL_FINDINGS if f in value]
        elif key == "k_number" and isinstance(value, str) and not PLACEHOLDER_RE.search(value):
            out[key] = read_formatted(value.strip(), field_where, K_NUMBER_RE,
                                      "neither a <<FILL ...>> placeholder nor a K-number (K + 6 digits) or De Novo "
                                      "number (DEN + 6 digits); never guess one")
        elif key == "decision_date" and isinstance(value, str) and ISO_DATE_RE.match(value.strip()):
            out[key] = value.strip()  # a date is refused as an identifier in free text: YYYY-MM-DD is let through
        else:
            out[key] = read_text(value, field_where, 2000)
    return out


def predicate_placeholders(predicate: Mapping[str, Any]) -> list[str]:
    """Names of the predicate fields that still hold a <<FILL ...>> placeholder."""
    return [key for key in PREDICATE_FIELDS
            if isinstance(predicate.get(key), str) and PLACEHOLDER_RE.search(predicate[key])]


# --------------------------------------------------------------------------- readers

def read_mapping(value, where: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be a dict, got {type(value).__name__}")
    return value


def read_required(mapping: Mapping, key: str, where: str):
    if key not in mapping:
        raise ValueError(f"{where}[{key!r}] is missing (required)")
    return mapping[key]


def read_number(value, where: str, unit: bool = False) -> float | None:
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


def read_integer(value, where: str, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{where} must be an integer, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{where} must not be negative, got {value}")
    return int(value)


def read_bool(value, where: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{where} must be true or false, got {type(value).__name__}")
    return bool(value)


def read_text(value, where: str, max_len: int = 200) -> str:
    """Free text that may enter the packet: type- and length-checked, then screened for report text and patient
    identifiers (`model_core.phi`). The error names the field and what was found, never the text."""
    if not isinstance(value, str):
        raise ValueError(f"{where} must be a string, got {type(value).__name__}")
    if len(value) > max_len:
        raise ValueError(f"{where} is {len(value)} characters long (at most {max_len}); free text such as "
                         "report content must not enter the packet")
    found = find_report_text(value) + find_phi(value)
    if found:
        raise ValueError(f"{where} looks like it contains {'; '.join(describe(name) for name in found)}; the "
                         "packet must not contain report text or patient identifiers")
    return value


def read_texts(value, where: str, max_len: int = 1000) -> list[str]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ValueError(f"{where} must be a list of strings, got {type(value).__name__}")
    return [read_text(item, f"{where}[{i}]", max_len) for i, item in enumerate(value)]


def read_formatted(value, where: str, pattern: re.Pattern, expected: str) -> str:
    """A string in a strict format of its own (K-number, date, version, commit), which the free-text screen
    would misread as an identifier; the error says what was expected, not what was given."""
    if not isinstance(value, str):
        raise ValueError(f"{where} must be a string, got {type(value).__name__}")
    if not pattern.match(value):
        raise ValueError(f"{where} is {expected}")
    return value


def read_identifier(value, where: str, purpose: str = "") -> str:
    """A run id, model name or version: 1-100 letters, digits and . _ + -."""
    return read_formatted(value, where, SAFE_NAME_RE,
                          "not 1-100 characters of letters, digits and . _ + -" + (f" ({purpose})" if purpose else ""))


def read_ci(raw, where: str, require_bounds: bool = True) -> dict:
    """{value, ci_low, ci_high, n_boot} of a metric (rates in [0, 1])."""
    raw = read_mapping(raw, where)
    keys = ("value", "ci_low", "ci_high") if require_bounds else ("value",)
    for key in keys:
        read_required(raw, key, where)
    return {
        "value": read_number(raw["value"], f"{where}['value']", unit=True),
        "ci_low": read_number(raw.get("ci_low"), f"{where}['ci_low']", unit=True),
        "ci_high": read_number(raw.get("ci_high"), f"{where}['ci_high']", unit=True),
        "n_boot": read_integer(raw.get("n_boot"), f"{where}['n_boot']", optional=True),
    }


def read_interval(raw, where: str) -> list[float | None]:
    if raw is None:
        return [None, None]
    if isinstance(raw, (str, bytes)) or not isinstance(raw, (list, tuple)) or len(raw) != 2:
        raise ValueError(f"{where} must be a [low, high] pair (or None), got {type(raw).__name__}")
    return [read_number(raw[0], f"{where}[0]", unit=True), read_number(raw[1], f"{where}[1]", unit=True)]


def read_created(value) -> str:
    """The packet's timestamp as 'YYYY-MM-DDTHH:MM:SSZ' (UTC)."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("created is not an ISO 8601 timestamp (e.g. '2025-01-31T12:00:00Z')") from None
    if not isinstance(value, datetime):
        raise ValueError(f"created must be an ISO 8601 string or a datetime, got {type(value).__name__}")
    if value.tzinfo is None:
        raise ValueError("created must carry a timezone (e.g. '2025-01-31T12:00:00Z'), so the packet is unambiguous")
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
