"""The Predetermined Change Control Plan (FDA final guidance on PCCPs for AI-enabled device software functions,
December 2024): the planned modifications, the protocol that governs them, the impact assessment, a traceability
table, and for THIS version a computed verdict: is it within the PCCP?

A version is WITHIN the PCCP only when every criterion is met: the acceptance criteria (the release gate) were
met on every critical finding, the gate was not loosened below the PCCP's limits, the labeling (intended use,
indications, input, output) is the authorized one, and the test set was untouched by training (the split file
training recorded is the one evaluation used, no evaluated study is assigned to training or validation, the test
set is the champion's), and the clinical evidence was produced (error analysis and bias audit, with no estimable
subgroup whose critical-finding sensitivity falls below the gate's minimum). A criterion that fails, or that the
evidence cannot show, puts the version OUTSIDE the PCCP: fail closed.
"""

from __future__ import annotations

import hashlib
import json
from typing import Mapping

from model_core.chexpert import CRITICAL_FINDINGS
from regulatory.inputs import SHA256_RE, read_formatted, read_integer, read_mapping, read_text
from regulatory.labeling import (
    DEFAULT_CONTRAINDICATIONS,
    DEFAULT_INDICATIONS,
    DEFAULT_INPUT,
    DEFAULT_INTENDED_USE,
    DEFAULT_OUTPUT,
    section_ref,
)

# The acceptance criteria the PCCP authorizes: a gate may be stricter, never looser. (comparison, limit)
ACCEPTANCE_LIMITS = {
    "critical_sensitivity_min": (">=", 0.98),     # test sensitivity (CI lower bound) must exceed this
    "operating_point_sensitivity": (">=", 0.98),  # validation sensitivity the thresholds are chosen for
    "specificity_floor": (">=", 0.60),
    "hallucination_rate_max": ("<=", 0.03),
    "gate_on_ci_lower_bound": ("==", True),       # gate on the conservative end of each 95 % CI
    "min_positives": (">=", 10),                  # fewer test positives: fail closed
}
MET, NOT_MET, NOT_VERIFIABLE = "met", "not met", "not verifiable"

MODIFICATIONS = (
    "Periodic retraining (the monthly scheduled pipeline run) of the model weights - image encoder, projector, "
    "language model and detection head - on the training data plus newly acquired studies that passed data "
    "validation and whose reports were signed by radiologists.",
    "Re-selection of the critical-finding operating thresholds on the validation split, at the fixed target "
    "validation sensitivity.",
    "Re-fitting of the detection head's temperature (probability calibration) on the validation split.",
    "Re-training of the report tokenizer's vocabulary on the training reports (the report format is unchanged).",
)
NOT_CHANGED = (
    "Intended use, indications for use, contraindications and the intended users.",
    "Input modality: adult frontal (PA/AP) chest radiographs from DR/CR systems; no new views or modalities.",
    "Output types: the draft report sections, the 14 finding probabilities and the QA flags; no new findings "
    "claimed, no triage or notification output, nothing released without radiologist sign-off.",
    "Model family: vision transformer, projector and causal language model with the detection head.",
    "Acceptance criteria: release-gate thresholds may be tightened, never loosened below the limits below.",
    "The sequestered test set: never used for training, tuning or threshold selection; fixed across versions.",
)
PROTOCOL = (
    ("Data management", "New studies enter only through the validated data pipeline (expectation suite, PHI "
     "screen, checksums). The study-level split assignment is fixed; new studies are assigned to training or "
     "validation only, never to the test split. Training records the SHA-256 of the split file it read (in its "
     "SBOM); every version is checked against it (verdict below)."),
    ("Retraining practice", "The same seeded two-stage training recipe and configuration tree; the complete "
     "configuration, the software provenance and the SBOM are recorded with every model."),
    ("Performance evaluation", "On the sequestered test split, with study-level bootstrap and Wilson 95 % "
     "intervals. Acceptance criteria = the release gate: per critical finding, sensitivity CI lower bound above "
     "0.98 at the validation-chosen threshold with at least 10 test positives, specificity at least 0.60; "
     "hallucination rate CI upper bound below 0.03. Error analysis and bias audit of every version: no estimable "
     "subgroup (sex, age band, views, MeSH edge cases) below the critical sensitivity minimum."),
    ("Update procedures", "Only a version that passes the gate and is within this PCCP becomes champion (an "
     "audited alias move); the previous champion is kept for rollback; each version has a signed packet with a "
     "comparison against the champion it replaces; users are told of each update through the release notes."),
    ("Real-world performance monitoring", "The prediction-log monitors (image-embedding MMD drift, label drift, a "
     "CUSUM on the critical-finding rate, sensitivity on radiologist-validated studies) alert on degradation and "
     "can trigger retraining; a sensitivity below the paging threshold leads to review and rollback."),
)
IMPACT = (
    ("Retrained weights", "performance on the current population and equipment",
     "regression on a critical finding or a subgroup; more hallucinated findings",
     "per-finding gate on the CI lower bound; hallucination gate; comparison with the champion; rollback"),
    ("New operating thresholds", "keeps the target sensitivity as the data change",
     "higher flag rate (alert fatigue) or lower specificity", "specificity floor; review rate reported"),
    ("New calibration", "probabilities stay interpretable", "miscalibrated probabilities",
     "test ECE reported before and after temperature scaling"),
    ("New tokenizer vocabulary", "wording follows current reporting", "changed or missing wording",
     "language and clinical-efficacy metrics; hallucination gate"),
    ("Cumulative change across versions", "-", "slow drift that no single version shows",
     "every version on the same sequestered test set; metric deltas against the champion; drift monitors"),
)


