"""The monitoring DAG compiles for the cluster with a daily schedule; the cluster launcher submits the training
pipeline with caching off and links it to the trigger in MLflow; the local launcher links a finished local run."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import mlflow
import pytest
import yaml

from monitoring.launch import ClusterLauncher
from monitoring.trigger import RetrainRequest
from pipelines.cluster import compile_pipeline
from pipelines.monitoring import DAILY_CRON, STATE_PVC, compile_monitoring_pipeline, schedule_daily


class KfpRecorder(BaseHTTPRequestHandler):
    """A stand-in for the KFP API server (v2beta1): records requests, answers with ids."""
    requests: list = []

    def _reply(self, body: dict):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        KfpRecorder.requests.append((self.path, json.loads(body or b"{}")))
        if self.path.endswith("/experiments"):
            self._reply({"experiment_id": "exp-1", "display_name": "radiology-report-generator"})
        elif self.path.endswith("/runs"):
            self._reply({"run_id": "kfp-run-1", "display_name": "retrain", "state": "PENDING"})
        else:
            self._reply({"recurring_run_id": "rr-1", "display_name": "rrg-daily-monitoring"})

    def do_GET(self):
        KfpRecorder.requests.append((self.path, None))
        self._reply({"run_id": "kfp-run-1", "state": "RUNNING"} if "/runs/" in self.path else {})

    def log_message(self, *args):
        pass


@pytest.fixture()
def kfp_server():
    KfpRecorder.requests = []
    server = HTTPServer(("127.0.0.1", 0), KfpRecorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_monitoring_pipeline_compiles_and_is_scheduled_daily(tmp_path, kfp_server):
    package = compile_monitoring_pipeline(tmp_path / "monitoring.yaml", "registry.example.org/radiology")
    spec, platform = yaml.safe_load_all(package.read_text())
    assert list(spec["root"]["dag"]["tasks"]) == ["monitoring-cycle"]
    executor = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-monitoring-cycle"]
    assert executor["pvcMount"][0]["constant"] == STATE_PVC
    assert {s["secretName"] for s in executor["secretAsEnv"]} >= {"mlflow-credentials", "rrg-monitor-token"}
    image = spec["deploymentSpec"]["executors"]["exec-monitoring-cycle"]["container"]["image"]
    assert image.startswith("registry.example.org/radiology/rrg-components:")
    schedule_daily(kfp_server, package, params={"model_source": "models:/rrg-report-generator@champion"})
    (job,) = [body for path, body in KfpRecorder.requests if path.endswith("/recurringruns")]
    assert job["trigger"]["cron_schedule"]["cron"] == DAILY_CRON == "0 0 3 * * *"
    assert str(job["max_concurrency"]) == "1"


def test_cluster_launcher_submits_uncached_and_links_mlflow(tmp_path, kfp_server):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.MlflowClient(uri).create_experiment("radiology-report-generator",
                                               artifact_location=str(tmp_path / "artifacts"))
    drift = tmp_path / "drift.json"
    drift.write_text(json.dumps({"status": "drift"}))
    package = compile_pipeline(tmp_path / "training.yaml", "registry.example.org/radiology")
    launcher = ClusterLauncher(kfp_server, package, {"config_json": "{}", "tracking_uri": uri, "mlflow_run_id": "",
                                                     "model_name": "m"}, tracking_uri=uri)
    request = RetrainRequest("k" * 24, ["mmd_drift"], "rrg/7", str(drift))
    result = launcher(request)
    assert result.backend == "kfp" and result.run_id == "kfp-run-1" and result.status == "started"
    (run,) = [body for path, body in KfpRecorder.requests if path.endswith("/runs")]
    assert run["runtime_config"]["parameters"]["mlflow_run_id"] == result.mlflow_run_id
    spec = run["pipeline_spec"]["pipeline_spec"]
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    tasks = [t for dag in dags for t in dag["tasks"].values()]
    assert len(tasks) >= 9 and all(t.get("cachingOptions", {}).get("enableCache", False) is False for t in tasks)
    assert sum("register-model" in name for dag in dags for name in dag["tasks"]) == 2   # inside dsl.If / dsl.Else
    tags = mlflow.MlflowClient(uri).get_run(result.mlflow_run_id).data.tags
    assert tags["trigger.reason"] == "mmd_drift" and tags["trigger.idempotency_key"] == "k" * 24
    artifacts = [a.path for a in mlflow.MlflowClient(uri).list_artifacts(result.mlflow_run_id, "monitoring")]
    assert artifacts == ["monitoring/drift.json"]
    assert launcher.is_running("kfp-run-1") is True


def test_local_launcher_links_the_trigger_and_the_training_run(tmp_path, monkeypatch):
    # The real training pipeline takes ~15 minutes here (it runs in the end-to-end test); this test replaces only
    # run_pipeline with a stand-in that opens the pipeline's MLflow run, to check the linking around it.
    import pipelines.monitoring as local_monitoring
    from model_core.config import Config
    from registry import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.MlflowClient(uri).create_experiment("radiology-report-generator",
                                               artifact_location=str(tmp_path / "artifacts"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    seen = {}

    def stand_in_pipeline(cfg, out, model_name, summary_json):
        seen["uri"] = __import__("os").environ["MLFLOW_TRACKING_URI"]
        run_id = tracking.start_run(uri, run_name="demo-pipeline")
        return {"mlflow_run_id": run_id, "tracking_uri": uri, "registered": {"version": "2", "status": "champion"}}

    monkeypatch.setattr(local_monitoring, "run_pipeline", stand_in_pipeline)
    drift = tmp_path / "drift.json"
    drift.write_text("{}")
    result = local_monitoring.LocalRetrainLauncher(Config(), tmp_path / "runs")(
        RetrainRequest("a" * 24, ["mmd_drift"], "v1", str(drift)))
    client = mlflow.MlflowClient(uri)
    training, trigger = client.get_run(result.mlflow_run_id), client.get_run(result.detail["trigger_mlflow_run_id"])
    assert seen["uri"] == uri and result.status == "finished" and result.backend == "local"
    assert training.data.tags["trigger.reason"] == "mmd_drift" and training.data.params["trigger.idempotency_key"]
    assert training.data.tags["trigger.mlflow_run_id"] == trigger.info.run_id
    assert trigger.data.tags["retrain.mlflow_run_id"] == training.info.run_id
    assert trigger.data.tags["retrain.registered_version"] == "2" and trigger.info.status == "FINISHED"
    assert [a.path for a in client.list_artifacts(training.info.run_id, "monitoring")] == ["monitoring/drift.json"]
