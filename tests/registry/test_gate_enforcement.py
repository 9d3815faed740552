"""The gate nobody can bypass (issue 12), against a real MLflow server: promotion reads the signed gate decision
logged with the version's run, never the `gate.passed` tag; an alias moved to a rejected version by one REST call
is refused by serving and reported by the reconcile check."""

from __future__ import annotations

import json

import mlflow
import pytest
import requests

from model_core.evaluation.gate_record import RECORD_DIR, write_gate_record
from model_core.signing import load_signer
from registry import models, tracking
from serving.backends import ModelSourceError, load_model


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory):
    with tracking.MlflowServer(tmp_path_factory.mktemp("mlflow")) as server:
        yield server.uri


@pytest.fixture(autouse=True)
def isolated_keys(tmp_path, monkeypatch):
    """A development key of this test only; no configured keys (trust = that key)."""
    monkeypatch.setenv("RRG_KEYS_DIR", str(tmp_path / "keys"))
    for var in ("RRG_SIGNING_KEY", "RRG_SIGNING_KEY_FILE", "RRG_TRUSTED_KEYS"):
        monkeypatch.delenv(var, raising=False)


def _version(uri, tmp_path, name, label, verdict: str | None, tags: dict | None = None) -> str:
    """Register a version whose run holds a model directory (under artifacts/model_dir, as the pyfunc does) and,
    unless verdict is None, a signed gate decision for it; returns the version."""
    run_id = _run(uri, tmp_path, label, verdict)
    client = mlflow.MlflowClient(uri)
    try:
        client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(name)
    version = client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id).version
    for key, value in (tags or {}).items():
        client.set_model_version_tag(name, version, key, value)
    return version


def _run(uri, tmp_path, label, verdict: str | None) -> str:
    """A finished run holding a model directory and, unless verdict is None, its signed gate decision."""
    model_dir = tmp_path / label / "model" / "artifacts" / "model_dir"
    model_dir.mkdir(parents=True)
    (model_dir / "model_card.json").write_text(json.dumps({"version": label}))
    (model_dir / "model.pt").write_bytes(label.encode() * 64)
    run_id = tracking.start_run(uri, run_name=label)
    tracking.log_artifacts(uri, run_id, tmp_path / label / "model", "model")
    if verdict is not None:
        metrics = tmp_path / label / "metrics.json"
        metrics.write_text("{}")
        decision = {"passed": verdict == "promote", "decision": verdict, "checks": [],
                    "reasons": ["all clinical safety checks passed"] if verdict == "promote" else ["Fracture: 9/10"]}
        write_gate_record(decision, model_dir, tmp_path / label / RECORD_DIR, load_signer(), metrics_file=metrics)
        tracking.log_artifacts(uri, run_id, tmp_path / label / RECORD_DIR, RECORD_DIR)
    tracking.end_run(uri, run_id)
    return run_id


def test_a_forged_gate_passed_tag_does_not_promote_a_rejected_version(mlflow_uri, tmp_path):
    name = "gate-forged-tag"
    bad = _version(mlflow_uri, tmp_path, name, "bad", "reject", {"gate.passed": "true", "gate.decision": "promote"})
    with pytest.raises(models.RegistryError, match=r"did not pass the clinical safety gates: the signed gate "
                                                   r"decision is reject \(Fracture: 9/10\)"):
        models.promote(mlflow_uri, name, bad, "forged tag")
    assert "champion" not in mlflow.MlflowClient(mlflow_uri).get_model_version(name, bad).aliases


def test_a_version_without_gate_tags_or_decision_is_not_promoted(mlflow_uri, tmp_path):
    name = "gate-untagged"
    bare = _version(mlflow_uri, tmp_path, name, "bare", None)
    with pytest.raises(models.RegistryError, match="has no `gate/` artifact with a signed gate decision"):
        models.promote(mlflow_uri, name, bare, "no gate at all")


def test_a_passing_signed_version_is_promoted_and_audited(mlflow_uri, tmp_path):
    name = "gate-passing"
    good = _version(mlflow_uri, tmp_path, name, "good", "promote")
    result = models.promote(mlflow_uri, name, good, "release")
    assert result["aliases"] == ["champion"]
    assert models.reconcile_aliases(mlflow_uri, name) == []


def test_a_passing_decision_copied_to_another_run_does_not_promote_its_model(mlflow_uri, tmp_path):
    """The signature binds the decision to the model files: a good run's record on another model is refused."""
    name = "gate-copied"
    _version(mlflow_uri, tmp_path, name, "donor", "promote")
    other = _version(mlflow_uri, tmp_path, name, "other", None)
    run_id = mlflow.MlflowClient(mlflow_uri).get_model_version(name, other).run_id
    tracking.log_artifacts(mlflow_uri, run_id, tmp_path / "donor" / RECORD_DIR, RECORD_DIR)
    with pytest.raises(models.RegistryError, match="model files do not match.*changed: model.pt"):
        models.promote(mlflow_uri, name, other, "borrowed decision")


