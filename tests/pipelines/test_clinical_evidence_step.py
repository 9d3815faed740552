"""The clinical_evidence step on a tiny model directory (the shared `tiny_model`, saved with a monitoring reference)
and a hand-made evaluation: it writes the error analysis, the bias audit and the drift check, logs them to MLflow,
and the packet built from its output renders them. The whole DAG runs in test_pipeline_smoke.py."""

from __future__ import annotations

import json
from types import SimpleNamespace

import mlflow
import numpy as np
import pytest
from tiny_models import SMOKE

from components.steps import clinical_evidence
from model_core.artifacts import (
    BIAS_AUDIT,
    DRIFT_CHECK,
    ERROR_ANALYSIS,
    ERROR_SUMMARY,
    EVIDENCE_BIAS_DIR,
    EVIDENCE_ERRORS_DIR,
    EXAMPLES_PLOT,
    PREDICTIONS,
)
from model_core.config import MonitoringConfig, load_config
from model_core.data.iu_xray import group_studies, load_iu_xray
from model_core.modeling.model_dir import save_model_dir
from model_core.modeling.reference import save_reference_stats
from monitoring.holdout import holdout_drift_check
from registry import tracking
from regulatory.assemble import read_evidence


def _reference(model_dir, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    save_reference_stats(model_dir, embeddings=rng.normal(size=(n, 16)), fit_embeddings=rng.normal(size=(40, 16)),
                         probabilities=rng.uniform(size=(n, 14)), labels=rng.integers(0, 2, (n, 14)),
                         thresholds=np.full(14, 0.5), pca_components=4)


def test_the_holdout_check_is_the_monitors_test_on_two_halves_of_the_reference(tmp_path):
    _reference(tmp_path, 120)
    cfg = MonitoringConfig()
    result = holdout_drift_check(tmp_path, cfg)
    assert result["window"] == result["n_reference"] == 60 and result["permutations"] == 1000
    assert result["status"] == "ok" and result["drift_detected"] is False and result["p_value"] > cfg.alpha
    assert result["statistic"] < result["threshold"] and result["pca_components"] == 4
    assert holdout_drift_check(tmp_path, cfg)["p_value"] == result["p_value"]          # seeded
    small = holdout_drift_check(tmp_path, cfg, window=30)
    assert small["status"] == "insufficient data" and small["drift_detected"] is None and small["p_value"] is None
    with pytest.raises(ValueError, match="the window must hold between 1 and 119"):
        holdout_drift_check(tmp_path, cfg, window=120)


def test_the_step_writes_and_logs_the_evidence_and_the_packet_reads_it(tiny_model, tmp_path):
    cfg = load_config(SMOKE, ["data.limit_studies=6", "eval.n_bootstrap=20",
                              "monitoring.min_studies=20"])
    model_dir = save_model_dir(tiny_model, tmp_path / "model", card={"name": "tiny", "version": "0", "created": "now"},
                               run_config=cfg.to_dict(), detection={"temperature": 1.0, "thresholds": {}})
    _reference(model_dir, 60)
    studies = group_studies(load_iu_xray(split="test", views=("Frontal", "Lateral"), image_size=32,
                                         limit_studies=6))
    evaluation = tmp_path / "evaluation"
    evaluation.mkdir()
    generated = ["Small right pleural effusion.", "Large left pneumothorax.", "Normal chest."]
    (evaluation / PREDICTIONS).write_text("".join(json.dumps(
        {"study_id": s["study_id"], "generated": generated[i % 3], "reference": s["report"],
         "mesh_labels": s["labels"].tolist(), "detection_probabilities": [0.4] * 14}) + "\n"
        for i, s in enumerate(studies)))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = tracking.start_run(uri, "evidence-test")
    evidence = SimpleNamespace(path=str(tmp_path / "evidence"), metadata={})
    clinical_evidence(config_json=json.dumps(cfg.to_dict()), tracking_uri=uri, mlflow_run_id=run_id,
                      dataset=SimpleNamespace(path=str(tmp_path / "dataset"), metadata={}),
                      model=SimpleNamespace(path=str(model_dir), metadata={}),
                      evaluation=SimpleNamespace(path=str(evaluation), metadata={}), evidence=evidence)
    out = tmp_path / "evidence"
    for rel in (f"{EVIDENCE_ERRORS_DIR}/{ERROR_SUMMARY}", f"{EVIDENCE_ERRORS_DIR}/{ERROR_ANALYSIS}",
                f"{EVIDENCE_ERRORS_DIR}/{EXAMPLES_PLOT}", f"{EVIDENCE_BIAS_DIR}/{BIAS_AUDIT}", DRIFT_CHECK):
        assert (out / rel).is_file(), rel
    drift = json.loads((out / DRIFT_CHECK).read_text())
    assert drift["window"] == 30 and drift["status"] == "ok" and drift["p_value"] is not None
    assert evidence.metadata["drift_status"] == "ok" and "flagged_subgroups" in evidence.metadata
    client = mlflow.MlflowClient(uri)
    metrics = client.get_run(run_id).data.metrics
    assert {"evidence.study_error_rate", "evidence.flagged_subgroups", "evidence.drift_check.p_value",
            "step.clinical_evidence.seconds"} <= set(metrics)
    logged = {a.path for a in client.list_artifacts(run_id, f"evidence/{EVIDENCE_ERRORS_DIR}")}
    assert f"evidence/{EVIDENCE_ERRORS_DIR}/{ERROR_ANALYSIS}" in logged          # per-study: MLflow, internal
    fields = read_evidence(out)
    assert fields["evidence_missing"] == [] and EXAMPLES_PLOT not in fields["figures"]
    assert len(fields["figures"]) == 4 and fields["monitoring"]["drift"]["window"] == 30
    assert "study_id" not in json.dumps(fields["bias_audit"]) + json.dumps(fields["error_summary"])
