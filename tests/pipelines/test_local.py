"""The local runner's summary, without running the pipeline (the whole run: test_pipeline_smoke.py)."""

from components.steps import STEPS
from pipelines.local import format_summary, step_seconds


def test_step_times_come_in_dag_order_with_unknown_steps_last():
    metrics = {"step.export.seconds": 3.04, "step.train_baseline.seconds": 2.0, "step.validate_data.seconds": 1.26,
               "step.train.seconds": 9.0, "step.zz_extra.seconds": 0.5, "eval.BLEU-4": 0.1}
    assert list(step_seconds(metrics)) == ["validate_data", "train", "train_baseline", "export", "zz_extra"]
    assert step_seconds(metrics)["validate_data"] == 1.3
    names = [fn.__name__ for fn in STEPS]
    assert names.index("train") < names.index("train_baseline") < names.index("evaluate")


def test_format_summary_names_both_directories():
    ci = {"value": 0.5, "ci_low": 0.4, "ci_high": 0.6}
    summary = {"wall_seconds": 12.0, "mlflow_run_id": "r1", "steps_seconds": {"train": 9.0, "train_baseline": 2.0},
               "test_studies": 3, "metrics": {"model": {"BLEU-4": ci}, "baseline": {}}, "critical_findings": {},
               "latency": None, "gate": {"passed": False, "decision": "reject", "reasons": ["too few positives"]},
               "registered": {"name": "m", "version": "1", "status": "rejected", "aliases": ["rejected"]},
               "model_dir": "/runs/x/train/model", "baseline_dir": "/runs/x/train-baseline/baseline",
               "packet": None, "mlflow_ui": "mlflow ui"}
    text = format_summary(summary)
    assert "step times (s): train 9.0, train_baseline 2.0" in text
    assert "baseline directory: /runs/x/train-baseline/baseline" in text
    assert "0.5000 [0.4000, 0.6000]" in text and "- too few positives" in text
