"""The whole pipeline DAG through kfp.local (SubprocessRunner, no Docker) against a real MLflow server on
127.0.0.1 (sqlite), on the smoke config. Two runs share the server: one whose gate thresholds are set to
pass (→ champion) and one with the real clinical gate (→ rejected: too few critical positives)."""

import json
import os
import zipfile
from pathlib import Path

import pytest

from model_core.artifacts import BASELINE_SUMMARY
from model_core.config import REPO_ROOT, load_config
from pipelines.local import format_summary, latest_model_dir, run_pipeline
from registry import models, tracking
from regulatory.archive import verify_packet

PERMISSIVE_GATE = ["gate.critical_sensitivity_min=-1.0", "gate.min_positives=0", "gate.specificity_floor=0.0",
                   "gate.hallucination_rate_max=1.01", "gate.gate_on_ci_lower_bound=false"]


@pytest.fixture(scope="module")
def pipeline_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    with tracking.MlflowServer(root / "mlflow") as server:
        os.environ["MLFLOW_TRACKING_URI"] = server.uri
        try:
            passing = run_pipeline(load_config(REPO_ROOT / "configs" / "smoke.yaml", PERMISSIVE_GATE),
                                   root / "pass", model_name="smoke-model", summary_json=root / "pass.json")
            real = run_pipeline(load_config(REPO_ROOT / "configs" / "smoke.yaml"), root / "real",
                                model_name="smoke-model")
            yield server.uri, passing, real, root
        finally:
            os.environ.pop("MLFLOW_TRACKING_URI", None)


def test_passing_gate_promotes_to_champion(pipeline_runs):
    uri, passing, _, root = pipeline_runs
    assert passing["gate"]["passed"] and passing["registered"]["status"] == "champion"
    assert "champion" in passing["registered"]["aliases"]
    assert set(passing["steps_seconds"]) >= {"validate_data", "eda", "train", "train_baseline", "evaluate", "export",
                                             "regulatory_packet"}
    assert (Path(passing["baseline_dir"]) / BASELINE_SUMMARY).is_file()
    assert json.loads((root / "pass.json").read_text())["model_dir"] == passing["model_dir"]
    assert str(latest_model_dir(root / "pass")) == passing["model_dir"]          # what the benchmarks default to
    assert latest_model_dir(root / "nothing-here") is None
    assert "BLEU-4" in format_summary(passing)


def test_real_gate_rejects_and_never_serves(pipeline_runs):
    uri, passing, real, _ = pipeline_runs
    assert not real["gate"]["passed"] and real["registered"]["status"] == "rejected"
    assert any("fails closed" in r for r in real["gate"]["reasons"])
    history = {h["version"]: h for h in models.history(uri, "smoke-model")}
    assert "champion" in history[passing["registered"]["version"]]["aliases"]
    assert history[real["registered"]["version"]]["aliases"] == ["rejected"]


def test_run_has_lineage_params_metrics_and_artifacts(pipeline_runs):
    import mlflow

    uri, passing, _, _ = pipeline_runs
    client = mlflow.MlflowClient(uri)
    run = client.get_run(passing["mlflow_run_id"])
    assert len(run.data.params["data.manifest_sha256"]) == 64 and "software.model_version" in run.data.tags
    assert "stage2.train.loss_report" in run.data.metrics and "eval.BLEU-4.ci_low" in run.data.metrics
    top = {a.path for a in client.list_artifacts(passing["mlflow_run_id"])}
    # the model: an MLflow 3 logged model, not a run artifact
    assert {"evaluation", "eda", "validation", "baseline", "onnx", "packet", "gate"} <= top


def test_packet_download_verifies_hashes(pipeline_runs, tmp_path):
    uri, passing, _, _ = pipeline_runs
    path = models.download_packet(uri, "smoke-model", passing["registered"]["version"], tmp_path, verify=verify_packet)
    with zipfile.ZipFile(path) as z:
        assert {"packet.pdf", "packet.html", "packet.json", "SHA256SUMS"} <= set(z.namelist())


def test_registered_model_loads_in_a_fresh_process(pipeline_runs, tmp_path):
    import subprocess
    import sys

    uri, passing, _, _ = pipeline_runs
    image = REPO_ROOT / "data" / "iu_xray" / "images" / "1_IM-0001-4001.dcm.jpg"
    code = ("import mlflow, pandas as pd, json, sys; mlflow.set_tracking_uri(sys.argv[1]);"
            "m = mlflow.pyfunc.load_model('models:/smoke-model@champion');"
            "print(json.dumps(m.predict(pd.DataFrame({'image_path': [sys.argv[2]]}))[0]['label_probabilities']))")
    out = subprocess.run([sys.executable, "-c", code, uri, str(image)], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    assert len(json.loads(out.stdout.strip().splitlines()[-1])) == 14
