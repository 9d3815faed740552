"""The packet document: the validated, whitelisted content of one packet, as a dict.

`packet_document(inputs)` is the single source of the packet: packet.json is this dict (`render_json`), and the
HTML and PDF renderings are drawn from it. Every value in it came through a reader of `regulatory.inputs`.
"""

from __future__ import annotations

import json

from model_core.artifacts import BIAS_AUDIT, ERROR_SUMMARY
from regulatory.champion import champion_section, read_champion, read_model_files
from regulatory.clinical_evidence import bias_audit_section, error_analysis_section, read_figures
from regulatory.inputs import (
    SAFE_NAME_RE,
    PacketInputs,
    read_created,
    read_formatted,
    read_identifier,
    read_predicates,
    read_text,
    read_texts,
)
from regulatory.labeling import PHI_STATEMENT, section_ref
from regulatory.licences import sbom_section
from regulatory.pathway import estar_manifest, gmlp_mapping, pathway_section
from regulatory.pccp import pccp_section
from regulatory.risk import overall_risk, risk_rows
from regulatory.sections import data_section, gate_section, monitoring_section, performance_section, versions_section

SCHEMA = "rrg.510k-packet/3"   # 3: error analysis, bias audit, figures, drift-check details


def packet_document(inputs: PacketInputs, signed_by: dict | None = None) -> dict:
    """The validated, whitelisted content of the packet (what packet.json holds and both renderings show).

    signed_by: {"key_id", "development"} of the key that signs the packet's SHA256SUMS (stated in the packet;
    the signature itself is SHA256SUMS.sig beside it). Raises ValueError naming the first bad input key, without
    echoing a refused string.
    """
    if not isinstance(inputs, PacketInputs):
        raise ValueError(f"inputs must be a PacketInputs, got {type(inputs).__name__}")
    for key in ("model_name", "model_version"):
        read_identifier(getattr(inputs, key), key, "it becomes part of the packet's file name")
    run_id = read_identifier(inputs.run_id, "run_id")
    perf = performance_section(inputs.metrics)
    gate = gate_section(inputs.gate)
    data = data_section(inputs.data_summary, perf["n_studies"])
    monitoring = monitoring_section(inputs.monitoring)
    pathway = pathway_section(read_predicates(inputs.predicates))
    risk = risk_rows(perf, gate, monitoring, data)
    versions = versions_section(inputs.versions)
    model_files = read_model_files(inputs.model_files)
    champion = read_champion(inputs.champion)
    champion_problem = None if inputs.champion_problem is None else read_text(
        inputs.champion_problem[:1000], "champion_problem", 1000)
    figures = read_figures(inputs.figures)
    missing = [read_formatted(m, f"evidence_missing[{i}]", SAFE_NAME_RE, "not a file name")
               for i, m in enumerate(inputs.evidence_missing)]
    evidence = {"error_analysis": error_analysis_section(inputs.error_summary, figures, missing, ERROR_SUMMARY),
                "bias_audit": bias_audit_section(inputs.bias_audit, figures, missing, BIAS_AUDIT)}
    rejected = not gate["passed"]
    device = {
        "description": read_text(inputs.device_description, "device_description", 4000),
        "intended_use": read_text(inputs.intended_use, "intended_use", 2000),
        "indications": read_text(inputs.indications, "indications", 2000),
        "contraindications": read_texts(inputs.contraindications, "contraindications"),
        "warnings": read_texts(inputs.warnings, "warnings"),
        "technology": read_text(inputs.technology, "technology", 1000),
        "input": read_text(inputs.input_description, "input_description", 1000),
        "output": read_text(inputs.output_description, "output_description", 1000),
    }
    doc = {
        "schema": SCHEMA,
        "packet": {
            "run_id": run_id,
            "model_name": inputs.model_name,
            "model_version": inputs.model_version,
            "created": read_created(inputs.created),
            "status": "rejected" if rejected else "promoted",
            "predicates_complete": pathway["complete"],
        },
        "device": device,
        "pathway": pathway,
        "data": data,
        "performance": perf,
        "gate": gate,
        **evidence,
        "risk_analysis": {"rows": risk, "overall": overall_risk(risk, gate)},
        "monitoring": monitoring,
        "pccp": pccp_section(gate, device, inputs.test_separation, champion, champion_problem, evidence),
        "champion": champion_section(champion, perf, data, model_files, versions, champion_problem),
        "versions": versions,
        "model_files": model_files,
        "sbom": sbom_section(inputs.sbom, data),
        "signature": _signature_statement(signed_by),
        "release_statement": release_statement(inputs, gate),
        "phi_statement": PHI_STATEMENT,
    }
    doc["estar"] = estar_manifest(doc)
    doc["gmlp"] = gmlp_mapping(doc)
    return doc


def _signature_statement(signed_by: dict | None) -> dict:
    if signed_by is None:
        return {"signed": False, "key_id": None, "development": None}
    kid = signed_by["key_id"]
    if not isinstance(kid, str) or len(kid) != 64 or any(c not in "0123456789abcdef" for c in kid):
        raise ValueError("signed_by['key_id'] is not a SHA-256 hex digest")
    return {"signed": True, "key_id": kid, "development": bool(signed_by["development"]), "algorithm": "Ed25519",
            "file": "SHA256SUMS.sig"}


def release_statement(inputs: PacketInputs, gate: dict) -> str:
    """What the gate decision means for release: a rejected candidate, or 'passed, sign-off still required'."""
    who = f"{inputs.model_name} version {inputs.model_version} (run {inputs.run_id})"
    if not gate["passed"]:
        return (f"REJECTED CANDIDATE - NOT PROMOTED. {who} did not pass the release gate ({section_ref('gate')}). "
                "It is not promoted, must not be deployed, served or used clinically, and is not the subject device "
                "of any submission. This packet documents a rejected candidate for the design history file only.")
    return (f"{who} passed the automated release gate ({section_ref('gate')}); the gate decision is PROMOTE. "
            "Passing the gate is necessary but not sufficient for clinical release: release requires review and "
            "sign-off by Quality and Regulatory Affairs, including the items marked 'needs review' in "
            f"{section_ref('risk')}, and a PCCP verdict of 'within the PCCP' for an update of a cleared device.")


def render_json(doc: dict) -> bytes:
    """packet.json: sorted keys, UTF-8, no NaN (missing values are null), so the same document gives the same bytes."""
    return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
