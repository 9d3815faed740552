"""The seed's alerts, with thresholds from `monitoring:` in the config, and their effects.

    signals = Signals(...)                         # measured on the window (cycle.py)
    alerts = evaluate_alerts(signals, cfg)         # pure: which thresholds are crossed
    deliver(alerts, cfg, out_dir)                  # effects: Alertmanager page, scale-up signal, pause switch

| alert                     | rule (default)                                              | action        |
| CriticalSensitivityLow    | a critical finding's sensitivity on validated studies < 0.95 | page          |
| LatencyP99High            | P99 latency of served studies > 30 s                         | scale_up      |
| HallucinationRateHigh     | share of reports asserting a finding the detection head does | pause_reports |
|                           | not confirm > 5 %                                            |               |
| DataDrift / LabelDrift /  | the detectors' verdicts                                      | notify        |
| PneumothoraxRateShift / ConceptDrift                                                     |               |

Payloads follow Alertmanager's API v2 (`POST /api/v2/alerts`: a list of {labels, annotations, startsAt,
generatorURL}). The pause switch is the report service's `POST /api/v1/admin/automation` (scope service.admin,
token from $RRG_MONITOR_TOKEN): monitoring never writes serving's state directly. An effect that cannot be
delivered is reported as such (`delivered: false` with the reason), and `rrg monitor run` then exits non-zero:
a safety alert is never lost silently. Alerts carry figures and finding names only, never study data.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from model_core.config import MonitoringConfig
from model_core.files import atomic_write_text

log = logging.getLogger(__name__)

PAGE, SCALE_UP, PAUSE, NOTIFY = "page", "scale_up", "pause_reports", "notify"
TOKEN_ENV = "RRG_MONITOR_TOKEN"
SERVICE = "rrg-report-generator"


@dataclass
class Signals:
    """What a cycle measured. None: not measurable in this window (then no alert from it)."""
    critical_sensitivity: dict[str, float | None] = field(default_factory=dict)   # finding → sensitivity
    critical_positives: dict[str, int] = field(default_factory=dict)               # finding → validated positives
    p99_latency_s: float | None = None
    hallucination_rate: float | None = None
    n_reports: int = 0
    drift: dict[str, str] = field(default_factory=dict)      # detector method → status


@dataclass
class Alert:
    name: str
    action: str
    severity: str
    summary: str
    value: float | None = None
    threshold: float | None = None
    labels: dict = field(default_factory=dict)


def evaluate_alerts(signals: Signals, cfg: MonitoringConfig) -> list[Alert]:
    """The alerts a window's signals raise (pure)."""
    alerts = []
    for finding, sens in sorted(signals.critical_sensitivity.items()):
        positives = signals.critical_positives.get(finding, 0)
        if sens is not None and positives >= cfg.min_validated_positives and sens < cfg.sensitivity_page_below:
            alerts.append(Alert("CriticalSensitivityLow", PAGE, "page",
                                f"{finding} sensitivity {sens:.1%} on {positives} validated positives is below "
                                f"{cfg.sensitivity_page_below:.0%}", sens, cfg.sensitivity_page_below,
                                {"finding": finding}))
    if signals.p99_latency_s is not None and signals.p99_latency_s > cfg.p99_latency_scale_up_s:
        alerts.append(Alert("LatencyP99High", SCALE_UP, "warning",
                            f"P99 latency {signals.p99_latency_s:.1f} s is above {cfg.p99_latency_scale_up_s:.0f} s: "
                            "scale up", signals.p99_latency_s, cfg.p99_latency_scale_up_s))
    if signals.hallucination_rate is not None and signals.hallucination_rate > cfg.hallucination_pause_above:
        alerts.append(Alert("HallucinationRateHigh", PAUSE, "page",
                            f"hallucination rate {signals.hallucination_rate:.1%} of {signals.n_reports} reports "
                            f"(findings the detection head does not confirm) > {cfg.hallucination_pause_above:.0%}: "
                            "automated reports paused", signals.hallucination_rate, cfg.hallucination_pause_above))
    names = {"mmd": "DataDrift", "label_prevalence": "LabelDrift", "cusum": "PneumothoraxRateShift",
             "concept_f1": "ConceptDrift"}
    for method, status in sorted(signals.drift.items()):
        if status == "drift":
            alerts.append(Alert(names.get(method, f"Drift_{method}"), NOTIFY, "warning",
                                f"{method} drift detected", labels={"detector": method}))
    return alerts


