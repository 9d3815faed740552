"""model_core.evaluation.evaluate: the report model scored on a handful of studies; hallucination counts."""

import json

import numpy as np
from tiny_models import SMOKE

from model_core.artifacts import BASELINE_EVAL_DIR, CALIBRATION_PLOT, METRICS, PER_FINDING_F1_PLOT, PREDICTIONS
from model_core.chexpert import CHEXPERT_LABELS, CRITICAL_FINDINGS, LABEL_INDEX
from model_core.config import EvalConfig, GenerationConfig, load_config
from model_core.data.iu_xray import load_iu_xray
from model_core.evaluation import baseline as baseline_module
from model_core.evaluation.baseline import train_baseline
from model_core.evaluation.evaluate import evaluate_candidate, evaluate_model, hallucinations
from model_core.training.trainer import train_report_model


def test_evaluate_model_on_a_handful_of_studies(tiny_model, tmp_path):
    test = load_iu_xray(split="test", views=("Frontal", "Lateral"), image_size=32, limit_studies=6)
    metrics = evaluate_model(tiny_model, test, gen=GenerationConfig(num_beams=2, max_new_tokens=8),
                             eval_cfg=EvalConfig(n_bootstrap=20), out_dir=tmp_path, latency=True,
                             baseline_metrics={"summary": {"BLEU-4": {"value": 0.1}}})
    assert metrics["n_studies"] == 6
    for key in ("BLEU-4", "ROUGE-L", "CE micro F1", "CE macro F1", "hallucination rate"):
        assert key in metrics["summary"]
    assert set(metrics["critical_findings"]) == set(CRITICAL_FINDINGS)
    assert metrics["radgraph"] == ("not computed: the radgraph package is not installed (its model cannot be "
                                   "downloaded here)")   # radgraph is no dependency (evaluate.radgraph_f1)
    lat = metrics["latency"]
    assert lat["num_beams"] == 2 and lat["batch_1"]["p50_ms"] > 0 and lat["batch_8_per_report"]["p95_ms"] > 0
    assert metrics["baseline"]["BLEU-4"]["value"] == 0.1
    assert set(metrics["detection"]["per_label"]) == set(CHEXPERT_LABELS)
    assert all(v["positives"] + v["negatives"] == 6 for v in metrics["detection"]["per_label"].values())
    assert metrics["summary"]["detection macro AUROC"] == metrics["detection"]["macro"]
    assert set(metrics["naming"]) == set(CRITICAL_FINDINGS)
    assert 1 <= metrics["drafts"]["distinct"] <= metrics["drafts"]["studies"] == 6
    cal = metrics["calibration"]
    assert cal["test_ece_ci"]["value"] == cal["test_ece"] and cal["test_ece_uncalibrated_ci"]["n_boot"] == 20
    written = json.loads((tmp_path / METRICS).read_text())
    assert written["n_studies"] == 6
    lines = (tmp_path / PREDICTIONS).read_text().splitlines()
    assert len(lines) == 6
    row = json.loads(lines[0])
    assert {"study_id", "generated", "structured", "reference", "generated_labels", "mesh_labels",
            "detection_probabilities"} <= set(row)
    assert (tmp_path / PER_FINDING_F1_PLOT).stat().st_size > 1000 and (tmp_path / CALIBRATION_PLOT).is_file()


def test_hallucination_counts_unsupported_critical_assertions():
    text = np.zeros((4, 14))
    truth = np.zeros((4, 14))
    ptx, eff = LABEL_INDEX["Pneumothorax"], LABEL_INDEX["Pleural Effusion"]
    text[0, ptx] = 1                     # unsupported
    text[1, eff] = truth[1, eff] = 1     # supported
    text[2, LABEL_INDEX["Cardiomegaly"]] = 1  # not critical: ignored
    out = hallucinations(text, truth, n_boot=50, seed=0)
    assert out["reports_with_unsupported_critical"] == 1 and out["rate"]["value"] == 0.25
    assert out["critical_assertions"] == 2 and out["per_assertion_rate"] == 0.5
    assert out["by_finding"]["Pneumothorax"] == 1


def test_evaluate_candidate_scores_the_trained_baseline_it_is_given(tmp_path, monkeypatch):
    cfg = load_config(SMOKE, ["data.limit_studies=6", "train.deepspeed=null", "eval.n_bootstrap=20"])
    model_dir = train_report_model(cfg, tmp_path / "model")
    baseline_dir = train_baseline(cfg, tmp_path / "baseline")

    def no_training(*args, **kwargs):
        raise AssertionError("evaluate_candidate must not train the baseline")

    monkeypatch.setattr(baseline_module, "train_baseline", no_training)
    metrics = evaluate_candidate(cfg, model_dir, tmp_path / "evaluation", baseline_dir)
    baseline = json.loads((tmp_path / "evaluation" / BASELINE_EVAL_DIR / METRICS).read_text())
    assert baseline["model_dir"] == str(baseline_dir) and baseline["split"] == "test"
    assert metrics["baseline"] == baseline["summary"] and metrics["n_studies"] == baseline["n_studies"] == 6
    assert json.loads((tmp_path / "evaluation" / METRICS).read_text())["baseline"] == baseline["summary"]
