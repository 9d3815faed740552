"""KFP components of the monitoring pipeline: thin adapters around `monitoring.cycle.run_cycle`.

Component bodies import inside the function: KFP ships each body to its container on its own.
"""

from types import SimpleNamespace

from kfp import dsl
from kfp.dsl import HTML, Artifact, Output


def monitoring_cycle(config_json: str, model_source: str, tracking_uri: str, kfp_host: str, training_package: str,
                     training_params_json: str, cycle: Output[Artifact], drift_report: Output[HTML]) -> str:
    """One monitoring cycle on the served model (a model directory or models:/NAME@champion): drift, alerts, policy,
    and, on "retrain", the training pipeline submitted to kfp_host. Returns the decision (none / alert / retrain)."""
    import json
    import os
    import shutil
    from pathlib import Path

    from model_core.config import Config, build_section
    from monitoring.cycle import run_cycle
    from monitoring.launch import ClusterLauncher
    from monitoring.model_source import resolve_model

    cfg = build_section(Config, json.loads(config_json))
    if tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    model_dir, model_version = resolve_model(model_source, Path(cfg.monitoring.state_dir) / "models")
    launcher = (ClusterLauncher(kfp_host, training_package, json.loads(training_params_json or "{}"),
                                tracking_uri or None) if kfp_host and training_package else None)
    result = run_cycle(model_dir, cfg.monitoring, cycle.path, model_version=model_version,
                       launch=launcher, is_running=launcher.is_running if launcher else None)
    shutil.copy(Path(cycle.path) / "drift.html", drift_report.path)
    cycle.metadata.update({"decision": result["decision"]["action"], "drift": result["drift"]["status"],
                           "studies": result["window_studies"], "alerts": len(result["alerts"])})
    return result["decision"]["action"]


MONITORING_STEPS = (monitoring_cycle,)


def build_monitoring_components(image: str) -> SimpleNamespace:
    return SimpleNamespace(**{fn.__name__: dsl.component(fn, base_image=image) for fn in MONITORING_STEPS})
