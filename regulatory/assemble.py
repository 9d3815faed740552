"""Assemble the packet inputs of one pipeline run from its step outputs (no metric is computed here)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from model_core.artifacts import METRICS, MODEL_CARD
from model_core.files import sha256_file
from regulatory.archive import build_packet
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


def build_run_packet(run_id: str, model_name: str, model_dir: str | os.PathLike, evaluation_dir: str | os.PathLike,
                     decision_path: str | os.PathLike, lineage: dict, out_dir: str | os.PathLike) -> Path:
    """The 510(k) packet of a pipeline run: created time, version and software provenance come from the model
    card (written at training), so a rebuild from the same run gives the same files; a model card without
    provenance gives a packet whose versions are "not recorded"."""
    model_dir = Path(model_dir)
    card = json.loads((model_dir / MODEL_CARD).read_text())
    metrics = json.loads((Path(evaluation_dir) / METRICS).read_text())
    summary = data_summary(lineage, model_dir)
    summary["studies_per_split"]["test"] = metrics["n_studies"]
    inputs = PacketInputs(
        run_id=run_id, model_name=model_name, model_version=card["version"], created=card["created"],
        metrics=metrics, gate=json.loads(Path(decision_path).read_text()), data_summary=summary,
        versions=card.get("provenance"))
    return build_packet(inputs, out_dir)
