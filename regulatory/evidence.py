"""Evidence read from a run's files for the packet: model file hashes, and whether the test set was untouched by
training. Study ids are read to count, never copied: only counts and a digest of the evaluated set leave here.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

from model_core.artifacts import DETECTION, MODEL_CONFIG, MODEL_WEIGHTS, PREDICTIONS, RUN_CONFIG
from model_core.files import sha256_file
from model_core.sbom import SPLITS_FILE, SPLITS_ROLE, recorded_data_hash

TEST_SPLIT, TRAINING_SPLITS = "test", ("train", "val")


def model_file_hashes(model_dir: str | os.PathLike) -> dict[str, str]:
    """{file name: SHA-256} of the weights, model config, run config and detection thresholds present."""
    model_dir = Path(model_dir)
    return {name: sha256_file(model_dir / name) for name in (MODEL_WEIGHTS, MODEL_CONFIG, DETECTION, RUN_CONFIG)
            if (model_dir / name).is_file()}


def _split_assignment(path: Path) -> tuple[dict[str, str], int]:
    """uid → split of a split file (splits.csv, or a manifest's uid/split columns; a manifest repeats a study on
    each image row) and the number of studies given more than one split (or listed twice in splits.csv)."""
    assignment: dict[str, str] = {}
    conflicting: set[str] = set()
    per_study = path.name == SPLITS_FILE
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"uid", "split"} <= set(reader.fieldnames):
            raise ValueError(f"{path.name} has no uid and split columns")
        for row in reader:
            uid, split = row["uid"], row["split"]
            if uid in assignment and (per_study or assignment[uid] != split):
                conflicting.add(uid)
            assignment.setdefault(uid, split)
    return assignment, len(conflicting)


def _evaluated_studies(evaluation_dir: Path) -> list[str] | None:
    path = evaluation_dir / PREDICTIONS
    if not path.is_file():
        return None
    ids = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    ids.append(str(json.loads(line)["study_id"]))
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise ValueError(f"{PREDICTIONS} line {n} has no study_id") from None
    return ids


def separation_evidence(lineage: dict, evaluation_dir: str | os.PathLike, sbom: dict | None) -> dict:
    """Evidence for the PCCP criterion "test set untouched by training".

    The split file is `<root>/splits.csv`, else the manifest (`lineage["manifest"]`, default
    `<root>/manifest.csv`), as training reads it; its SHA-256 now is compared (by `regulatory.pccp`) with the one
    training recorded in the SBOM, and every evaluated study (evaluation's predictions) must be in its test split.
    """
    root = Path(lineage["root"])
    split_path = root / SPLITS_FILE
    if not split_path.is_file():
        split_path = Path(lineage.get("manifest") or root / "manifest.csv")
    recorded = recorded_data_hash(sbom, SPLITS_ROLE)
    out = {"split_file": split_path.name, "split_sha256_at_training": recorded[1] if recorded else None,
           "split_sha256_at_evaluation": None, "studies_in_split_file": None, "conflicting_studies": None,
           "evaluated_studies": None, "evaluated_in_training_splits": None, "evaluated_outside_test_split": None,
           "test_studies_sha256": None}
    if not split_path.is_file():
        return out
    assignment, conflicting = _split_assignment(split_path)
    out.update(split_sha256_at_evaluation=sha256_file(split_path), studies_in_split_file=len(assignment),
               conflicting_studies=conflicting)
    evaluated = _evaluated_studies(Path(evaluation_dir))
    if evaluated is not None:
        unique = sorted(set(evaluated))
        out.update(
            evaluated_studies=len(unique),
            evaluated_in_training_splits=sum(assignment.get(uid) in TRAINING_SPLITS for uid in unique),
            evaluated_outside_test_split=sum(assignment.get(uid) != TEST_SPLIT for uid in unique),
            test_studies_sha256=hashlib.sha256("\n".join(unique).encode("utf-8")).hexdigest())
    return out
