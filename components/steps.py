"""KFP components of the training pipeline: thin adapters around library functions.

Each component reads its inputs, calls one library function (model_core / regulatory / registry), writes
typed KFP artifacts, and logs its part to the pipeline's MLflow run. The functions are built by
`build_components(image, train_image)` so the container images are a compile-time choice (the CUDA image for
`train`, the CPU image for the rest); locally they run in subprocesses of this interpreter
(`kfp.local.SubprocessRunner(use_venv=False)`).

Data: with a `dataset_uri`, validate_data materialises and verifies the pushed dataset into its Dataset artifact
(`model_core.data.remote`), and every step that reads data points its config there (`dataset_config`: the
artifact's own local path, which differs from pod to pod); without one, the config's data is used as it is.

Component bodies import inside the function: KFP ships each body to its container on its own.
"""


from types import SimpleNamespace

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output


def validate_data(config_json: str, tracking_uri: str, mlflow_run_id: str, dataset_uri: str,
                  dataset: Output[Dataset], validation_report: Output[HTML]) -> str:
    """Materialise the dataset at `dataset_uri` (every SHA-256 verified; a mismatch fails the run naming the
    file) or take the config's; then Great Expectations over the manifest and images, stopping the pipeline on
    any failed expectation."""
    import json
    import shutil
    import time
    from pathlib import Path

    from model_core.config import Config, build_section, resolve_path
    from model_core.data.remote import dataset_config, materialise_for_pipeline
    from model_core.data.validation import raise_on_failure, validate_dataset
    from registry import tracking

    t0 = time.perf_counter()
    cfg = build_section(Config, json.loads(config_json))
    if dataset_uri:
        dataset.metadata.update(materialise_for_pipeline(dataset_uri, dataset.path))
    cfg.data = dataset_config(cfg.data, dataset.path, dataset.metadata)
    root = resolve_path(cfg.data.root)
    manifest = resolve_path(cfg.data.manifest) if cfg.data.manifest else root / "manifest.csv"
    out = Path(dataset.path)
    result = validate_dataset(manifest, root, out / "validation", min_image_size=cfg.model.vision.image_size)
    shutil.copy(result.report_html, validation_report.path)
    tracking.log_artifacts(tracking_uri, mlflow_run_id, out / "validation", "validation")
    lineage = tracking.data_lineage(root, manifest)
    if dataset_uri:
        lineage.update({k: dataset.metadata[k] for k in ("dataset_uri", "sha256sums_sha256")})
    (out / "lineage.json").write_text(json.dumps(lineage, indent=2))
    tracking.log_params(tracking_uri, mlflow_run_id, {"data": lineage})
    dataset.metadata.update({"manifest": str(manifest), "root": str(root), **lineage})
    tracking.log_metrics(tracking_uri, mlflow_run_id, {"step.validate_data.seconds": time.perf_counter() - t0})
    raise_on_failure(result)
    return lineage["manifest_sha256"]


def eda(config_json: str, tracking_uri: str, mlflow_run_id: str, dataset: Input[Dataset],
        figures: Output[Artifact]) -> None:
    """EDA figures, per-split statistics and labeler-vs-MeSH agreement as a run artifact."""
    import json
    import time
    from pathlib import Path

    from model_core.config import Config, build_section
    from model_core.data.eda import run_data_report
    from model_core.data.remote import dataset_config
    from model_core.evaluation.baseline import dataset_paths
    from registry import tracking

    t0 = time.perf_counter()
    cfg = build_section(Config, json.loads(config_json))
    root, manifest = dataset_paths(dataset_config(cfg.data, dataset.path, dataset.metadata))
    out = Path(figures.path)
    paths = run_data_report(out, root=root, manifest=manifest, limit_studies=cfg.data.limit_studies)
    figures.metadata.update({name: p.name for name, p in paths.items()})
    tracking.log_artifacts(tracking_uri, mlflow_run_id, out, "eda")
    tracking.log_metrics(tracking_uri, mlflow_run_id, {"step.eda.seconds": time.perf_counter() - t0})


