"""Run the training pipeline locally with kfp's SubprocessRunner, against a local MLflow server.

`run_pipeline` starts an MLflow tracking server on 127.0.0.1 (sqlite + artifacts under the run folder)
unless MLFLOW_TRACKING_URI is set, opens one MLflow run for the whole pipeline, runs the DAG with
`kfp.local` (no Docker), closes the run and returns the summary that `rrg pipeline run` prints.
"""

import json
import logging
import os
import time
from pathlib import Path

import mlflow
from kfp import local

from components.steps import STEPS
from model_core import __version__
from model_core.artifacts import METRICS, MODEL_CARD
from model_core.config import Config
from model_core.files import atomic_write_text
from pipelines.training import build_pipeline
from registry import tracking

log = logging.getLogger(__name__)

LOCAL_IMAGE = f"rrg-components:{__version__}"  # recorded in the local IR; SubprocessRunner runs no container


def run_pipeline(cfg: Config, out_dir: str | os.PathLike, model_name: str = "rrg-report-generator",
                 summary_json: str | os.PathLike | None = None, dataset_uri: str = "", train_gpus: int = 1) -> dict:
    """Run the whole pipeline on `cfg`; outputs under out_dir (kfp/, mlflow/). Returns the summary dict.
    dataset_uri: a dataset pushed with `rrg data push` (s3://…) instead of the config's data; train_gpus: the
    train step's processes (one per GPU; CPU processes on gloo where there is none)."""
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    external_uri = os.environ.get("MLFLOW_TRACKING_URI")
    with tracking.tracking_server(out / "mlflow") as uri:
        run_id = tracking.start_run(uri, run_name=f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}",
                                    tags={"pipeline": "radiology-report-training", "config": cfg.name})
        tracking.log_params(uri, run_id, {"config": cfg.to_dict()})
        tracking.set_tags(uri, run_id, tracking.flatten("software", tracking.software_lineage()))
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(out / "kfp"),
                   raise_on_error=True)
        pipeline = build_pipeline(LOCAL_IMAGE)
        status = "FAILED"
        try:
            task = pipeline(config_json=json.dumps(cfg.to_dict()), tracking_uri=uri, mlflow_run_id=run_id,
                            model_name=model_name, dataset_uri=dataset_uri, train_gpus=train_gpus)
            registered = json.loads(task.output)
            status = "FINISHED"
        finally:
            tracking.end_run(uri, run_id, status)
        summary = collect_summary(uri, run_id, registered, out)
    summary["wall_seconds"] = round(time.perf_counter() - started, 1)
    summary["mlflow_ui"] = (external_uri
                            or f"mlflow ui --backend-store-uri sqlite:///{out / 'mlflow' / 'mlflow.db'} "
                               f"--artifacts-destination {out / 'mlflow' / 'artifacts'}  (then http://127.0.0.1:5000)")
    if summary_json:
        atomic_write_text(summary_json, json.dumps(summary, indent=2, default=str))
    return summary


def latest_model_dir(out_dir: str | os.PathLike) -> Path | None:
    """The model directory of the newest pipeline run in `out_dir` (e.g. runs/demo after `make run`), or None."""
    out_dir = Path(out_dir)
    try:
        model_dir = Path(json.loads((out_dir / "summary.json").read_text())["model_dir"])
        if (model_dir / MODEL_CARD).is_file():
            return model_dir
    except (OSError, ValueError, KeyError, TypeError):
        pass
    cards = sorted(out_dir.glob(f"kfp/*/train/model/{MODEL_CARD}"), key=lambda p: p.stat().st_mtime)
    return cards[-1].parent if cards else None


def step_seconds(metrics: dict) -> dict:
    """`step.<name>.seconds` metrics as {name: seconds}, in the DAG order of `components.steps.STEPS`
    (a step missing from STEPS comes last)."""
    order = {fn.__name__: i for i, fn in enumerate(STEPS)}
    times = {k.split(".")[1]: round(v, 1) for k, v in metrics.items() if k.startswith("step.")}
    return dict(sorted(times.items(), key=lambda item: (order.get(item[0], len(order)), item[0])))


