"""Assemble the packet inputs of one pipeline run from its step outputs (no metric is computed here)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from model_core.artifacts import (
    BIAS_AUDIT,
    BIAS_PLOT,
    CONFUSION_PLOT,
    DRIFT_CHECK,
    ERROR_SUMMARY,
    EVIDENCE_BIAS_DIR,
    EVIDENCE_ERRORS_DIR,
    METRICS,
    MODEL_CARD,
    PREVALENCE_PLOT,
    QUALITY_PLOT,
)
from model_core.files import sha256_file
from model_core.sbom import read_sbom
from model_core.signing import Signer
from regulatory.archive import PacketVerificationError, build_packet, read_packet_document
from regulatory.evidence import model_file_hashes, separation_evidence
from regulatory.inputs import PacketInputs

SPLITS_FILE = "splits.csv"  # the split assignment beside the images (model_core.data.validation reads it)


def data_summary(lineage: dict, model_dir: Path) -> dict:
    """Dataset description and hashes; studies per split come from the model card and the evaluation."""
    card = json.loads((model_dir / MODEL_CARD).read_text())
    splits_file = Path(lineage["root"]) / SPLITS_FILE
    summary = {
        "dataset": "IU X-ray (Open-i), Indiana University Chest X-ray Collection" if "iu_xray" in lineage["root"]
        else f"IU-format dataset at {Path(lineage['root']).name}",
        "licence": "CC BY-NC-ND 4.0 (non-commercial evaluation only)" if "iu_xray" in lineage["root"]
        else "institutional data (see data governance record)",
        "citation": "Demner-Fushman D, et al. J Am Med Inform Assoc. 2016;23(2):304-310. doi:10.1093/jamia/ocv080"
        if "iu_xray" in lineage["root"] else None,
        "label_source": "human MeSH annotation mapped to CheXpert-14 (model_core.labels.MESH_TO_CHEXPERT)",
        "manifest_sha256": lineage["manifest_sha256"],
        "image_digest": lineage["image_digest_sha256"],
        "studies_per_split": {"train": card["train_studies"], "val": card["val_studies"], "test": None},
    }
    if splits_file.is_file():
        summary["splits_sha256"] = sha256_file(splits_file)
    return summary


# What the packet reads from the clinical_evidence step's output: aggregates and charts only (never the per-study
# error_analysis.json or the example images, which stay in MLflow).
EVIDENCE_JSON = {"error_summary": f"{EVIDENCE_ERRORS_DIR}/{ERROR_SUMMARY}",
                 "bias_audit": f"{EVIDENCE_BIAS_DIR}/{BIAS_AUDIT}", "drift": DRIFT_CHECK}
EVIDENCE_FIGURES = tuple(f"{EVIDENCE_ERRORS_DIR}/{name}" for name in (CONFUSION_PLOT, PREVALENCE_PLOT, QUALITY_PLOT)) \
    + (f"{EVIDENCE_BIAS_DIR}/{BIAS_PLOT}",)


def read_evidence(evidence_dir: str | os.PathLike | None) -> dict:
    """The PacketInputs fields of a clinical_evidence output directory: error_summary, bias_audit, figures,
    monitoring (the drift check) and evidence_missing (the files expected but absent). None: not run."""
    if evidence_dir is None:
        return {}
    root = Path(evidence_dir)
    fields: dict = {"figures": {}, "evidence_missing": []}
    for key, rel in EVIDENCE_JSON.items():
        path = root / rel
        if not path.is_file():
            fields["evidence_missing"].append(path.name)
            continue
        try:
            fields[key] = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ValueError(f"clinical evidence file {rel} is not valid JSON") from None
    for rel in EVIDENCE_FIGURES:
        path = root / rel
        if path.is_file():
            fields["figures"][path.name] = path.read_bytes()
        else:
            fields["evidence_missing"].append(path.name)
    drift = fields.pop("drift", None)
    fields["monitoring"] = None if drift is None else {"drift": drift}
    return fields


def build_run_packet(run_id: str, model_name: str, model_dir: str | os.PathLike, evaluation_dir: str | os.PathLike,
                     decision_path: str | os.PathLike, lineage: dict, out_dir: str | os.PathLike,
                     champion_packet: str | os.PathLike | None = None, signer: Signer | None = None,
                     evidence_dir: str | os.PathLike | None = None) -> Path:
    """The packet of a pipeline run: created time, version, software provenance and SBOM come from the model
    directory (written at training), so a rebuild from the same run gives the same files; a model card without
    provenance, or a model without an SBOM, gives a packet that says "not recorded".

    champion_packet: the current champion's packet zip (None: no champion); it is verified (hashes and signature)
    before its packet.json is compared with this version; one that fails verification is not compared, and the
    packet says so (the PCCP's comparison with the champion then cannot be made: fail closed).
    signer: see `regulatory.archive.build_packet`.
    evidence_dir: the clinical_evidence step's output (error analysis, bias audit, drift check; `read_evidence`);
    None: not run, and the packet's error-analysis and bias sections, PCCP verdict and eSTAR manifest say so.
    """
    model_dir = Path(model_dir)
    card = json.loads((model_dir / MODEL_CARD).read_text())
    metrics = json.loads((Path(evaluation_dir) / METRICS).read_text())
    summary = data_summary(lineage, model_dir)
    summary["studies_per_split"]["test"] = metrics["n_studies"]
    sbom = read_sbom(model_dir)
    champion, champion_problem = None, None
    if champion_packet is not None:
        try:
            champion = read_packet_document(champion_packet)
        except PacketVerificationError as exc:
            # recorded in the packet: the problems only, digests and digit runs elided (they read as identifiers)
            problems = str(exc).split("failed verification: ", 1)[-1]
            champion_problem = re.sub(r"[0-9a-f]{8,}(\.\.\.)?|\d{6,}", "<digest>", problems)
    inputs = PacketInputs(
        run_id=run_id, model_name=model_name, model_version=card["version"], created=card["created"],
        metrics=metrics, gate=json.loads(Path(decision_path).read_text()), data_summary=summary,
        versions=card.get("provenance"), sbom=sbom, model_files=model_file_hashes(model_dir),
        test_separation=separation_evidence(lineage, evaluation_dir, sbom),
        champion=champion, champion_problem=champion_problem, **read_evidence(evidence_dir))
    return build_packet(inputs, out_dir, signer=signer)
