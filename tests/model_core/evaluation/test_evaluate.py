import json

import numpy as np
import pytest

from model_core.chexpert import CRITICAL_FINDINGS, LABEL_INDEX
from model_core.config import EvalConfig, GenerationConfig
from model_core.data.iu_xray import load_iu_xray
from model_core.evaluation.evaluate import evaluate_model, hallucinations
from model_core.stats import expected_calibration_error
from model_core.training.calibration import choose_thresholds, fit_temperature


def test_evaluate_model_on_a_handful_of_studies(tiny_model, tmp_path):
    test = load_iu_xray(split="test", views=("Frontal", "Lateral"), image_size=32, limit_studies=6)
    metrics = evaluate_model(tiny_model, test, gen=GenerationConfig(num_beams=2, max_new_tokens=8),
                             eval_cfg=EvalConfig(n_bootstrap=20), out_dir=tmp_path, latency=True,
                             baseline_metrics={"summary": {"BLEU-4": {"value": 0.1}}})
    assert metrics["n_studies"] == 6
    for key in ("BLEU-4", "ROUGE-L", "CE micro F1", "CE macro F1", "hallucination rate"):
        assert key in metrics["summary"]
    assert set(metrics["critical_findings"]) == set(CRITICAL_FINDINGS)
    assert metrics["radgraph"].startswith("not computed") or isinstance(metrics["radgraph"], dict)
    lat = metrics["latency"]
    assert lat["num_beams"] == 2 and lat["batch_1"]["p50_ms"] > 0 and lat["batch_8_per_report"]["p95_ms"] > 0
    assert metrics["baseline"]["BLEU-4"]["value"] == 0.1
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["n_studies"] == 6
    lines = (tmp_path / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 6
    row = json.loads(lines[0])
    assert {"study_id", "generated", "structured", "reference", "generated_labels", "mesh_labels",
            "detection_probabilities"} <= set(row)
    assert (tmp_path / "per_finding_f1.png").stat().st_size > 1000 and (tmp_path / "calibration.png").is_file()


def test_hallucination_counts_unsupported_critical_assertions():
    text = np.zeros((4, 14))
    truth = np.zeros((4, 14))
    ptx, eff = LABEL_INDEX["Pneumothorax"], LABEL_INDEX["Pleural Effusion"]
    text[0, ptx] = 1                     # unsupported
    text[1, eff] = 1; truth[1, eff] = 1  # supported
    text[2, LABEL_INDEX["Cardiomegaly"]] = 1  # not critical: ignored
    out = hallucinations(text, truth, n_boot=50, seed=0)
    assert out["reports_with_unsupported_critical"] == 1 and out["rate"]["value"] == 0.25
    assert out["critical_assertions"] == 2 and out["per_assertion_rate"] == 0.5
    assert out["by_finding"]["Pneumothorax"] == 1


def test_temperature_scaling_fixes_overconfident_logits():
    rng = np.random.default_rng(0)
    truth = (rng.random((400, 14)) < 0.3).astype(float)
    logits = (truth * 2 - 1) * 1.0 + rng.normal(0, 1.0, truth.shape)
    overconfident = logits * 4
    fit = fit_temperature(overconfident, truth)
    assert fit["applied"] and fit["temperature"] > 1.5 and fit["ece_after"] < fit["ece_before"]


def test_ece_perfectly_calibrated_is_small():
    rng = np.random.default_rng(1)
    p = rng.random(20000)
    y = (rng.random(20000) < p).astype(float)
    assert expected_calibration_error(p, y) < 0.02
    with pytest.raises(ValueError):
        expected_calibration_error(np.array([]), np.array([]))


def test_thresholds_reach_target_sensitivity_for_critical_findings():
    rng = np.random.default_rng(2)
    truth = (rng.random((300, 14)) < 0.2).astype(int)
    probs = np.clip(truth * 0.4 + rng.random((300, 14)) * 0.6, 0, 1)
    truth[:, LABEL_INDEX["Fracture"]] = 0
    chosen = choose_thresholds(probs, truth, 0.98)
    k = LABEL_INDEX["Pneumothorax"]
    sens = (probs[truth[:, k] == 1, k] >= chosen["thresholds"]["Pneumothorax"]).mean()
    assert sens >= 0.98
    assert chosen["thresholds"]["Fracture"] == 0.5 and "no validation positives" in chosen["rule"]["Fracture"]
