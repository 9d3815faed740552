"""Registry semantics against a real MLflow tracking server (sqlite) started on 127.0.0.1 by the fixture."""

import json

import mlflow
import pytest

from model_core.evaluation.gate_record import RECORD_DIR, write_gate_record
from model_core.signing import load_signer
from registry import models, tracking


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory):
    with tracking.MlflowServer(tmp_path_factory.mktemp("mlflow")) as server:
        yield server.uri


def _gate(passed: bool) -> dict:
    return {"passed": passed, "decision": "promote" if passed else "reject",
            "reasons": ["all clinical safety checks passed"] if passed else ["Pneumothorax: only 1 positive"],
            "checks": [{"name": "hallucination_rate", "finding": None, "value": 0.01, "gated_value": 0.02,
                        "threshold": 0.03, "passed": passed}]}


def _candidate(uri: str, tmp_path, name: str, gate: dict | None = None) -> tuple[str, str]:
    """A run with a model directory and, when `gate` is given, its signed gate decision (the session's key)."""
    run_id = tracking.start_run(uri, run_name=name)
    model_dir = tmp_path / name / "model"
    model_dir.mkdir(parents=True)
    (model_dir / "weights.txt").write_text(f"weights of {name}")
    tracking.log_artifacts(uri, run_id, model_dir, "model")
    if gate is not None:
        metrics = tmp_path / name / "metrics.json"
        metrics.write_text("{}")
        record = write_gate_record(gate, model_dir, tmp_path / name / RECORD_DIR, load_signer(), metrics_file=metrics)
        tracking.log_artifacts(uri, run_id, record.parent, RECORD_DIR)
    tracking.end_run(uri, run_id)
    return run_id, f"runs:/{run_id}/model"


def test_only_passing_versions_become_champion_and_rollback_restores(mlflow_uri, tmp_path):
    name = "test-model-aliases"
    v1 = models.register(mlflow_uri, *_candidate(mlflow_uri, tmp_path, "a", _gate(True)), name,
                         _gate(True))
    assert v1["status"] == "champion" and "champion" in v1["aliases"]
    bad = models.register(mlflow_uri, *_candidate(mlflow_uri, tmp_path, "b"), name, _gate(False))
    assert bad["status"] == "rejected" and bad["aliases"] == ["rejected"]
    with pytest.raises(models.RegistryError, match="did not pass the clinical safety gates"):
        models.promote(mlflow_uri, name, bad["version"], "try anyway")
    v3 = models.register(mlflow_uri, *_candidate(mlflow_uri, tmp_path, "c", _gate(True)), name,
                         _gate(True))
    assert v3["status"] == "challenger" and v3["aliases"] == ["challenger"]   # a champion serves: rollout first
    # what the rollout's final step does (registry.rollout.promote, tested in test_rollout.py with signed records)
    models._move_champion(mlflow.MlflowClient(mlflow_uri), name, v3["version"], "promoted through the rollout")
    hist = {h["version"]: h for h in models.history(mlflow_uri, name)}
    assert hist[v3["version"]]["aliases"] == ["champion"]
    assert hist[v1["version"]]["aliases"] == ["previous-champion"]
    assert hist[bad["version"]]["gate"] == "reject"
    back = models.rollback(mlflow_uri, name, "regression reported by radiologists")
    assert back["champion"] == v1["version"] and back["replaced"] == v3["version"]
    hist = {h["version"]: h for h in models.history(mlflow_uri, name)}
    assert "champion" in hist[v1["version"]]["aliases"]
    actions = [a["action"] for a in hist[v1["version"]]["audit"]]
    assert actions[0] == "promote" and "rollback" in actions
    assert all(a["by"] and a["at"] and a["reason"] for a in hist[v1["version"]]["audit"])
    with pytest.raises(models.RegistryError, match="no previous-champion"):
        models.rollback(mlflow_uri, name, "again")


def test_gate_results_are_version_tags(mlflow_uri, tmp_path):
    name = "test-model-tags"
    result = models.register(mlflow_uri, *_candidate(mlflow_uri, tmp_path, "d"), name, _gate(False))
    mv = mlflow.MlflowClient(mlflow_uri).get_model_version(name, result["version"])
    assert mv.tags["gate.passed"] == "false" and json.loads(mv.tags["gate.hallucination_rate"])["threshold"] == 0.03


def test_unknown_model_and_version_are_clear_errors(mlflow_uri):
    with pytest.raises(models.RegistryError, match="no registered model"):
        models.history(mlflow_uri, "does-not-exist")
    with pytest.raises(models.RegistryError, match="has no version 99"):
        models.promote(mlflow_uri, "test-model-aliases", "99", "x")


def test_params_and_metrics_logging_flattens(mlflow_uri):
    run_id = tracking.start_run(mlflow_uri, run_name="logging")
    tracking.log_params(mlflow_uri, run_id, {"config": {"train": {"lr": 0.001, "views": ["Frontal"]}}})
    tracking.log_history(mlflow_uri, run_id, {"stage1": [{"epoch": 1, "train": {"loss": 2.0}, "val": {"loss": 2.5},
                                                          "lr": 1e-3}]})
    run = mlflow.MlflowClient(mlflow_uri).get_run(run_id)
    assert run.data.params["config.train.lr"] == "0.001"
    assert run.data.params["config.train.views"] == '["Frontal"]'
    assert run.data.metrics["stage1.val.loss"] == 2.5


def test_the_champions_packet_is_fetched_for_the_comparison(mlflow_uri, tmp_path):
    """download_champion_packet: None without a model or a champion, else the champion's packet zip (unverified:
    regulatory.assemble verifies it and records a failure)."""
    name = "test-model-champion-packet"
    assert models.download_champion_packet(mlflow_uri, name, tmp_path) is None
    run_id, uri = _candidate(mlflow_uri, tmp_path, "e")
    models.register(mlflow_uri, run_id, uri, name, _gate(False))  # rejected: still no champion
    assert models.download_champion_packet(mlflow_uri, name, tmp_path) is None
    run_id, uri = _candidate(mlflow_uri, tmp_path, "f", _gate(True))
    packet = tmp_path / "510k_packet_test_v1.zip"
    packet.write_bytes(b"PK champion packet")
    tracking.log_artifacts(mlflow_uri, run_id, packet, "packet")
    models.register(mlflow_uri, run_id, uri, name, _gate(True))
    fetched = models.download_champion_packet(mlflow_uri, name, tmp_path / "fetched")
    assert fetched.name == packet.name and fetched.read_bytes() == b"PK champion packet"
