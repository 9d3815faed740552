"""The rollout's registry stages against a real MLflow tracking server (sqlite) on 127.0.0.1: a passing version
waits as challenger, moves challenger → shadow → ab → champion only in order and with a promote decision, every
move is audited and agrees with reconcile, and the blue-green watch rolls a degraded champion back."""

from __future__ import annotations

import json

import pytest

from model_core.config import RolloutConfig
from model_core.evaluation.gate_record import RECORD_DIR, write_gate_record
from model_core.signing import load_signer
from registry import models, rollout, tracking
from serving.model_swap import mlflow_aliases

CFG = RolloutConfig(watch_window_hours=1.0, n_boot=200)


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory):
    server = tracking.MlflowServer(tmp_path_factory.mktemp("mlflow"))
    server.start(timeout=300)          # the shared 2-core machine can be slow to start it
    try:
        yield server.uri
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _dev_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("RRG_KEYS_DIR", str(tmp_path / "keys"))
    for var in ("RRG_SIGNING_KEY", "RRG_SIGNING_KEY_FILE", "RRG_TRUSTED_KEYS"):
        monkeypatch.delenv(var, raising=False)


def _gate(passed: bool) -> dict:
    return {"passed": passed, "decision": "promote" if passed else "reject",
            "reasons": ["all clinical safety checks passed"] if passed else ["Pneumothorax: only 1 positive"],
            "checks": [{"name": "hallucination_rate", "finding": None, "value": 0.01, "gated_value": 0.02,
                        "threshold": 0.03, "passed": passed}], "review_rate": {}, "config": {}}


def _version(uri: str, tmp_path, name: str, label: str, passed: bool = True) -> dict:
    """A run with a model directory, a signed gate record (development key) and a registered version."""
    run_id = tracking.start_run(uri, run_name=label)
    model_dir = tmp_path / label / "model"
    model_dir.mkdir(parents=True)
    (model_dir / "weights.txt").write_text(f"weights of {label}")
    metrics = tmp_path / label / "metrics.json"
    metrics.write_text("{}")
    gate_dir = write_gate_record(_gate(passed), model_dir, tmp_path / label / "gate", load_signer(),
                                 metrics_file=metrics).parent
    tracking.log_artifacts(uri, run_id, model_dir, "model")
    tracking.log_artifacts(uri, run_id, gate_dir, RECORD_DIR)
    tracking.end_run(uri, run_id)
    return models.register(uri, run_id, f"runs:/{run_id}/model", name, _gate(passed))


def _actions(uri: str, name: str, version: str) -> list[str]:
    hist = {h["version"]: h for h in models.history(uri, name)}
    return [a["action"] for a in sorted(hist[version]["audit"], key=lambda a: a["at"])]


def test_a_passing_version_waits_as_challenger_and_moves_only_in_order(mlflow_uri, tmp_path, monkeypatch):
    name = "rollout-stages"
    first = _version(mlflow_uri, tmp_path, name, "v1")
    assert first["status"] == "champion"                       # nothing to compare with: first champion
    second = _version(mlflow_uri, tmp_path, name, "v2")
    assert second["status"] == "challenger" and second["aliases"] == ["challenger"]
    v2 = second["version"]
    with pytest.raises(models.RegistryError, match="can move only to shadow"):
        rollout.advance(mlflow_uri, name, v2, rollout.AB, "skip shadow")
    with pytest.raises(models.RegistryError, match="only a version in the A/B test"):
        rollout.promote(mlflow_uri, name, v2, {"decision": "promote"}, CFG, "too early")
    rollout.advance(mlflow_uri, name, v2, rollout.SHADOW, "shadow window starts")
    rollout.advance(mlflow_uri, name, v2, rollout.AB, "shadow comparison passed")
    with pytest.raises(models.RegistryError, match="does not say promote"):
        rollout.promote(mlflow_uri, name, v2, {"decision": "keep champion", "reasons": ["p = 0.2"]}, CFG, "try")
    state = rollout.status(mlflow_uri, name)
    assert state["aliases"] == {"ab": v2, "champion": first["version"]}
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    assert mlflow_aliases(name)() == state["aliases"]           # what serving's rollout-arms follower reads
    assert models.reconcile_aliases(mlflow_uri, name) == []     # every move explained by its audit entry
    out = rollout.promote(mlflow_uri, name, v2, {"decision": "promote", "reasons": ["rating up, p = 0.001"]},
                          CFG, "A/B done", now=1000.0)
    assert out["champion"] == v2 and out["previous"] == first["version"] and out["watch_until"] == 1000.0 + 3600
    assert rollout.status(mlflow_uri, name)["aliases"] == {"champion": v2, "previous-champion": first["version"]}
    assert _actions(mlflow_uri, name, v2) == ["challenger", "shadow", "ab", "promote"]
    assert models.reconcile_aliases(mlflow_uri, name) == []
    hist = {h["version"]: h for h in models.history(mlflow_uri, name)}
    assert all(a["by"] and a["at"] and a["reason"] for a in hist[v2]["audit"])


def test_a_withdrawn_challenger_leaves_the_rollout(mlflow_uri, tmp_path):
    name = "rollout-withdraw"
    _version(mlflow_uri, tmp_path, name, "w1")
    v2 = _version(mlflow_uri, tmp_path, name, "w2")["version"]
    rollout.advance(mlflow_uri, name, v2, rollout.SHADOW, "shadow")
    rollout.withdraw(mlflow_uri, name, v2, "shadow comparison: challenger worse")
    assert "shadow" not in rollout.status(mlflow_uri, name)["aliases"]
    with pytest.raises(models.RegistryError, match="not in the rollout"):
        rollout.withdraw(mlflow_uri, name, v2, "again")


