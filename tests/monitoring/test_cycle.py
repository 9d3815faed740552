"""One monitoring cycle over a real prediction log (SQLite) and synthetic embeddings: in-distribution traffic starts
nothing; shifted traffic triggers exactly one retrain; hallucinated findings pause automated reports; missed
critical findings on validated studies page."""

from datetime import datetime, timezone

import numpy as np
import pytest
from monitoring_data import PNEUMOTHORAX, Recorder, fill_log

from model_core.chexpert import CHEXPERT_LABELS, NUM_LABELS
from model_core.config import MonitoringConfig
from model_core.prediction_log import FeedbackRecord, PredictionLog
from monitoring.cycle import run_cycle
from monitoring.trigger import LaunchResult


class Launcher:
    def __init__(self):
        self.requests = []

    def __call__(self, request):
        self.requests.append(request)
        return LaunchResult("local", "run-1", "finished", "mlflow-run-1")


@pytest.fixture()
def cfg(tmp_path):
    return MonitoringConfig(log_url=str(tmp_path / "log.sqlite3"), state_dir=str(tmp_path / "state"),
                            min_studies=50, cooldown_hours=72)


def test_in_distribution_traffic_triggers_nothing(cfg, reference_model_dir, tmp_path):
    fill_log(cfg.log_url, 150, seed=1)
    launcher = Launcher()
    cycle = run_cycle(reference_model_dir, cfg, tmp_path / "out", launch=launcher, tabular_report=False)
    assert cycle["drift"]["status"] == "ok" and cycle["window_studies"] == 150
    assert cycle["decision"]["action"] == "none" and launcher.requests == []
    assert (tmp_path / "out" / "drift.json").is_file() and (tmp_path / "out" / "drift.html").is_file()


def test_shifted_traffic_triggers_one_retrain(cfg, reference_model_dir, tmp_path):
    fill_log(cfg.log_url, 150, seed=2, shift=1.0)
    launcher = Launcher()
    first = run_cycle(reference_model_dir, cfg, tmp_path / "c1", launch=launcher, tabular_report=False)
    assert first["drift"]["is_drift"] and first["decision"]["action"] == "retrain" and first["trigger"]["fired"]
    (request,) = launcher.requests
    assert request.reasons[0] == "mmd_drift" and request.drift_report.endswith("drift.json")
    again = run_cycle(reference_model_dir, cfg, tmp_path / "c2", launch=launcher, tabular_report=False)
    assert again["decision"]["action"] == "alert" and "cooldown" in again["decision"]["held_back_by"]
    assert len(launcher.requests) == 1


def test_too_few_studies_is_insufficient_data(cfg, reference_model_dir, tmp_path):
    fill_log(cfg.log_url, 12, seed=3, shift=3.0)
    cycle = run_cycle(reference_model_dir, cfg, tmp_path / "out", launch=Launcher(), tabular_report=False)
    assert cycle["drift"]["status"] == "insufficient data" and cycle["drift"]["p_value"] is None
    assert cycle["decision"]["action"] == "none"


def test_hallucinations_pause_reports_and_missed_findings_page(cfg, reference_model_dir, tmp_path, monkeypatch):
    fracture = [0] * NUM_LABELS
    fracture[CHEXPERT_LABELS.index("Fracture")] = 1          # asserted in every draft, never confirmed (p ≤ 0.4)
    ids = fill_log(cfg.log_url, 60, seed=4, text_labels=fracture)
    log = PredictionLog(cfg.log_url)
    for record in log.predictions():                           # radiologists find pneumothorax in every study
        labels = [0] * NUM_LABELS
        labels[PNEUMOTHORAX] = 1
        log.add_feedback(FeedbackRecord(record.report_id, datetime.now(timezone.utc), 3, "edited", 10, labels,
                                        "cd" * 32))
    monkeypatch.setenv("RRG_MONITOR_TOKEN", "admin-token-0123456789")
    with Recorder() as server:
        cfg.alertmanager_url, cfg.service_url = server.url + "/api/v2/alerts", server.url
        cycle = run_cycle(reference_model_dir, cfg, tmp_path / "out", launch=Launcher(), tabular_report=False)
    names = {a["name"] for a in cycle["alerts"]}
    assert {"HallucinationRateHigh", "CriticalSensitivityLow"} <= names and cycle["undelivered"] == []
    assert cycle["signals"]["hallucination_rate"] == pytest.approx(1.0) and len(ids) == 60
    sens = cycle["signals"]["critical_sensitivity"]["Pneumothorax"]
    assert sens == pytest.approx(np.mean([p.probabilities[PNEUMOTHORAX] >= 0.5 for p in log.predictions()]))
    posted = {path for path, _, _ in server.requests}
    assert posted == {"/api/v2/alerts", "/api/v1/admin/automation"}