def test_a_rest_alias_move_to_a_rejected_version_is_refused_by_serving_and_reported(mlflow_uri, tmp_path,
                                                                                     monkeypatch):
    name = "gate-rest-alias"
    good = _version(mlflow_uri, tmp_path, name, "good", "promote")
    models.promote(mlflow_uri, name, good, "release")
    bad = _version(mlflow_uri, tmp_path, name, "bad", "reject")
    # the attack: one REST call, outside rrg
    resp = requests.post(f"{mlflow_uri}/api/2.0/mlflow/registered-models/alias",
                         json={"name": name, "alias": "champion", "version": bad}, timeout=10)
    assert resp.status_code == 200
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    with pytest.raises(ModelSourceError, match=r"refusing to serve models:/gate-rest-alias@champion: the signed "
                                               r"gate decision is reject"):
        load_model(f"models:/{name}@champion", backend="torch", cache_dir=tmp_path / "cache")
    found = models.reconcile_aliases(mlflow_uri, name)
    assert [(f["alias"], f["version"]) for f in found] == [("champion", bad)]
    assert "moved outside rrg" in found[0]["problem"]


def test_rrg_registry_reconcile_exits_1_on_an_unaudited_move(mlflow_uri, tmp_path, capsys):
    from rrg.cli import main

    name = "gate-reconcile-cli"
    good = _version(mlflow_uri, tmp_path, name, "good", "promote")
    models.promote(mlflow_uri, name, good, "release")
    assert main(["registry", "reconcile", "--tracking-uri", mlflow_uri, "--model", name]) == 0
    assert "every alias of gate-reconcile-cli agrees with its audit trail" in capsys.readouterr().err
    other = _version(mlflow_uri, tmp_path, name, "other", "promote")
    mlflow.MlflowClient(mlflow_uri).set_registered_model_alias(name, "champion", other)   # no audit entry
    assert main(["registry", "reconcile", "--tracking-uri", mlflow_uri, "--model", name]) == 1
    assert "ALERT: 1 alias move(s) of gate-reconcile-cli have no audit entry" in capsys.readouterr().err


def test_a_rejected_version_keeps_its_status_and_audit_entry(mlflow_uri, tmp_path):
    name = "gate-rejected-trail"
    run_id = tracking.start_run(mlflow_uri, run_name="r")
    (tmp_path / "w.txt").write_text("w")
    tracking.log_artifacts(mlflow_uri, run_id, tmp_path / "w.txt", "model")
    tracking.end_run(mlflow_uri, run_id)
    gate = {"passed": False, "decision": "reject", "reasons": ["Pneumothorax: only 9 positives"], "checks": []}
    result = models.register(mlflow_uri, run_id, f"runs:/{run_id}/model", name, gate)
    mv = mlflow.MlflowClient(mlflow_uri).get_model_version(name, result["version"])
    audit = [json.loads(v) for k, v in mv.tags.items() if k.startswith("audit.")]
    assert mv.tags["status"] == "rejected" and list(mv.aliases) == ["rejected"]
    assert [(a["action"], a["reason"]) for a in audit] == [("reject", "Pneumothorax: only 9 positives")]
    assert models.reconcile_aliases(mlflow_uri, name) == []


PASSING_DICT = {"passed": True, "decision": "promote", "reasons": ["all clinical safety checks passed"], "checks": []}


@pytest.mark.parametrize("verdict", ["reject", None])
def test_a_forged_passing_gate_dict_does_not_make_the_first_champion(mlflow_uri, tmp_path, verdict):
    """register() is handed the gate output as a dict: a dict saying "passed" over a run whose signed decision
    rejects (or that has none) moves no alias; the version is marked refused and audited."""
    name = f"gate-forged-dict-{verdict}"
    run_id = _run(mlflow_uri, tmp_path, "forged", verdict)
    with pytest.raises(models.RegistryError, match="did not pass the clinical safety gates"):
        models.register(mlflow_uri, run_id, f"runs:/{run_id}/model", name, PASSING_DICT)
    client = mlflow.MlflowClient(mlflow_uri)
    (mv,) = client.search_model_versions(f"name = '{name}'")
    mv = client.get_model_version(name, mv.version)
    assert list(mv.aliases) == [] and mv.tags["status"] == "refused"
    assert [json.loads(v)["action"] for k, v in mv.tags.items() if k.startswith("audit.")] == ["refuse"]
    assert client.get_registered_model(name).aliases == {}


def test_a_passing_signed_run_becomes_the_first_champion_through_register(mlflow_uri, tmp_path):
    name = "gate-first-champion"
    run_id = _run(mlflow_uri, tmp_path, "first", "promote")
    result = models.register(mlflow_uri, run_id, f"runs:/{run_id}/model", name, PASSING_DICT)
    assert result["status"] == "champion" and result["aliases"] == ["champion"]
    assert models.reconcile_aliases(mlflow_uri, name) == []