def train(config_json: str, tracking_uri: str, mlflow_run_id: str, num_gpus: int, dataset: Input[Dataset],
          model: Output[Model]) -> None:
    """Two-stage training through DeepSpeed, data-parallel over `num_gpus` worker processes (one per GPU, started
    by `model_core.training.distributed.launch_workers`; one process: in this one). Rank 0 logs each epoch to
    MLflow as it ends and writes the model directory, the Model artifact."""
    import json
    import sys
    import tempfile
    import time
    from pathlib import Path

    from model_core.artifacts import MODEL_CARD
    from model_core.config import Config, build_section
    from model_core.data.remote import dataset_config
    from model_core.training.distributed import launch_workers
    from model_core.training.trainer import train_report_model
    from registry import tracking

    t0 = time.perf_counter()
    cfg = build_section(Config, json.loads(config_json))
    cfg.data = dataset_config(cfg.data, dataset.path, dataset.metadata)
    if num_gpus > 1:
        with tempfile.TemporaryDirectory() as tmp:
            config_file = Path(tmp) / "config.json"
            config_file.write_text(json.dumps(cfg.to_dict()))
            launch_workers([sys.executable, "-m", "components.train_worker", "--config-json", str(config_file),
                            "--out", model.path, "--tracking-uri", tracking_uri, "--run-id", mlflow_run_id],
                           nproc=num_gpus)
    else:
        train_report_model(cfg, model.path, on_epoch=lambda stage, record: tracking.log_history(
            tracking_uri, mlflow_run_id, {stage: [record]}))
    card = json.loads((Path(model.path) / MODEL_CARD).read_text())
    model.metadata.update({"version": card["version"], "training_seconds": card["training_seconds"],
                           "training_processes": card["distributed"]["world_size"]})
    tracking.log_metrics(tracking_uri, mlflow_run_id, {"step.train.seconds": time.perf_counter() - t0,
                                                        "training_seconds": card["training_seconds"]})


def train_baseline(config_json: str, tracking_uri: str, mlflow_run_id: str, dataset: Input[Dataset],
                   baseline: Output[Model]) -> None:
    """The template baseline (CNN + report table) on the same data; runs beside `train`, compared in `evaluate`."""
    import json
    import time
    from pathlib import Path

    from model_core.artifacts import BASELINE_SUMMARY
    from model_core.config import Config, build_section
    from model_core.data.remote import dataset_config
    from model_core.evaluation.baseline import train_baseline as train_template_baseline
    from registry import tracking

    t0 = time.perf_counter()
    cfg = build_section(Config, json.loads(config_json))
    cfg.data = dataset_config(cfg.data, dataset.path, dataset.metadata)
    baseline_dir = Path(train_template_baseline(cfg, baseline.path))
    summary = json.loads((baseline_dir / BASELINE_SUMMARY).read_text())
    baseline.metadata.update({"kind": summary["kind"]})
    tracking.log_artifacts(tracking_uri, mlflow_run_id, baseline_dir / BASELINE_SUMMARY, "baseline")
    tracking.log_metrics(tracking_uri, mlflow_run_id, {"step.train_baseline.seconds": time.perf_counter() - t0})


def evaluate(config_json: str, tracking_uri: str, mlflow_run_id: str, dataset: Input[Dataset], model: Input[Model],
             baseline: Input[Model], metrics: Output[Metrics], evaluation: Output[Artifact]) -> None:
    """Candidate and template baseline on the test split, side by side, with 95 % CIs."""
    import json
    import time
    from pathlib import Path

    from model_core.artifacts import BASELINE_EVAL_DIR, CALIBRATION_PLOT, METRICS, PER_FINDING_F1_PLOT, PREDICTIONS
    from model_core.config import Config, build_section
    from model_core.data.remote import dataset_config
    from model_core.evaluation.evaluate import evaluate_candidate
    from registry import tracking

    t0 = time.perf_counter()
    cfg = build_section(Config, json.loads(config_json))
    cfg.data = dataset_config(cfg.data, dataset.path, dataset.metadata)
    result = evaluate_candidate(cfg, model.path, evaluation.path, baseline.path)
    flat = tracking.evaluation_metrics(result)
    for key, value in flat.items():
        metrics.log_metric(key, value)
    tracking.log_metrics(tracking_uri, mlflow_run_id, {**flat, "step.evaluate.seconds": time.perf_counter() - t0})
    out = Path(evaluation.path)
    # predictions.jsonl (per test study: drafts, labels, probabilities) lets a later version be compared with this
    # one on the same studies (registry.rollout.compare_registered); MLflow's store is access-controlled like the data
    for name in (METRICS, PER_FINDING_F1_PLOT, CALIBRATION_PLOT, PREDICTIONS):
        tracking.log_artifacts(tracking_uri, mlflow_run_id, out / name, "evaluation")
    tracking.log_artifacts(tracking_uri, mlflow_run_id, out / BASELINE_EVAL_DIR / METRICS, "evaluation/baseline")


