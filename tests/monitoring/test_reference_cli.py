"""Reference statistics of a real (tiny) model, and `rrg monitor drift` on a manifest and on the prediction log."""

import json

import numpy as np
import pytest
from monitoring_data import fill_log

from model_core.artifacts import REFERENCE_STATS, REFERENCE_SUMMARY
from model_core.chexpert import CHEXPERT_LABELS
from model_core.data.manifest import DataError
from model_core.modeling.model_dir import save_model_dir
from model_core.modeling.reference import build_reference_stats, load_reference_stats
from rrg.cli import main


@pytest.fixture()
def tiny_model_dir(tmp_path, tiny_model, tiny_data):
    train, val = tiny_data
    out = tmp_path / "model"
    detection = {"temperature": 1.5, "thresholds": {name: 0.5 for name in CHEXPERT_LABELS}}
    save_model_dir(tiny_model, out, card={"name": "tiny", "version": "0.0.1", "created": "now"},
                   run_config={"data": {"views": ["Frontal"]}}, detection=detection)
    summary = build_reference_stats(tiny_model, val, out, detection=detection, fit_ds=train, pca_components=4)
    return out, summary


def test_reference_statistics_are_saved_with_the_model(tiny_model_dir):
    out, summary = tiny_model_dir
    assert (out / REFERENCE_STATS).is_file() and json.loads((out / REFERENCE_SUMMARY).read_text()) == summary
    ref = load_reference_stats(out)
    assert ref.embeddings.shape == (summary["n_reference"], summary["embedding_dim"]) and summary["n_reference"] == 6
    assert summary["n_fit"] == 12 and ref.reduce(ref.embeddings).shape == (6, 4)
    assert ref.probabilities.shape == ref.labels.shape == (6, 14)
    assert set(summary["per_finding"]) == set(CHEXPERT_LABELS)
    predicted = (ref.probabilities >= 0.5).mean(axis=0)
    assert np.allclose(predicted, list(summary["predicted_prevalence"].values()), atol=1e-6)
    assert summary["temperature"] == 1.5


def test_the_pca_must_be_fitted_outside_the_reference(tiny_model, tiny_data, tmp_path):
    train, _ = tiny_data
    with pytest.raises(DataError, match="both the reference set and the PCA fit set"):
        build_reference_stats(tiny_model, train, tmp_path, detection={}, fit_ds=train)


def test_drift_cli_on_a_manifest(tiny_model_dir, tiny_iu, tmp_path, capsys):
    model_dir, _ = tiny_model_dir
    code = main(["monitor", "drift", "--model", str(model_dir), "--manifest", str(tiny_iu / "manifest.csv"),
                 "--images-root", str(tiny_iu), "--out", str(tmp_path / "out"), "--set", "monitoring.min_studies=4"])
    assert code == 0
    result = json.loads((tmp_path / "out" / "drift.json").read_text())
    assert result["n_current"] == 8 and result["n_reference"] == 6 and result["status"] in ("ok", "drift")
    assert 0 < result["p_value"] <= 1 and (tmp_path / "out" / "drift.html").is_file()


def test_drift_cli_with_too_few_logged_studies_says_insufficient_data(reference_model_dir, tmp_path, capsys):
    log = str(tmp_path / "log.sqlite3")
    fill_log(log, 5, seed=0, shift=5.0)
    code = main(["monitor", "drift", "--model", str(reference_model_dir), "--log", log, "--since", "7d",
                 "--out", str(tmp_path / "out")])
    assert code == 0
    result = json.loads((tmp_path / "out" / "drift.json").read_text())
    assert result["status"] == "insufficient data" and result["is_drift"] is False and result["p_value"] is None
    assert {"is_drift", "p_value", "distance", "threshold", "n_reference", "n_current", "method"} <= set(result)
    assert result["n_current"] == 5 and result["method"] == "mmd"


def test_drift_cli_errors_name_the_problem(reference_model_dir, tmp_path, capsys):
    assert main(["monitor", "drift", "--model", str(reference_model_dir), "--log", str(tmp_path / "none.sqlite3"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "prediction log not found" in capsys.readouterr().err
    log = str(tmp_path / "log.sqlite3")
    fill_log(log, 3, seed=0)
    assert main(["monitor", "drift", "--model", str(reference_model_dir), "--log", log, "--out", str(tmp_path / "o"),
                 "--since", "last tuesday"]) == 2
    assert "--since must look like 7d" in capsys.readouterr().err
    assert main(["monitor", "drift", "--model", str(tmp_path), "--log", log, "--out", str(tmp_path / "o")]) == 2
    assert "no monitoring reference" in capsys.readouterr().err


def test_monitor_run_cli_dry_run_decides_without_starting_anything(reference_model_dir, tmp_path, capsys):
    log = str(tmp_path / "log.sqlite3")
    fill_log(log, 80, seed=9, shift=1.5)
    code = main(["monitor", "run", "--model", str(reference_model_dir), "--dry-run", "--out", str(tmp_path / "c"),
                 "--set", f"monitoring.log_url={log}", "--set", f"monitoring.state_dir={tmp_path / 'state'}"])
    assert code == 0
    cycle = json.loads((tmp_path / "c" / "cycle.json").read_text())
    assert cycle["decision"]["action"] == "retrain" and not cycle["trigger"]["fired"]
    assert "dry run" in cycle["trigger"]["why"] and (tmp_path / "c" / "evidently.html").is_file()
    assert not (tmp_path / "state" / "trigger_ledger.json").exists()
