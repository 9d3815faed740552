"""Starting the training pipeline on a Kubeflow cluster when the trigger fires.

    launcher = ClusterLauncher(host, package_path="training-pipeline.yaml", params={...}, tracking_uri=URI)
    result = launcher(request)              # MLflow run with the trigger's tags + drift report, then the KFP run
    launcher.is_running(result.run_id)      # for the trigger's no-overlap rule

The compiled training pipeline (`rrg pipeline compile`) is a file in the monitoring image or on shared storage;
monitoring does not import the pipelines package. The training pipeline takes `mlflow_run_id`: the launcher creates
that run first, tagged with why it exists (`RetrainRequest.run_tags`) and with drift.json as an artifact, so the
trigger, the drift report and the new run (and the model version it registers) are linked in MLflow. Caching is off:
a retrain must not reuse a previous run's outputs. The local counterpart (kfp.local, as `make run`) is
`pipelines.monitoring.LocalRetrainLauncher`.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import kfp
import mlflow
import yaml

from monitoring.trigger import LaunchResult, RetrainRequest

log = logging.getLogger(__name__)

EXPERIMENT = "radiology-report-generator"
RUNNING_STATES = {"PENDING", "RUNNING", "PAUSED", "CANCELING", "RUNTIME_STATE_UNSPECIFIED"}


def open_linked_run(tracking_uri: str, request: RetrainRequest, run_name: str, experiment: str = EXPERIMENT) -> str:
    """An MLflow run tagged with the trigger (reason, key, model version), drift.json attached; returns its id."""
    client = mlflow.MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    run = client.create_run(exp_id, run_name=run_name, tags=request.run_tags())
    client.log_param(run.info.run_id, "trigger.reason", ",".join(request.reasons)[:6000])
    client.log_param(run.info.run_id, "trigger.idempotency_key", request.idempotency_key)
    if request.drift_report and os.path.isfile(request.drift_report):
        client.log_artifact(run.info.run_id, request.drift_report, "monitoring")
    return run.info.run_id


def uncached_package(package_path: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """A copy of a compiled pipeline with caching off in every task, sub-DAGs included: kfp.Client's
    `enable_caching=False` reaches only the root DAG's tasks (kfp 2.17), not those inside dsl.If / dsl.Else, and a
    retrain must not reuse a cached registration."""
    docs = list(yaml.safe_load_all(Path(package_path).read_text()))
    spec = docs[0]
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec.get("components", {}).values() if "dag" in c]
    for dag in dags:
        for task in dag.get("tasks", {}).values():
            task["cachingOptions"] = {"enableCache": False}
    out = Path(out_path)
    out.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return out


class ClusterLauncher:
    def __init__(self, host: str, package_path: str | os.PathLike, params: dict, tracking_uri: str | None = None,
                 experiment: str = EXPERIMENT, existing_token: str | None = None):
        if not os.path.isfile(package_path):
            raise FileNotFoundError(f"compiled training pipeline not found: {package_path} (rrg pipeline compile)")
        self.host, self.package_path, self.params = host, str(package_path), dict(params)
        self.tracking_uri, self.experiment, self.token = tracking_uri, experiment, existing_token

    def _client(self) -> kfp.Client:
        return kfp.Client(host=self.host, existing_token=self.token)

    def __call__(self, request: RetrainRequest) -> LaunchResult:
        run_name = f"retrain-{request.idempotency_key[:12]}"
        params = dict(self.params)
        mlflow_run_id = None
        if self.tracking_uri:
            mlflow_run_id = open_linked_run(self.tracking_uri, request, run_name, self.experiment)
            params["mlflow_run_id"] = mlflow_run_id
        with tempfile.TemporaryDirectory() as tmp:
            package = uncached_package(self.package_path, Path(tmp) / "training-pipeline.yaml")
            run = self._client().create_run_from_pipeline_package(
                str(package), arguments=params, run_name=run_name, experiment_name=self.experiment,
                enable_caching=False)
        log.info("retraining run %s submitted to %s (MLflow run %s)", run.run_id, self.host, mlflow_run_id)
        return LaunchResult("kfp", run.run_id, "started", mlflow_run_id, {"host": self.host, "run_name": run_name})

    def is_running(self, run_id: str) -> bool:
        state = getattr(self._client().get_run(run_id), "state", None)
        return str(state).upper() in RUNNING_STATES if state is not None else True