def gate(config_json: str, tracking_uri: str, mlflow_run_id: str, model: Input[Model], evaluation: Input[Artifact],
         decision: Output[Artifact], gate_record: Output[Artifact]) -> bool:
    """Clinical safety gates; returns whether the candidate may be promoted. The decision is also written as a
    signed record bound to the model's file hashes (`gate_record`, MLflow artifact `gate/`): promotion and
    serving trust that record, never the tags."""
    import json
    from pathlib import Path

    from model_core.artifacts import METRICS
    from model_core.config import Config, build_section
    from model_core.evaluation.gate_record import RECORD_DIR, write_gate_record
    from model_core.evaluation.gates import gate_decision
    from model_core.signing import load_signer
    from registry import tracking

    cfg = build_section(Config, json.loads(config_json))
    metrics_file = Path(evaluation.path) / METRICS
    result = gate_decision(json.loads(metrics_file.read_text()), cfg.gate)
    record = write_gate_record(result, model.path, gate_record.path, load_signer(), metrics_file=metrics_file)
    Path(decision.path).write_bytes(record.read_bytes())   # the same signed bytes, for the packet and the registry
    decision.metadata.update({"passed": result["passed"], "decision": result["decision"]})
    tracking.set_tags(tracking_uri, mlflow_run_id, {"gate.passed": str(result["passed"]).lower(),
                                                    "gate.decision": result["decision"],
                                                    "gate.reasons": json.dumps(result["reasons"])})
    tracking.log_artifacts(tracking_uri, mlflow_run_id, gate_record.path, RECORD_DIR)
    return bool(result["passed"])


def clinical_evidence(config_json: str, tracking_uri: str, mlflow_run_id: str, dataset: Input[Dataset],
                      model: Input[Model], evaluation: Input[Artifact], evidence: Output[Artifact]) -> None:
    """Error analysis, bias audit, and the drift monitor's check on held-out reference studies of the evaluated
    candidate. The packet reads the aggregates and charts; the per-study list and the example images (study ids,
    patient images) go to MLflow only (`evidence/`)."""
    import json
    import time
    from pathlib import Path

    from model_core.artifacts import DRIFT_CHECK, EVIDENCE_BIAS_DIR, EVIDENCE_ERRORS_DIR
    from model_core.config import Config, build_section
    from model_core.data.remote import dataset_config
    from model_core.evaluation.bias_audit import run_bias_audit
    from model_core.evaluation.error_analysis import run_error_analysis
    from model_core.files import atomic_write_text
    from monitoring.holdout import holdout_drift_check
    from registry import tracking

    t0 = time.perf_counter()
    cfg = build_section(Config, json.loads(config_json))
    cfg.data = dataset_config(cfg.data, dataset.path, dataset.metadata)
    out = Path(evidence.path)
    errors = run_error_analysis(cfg, model.path, evaluation.path, out / EVIDENCE_ERRORS_DIR)
    audit = run_bias_audit(cfg, model.path, evaluation.path, out / EVIDENCE_BIAS_DIR)
    drift = holdout_drift_check(model.path, cfg.monitoring, seed=cfg.eval.seed)
    atomic_write_text(out / DRIFT_CHECK, json.dumps(drift, indent=2))
    evidence.metadata.update({"study_error_rate": errors["study_error_rate"]["value"],
                              "flagged_subgroups": len(audit["flagged"]), "drift_status": drift["status"]})
    tracking.log_artifacts(tracking_uri, mlflow_run_id, out, "evidence")
    tracking.log_metrics(tracking_uri, mlflow_run_id, {
        "evidence.study_error_rate": errors["study_error_rate"]["value"],
        **{f"evidence.{c}.study_rate": v["study_rate"]["value"] for c, v in errors["categories"].items()},
        "evidence.flagged_subgroups": len(audit["flagged"]),
        "evidence.drift_check.p_value": drift["p_value"], "evidence.drift_check.statistic": drift["statistic"],
        "step.clinical_evidence.seconds": time.perf_counter() - t0})