def alertmanager_payload(alerts: list[Alert], generator_url: str = "", now: datetime | None = None) -> list[dict]:
    """Alertmanager API v2 alerts (`POST /api/v2/alerts` body)."""
    starts = (now or datetime.now(timezone.utc)).isoformat()
    return [{"labels": {"alertname": a.name, "severity": a.severity, "action": a.action, "service": SERVICE,
                        **{k: str(v) for k, v in a.labels.items()}},
             "annotations": {"summary": a.summary,
                             **({"value": f"{a.value:.4g}"} if a.value is not None else {}),
                             **({"threshold": f"{a.threshold:.4g}"} if a.threshold is not None else {})},
             "startsAt": starts, "generatorURL": generator_url} for a in alerts]


def _post_json(url: str, body, token: str | None = None, timeout: float = 10.0) -> int:
    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    req = urllib.request.Request(url, data=data, headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status


def deliver(alerts: list[Alert], cfg: MonitoringConfig, out_dir: str | os.PathLike,
            generator_url: str = "") -> list[dict]:
    """Carry out the alerts' effects; returns one record per effect {effect, delivered, detail}. Also writes
    out_dir/alerts.json (the Alertmanager payload) and out_dir/signals.json (scale-up / pause signals)."""
    out = Path(out_dir)
    payload = alertmanager_payload(alerts, generator_url)
    atomic_write_text(out / "alerts.json", json.dumps(payload, indent=2))
    effects = []
    if alerts and cfg.alertmanager_url:
        effects.append(_attempt("alertmanager", lambda: _post_json(cfg.alertmanager_url, payload)))
    elif any(a.action == PAGE for a in alerts):
        effects.append({"effect": "alertmanager", "delivered": False,
                        "detail": "a page is due but monitoring.alertmanager_url is not set"})
    signals = {"scale_up": any(a.action == SCALE_UP for a in alerts),
               "pause_reports": next((a.summary for a in alerts if a.action == PAUSE), None)}
    atomic_write_text(out / "signals.json", json.dumps(signals, indent=2))
    if signals["pause_reports"]:
        if not cfg.service_url:
            effects.append({"effect": "pause_reports", "delivered": False,
                            "detail": "monitoring.service_url is not set: pause the service by hand "
                                      "(POST /api/v1/admin/automation)"})
        elif not os.environ.get(TOKEN_ENV):
            effects.append({"effect": "pause_reports", "delivered": False,
                            "detail": f"${TOKEN_ENV} (a token with scope service.admin) is not set"})
        else:
            url = cfg.service_url.rstrip("/") + "/api/v1/admin/automation"
            body = {"paused": True, "reason": f"monitoring: {signals['pause_reports']}"[:300]}
            effects.append(_attempt("pause_reports", lambda: _post_json(url, body, os.environ[TOKEN_ENV])))
    if signals["scale_up"]:
        effects.append({"effect": "scale_up", "delivered": True,
                        "detail": "signal written (signals.json) and sent as the LatencyP99High alert; the "
                                  "serving HPA scales on the same P99 metric"})
    for record in effects:
        (log.info if record["delivered"] else log.error)("alert effect %s: %s", record["effect"], record["detail"])
    return effects


def _attempt(effect: str, send) -> dict:
    try:
        status = send()
        return {"effect": effect, "delivered": 200 <= status < 300, "detail": f"HTTP {status}"}
    except urllib.error.HTTPError as exc:
        return {"effect": effect, "delivered": False, "detail": f"HTTP {exc.code}"}
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        return {"effect": effect, "delivered": False, "detail": f"unreachable ({type(exc).__name__})"}


def to_dicts(alerts: list[Alert]) -> list[dict]:
    return [asdict(a) for a in alerts]