def _traceability() -> list[list[str]]:
    gate, perf, champ = section_ref("gate"), section_ref("performance"), section_ref("champion")
    return [
        ["Retrained weights", "Data management; retraining practice; performance evaluation",
         "all release-gate checks pass; test set untouched", f"{perf}; {gate}; verdict below; {champ}"],
        ["Retrained weights (subgroups, failure modes)", "Performance evaluation",
         "no estimable subgroup below the critical sensitivity minimum",
         f"{section_ref('errors')}; {section_ref('bias')}"],
        ["New operating thresholds", "Performance evaluation", "sensitivity CI lower bound > 0.98; specificity "
         ">= 0.60", f"{perf} (critical findings); {gate}"],
        ["New calibration", "Performance evaluation", "reported (no gate)", f"{perf} (calibration)"],
        ["New tokenizer vocabulary", "Retraining practice; performance evaluation", "hallucination rate < 0.03",
         f"{perf}; {gate}"],
        ["Any update", "Update procedures; real-world monitoring", "signed packet; audited promotion; monitors",
         f"{section_ref('risk')}; {section_ref('release')}"],
    ]


def labeling_sha256(device: Mapping) -> str:
    """SHA-256 over the labeling that defines intended use: intended use, indications, contraindications,
    input and output (as the packet's device section holds them)."""
    parts = {k: device[k] for k in ("intended_use", "indications", "contraindications", "input", "output")}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode("utf-8")).hexdigest()


AUTHORIZED_LABELING_SHA256 = labeling_sha256({
    "intended_use": DEFAULT_INTENDED_USE, "indications": DEFAULT_INDICATIONS,
    "contraindications": list(DEFAULT_CONTRAINDICATIONS), "input": DEFAULT_INPUT, "output": DEFAULT_OUTPUT})


def read_test_separation(raw) -> dict | None:
    """The test-set separation evidence (`regulatory.evidence.separation_evidence`); None when not supplied."""
    if raw is None:
        return None
    r = read_mapping(raw, "test_separation")
    out = {"split_file": read_text(r.get("split_file") or "not recorded", "test_separation['split_file']", 100)}
    for key in ("split_sha256_at_training", "split_sha256_at_evaluation", "test_studies_sha256"):
        value = r.get(key)
        out[key] = None if value is None else read_formatted(value, f"test_separation[{key!r}]", SHA256_RE,
                                                             "not a SHA-256 hex digest").lower()
    for key in ("studies_in_split_file", "conflicting_studies", "evaluated_studies", "evaluated_in_training_splits",
                "evaluated_outside_test_split"):
        out[key] = read_integer(r.get(key), f"test_separation[{key!r}]", optional=True)
    return out


def _criterion(name: str, status: str, evidence: str) -> dict:
    return {"criterion": name, "status": status, "evidence": evidence}


