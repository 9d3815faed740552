"""model_core.evaluation.baseline: thresholds, config, and train → load → evaluate on a small subset."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from model_core.artifacts import BASELINE_SUMMARY, BASELINE_WEIGHTS, METRICS, PREDICTIONS
from model_core.chexpert import CHEXPERT_LABELS, NUM_LABELS
from model_core.config import REPO_ROOT, load_config
from model_core.data.images import load_image
from model_core.data.manifest import EMBEDDED_ROOT
from model_core.evaluation.baseline import (
    apply_thresholds,
    dataset_paths,
    evaluate_baseline,
    load_baseline,
    max_f1_thresholds,
    resolve_config,
    train_baseline,
)

SMALL = dict(limit_studies=24, image_size=32, epochs=1, batch_size=8, channels=[4, 8], progress=False)


# --------------------------------------------------------------------------- thresholds and config

def test_thresholds_maximize_f1_and_skip_labels_without_positives():
    y = np.zeros((6, NUM_LABELS))
    p = np.tile(np.linspace(0.1, 0.6, 6)[:, None], (1, NUM_LABELS))
    y[[4, 5], 2] = 1  # label 2: the two highest scores are the positives
    thresholds = max_f1_thresholds(y, p, min_positives=1)
    assert thresholds[2] == pytest.approx(0.5)
    assert thresholds[0] is None  # no val positive → never predicted
    predicted = apply_thresholds(p, thresholds)
    assert predicted[:, 2].tolist() == [0, 0, 0, 0, 1, 1]
    assert predicted[:, 0].sum() == 0
    assert max_f1_thresholds(y, p)[2] is None  # 2 positives < the default minimum of 5: noise, not a threshold
    with pytest.raises(ValueError, match="min_positives"):
        max_f1_thresholds(y, p, min_positives=0)


def test_config_rejects_unknown_and_invalid_keys():
    assert resolve_config(None, epochs=2)["epochs"] == 2
    with pytest.raises(ValueError, match="unknown baseline config key"):
        resolve_config({"epoch": 2})
    with pytest.raises(ValueError, match="image_size"):
        resolve_config(image_size=0)


# --------------------------------------------------------------------------- end to end (small subset)

@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple:
    model_dir = train_baseline(None, tmp_path_factory.mktemp("baseline") / "model", seed=0, **SMALL)
    eval_dir = model_dir.parent / "eval"
    metrics = evaluate_baseline(model_dir, None, EMBEDDED_ROOT, eval_dir, split="test", n_boot=50, limit_studies=24,
                                progress=False)
    return model_dir, eval_dir, metrics


def test_training_saves_weights_thresholds_and_config(trained):
    model_dir, _, _ = trained
    assert (model_dir / BASELINE_WEIGHTS).is_file()
    summary = json.loads((model_dir / BASELINE_SUMMARY).read_text())
    assert summary["config"]["image_size"] == 32 and summary["config"]["epochs"] == 1
    assert len(summary["thresholds"]) == NUM_LABELS
    assert summary["data"]["val_studies"] == 24
    assert not list(model_dir.glob(".*.tmp"))  # atomic writes leave no temporary files behind


def test_loaded_baseline_generates_a_structured_report(trained):
    model_dir, _, _ = trained
    baseline = load_baseline(model_dir)
    image = load_image(next((EMBEDDED_ROOT / "images").glob("*.jpg")), baseline.image_size)
    out = baseline.generate(image[None])
    assert out["text"].startswith("FINDINGS: ") and " IMPRESSION: " in out["text"]
    assert out["probabilities"].shape == (NUM_LABELS,) and out["labels"].shape == (NUM_LABELS,)
    assert np.array_equal(out["labels"], apply_thresholds(out["probabilities"][None], baseline.thresholds)[0])


def test_evaluation_writes_metrics_and_predictions(trained):
    _, eval_dir, returned = trained
    metrics = json.loads((eval_dir / METRICS).read_text())
    assert metrics == returned
    assert metrics["split"] == "test" and metrics["n_studies"] == 24 and metrics["section"] == "findings"
    assert "clean_report_iu_xray" in metrics["tokenization"]
    for name in ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CE micro F1", "CE macro F1"):
        fig = metrics["summary"][name]
        assert all(math.isfinite(fig[k]) for k in ("value", "ci_low", "ci_high")), name
        assert 0 <= fig["ci_low"] <= fig["value"] <= fig["ci_high"] <= 1, name
    assert set(metrics["clinical_efficacy"]["per_label"]) == set(CHEXPERT_LABELS)
    assert metrics["bootstrap"]["n_boot"] == 50

    rows = [json.loads(line) for line in (eval_dir / PREDICTIONS).read_text().splitlines()]
    assert len(rows) == 24 and len({r["study_id"] for r in rows}) == 24
    for row in rows:
        assert row["generated"].startswith("FINDINGS: ") and row["reference"]
        for key in ("generated_labels", "reference_labels", "mesh_labels"):
            assert len(row[key]) == NUM_LABELS and set(row[key]) <= {1.0, 0.0, -1.0}


def test_training_is_deterministic_with_a_seed(trained, tmp_path):
    model_dir, _, _ = trained
    again = train_baseline(None, tmp_path / "again", seed=0, **SMALL)
    first = torch.load(model_dir / BASELINE_WEIGHTS, weights_only=True)
    second = torch.load(again / BASELINE_WEIGHTS, weights_only=True)
    assert first["thresholds"] == second["thresholds"]
    for key, value in first["state_dict"].items():
        assert torch.equal(value, second["state_dict"][key]), key


def test_train_baseline_takes_its_data_from_the_config_alone(tmp_path):
    """`train_baseline(cfg, out_dir)`, as the pipeline's train_baseline step calls it: root, manifest and
    limit_studies come from cfg.data."""
    cfg = load_config(REPO_ROOT / "configs" / "smoke.yaml", ["data.limit_studies=12", "baseline.channels=[4]"])
    model_dir = train_baseline(cfg, tmp_path / "baseline")
    summary = json.loads((model_dir / BASELINE_SUMMARY).read_text())
    root, manifest = dataset_paths(cfg.data)
    assert summary["data"] == {**summary["data"], "root": str(root), "manifest": str(manifest), "limit_studies": 12}
    assert root == EMBEDDED_ROOT.resolve() and manifest == root / "manifest.csv"
    assert summary["config"]["channels"] == [4] and (model_dir / BASELINE_WEIGHTS).is_file()


def test_loading_without_a_trained_baseline_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="rrg baseline train"):
        load_baseline(tmp_path)
