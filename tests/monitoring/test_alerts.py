"""Alert rules at the seed's thresholds, the Alertmanager payload, and delivery (page, pause switch, scale-up)."""

import json

from monitoring_data import Recorder

from model_core.config import MonitoringConfig
from monitoring.alerts import PAGE, PAUSE, SCALE_UP, Signals, alertmanager_payload, deliver, evaluate_alerts


def test_seed_thresholds_raise_page_scale_up_and_pause():
    cfg = MonitoringConfig()
    signals = Signals(critical_sensitivity={"Pneumothorax": 0.90, "Fracture": 0.97, "Lung Lesion": 0.5},
                      critical_positives={"Pneumothorax": 40, "Fracture": 40, "Lung Lesion": 3},
                      p99_latency_s=31.0, hallucination_rate=0.06, n_reports=200, drift={"mmd": "drift"})
    alerts = evaluate_alerts(signals, cfg)
    actions = [(a.name, a.action) for a in alerts]
    assert ("CriticalSensitivityLow", PAGE) in actions and ("LatencyP99High", SCALE_UP) in actions
    assert ("HallucinationRateHigh", PAUSE) in actions and ("DataDrift", "notify") in actions
    pages = [a for a in alerts if a.action == PAGE]
    assert [a.labels["finding"] for a in pages] == ["Pneumothorax"]   # Lung Lesion: 3 positives are not judged
    quiet = Signals(critical_sensitivity={"Pneumothorax": 0.95}, critical_positives={"Pneumothorax": 40},
                    p99_latency_s=30.0, hallucination_rate=0.05, drift={"mmd": "ok"})
    assert evaluate_alerts(quiet, cfg) == []                          # thresholds are strict inequalities


def test_payload_is_alertmanager_v2():
    cfg = MonitoringConfig()
    alerts = evaluate_alerts(Signals(p99_latency_s=45.0), cfg)
    (item,) = alertmanager_payload(alerts, "http://monitor")
    assert item["labels"]["alertname"] == "LatencyP99High" and item["labels"]["action"] == "scale_up"
    assert set(item) == {"labels", "annotations", "startsAt", "generatorURL"} and "summary" in item["annotations"]


def test_delivery_pages_alertmanager_and_pauses_the_service(tmp_path, monkeypatch):
    monkeypatch.setenv("RRG_MONITOR_TOKEN", "admin-token-0123456789")
    with Recorder() as server:
        cfg = MonitoringConfig(alertmanager_url=server.url + "/api/v2/alerts", service_url=server.url)
        alerts = evaluate_alerts(Signals(hallucination_rate=0.2, n_reports=100, p99_latency_s=40.0), cfg)
        effects = deliver(alerts, cfg, tmp_path)
    assert all(e["delivered"] for e in effects) and {e["effect"] for e in effects} == {"alertmanager",
                                                                                      "pause_reports", "scale_up"}
    paths = {path: (headers, body) for path, headers, body in server.requests}
    assert {a["labels"]["alertname"] for a in paths["/api/v2/alerts"][1]} == {"HallucinationRateHigh",
                                                                            "LatencyP99High"}
    headers, body = paths["/api/v1/admin/automation"]
    assert body["paused"] is True and "hallucination" in body["reason"]
    assert headers["Authorization"] == "Bearer admin-token-0123456789"
    assert json.loads((tmp_path / "signals.json").read_text())["scale_up"] is True


def test_an_undeliverable_page_is_reported_not_swallowed(tmp_path, monkeypatch):
    monkeypatch.delenv("RRG_MONITOR_TOKEN", raising=False)
    cfg = MonitoringConfig(alertmanager_url="http://127.0.0.1:9/api/v2/alerts", service_url="http://127.0.0.1:9")
    alerts = evaluate_alerts(Signals(critical_sensitivity={"Fracture": 0.5}, critical_positives={"Fracture": 20},
                                     hallucination_rate=0.5, n_reports=50), cfg)
    effects = {e["effect"]: e for e in deliver(alerts, cfg, tmp_path)}
    assert not effects["alertmanager"]["delivered"] and "unreachable" in effects["alertmanager"]["detail"]
    assert not effects["pause_reports"]["delivered"] and "RRG_MONITOR_TOKEN" in effects["pause_reports"]["detail"]
