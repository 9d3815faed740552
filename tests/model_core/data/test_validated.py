"""The validated-study pool and its versioned IU-format export: labels survive the MeSH column, the PHI screen
refuses (never redacts), pending model inputs expire, and only sign-offs the prediction log confirms are exported."""

from __future__ import annotations

import hashlib
import os
import time

import numpy as np
import pytest
from PIL import Image

from model_core.chexpert import CHEXPERT_LABELS, LABEL_INDEX, NUM_LABELS, binarize
from model_core.data.iu_xray import load_iu_xray
from model_core.data.manifest import DataError, read_manifest
from model_core.data.validated import ValidatedPool, chexpert_to_mesh, export_validated_dataset
from model_core.labels.labeler import label_report
from model_core.labels.mesh import mesh_to_chexpert
from model_core.prediction_log import FeedbackRecord, PredictionLog, PredictionRecord, study_hash, utc_now

SIGNED = "FINDINGS: Right pneumothorax. Heart size is normal. IMPRESSION: Right pneumothorax."


def _consistent_labels(rng: np.random.Generator) -> np.ndarray:
    """A label vector the labeler could give: No Finding only without any finding but Support Devices."""
    v = rng.choice([-1.0, 0.0, 1.0], size=NUM_LABELS, p=[0.05, 0.85, 0.10])
    v[0] = 0.0 if (v[1:13] != 0).any() else float(rng.random() < 0.8)
    return v


def test_labels_survive_the_mesh_column():
    for name in CHEXPERT_LABELS[1:]:                                   # each finding alone
        v = np.zeros(NUM_LABELS)
        v[LABEL_INDEX[name]] = 1
        assert mesh_to_chexpert(chexpert_to_mesh(v))[LABEL_INDEX[name]] == 1, name
    rng = np.random.default_rng(0)
    for _ in range(2000):
        v = _consistent_labels(rng)
        np.testing.assert_array_equal(mesh_to_chexpert(chexpert_to_mesh(v)), binarize(v, "ones"))
    assert chexpert_to_mesh(label_report("FINDINGS: Lungs are clear. IMPRESSION: No acute disease.")) == "normal"


def _pixels(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (32, 32), dtype=np.uint8)


def test_the_pool_refuses_text_with_identifiers_and_moves_images_in_by_hash(tmp_path):
    pool = ValidatedPool(tmp_path / "pool")
    pool.keep_images("r1", [(_pixels(1), "Frontal")])
    pool.keep_images("r2", [(_pixels(2), None)])
    refused = pool.add_signed("r2", "FINDINGS: No change since 01/02/2023. IMPRESSION: Stable. Dr. Who")
    assert not refused.added and refused.phi_patterns == ["titled_name", "date"]
    assert (tmp_path / "pool" / "pending" / "r2.0.npy").is_file()     # kept until it expires: no text stored
    assert pool.add_signed("r1", SIGNED).added
    (entry,) = pool.studies().values()
    digest = entry["images"][0]["sha256"]
    assert entry["report_id"] == "r1" and entry["findings"] == "Right pneumothorax. Heart size is normal."
    assert (tmp_path / "pool" / "images" / f"{digest}.png").is_file()
    assert not list((tmp_path / "pool" / "pending").glob("r1.*"))
    assert os.stat(tmp_path / "pool" / "studies.jsonl").st_mode & 0o077 == 0
    amended = SIGNED.replace("Right", "Left")
    assert pool.add_signed("r1", amended).added                        # an amended sign-off keeps the images
    assert pool.studies()["r1"]["images"][0]["sha256"] == digest
    assert pool.studies()["r1"]["text_sha256"] == hashlib.sha256(amended.encode()).hexdigest()
    assert not pool.add_signed("r9", SIGNED).added                     # never kept
    with pytest.raises(DataError, match="report_id"):
        pool.add_signed("../../etc", SIGNED)


def test_unsigned_model_inputs_expire(tmp_path):
    pool = ValidatedPool(tmp_path)
    pool.keep_images("old", [(_pixels(1), "Frontal")])
    pool.keep_images("new", [(_pixels(2), "Frontal")])
    past = time.time() - 31 * 86400
    for path in (tmp_path / "pending").glob("old.*"):
        os.utime(path, (past, past))
    assert pool.prune(older_than_days=30) == 2                          # old.0.npy and old.views.json
    assert sorted(p.name for p in (tmp_path / "pending").iterdir()) == ["new.0.npy", "new.views.json"]


def _served(log: PredictionLog, report_id: str, study: str) -> None:
    log.append(PredictionRecord(study_hash=study_hash(study), created_at=utc_now(), model_name="m",
                                model_version="1", role="champion", report_id=report_id, embedding=np.ones(4),
                                probabilities=[0.1] * NUM_LABELS, text_labels=[0] * NUM_LABELS,
                                review_required=False))


def _signed(log: PredictionLog, report_id: str, text: str) -> None:
    log.add_feedback(FeedbackRecord(report_id=report_id, created_at=utc_now(), rating=4, outcome="edited",
                                    edit_distance=2, final_labels=[int(v) for v in label_report(text)],
                                    final_text_sha256=hashlib.sha256(text.encode()).hexdigest()))


def test_export_writes_numbered_complete_versions_of_confirmed_sign_offs(tmp_path):
    log, pool = PredictionLog(str(tmp_path / "log.sqlite3")), ValidatedPool(tmp_path / "pool")
    with pytest.raises(DataError, match="no validated study"):
        export_validated_dataset(log, pool.root, tmp_path / "out")
    texts = {"a": SIGNED, "b": "FINDINGS: Lungs are clear. IMPRESSION: No acute disease.",
             "c": "FINDINGS: Small left effusion. IMPRESSION: Effusion."}
    for i, (rid, text) in enumerate(texts.items()):
        _served(log, rid, f"1.2.{i}")
        pool.keep_images(rid, [(_pixels(i), "Frontal")])
        assert pool.add_signed(rid, text).added
        _signed(log, rid, text)
    _signed(log, "c", "FINDINGS: No effusion. IMPRESSION: Normal.")   # a later sign-off the pool never saw
    version = export_validated_dataset(log, pool.root, tmp_path / "out")
    manifest = read_manifest(version / "manifest.csv")
    assert sorted(manifest["report_id"]) == ["a", "b"]
    assert (version / "dataset.json").is_file() and (version / "SHA256SUMS").is_file()
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]   # no staging left behind
    data = load_iu_xray(root=version, split="all", image_size=32)         # checksums verified on load
    by_report = dict(zip(manifest["report_id"], range(len(manifest))))
    labels = data["labels"].numpy()
    assert labels[by_report["a"], LABEL_INDEX["Pneumothorax"]] == 1
    assert labels[by_report["b"], LABEL_INDEX["No Finding"]] == 1
    with Image.open(data["images"][by_report["b"]]) as stored:                # lossless: the model input as kept
        np.testing.assert_array_equal(np.asarray(stored), _pixels(1))
    assert export_validated_dataset(log, pool.root, tmp_path / "out").name == "v0002"
