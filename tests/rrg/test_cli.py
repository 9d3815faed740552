"""rrg.cli run as a user runs it: `rrg baseline train` then `rrg baseline evaluate` on what it wrote.

The two commands once disagreed on the weights' file name (model.pt written, baseline.pt checked), so the
pair could never run; this test runs them back to back through `main`, smoke config, 8-study dataset.
"""

import json

from tiny_models import SMOKE

from model_core.artifacts import BASELINE_SUMMARY, BASELINE_WEIGHTS, METRICS, PREDICTIONS
from rrg.cli import main


def test_baseline_train_then_evaluate(tiny_iu, tmp_path, capsys):
    model_dir, eval_dir = tmp_path / "baseline", tmp_path / "eval"
    assert main(["baseline", "train", "--config", str(SMOKE), "--set", "data.limit_studies=12",
                 "--out", str(model_dir)]) == 0
    assert (model_dir / BASELINE_WEIGHTS).is_file() and (model_dir / BASELINE_SUMMARY).is_file()
    assert main(["baseline", "evaluate", "--config", str(SMOKE), "--model", str(model_dir),
                 "--manifest", str(tiny_iu / "manifest.csv"), "--images-root", str(tiny_iu),
                 "--out", str(eval_dir)]) == 0
    metrics = json.loads((eval_dir / METRICS).read_text())
    assert metrics["n_studies"] == 8 and metrics["split"] == "all"
    assert len((eval_dir / PREDICTIONS).read_text().splitlines()) == 8
    assert f"metrics: {eval_dir / METRICS}" in capsys.readouterr().out


def test_baseline_evaluate_without_a_trained_baseline_is_a_clear_error(tiny_iu, tmp_path, capsys):
    code = main(["baseline", "evaluate", "--config", str(SMOKE), "--model", str(tmp_path / "none"),
                 "--manifest", str(tiny_iu / "manifest.csv"), "--images-root", str(tiny_iu),
                 "--out", str(tmp_path / "eval")])
    assert code == 2 and "run `rrg baseline train --out" in capsys.readouterr().err


def test_serve_takes_the_prediction_log_from_the_config(monkeypatch, tmp_path):
    """`rrg serve --config` hands the config's monitoring section (its prediction-log URL) to the service, so a
    deployment's log_url is used rather than the default."""
    import serving.app

    seen = {}
    monkeypatch.setattr(serving.app, "serve", lambda model, config, **kw: seen.update(model=model, **kw))
    log_url = f"sqlite:///{tmp_path / 'predictions.db'}"
    assert main(["serve", "--config", str(SMOKE), "--set", f"monitoring.log_url={log_url}",
                 "--model", str(tmp_path / "model")]) == 0
    assert seen["model"] == str(tmp_path / "model") and seen["monitoring"].log_url == log_url
