"""The closed loop, end to end, with real parts: a smoke model is served (FastAPI app, torch backend) and writes the
prediction log; in-distribution studies start nothing; shifted studies (inverted photometry) → data drift → the
trigger runs the training pipeline through kfp.local (as `make run`) against a real MLflow server, which registers
a new version; the trigger, its drift report and the new run are linked in MLflow.

Slow by nature (one smoke training, ~120 generated reports, one smoke pipeline run); the smallest loop there is."""

import dataclasses
import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from model_core.artifacts import REFERENCE_SUMMARY
from model_core.config import REPO_ROOT, load_config
from model_core.data.iu_xray import group_studies, load_split
from model_core.training.trainer import train_report_model
from pipelines.monitoring import run_monitoring_cycle
from registry import models, tracking
from serving.app import create_app

WRITER = "writer-token-0123456789abcdef"
PERMISSIVE_GATE = ["gate.critical_sensitivity_min=-1.0", "gate.min_positives=0", "gate.specificity_floor=0.0",
                   "gate.hallucination_rate_max=1.01", "gate.gate_on_ci_lower_bound=false"]


def _png(path: str, invert: bool) -> bytes:
    image = Image.open(path).convert("L")
    if invert:                                      # MONOCHROME1 shown as MONOCHROME2: a classic PACS mix-up
        image = Image.fromarray(255 - np.asarray(image))
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def _serve(client: TestClient, studies: list[dict], images: list[str], invert: bool) -> None:
    for study in studies:
        files = [("files", ("frontal.png", _png(images[study["rows"][0]], invert), "image/png"))]
        r = client.post(f"/api/v1/studies/1.2.826.0.1.{abs(hash(study['study_id'])) % 10**9}/report:upload",
                        files=files, data={"request": json.dumps({"views": ["Frontal"]})},
                        headers={"Authorization": f"Bearer {WRITER}"})
        assert r.status_code == 200, r.text


@pytest.mark.slow
def test_shifted_traffic_retrains_and_registers_a_new_version(tmp_path, monkeypatch):
    log_url = str(tmp_path / "predictions.sqlite3")
    overrides = PERMISSIVE_GATE + [f"monitoring.log_url={log_url}", f"monitoring.state_dir={tmp_path / 'state'}",
                                   "monitoring.min_studies=40", "train.deepspeed=null", "serving.validated_pool=null",
                                   # the traffic below is frontal uploads only: the model and its reference are
                                   # built from the same views, else the empty lateral slot alone reads as drift
                                   "data.views=[Frontal]"]
    cfg = load_config(REPO_ROOT / "configs" / "smoke.yaml", overrides)
    model_dir = train_report_model(cfg, tmp_path / "served")
    assert (model_dir / REFERENCE_SUMMARY).is_file()   # training writes the monitors' reference

    traffic = load_split(dataclasses.replace(cfg.data, limit_studies=100), "train")
    studies, images = group_studies(traffic), traffic["images"]
    app = create_app(model_dir, tokens=f"{WRITER}:report.write", prediction_log=log_url,
                     audit_log=tmp_path / "audit.jsonl", report_store=":memory:", backend="torch",
                     validated_pool=None, allow_ungated_model=True)   # a smoke model: the gate never passed it
    with TestClient(app) as client:
        _serve(client, studies[:50], images, invert=False)
        assert app.state.service.writer.flush()
        calm = run_monitoring_cycle(cfg, str(model_dir), tmp_path / "cycle-calm", retrain_out=tmp_path / "retrain")
        assert calm["window_studies"] == 50 and calm["drift"]["status"] == "ok"
        assert calm["decision"]["action"] != "retrain" and not calm["trigger"]["fired"]
        _serve(client, studies[50:100], images, invert=True)
        assert app.state.service.writer.flush()

    with tracking.MlflowServer(tmp_path / "mlflow") as server:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
        shifted = run_monitoring_cycle(cfg, str(model_dir), tmp_path / "cycle-shift",
                                       retrain_out=tmp_path / "retrain", model_name="loop-model")
        assert shifted["drift"]["is_drift"] and shifted["decision"]["action"] == "retrain"
        run = shifted["trigger"]["run"]
        assert shifted["trigger"]["fired"] and run["status"] == "finished"
        history = models.history(server.uri, "loop-model")
        assert [v["version"] for v in history] == [run["detail"]["registered"]["version"]] == ["1"]
        client = tracking.mlflow.MlflowClient(server.uri)
        training = client.get_run(run["mlflow_run_id"])
        trigger = client.get_run(training.data.tags["trigger.mlflow_run_id"])
        assert training.data.tags["trigger.reason"].startswith("mmd_drift")
        assert trigger.data.tags["retrain.mlflow_run_id"] == training.info.run_id
        assert "monitoring/drift.json" in [a.path for a in client.list_artifacts(training.info.run_id, "monitoring")]
        again = run_monitoring_cycle(cfg, str(model_dir), tmp_path / "cycle-again", retrain_out=tmp_path / "retrain")
        assert not again["trigger"]["fired"] and "cooldown" in again["decision"]["held_back_by"]