def test_the_blue_green_watch_rolls_a_degraded_champion_back_and_audits_it(mlflow_uri, tmp_path):
    name = "rollout-watch"
    v1 = _version(mlflow_uri, tmp_path, name, "b1")["version"]
    v2 = _version(mlflow_uri, tmp_path, name, "b2")["version"]
    rollout.advance(mlflow_uri, name, v2, rollout.SHADOW, "s")
    rollout.advance(mlflow_uri, name, v2, rollout.AB, "a")
    rollout.promote(mlflow_uri, name, v2, {"decision": "promote"}, CFG, "promote", now=0.0)
    calm = rollout.watch(mlflow_uri, name, [], {"review_rate": 0.12}, {"review_rate": 0.10}, CFG, now=10.0)
    assert calm["state"] == "watching" and calm["champion"] == v2
    bad = rollout.watch(mlflow_uri, name, ["RrgHallucinationRateHigh"], {"review_rate": 0.40},
                        {"review_rate": 0.10}, CFG, now=20.0)
    assert bad["state"] == "rolled back" and bad["champion"] == v1 and bad["replaced"] == v2
    assert any("RrgHallucinationRateHigh" in r for r in bad["reasons"])
    assert any("review-flag rate" in r for r in bad["reasons"])
    assert rollout.status(mlflow_uri, name)["aliases"]["champion"] == v1
    audit = {h["version"]: h for h in models.history(mlflow_uri, name)}[v1]["audit"]
    back = [a for a in audit if a["action"] == "rollback"]
    assert back and back[0]["reason"].startswith("automatic rollback by the blue-green watch")
    assert rollout.watch(mlflow_uri, name, [], {}, {}, CFG, now=30.0)["state"] == "no watch"


def test_the_watch_ends_after_its_window_and_the_verdict_limits():
    verdict = rollout.watch_verdict([], {"review_rate": 0.15, "p99_latency_s": 31.0}, {"review_rate": 0.10}, CFG)
    assert verdict["rollback"] and "P99 latency" in verdict["reasons"][0]
    assert not rollout.watch_verdict([], {"review_rate": 0.19}, {"review_rate": 0.10}, CFG)["rollback"]
    slower = rollout.watch_verdict([], {"p99_latency_s": 2.5}, {"p99_latency_s": 1.0}, CFG)
    assert slower["rollback"] and "2× the previous champion's" in slower["reasons"][0]


def test_the_champion_vs_challenger_check_is_recorded_with_both_figures(mlflow_uri, tmp_path):
    name = "rollout-compare"
    _version(mlflow_uri, tmp_path, name, "c1")
    v2 = _version(mlflow_uri, tmp_path, name, "c2")["version"]
    rows = [{"study_id": f"s{i}", "generated": "FINDINGS: Heart size is normal. Lungs are clear.",
             "reference": "FINDINGS: Heart size is normal. Lungs are clear.",
             "generated_labels": [0.0] * 14, "mesh_labels": [0.0] * 14} for i in range(12)]
    decision = rollout.compare_with_champion(mlflow_uri, name, v2, rows, rows, CFG)
    assert decision["passed"] and decision["champion_version"] == "1"
    recorded = rollout.status(mlflow_uri, name)["versions"][v2]["rollout"]["comparison"]
    assert recorded["champion"]["BLEU-4"] == recorded["challenger"]["BLEU-4"] == decision["champion"]["BLEU-4"]
    assert json.dumps(recorded)                                       # plain JSON, readable by the CLI


def _rows(n: int, prefix: str = "s") -> list[dict]:
    return [{"study_id": f"{prefix}{i}", "generated": "FINDINGS: Heart size is normal. Lungs are clear.",
             "reference": "FINDINGS: Heart size is normal. Lungs are clear.",
             "generated_labels": [0.0] * 14, "mesh_labels": [0.0] * 14} for i in range(n)]


def test_the_pipeline_compares_a_new_challenger_with_the_champions_logged_predictions(mlflow_uri, tmp_path):
    """`compare_registered` (the register step): the champion run's evaluation/predictions.jsonl against the
    challenger's; a champion run without it, or other studies, is recorded as "not compared", never as passed."""
    name = "rollout-pipeline-compare"
    champion = _version(mlflow_uri, tmp_path, name, "p1")
    run_id = models._client(mlflow_uri).get_model_version(name, champion["version"]).run_id
    v2 = _version(mlflow_uri, tmp_path, name, "p2")["version"]
    mine = tmp_path / "predictions.jsonl"
    mine.write_text("\n".join(json.dumps(r) for r in _rows(12)) + "\n")
    missing = rollout.compare_registered(mlflow_uri, name, v2, mine, CFG)
    assert missing["status"] == "not compared" and "has no evaluation/predictions.jsonl" in missing["why"]
    logged = tmp_path / "champion-eval" / "predictions.jsonl"
    logged.parent.mkdir()
    logged.write_text("\n".join(json.dumps(r) for r in _rows(12)) + "\n")
    tracking.log_artifacts(mlflow_uri, run_id, logged, "evaluation")
    decision = rollout.compare_registered(mlflow_uri, name, v2, mine, CFG)
    assert decision["passed"] and decision["champion_version"] == champion["version"] and decision["n_studies"] == 12
    mine.write_text("\n".join(json.dumps(r) for r in _rows(12, prefix="other")) + "\n")
    other = rollout.compare_registered(mlflow_uri, name, v2, mine, CFG)
    assert other["status"] == "not compared"
    assert rollout.status(mlflow_uri, name)["versions"][v2]["rollout"]["comparison"]["status"] == "not compared"