def _acceptance(gate: dict) -> dict:
    name = "Acceptance criteria met (release gate)"
    checks = gate["checks"]
    missing = [f"{metric} of {finding}" for finding in CRITICAL_FINDINGS for metric in ("sensitivity", "specificity")
               if not any(c["finding"] == finding and c["metric"] == metric for c in checks)]
    if not any("hallucination" in c["metric"] for c in checks):
        missing.append("hallucination rate")
    failed = [c["name"] + (f" ({c['finding']})" if c["finding"] and c["finding"] not in c["name"] else "")
              for c in checks if not c["passed"]]
    if missing or failed or not gate["passed"]:
        problems = ([f"failed gate checks: {'; '.join(failed)}"] if failed else []) + (
            [f"the gate did not check: {', '.join(missing)}"] if missing else [])
        return _criterion(name, NOT_MET, ". ".join(problems) or "the decision is reject")
    return _criterion(name, MET, f"all {len(checks)} gate checks passed; decision {gate['decision']}")


def _limits(gate: dict) -> dict:
    name = "Acceptance criteria not loosened (gate within the PCCP limits)"
    config, problems, unknown = gate["config"], [], []
    for key, (comparison, limit) in ACCEPTANCE_LIMITS.items():
        value = config.get(key)
        if value is None:
            unknown.append(key)
            continue
        ok = {">=": lambda v: v >= limit, "<=": lambda v: v <= limit, "==": lambda v: v == limit}[comparison](value)
        if not ok:
            problems.append(f"{key} = {value} (PCCP: {comparison} {limit})")
    if problems:
        return _criterion(name, NOT_MET, "loosened: " + "; ".join(problems))
    if unknown:
        return _criterion(name, NOT_VERIFIABLE, "the gate decision does not record: " + ", ".join(unknown))
    return _criterion(name, MET, "; ".join(f"{k} {c} {v}" for k, (c, v) in ACCEPTANCE_LIMITS.items()))


def _labeling(labeling: str, champion_labeling: str | None) -> dict:
    name = "Intended use unchanged (labeling, input, output)"
    if labeling != AUTHORIZED_LABELING_SHA256:
        return _criterion(name, NOT_MET, "the packet's intended use, indications, contraindications, input or "
                                         "output differ from the labeling this PCCP authorizes")
    if champion_labeling is not None and champion_labeling != labeling:
        return _criterion(name, NOT_MET, "the labeling differs from the champion's")
    return _criterion(name, MET, f"labeling SHA-256 {labeling[:16]}... is the authorized one"
                      + ("" if champion_labeling is None else " and the champion's"))


def _separation(sep: dict | None, champion_test: str | None, champion_problem: str | None) -> dict:
    name = "Test set untouched by training"
    if champion_problem is not None:
        return _criterion(name, NOT_VERIFIABLE, "the champion's packet failed verification, so the test set cannot "
                                                "be compared with the champion's")
    if sep is None:
        return _criterion(name, NOT_VERIFIABLE, "no test-set separation evidence was supplied")
    if sep["split_sha256_at_training"] is None:
        return _criterion(name, NOT_VERIFIABLE, "the split assignment training read was not recorded with the "
                                                "model (no split-file hash in its SBOM)")
    if sep["split_sha256_at_evaluation"] != sep["split_sha256_at_training"]:
        return _criterion(name, NOT_MET, f"{sep['split_file']} changed between training and evaluation (SHA-256 "
                                         "differs)")
    if sep["conflicting_studies"]:
        return _criterion(name, NOT_MET, f"{sep['conflicting_studies']} studies have more than one split in "
                                         f"{sep['split_file']}")
    if sep["evaluated_studies"] is None:
        return _criterion(name, NOT_VERIFIABLE, "the list of evaluated studies is not available")
    if sep["evaluated_in_training_splits"]:
        return _criterion(name, NOT_MET, f"{sep['evaluated_in_training_splits']} of {sep['evaluated_studies']} "
                                         "evaluated studies are assigned to training or validation")
    if sep["evaluated_outside_test_split"]:
        return _criterion(name, NOT_MET, f"{sep['evaluated_outside_test_split']} evaluated studies are not in the "
                                         "test split")
    if champion_test is not None and sep["test_studies_sha256"] != champion_test:
        return _criterion(name, NOT_MET, "the evaluated test set differs from the champion's (the sequestered test "
                                         "set is fixed across versions)")
    return _criterion(name, MET, f"split file SHA-256 recorded at training = at evaluation; "
                                 f"{sep['evaluated_studies']} evaluated studies, none assigned to training or "
                                 "validation" + ("" if champion_test is None else "; same test set as the champion"))