def collect_summary(uri: str, run_id: str, registered: dict, out: Path) -> dict:
    """Per-step times (in DAG order), key metrics with CIs (model and baseline), gate decision, registry
    result, paths."""
    run = mlflow.MlflowClient(uri).get_run(run_id)
    metrics, tags = run.data.metrics, run.data.tags
    steps = step_seconds(metrics)
    run_root = max((out / "kfp").glob("*/"), key=lambda p: p.stat().st_mtime)
    evaluation = json.loads((run_root / "evaluate" / "evaluation" / METRICS).read_text())
    packets = sorted(run_root.glob("regulatory-packet/packet/*.zip"))
    return {
        "mlflow_run_id": run_id, "tracking_uri": uri, "steps_seconds": steps,
        "test_studies": evaluation["n_studies"],
        "metrics": {"model": evaluation["summary"], "baseline": evaluation.get("baseline", {})},
        "critical_findings": {f: {k: d[k] for k in ("sensitivity", "sensitivity_ci", "specificity", "positives",
                                                       "threshold", "flag_rate")}
                              for f, d in evaluation["critical_findings"].items()},
        "latency": evaluation.get("latency"),
        "gate": {"passed": tags.get("gate.passed") == "true", "decision": tags.get("gate.decision"),
                 "reasons": json.loads(tags.get("gate.reasons", "[]"))},
        "registered": registered,
        "model_dir": str(run_root / "train" / "model"),
        "baseline_dir": str(run_root / "train-baseline" / "baseline"),
        "packet": str(packets[-1]) if packets else None,
    }


def _ci(entry) -> str:
    if not isinstance(entry, dict) or entry.get("value") is None:
        return "n/a"
    if entry.get("ci_low") is None:
        return f"{entry['value']:.4f}"
    return f"{entry['value']:.4f} [{entry['ci_low']:.4f}, {entry['ci_high']:.4f}]"


def format_summary(summary: dict) -> str:
    lines = [f"== pipeline finished in {summary['wall_seconds']:.0f} s (MLflow run {summary['mlflow_run_id']})",
             "  step times (s): " + ", ".join(f"{k} {v}" for k, v in summary["steps_seconds"].items()),
             f"  test split: {summary['test_studies']} studies; model vs template baseline (95% bootstrap CI)"]
    model, base = summary["metrics"]["model"], summary["metrics"]["baseline"]
    for name in ("BLEU-4", "ROUGE-L", "CE micro F1", "CE macro F1", "hallucination rate"):
        lines.append(f"    {name:19s} {_ci(model.get(name)):34s} baseline {_ci(base.get(name))}")
    for finding, d in summary["critical_findings"].items():
        sens = "n/a" if d["sensitivity"] is None else f"{d['sensitivity']:.2f}"
        low = d["sensitivity_ci"][0]
        lines.append(f"    {finding:17s} sensitivity {sens} (95% CI low {'n/a' if low is None else f'{low:.2f}'}, "
                     f"{d['positives']} positives), specificity {d['specificity']:.2f}, flags {d['flag_rate']:.0%}")
    lat = summary.get("latency")
    if lat:
        lines.append(f"    latency (torch, beam {lat['num_beams']}): batch 1 p50 {lat['batch_1']['p50_ms']:.0f} ms, "
                     f"batch 8 p50 {lat['batch_8_per_report']['p50_ms']:.0f} ms/report")
    gate = summary["gate"]
    lines.append(f"  gate: {gate['decision'].upper() if gate['decision'] else 'n/a'}")
    lines += [f"    - {reason}" for reason in gate["reasons"]]
    reg = summary["registered"]
    lines.append(f"  registry: {reg['name']} version {reg['version']} -> {reg['status']} (aliases {reg['aliases']})")
    lines.append(f"  model directory: {summary['model_dir']}")
    lines.append(f"  baseline directory: {summary['baseline_dir']}")
    lines.append(f"  510(k) packet: {summary['packet']}")
    lines.append(f"  MLflow UI: {summary['mlflow_ui']}")
    return "\n".join(lines)
