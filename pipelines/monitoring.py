"""The monitoring side of the loop: the daily KFP monitoring pipeline, and the launchers that start a retrain.

    run_monitoring_cycle(cfg, model_dir, out_dir, retrain_out="runs/demo")    # `rrg monitor run`: one cycle here
    compile_monitoring_pipeline("monitoring.yaml", image_registry)             # the cluster DAG
    schedule_daily(host, package, params)                                      # cron 03:00 daily

Locally a retrain runs the training pipeline through kfp.local exactly as `make run` does
(`pipelines.local.run_pipeline` with the same config and output folder, so it registers into the same MLflow
registry). On a cluster `monitoring.launch.ClusterLauncher` submits the compiled training pipeline with caching
off. Either way an MLflow run records the trigger (reason, idempotency key, drift.json) and is linked both ways
with the training run (tags `trigger.mlflow_run_id` / `retrain.mlflow_run_id`).

The DAG has one step (`components.monitoring.monitoring_cycle`); on a cluster it mounts the PVC that holds the
trigger ledger (cooldown and idempotency must outlive the pod) and reads credentials from Kubernetes secrets.
"""

import dataclasses
import json
import logging
import os
from pathlib import Path

import kfp
from kfp import compiler, dsl, kubernetes

from components.monitoring import build_monitoring_components
from model_core.config import Config
from monitoring.cycle import run_cycle
from monitoring.launch import ClusterLauncher, open_linked_run
from monitoring.model_source import resolve_model
from monitoring.retrain_data import retraining_data
from monitoring.trigger import LaunchResult, RetrainRequest
from pipelines.cluster import compile_pipeline, component_image
from pipelines.local import run_pipeline
from pipelines.training import SECRETS
from registry import tracking

log = logging.getLogger(__name__)

PIPELINE_NAME = "radiology-report-monitoring"
DAILY_CRON = "0 0 3 * * *"        # KFP cron has a seconds field: 03:00 every day
DAILY_CRON_5 = "0 3 * * *"
STATE_PVC = "rrg-monitoring-state"
STATE_MOUNT = "/var/lib/rrg-monitoring"
MONITOR_TOKEN_SECRET = {"rrg-monitor-token": {"RRG_MONITOR_TOKEN": "token"}}   # scope service.admin (pause switch)


# --------------------------------------------------------------------------- launchers

class LocalRetrainLauncher:
    """Runs the training pipeline here (kfp.local + MLflow, as `make run`) and links it to the trigger in MLflow."""

    def __init__(self, cfg: Config, out_dir: str | os.PathLike, model_name: str = "rrg-report-generator"):
        self.cfg, self.out, self.model_name = cfg, Path(out_dir), model_name

    def __call__(self, request: RetrainRequest) -> LaunchResult:
        self.out.mkdir(parents=True, exist_ok=True)
        with tracking.tracking_server(self.out / "mlflow") as uri:
            previous = os.environ.get("MLFLOW_TRACKING_URI")
            os.environ["MLFLOW_TRACKING_URI"] = uri       # run_pipeline then uses this server, not one of its own
            trigger_run = open_linked_run(uri, request, f"monitoring-trigger-{request.idempotency_key[:12]}")
            try:
                # the base dataset plus every radiologist-validated study exported so far (its test split unchanged)
                data_cfg, data_summary = retraining_data(self.cfg, self.out / "retrain-data")
                summary = run_pipeline(dataclasses.replace(self.cfg, data=data_cfg), self.out,
                                       model_name=self.model_name, summary_json=self.out / "summary.json")
            except BaseException:
                tracking.set_tags(uri, trigger_run, {"retrain.status": "FAILED"})
                tracking.end_run(uri, trigger_run, "FAILED")
                raise
            finally:
                if previous is None:
                    os.environ.pop("MLFLOW_TRACKING_URI", None)
                else:
                    os.environ["MLFLOW_TRACKING_URI"] = previous
            run_id = summary["mlflow_run_id"]
            tracking.set_tags(uri, run_id, {**request.run_tags(), "trigger.mlflow_run_id": trigger_run,
                                            "retrain.validated_versions": ",".join(data_summary["validated_versions"])
                                            or "none"})
            tracking.log_params(uri, run_id, {"trigger": {"reason": ",".join(request.reasons),
                                                          "idempotency_key": request.idempotency_key}})
            if request.drift_report and Path(request.drift_report).is_file():
                tracking.log_artifacts(uri, run_id, request.drift_report, "monitoring")
            registered = summary.get("registered") or {}
            tracking.set_tags(uri, trigger_run, {"retrain.mlflow_run_id": run_id, "retrain.status": "FINISHED",
                                                 "retrain.registered_version": registered.get("version", "")})
            tracking.end_run(uri, trigger_run, "FINISHED")
        return LaunchResult("local", run_id, "finished", run_id,
                            {"trigger_mlflow_run_id": trigger_run, "registered": registered,
                             "summary": str(self.out / "summary.json"), "data": data_summary})


