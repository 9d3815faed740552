"""MLflow behind its basic-auth app (issue 12): a real `mlflow server --app-name basic-auth` on 127.0.0.1 refuses an
alias move or an artifact upload without credentials (401) and a user without permission (403), while rrg's
registry code works with $MLFLOW_TRACKING_USERNAME / $MLFLOW_TRACKING_PASSWORD. One server for the module."""

from __future__ import annotations

import secrets

import pytest
import requests
from mlflow.server import get_app_client

from model_core.evaluation.gate_record import RECORD_DIR, write_gate_record
from model_core.signing import load_signer
from registry import models, tracking

NAME = "auth-protected-model"
PIPELINE_USER = "pipeline"
VIEWER_USER = "viewer"


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    """The server, its users' passwords (random, per session) and the registered champion's version."""
    root = tmp_path_factory.mktemp("mlflow-auth")
    passwords = {user: secrets.token_urlsafe(16) for user in ("admin", PIPELINE_USER, VIEWER_USER)}
    config = tracking.write_basic_auth_config(root / "auth" / "basic_auth.ini")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", passwords["admin"])
        with tracking.MlflowServer(root / "mlflow", auth_config=config) as server:
            _as(env, "admin", passwords)
            users = get_app_client("basic-auth", tracking_uri=server.uri)
            users.create_user(PIPELINE_USER, passwords[PIPELINE_USER])
            users.create_user(VIEWER_USER, passwords[VIEWER_USER])
            _as(env, PIPELINE_USER, passwords)
            version = _register_signed_champion(server.uri, root / "candidate")
            yield {"uri": server.uri, "passwords": passwords, "version": version}


def _as(env, user: str | None, passwords: dict) -> None:
    """The MLflow client's credentials: `user`'s, or none."""
    if user is None:
        env.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
        env.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    else:
        env.setenv("MLFLOW_TRACKING_USERNAME", user)
        env.setenv("MLFLOW_TRACKING_PASSWORD", passwords[user])


def _register_signed_champion(uri: str, folder) -> str:
    """rrg's registry code, as the pipeline runs it: a run with a model and its signed passing gate decision,
    registered (first champion: the record is verified through the authenticated artifact proxy)."""
    model_dir = folder / "model"
    model_dir.mkdir(parents=True)
    (model_dir / "weights.txt").write_text("weights")
    metrics = folder / "metrics.json"
    metrics.write_text("{}")
    gate = {"passed": True, "decision": "promote", "reasons": ["all clinical safety checks passed"], "checks": []}
    record = write_gate_record(gate, model_dir, folder / RECORD_DIR, load_signer(), metrics_file=metrics)
    run_id = tracking.start_run(uri, run_name="authenticated")
    tracking.log_artifacts(uri, run_id, model_dir, "model")
    tracking.log_artifacts(uri, run_id, record.parent, RECORD_DIR)
    tracking.end_run(uri, run_id)
    result = models.register(uri, run_id, f"runs:/{run_id}/model", NAME, gate)
    assert result["status"] == "champion"
    return result["version"]


def test_rrg_registry_code_works_with_credentials(auth_server, monkeypatch, capsys):
    from rrg.cli import main

    _as(monkeypatch, PIPELINE_USER, auth_server["passwords"])
    assert models.reconcile_aliases(auth_server["uri"], NAME) == []
    (entry,) = models.history(auth_server["uri"], NAME)
    assert entry["aliases"] == ["champion"] and [a["action"] for a in entry["audit"]] == ["promote"]
    assert main(["registry", "reconcile", "--tracking-uri", auth_server["uri"], "--model", NAME]) == 0
    assert f"every alias of {NAME} agrees with its audit trail" in capsys.readouterr().err


def test_an_alias_move_or_artifact_upload_without_credentials_is_refused(auth_server):
    uri, version = auth_server["uri"], auth_server["version"]
    move = requests.post(f"{uri}/api/2.0/mlflow/registered-models/alias",
                         json={"name": NAME, "alias": "champion", "version": version}, timeout=30)
    assert move.status_code == 401
    upload = requests.put(f"{uri}/api/2.0/mlflow-artifacts/artifacts/1/replaced/model.pt", data=b"x", timeout=30)
    assert upload.status_code == 401
    assert requests.get(f"{uri}/health", timeout=30).status_code == 200      # probes need no credentials


def test_a_user_without_permission_cannot_move_an_alias(auth_server):
    uri, passwords = auth_server["uri"], auth_server["passwords"]
    move = requests.post(f"{uri}/api/2.0/mlflow/registered-models/alias",
                         json={"name": NAME, "alias": "rejected", "version": auth_server["version"]},
                         auth=(VIEWER_USER, passwords[VIEWER_USER]), timeout=30)
    assert move.status_code == 403
    owner = requests.get(f"{uri}/api/2.0/mlflow/registered-models/get", params={"name": NAME},
                         auth=(PIPELINE_USER, passwords[PIPELINE_USER]), timeout=30)
    assert owner.status_code == 200 and [a["alias"] for a in owner.json()["registered_model"]["aliases"]] == [
        "champion"]


def test_rrg_registry_without_credentials_says_so(auth_server, monkeypatch):
    _as(monkeypatch, None, auth_server["passwords"])
    with pytest.raises(models.RegistryError, match="refused .*credentials.*MLFLOW_TRACKING_USERNAME"):
        models.reconcile_aliases(auth_server["uri"], NAME)
    with pytest.raises(models.RegistryError, match="refused .*credentials"):
        models.history(auth_server["uri"], NAME)
