"""The packet document: the validated, whitelisted content of one packet, as a dict.

`packet_document(inputs)` is the single source of the packet: packet.json is this dict (`render_json`), and the
HTML and PDF renderings are drawn from it. Every value in it came through a reader of `regulatory.inputs`.
"""

from __future__ import annotations

import json

from regulatory.inputs import (
    PacketInputs,
    predicate_placeholders,
    read_created,
    read_identifier,
    read_predicate,
    read_text,
    read_texts,
)
from regulatory.labeling import PHI_STATEMENT
from regulatory.risk import overall_risk, risk_rows
from regulatory.sections import data_section, gate_section, monitoring_section, performance_section, versions_section

SCHEMA = "rrg.510k-packet/1"


def packet_document(inputs: PacketInputs) -> dict:
    """The validated, whitelisted content of the packet (what packet.json holds and both renderings show).

    Raises ValueError naming the first bad input key, without echoing a refused string.
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
    predicate = read_predicate(inputs.predicate)
    placeholders = predicate_placeholders(predicate)
    risk = risk_rows(perf, gate, monitoring, data)
    rejected = not gate["passed"]
    return {
        "schema": SCHEMA,
        "packet": {
            "run_id": run_id,
            "model_name": inputs.model_name,
            "model_version": inputs.model_version,
            "created": read_created(inputs.created),
            "status": "rejected" if rejected else "promoted",
            "predicate_complete": not placeholders,
        },
        "device": {
            "description": read_text(inputs.device_description, "device_description", 4000),
            "intended_use": read_text(inputs.intended_use, "intended_use", 2000),
            "indications": read_text(inputs.indications, "indications", 2000),
            "contraindications": read_texts(inputs.contraindications, "contraindications"),
            "warnings": read_texts(inputs.warnings, "warnings"),
            "technology": read_text(inputs.technology, "technology", 1000),
            "input": read_text(inputs.input_description, "input_description", 1000),
            "output": read_text(inputs.output_description, "output_description", 1000),
        },
        "predicate": {**predicate, "placeholders": placeholders,
                      "equivalence_discussion": read_text(inputs.equivalence_discussion, "equivalence_discussion",
                                                          2000)},
        "data": data,
        "performance": perf,
        "gate": gate,
        "risk_analysis": {"rows": risk, "overall": overall_risk(risk, gate)},
        "monitoring": monitoring,
        "versions": versions_section(inputs.versions),
        "release_statement": release_statement(inputs, gate),
        "phi_statement": PHI_STATEMENT,
    }


def release_statement(inputs: PacketInputs, gate: dict) -> str:
    """What the gate decision means for release: a rejected candidate, or 'passed, sign-off still required'."""
    who = f"{inputs.model_name} version {inputs.model_version} (run {inputs.run_id})"
    if not gate["passed"]:
        return (f"REJECTED CANDIDATE - NOT PROMOTED. {who} did not pass the release gate (Section 6). It is not "
                "promoted, must not be deployed, served or used clinically, and is not the subject device of any "
                "submission. This packet documents a rejected candidate for the design history file only.")
    return (f"{who} passed the automated release gate (Section 6); the gate decision is PROMOTE. "
            "Passing the gate is necessary but not sufficient for clinical release: release requires review and "
            "sign-off by Quality and Regulatory Affairs, including the items marked 'needs review' in Section 7.")


def render_json(doc: dict) -> bytes:
    """packet.json: sorted keys, UTF-8, no NaN (missing values are null), so the same document gives the same bytes."""
    return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