def run_monitoring_cycle(cfg: Config, model_dir: str, out_dir: str | os.PathLike, *,
                         retrain_out: str | os.PathLike = "runs/demo", model_version: str | None = None,
                         model_name: str = "rrg-report-generator", dry_run: bool = False,
                         image_registry: str | None = None, tracking_uri: str | None = None) -> dict:
    """One monitoring cycle of a model directory or `models:/NAME@ALIAS`; a retrain runs locally (kfp.local)
    unless `monitoring.kfp_host` names a cluster, where the training pipeline (compiled for `image_registry`) is
    submitted. dry_run: decide, but start nothing."""
    launcher = None
    if not dry_run and cfg.monitoring.kfp_host:
        if not image_registry:
            raise ValueError("a cluster retrain needs --image-registry (the training pipeline's images)")
        package = compile_pipeline(Path(out_dir) / "training-pipeline.yaml", image_registry)
        params = {"config_json": json.dumps(cfg.to_dict()), "tracking_uri": tracking_uri or "",
                  "mlflow_run_id": "", "model_name": model_name}
        launcher = ClusterLauncher(cfg.monitoring.kfp_host, package, params, tracking_uri)
    elif not dry_run:
        launcher = LocalRetrainLauncher(cfg, retrain_out, model_name)
    model_dir, logged_version = resolve_model(str(model_dir), Path(cfg.monitoring.state_dir) / "models")
    return run_cycle(model_dir, cfg.monitoring, out_dir, model_version=model_version or logged_version,
                     launch=launcher, is_running=getattr(launcher, "is_running", None))


# --------------------------------------------------------------------------- the KFP monitoring DAG

def build_monitoring_pipeline(image: str, cluster: bool = False):
    c = build_monitoring_components(image)

    @dsl.pipeline(name=PIPELINE_NAME, description="Daily: drift, alerts, and the retrain trigger.")
    def monitoring_pipeline(config_json: str, model_source: str, tracking_uri: str, kfp_host: str,
                            training_package: str, training_params_json: str) -> str:
        task = c.monitoring_cycle(config_json=config_json, model_source=model_source, tracking_uri=tracking_uri,
                                  kfp_host=kfp_host, training_package=training_package,
                                  training_params_json=training_params_json)
        task.set_caching_options(False)           # every day is a new window
        if cluster:
            for secret, keys in {**SECRETS, **MONITOR_TOKEN_SECRET}.items():
                kubernetes.use_secret_as_env(task, secret_name=secret,
                                             secret_key_to_env={v: k for k, v in keys.items()})
            kubernetes.mount_pvc(task, pvc_name=STATE_PVC, mount_path=STATE_MOUNT)
        return task.outputs["Output"]

    return monitoring_pipeline


def compile_monitoring_pipeline(out: str | os.PathLike, image_registry: str) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{out.name}")  # the compiler wants a .yaml suffix
    compiler.Compiler().compile(build_monitoring_pipeline(component_image(image_registry), cluster=True), str(tmp))
    os.replace(tmp, out)
    return out


def schedule_daily(host: str, package_path: str | os.PathLike, params: dict,
                   experiment: str = "radiology-report-generator", job_name: str = "rrg-daily-monitoring",
                   cron: str = DAILY_CRON, existing_token: str | None = None):
    """Create the daily recurring monitoring run on a KFP API server (one at a time, no catch-up)."""
    client = kfp.Client(host=host, existing_token=existing_token)
    exp = client.create_experiment(name=experiment)
    return client.create_recurring_run(
        experiment_id=exp.experiment_id, job_name=job_name, cron_expression=cron,
        pipeline_package_path=str(package_path), params=params, enabled=True, max_concurrency=1, no_catchup=True)
