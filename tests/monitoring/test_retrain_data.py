"""A retrain trains on the base dataset plus the radiologist-validated studies; the base test split is unchanged."""

import dataclasses
import hashlib

import numpy as np
import pandas as pd
import pytest
from tiny_models import SMOKE

from model_core.chexpert import NUM_LABELS
from model_core.config import load_config
from model_core.data.iu_xray import load_iu_xray
from model_core.data.manifest import DataError, carve_splits, study_splits
from model_core.data.retraining import retraining_dataset
from model_core.data.validated import ValidatedPool
from model_core.labels.labeler import label_report
from model_core.prediction_log import FeedbackRecord, PredictionLog, PredictionRecord, study_hash, utc_now
from monitoring.retrain_data import retraining_data

SIGNED = {"r1": "FINDINGS: Right pneumothorax. IMPRESSION: Pneumothorax.",
          "r2": "FINDINGS: Lungs are clear. IMPRESSION: No acute disease.",
          "r3": "FINDINGS: Small left effusion. IMPRESSION: Effusion."}


def _validated_service(tmp_path):
    """A prediction log and pool as the report service leaves them after three sign-offs."""
    log, pool = PredictionLog(str(tmp_path / "log.sqlite3")), ValidatedPool(tmp_path / "pool")
    for i, (rid, text) in enumerate(SIGNED.items()):
        log.append(PredictionRecord(study_hash=study_hash(f"1.2.{i}"), created_at=utc_now(), model_name="m",
                                    model_version="1", role="champion", report_id=rid, embedding=np.ones(4),
                                    probabilities=[0.1] * NUM_LABELS, text_labels=[0] * NUM_LABELS,
                                    review_required=False))
        pool.keep_images(rid, [(np.random.default_rng(i).integers(0, 256, (32, 32), dtype=np.uint8), "Frontal")])
        assert pool.add_signed(rid, text).added
        log.add_feedback(FeedbackRecord(report_id=rid, created_at=utc_now(), rating=4, outcome="accepted",
                                        edit_distance=0, final_labels=[int(v) for v in label_report(text)],
                                        final_text_sha256=hashlib.sha256(text.encode()).hexdigest()))
    log.close()
    return tmp_path / "log.sqlite3", pool.root


@pytest.fixture()
def base(tiny_iu):
    """The tiny IU dataset with carved splits (train / val / test), as the embedded dataset has them."""
    manifest = pd.read_csv(tiny_iu / "manifest.csv", dtype=str, keep_default_na=False)
    carve_splits(manifest).to_csv(tiny_iu / "splits.csv", index=False)
    return tiny_iu


def _ids(root, split):
    try:
        return {m["study_id"] for m in load_iu_xray(root=root, split=split, image_size=32)["metadata"]}
    except DataError:   # an empty split (8 studies: val may hold none)
        return set()


def test_a_retrain_adds_validated_studies_to_train_and_val_and_keeps_the_base_test_split(base, tmp_path):
    log_path, pool = _validated_service(tmp_path / "service")
    tiny_iu = base
    cfg = load_config(SMOKE, [f"data.root={tiny_iu}", f"monitoring.log_url={log_path}",
                              f"serving.validated_pool={pool}"])
    data_cfg, summary = retraining_data(cfg, tmp_path / "work")
    assert summary["validated_versions"] == ["v0001"] and data_cfg.root == summary["dataset"] != str(tiny_iu)
    assert _ids(data_cfg.root, "test") == _ids(tiny_iu, "test") != set()
    base_trainval = _ids(tiny_iu, "train") | _ids(tiny_iu, "val")
    added = (_ids(data_cfg.root, "train") | _ids(data_cfg.root, "val")) - base_trainval
    assert len(added) == len(SIGNED)
    # a second retrain with nothing new signed off still trains on the first export
    again, summary2 = retraining_data(dataclasses.replace(cfg), tmp_path / "work2")
    assert summary2["validated_versions"] == ["v0001"] and "no new validated study" not in summary2.get(
        "validated", "")   # work2 has its own export folder: v0001 is exported there afresh


def test_without_a_pool_the_retrain_uses_the_base_dataset(tiny_iu, tmp_path):
    cfg = load_config(SMOKE, [f"data.root={tiny_iu}", f"serving.validated_pool={tmp_path / 'absent'}"])
    data_cfg, summary = retraining_data(cfg, tmp_path / "work")
    assert data_cfg == cfg.data and summary["validated_versions"] == [] and "no validated-study pool" in \
        summary["validated"]


def _version(tmp_path, name, uid, split):
    version = tmp_path / name
    (version / "images").mkdir(parents=True)
    (version / "images" / f"{uid}.png").write_bytes(b"not read here")
    pd.DataFrame([{"uid": uid, "split": split, "image": f"images/{uid}.png", "projection": "Frontal",
                   "indication": "", "comparison": "", "findings": "x", "impression": "y", "mesh": "normal"}]
                 ).to_csv(version / "manifest.csv", index=False)
    return version


def test_validated_studies_never_enter_the_test_split(tiny_iu, tmp_path):
    with pytest.raises(DataError, match="test split"):
        retraining_dataset(tiny_iu, None, [_version(tmp_path, "v0001", "abc", "test")], tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_study_id_collisions_and_an_existing_output_are_refused(tiny_iu, tmp_path):
    uid = str(pd.read_csv(tiny_iu / "manifest.csv", dtype=str)["uid"].iloc[0])
    with pytest.raises(DataError, match="reuses 1 study id"):
        retraining_dataset(tiny_iu, None, [_version(tmp_path, "v0001", uid, "train")], tmp_path / "out")
    (tmp_path / "exists").mkdir()
    with pytest.raises(DataError, match="exists already"):
        retraining_dataset(tiny_iu, None, [], tmp_path / "exists")


def test_the_combined_dataset_records_its_splits(tiny_iu, tmp_path):
    out = retraining_dataset(tiny_iu, None, [_version(tmp_path, "v0001", "abc", "train")], tmp_path / "out")
    manifest = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    splits = dict(zip(manifest["uid"], study_splits(out, manifest)))
    assert splits["abc"] == "train" and (out / "SHA256SUMS").is_file() and (out / "dataset.json").is_file()