def export(config_json: str, tracking_uri: str, mlflow_run_id: str, dataset: Input[Dataset], model: Input[Model],
           onnx_model: Output[Model]) -> None:
    """ONNX export (FP32 + INT8 LM), parity check, latency; TensorRT only where it imports."""
    import json
    import time

    from model_core.config import Config, build_section
    from model_core.data.remote import dataset_config
    from model_core.export.step import export_onnx
    from registry import tracking

    t0 = time.perf_counter()
    cfg = build_section(Config, json.loads(config_json))
    cfg.data = dataset_config(cfg.data, dataset.path, dataset.metadata)
    report = export_onnx(model.path, onnx_model.path, data_cfg=cfg.data)
    onnx_model.metadata.update({k: v for k, v in report.items() if isinstance(v, (str, int, float, bool))})
    tracking.log_artifacts(tracking_uri, mlflow_run_id, onnx_model.path, "onnx")
    tracking.log_metrics(tracking_uri, mlflow_run_id, {"step.export.seconds": time.perf_counter() - t0})


def regulatory_packet(model_name: str, tracking_uri: str, mlflow_run_id: str, dataset: Input[Dataset],
                      model: Input[Model], evaluation: Input[Artifact], decision: Input[Artifact],
                      evidence: Input[Artifact], packet: Output[Artifact]) -> str:
    """The signed packet (PDF, HTML, JSON, SBOM, evidence charts + SHA-256 manifest and its signature), reproducible
    from the run, compared with the current champion's packet; error analysis, bias audit and the drift check from
    the clinical_evidence step."""
    import tempfile
    import time

    from model_core.config import DataConfig
    from model_core.data.remote import dataset_config
    from registry import models, tracking
    from regulatory.assemble import build_run_packet

    t0 = time.perf_counter()
    lineage = dict(dataset.metadata)
    if lineage.get("data_dir"):   # a materialised copy: this pod's path to it (splits.csv is hashed there)
        lineage["root"] = dataset_config(DataConfig(), dataset.path, lineage).root
    with tempfile.TemporaryDirectory() as champion_dir:
        path = build_run_packet(run_id=mlflow_run_id, model_name=model_name, model_dir=model.path,
                                evaluation_dir=evaluation.path, decision_path=decision.path,
                                lineage=lineage, out_dir=packet.path, evidence_dir=evidence.path,
                                champion_packet=models.download_champion_packet(tracking_uri, model_name, champion_dir))
    tracking.log_artifacts(tracking_uri, mlflow_run_id, path, "packet")
    tracking.log_metrics(tracking_uri, mlflow_run_id, {"step.regulatory_packet.seconds": time.perf_counter() - t0})
    return str(path)


def register_model(config_json: str, model_name: str, tracking_uri: str, mlflow_run_id: str, model: Input[Model],
                   evaluation: Input[Artifact], decision: Input[Artifact]) -> str:
    """Register the version with its gate tags: `rejected` when the gate failed; the first passing version becomes
    `champion`, later ones `challenger`, checked against the champion on the same test studies."""
    import json
    from pathlib import Path

    from model_core.artifacts import PREDICTIONS
    from model_core.config import Config, build_section
    from registry import models, rollout, tracking

    cfg = build_section(Config, json.loads(config_json))
    uri = models.log_model(tracking_uri, mlflow_run_id, model.path)
    result = models.register(tracking_uri, mlflow_run_id, uri, model_name, json.loads(Path(decision.path).read_text()))
    if result["status"] == models.CHALLENGER:
        comparison = rollout.compare_registered(tracking_uri, model_name, result["version"],
                                                Path(evaluation.path) / PREDICTIONS, cfg.rollout, seed=cfg.eval.seed)
        reasons = "; ".join(comparison.get("reasons", []))
        result["comparison"] = comparison.get("status") or ("non-inferior" if comparison["passed"] else reasons)
    tracking.set_tags(tracking_uri, mlflow_run_id, {"registered.version": result["version"],
                                                    "registered.status": result["status"]})
    return json.dumps(result)


# DAG order; `pipelines.local` lists step times in this order.
STEPS = (validate_data, eda, train, train_baseline, evaluate, gate, clinical_evidence, export, regulatory_packet,
         register_model)


def build_components(image: str, train_image: str | None = None) -> SimpleNamespace:
    """KFP components of every step: `train` in `train_image` (the CUDA build; default: `image`), the others in
    `image` (the CPU build)."""
    images = {fn.__name__: image for fn in STEPS} | {"train": train_image or image}
    return SimpleNamespace(**{fn.__name__: dsl.component(fn, base_image=images[fn.__name__]) for fn in STEPS})
