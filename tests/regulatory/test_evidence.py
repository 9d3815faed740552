"""Evidence read from a run's files: whether the evaluated studies were untouched by training (counted from the
split file and the evaluation's predictions, checked against the split-file hash training recorded), and the
model file hashes."""

from __future__ import annotations

import hashlib
import json

import pytest

from model_core.sbom import data_components
from regulatory.evidence import model_file_hashes, separation_evidence

SPLITS = "uid,split\n1,test\n2,train\n3,val\n4,test\n5,test\n"


def _run(tmp_path, splits: str | None = SPLITS, evaluated=("1", "4", "5"), manifest: str | None = None):
    root, evaluation = tmp_path / "data", tmp_path / "evaluation"
    root.mkdir()
    evaluation.mkdir()
    (root / "manifest.csv").write_text(manifest or "uid,split,image\n1,val,a.png\n2,train,b.png\n")
    if splits is not None:
        (root / "splits.csv").write_text(splits)
    lines = [json.dumps({"study_id": uid, "generated": "FINDINGS: canary"}) for uid in evaluated]
    (evaluation / "predictions.jsonl").write_text("\n".join(lines) + "\n")
    sbom = {"components": data_components(root)}  # what training recorded (model_core.sbom)
    return {"root": str(root)}, evaluation, sbom


def test_a_clean_run_counts_no_overlap_and_records_the_test_set(tmp_path):
    lineage, evaluation, sbom = _run(tmp_path)
    sep = separation_evidence(lineage, evaluation, sbom)
    digest = hashlib.sha256(SPLITS.encode()).hexdigest()
    assert sep == {"split_file": "splits.csv", "split_sha256_at_training": digest,
                   "split_sha256_at_evaluation": digest, "studies_in_split_file": 5, "conflicting_studies": 0,
                   "evaluated_studies": 3, "evaluated_in_training_splits": 0, "evaluated_outside_test_split": 0,
                   "test_studies_sha256": hashlib.sha256(b"1\n4\n5").hexdigest()}
    assert "canary" not in json.dumps(sep)  # counts and digests only


def test_overlap_conflicts_and_a_changed_split_file_are_counted(tmp_path):
    lineage, evaluation, sbom = _run(tmp_path, splits=SPLITS + "4,train\n", evaluated=("1", "2", "3", "9"))
    sep = separation_evidence(lineage, evaluation, sbom)
    assert sep["conflicting_studies"] == 1                 # study 4 listed twice
    assert sep["evaluated_in_training_splits"] == 2        # studies 2 (train) and 3 (val)
    assert sep["evaluated_outside_test_split"] == 3        # 2, 3 and 9 (in no split)
    (tmp_path / "data" / "splits.csv").write_text(SPLITS.replace("2,train", "2,test"))
    changed = separation_evidence(lineage, evaluation, sbom)  # the file training hashed has changed since
    assert changed["split_sha256_at_training"] != changed["split_sha256_at_evaluation"]


def test_without_splits_csv_the_manifest_is_the_split_file(tmp_path):
    manifest = "uid,split,image\n1,test,a.png\n1,test,b.png\n2,train,c.png\n2,val,d.png\n"
    lineage, evaluation, sbom = _run(tmp_path, splits=None, evaluated=("1",), manifest=manifest)
    sep = separation_evidence(lineage, evaluation, sbom)
    assert sep["split_file"] == "manifest.csv" and sep["split_sha256_at_training"] is not None
    assert sep["studies_in_split_file"] == 2 and sep["conflicting_studies"] == 1  # study 2: train and val
    assert sep["evaluated_studies"] == 1 and sep["evaluated_outside_test_split"] == 0


def test_missing_records_are_none_not_guesses(tmp_path):
    lineage, evaluation, _ = _run(tmp_path)
    (evaluation / "predictions.jsonl").unlink()
    sep = separation_evidence(lineage, evaluation, None)  # no SBOM: nothing recorded at training
    assert sep["split_sha256_at_training"] is None and sep["evaluated_studies"] is None
    (evaluation / "predictions.jsonl").write_text('{"generated": "no id"}\n')
    with pytest.raises(ValueError, match="line 1 has no study_id"):
        separation_evidence(lineage, evaluation, None)


def test_model_file_hashes_cover_the_files_that_decide_the_output(tmp_path):
    for name, data in (("model.pt", b"weights"), ("detection.json", b"{}"), ("model_card.json", b"{}")):
        (tmp_path / name).write_bytes(data)
    assert model_file_hashes(tmp_path) == {"model.pt": hashlib.sha256(b"weights").hexdigest(),
                                           "detection.json": hashlib.sha256(b"{}").hexdigest()}