def _clinical_evidence(evidence: dict | None) -> dict:
    name = "Clinical evidence produced (error analysis, bias audit)"
    if evidence is None:
        return _criterion(name, NOT_VERIFIABLE, "no clinical evidence was supplied with this packet")
    errors, bias = evidence["error_analysis"], evidence["bias_audit"]
    absent = [f"{what} {s['status']}" + (f" ({', '.join(s['missing'])})" if s["missing"] else "")
              for what, s in (("error analysis", errors), ("bias audit", bias)) if s["status"] != "included"]
    if absent:
        return _criterion(name, NOT_VERIFIABLE, "; ".join(absent))
    if bias["flagged"]:
        return _criterion(name, NOT_MET, "subgroups below the critical sensitivity minimum: " + "; ".join(
            f"{f['finding']} in {f['attribute']} = {f['group']}" for f in bias["flagged"]))
    return _criterion(name, MET, f"error analysis of {errors['studies']} studies ({section_ref('errors')}); bias "
                                 f"audit with no subgroup flagged ({section_ref('bias')})")


def pccp_verdict(gate: dict, labeling: str, separation: dict | None, champion: dict | None = None,
                 champion_problem: str | None = None, evidence: dict | None = None) -> dict:
    """{"within", "verdict", "criteria": [{criterion, status, evidence}], "statement"} for one version.

    gate: the packet's gate section; labeling: `labeling_sha256` of its device section; separation: read by
    `read_test_separation`; champion: the champion diff's reference ({"labeling_sha256", "test_studies_sha256"});
    champion_problem: why the champion's packet could not be used (its comparison then cannot be made);
    evidence: {"error_analysis", "bias_audit"} sections of the packet (`regulatory.clinical_evidence`), None: none.
    """
    champion = champion or {}
    criteria = [_acceptance(gate), _limits(gate), _labeling(labeling, champion.get("labeling_sha256")),
                _separation(separation, champion.get("test_studies_sha256"), champion_problem),
                _clinical_evidence(evidence)]
    within = all(c["status"] == MET for c in criteria)
    if within:
        statement = ("WITHIN the PCCP: this version may be released under the authorized change control plan "
                     "(after Quality and Regulatory sign-off).")
    else:
        reasons = "; ".join(f"{c['criterion']}: {c['status']}" for c in criteria if c["status"] != MET)
        statement = ("OUTSIDE the PCCP: this version may not be released under the change control plan; it needs "
                     f"a new marketing submission or must not be released. ({reasons})")
    return {"within": within, "verdict": "within the PCCP" if within else "outside the PCCP", "criteria": criteria,
            "statement": statement}


def pccp_section(gate: dict, device: dict, separation_raw, champion: dict | None,
                 champion_problem: str | None = None, evidence: dict | None = None) -> dict:
    """The PCCP section of the packet document (fixed plan text and this version's computed verdict)."""
    labeling = labeling_sha256(device)
    separation = read_test_separation(separation_raw)
    reference = None if champion is None else champion.get("pccp_reference")
    return {
        "modifications": list(MODIFICATIONS), "not_changed": list(NOT_CHANGED),
        "protocol": [{"component": c, "text": t} for c, t in PROTOCOL],
        "acceptance_limits": {k: {"comparison": c, "limit": v} for k, (c, v) in ACCEPTANCE_LIMITS.items()},
        "impact": [{"modification": m, "benefit": b, "risk": r, "mitigation": x} for m, b, r, x in IMPACT],
        "traceability": [{"modification": m, "protocol": p, "acceptance": a, "evidence": e}
                         for m, p, a, e in _traceability()],
        "labeling_sha256": labeling,
        "authorized_labeling_sha256": AUTHORIZED_LABELING_SHA256,
        "test_separation": separation,
        "verdict": pccp_verdict(gate, labeling, separation, reference, champion_problem, evidence),
    }
