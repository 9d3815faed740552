"""One monitoring cycle (`rrg monitor run`, the daily KFP monitoring pipeline):

    purge the log past retention → window of the last N days → data / label drift (drift.json, drift.html) →
    concept drift and sensitivity on radiologist-validated studies → alerts and their effects →
    policy (none / alert / retrain) → trigger (cooldown, no overlap, idempotency) → cycle.json

`run_cycle(model_dir, cfg, out_dir, launch=...)` takes the launcher from its caller (`pipelines.monitoring` builds
the local kfp.local one or the cluster one); without a launcher a retrain decision is recorded, not acted on.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from model_core.artifacts import MODEL_CARD
from model_core.chexpert import CHEXPERT_LABELS, binarize
from model_core.config import MonitoringConfig
from model_core.files import atomic_write_text
from model_core.modeling.reference import load_reference_stats
from model_core.prediction_log import PredictionLog, parse_time
from monitoring.alerts import Signals, deliver, evaluate_alerts, to_dicts
from monitoring.detectors.concept import ConceptDriftDetector, ValidatedWindow
from monitoring.drift import DRIFT_JSON, check_drift
from monitoring.policy import PolicyInput, decide
from monitoring.report import probability_frame, tabular_drift_report
from monitoring.trigger import Launcher, RetrainRequest, RetrainTrigger
from monitoring.window import Window, utc_now, window_from_log

log = logging.getLogger(__name__)

CYCLE_JSON = "cycle.json"
MIN_LATENCY_SAMPLES = 10        # a P99 from fewer served studies says nothing
MIN_HALLUCINATION_REPORTS = 20  # fewer reports: one odd draft must not pause the service


def model_identity(model_dir: str | os.PathLike) -> str:
    """The model's version as its card records it (with its creation time, so two trainings differ)."""
    card = json.loads((Path(model_dir) / MODEL_CARD).read_text())
    return f"{card.get('version', 'unknown')}@{card.get('created', '')}"


def hallucination_rate(window: Window, thresholds: np.ndarray) -> float | None:
    """Share of reports whose text asserts (label 1) a finding the detection head does not confirm (probability
    below its operating threshold); "No Finding" is not a finding."""
    if window.text_labels is None or len(window) < MIN_HALLUCINATION_REPORTS:
        return None
    findings = [j for j, name in enumerate(CHEXPERT_LABELS) if name != "No Finding"]
    asserted = window.text_labels[:, findings] == 1
    confirmed = window.probabilities[:, findings] >= thresholds[findings]
    return float((asserted & ~confirmed).any(axis=1).mean())


def validated_window(log_url: str, since: datetime, thresholds: np.ndarray, model_version: str | None,
                     role: str = "champion") -> ValidatedWindow:
    prediction_log = PredictionLog(log_url)
    try:
        pairs = [(p, f) for p, f in prediction_log.validated(since=since)
                 if p.role == role and (model_version is None or p.model_version == model_version)]
    finally:
        prediction_log.close()
    if not pairs:
        return ValidatedWindow(np.zeros((0, len(CHEXPERT_LABELS)), np.int8),
                               np.zeros((0, len(CHEXPERT_LABELS)), np.int8), [])
    probs = np.array([p.probabilities for p, _ in pairs])
    return ValidatedWindow((probs >= thresholds).astype(np.int8),
                           binarize(np.array([f.final_labels for _, f in pairs], dtype=np.float32)).astype(np.int8),
                           [parse_time(f.created_at) for _, f in pairs])


def run_cycle(model_dir: str | os.PathLike, cfg: MonitoringConfig, out_dir: str | os.PathLike, *,
              now: datetime | None = None, model_version: str | None = None, launch: Launcher | None = None,
              is_running=None, tabular_report: bool = True, seed: int = 0) -> dict:
    now = now or utc_now()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    reference = load_reference_stats(model_dir)
    prediction_log = PredictionLog(cfg.log_url)
    try:
        purged = prediction_log.purge(cfg.retention_days)
    finally:
        prediction_log.close()

    window = window_from_log(cfg.log_url, now - timedelta(days=cfg.window_days), now, model_version)
    drift = check_drift(model_dir, window, cfg, out, seed)
    validated = validated_window(cfg.log_url, now - timedelta(days=cfg.concept_window_days), reference.thresholds,
                                 model_version)
    concept = ConceptDriftDetector(cfg.concept_drift_points, cfg.min_validated_positives, cfg.concept_window_days)
    concept_result = concept.prepare(reference.summary["per_finding"]).predict(validated)
    findings = concept_result.details.get("findings", {})

    latency = window.latency_ms if window.latency_ms is not None and len(window) >= MIN_LATENCY_SAMPLES else None
    signals = Signals(
        critical_sensitivity={f: d.get("sensitivity") for f, d in findings.items()},
        critical_positives={f: d.get("positives", 0) for f, d in findings.items()},
        p99_latency_s=float(np.percentile(latency, 99) / 1000.0) if latency is not None else None,
        hallucination_rate=hallucination_rate(window, reference.thresholds), n_reports=len(window),
        drift={"mmd": drift["status"], "label_prevalence": drift["label_drift"]["status"],
               "cusum": drift["cusum"]["status"], "concept_f1": concept_result.status})
    alerts = evaluate_alerts(signals, cfg)
    effects = deliver(alerts, cfg, out)

    tabular = None
    if tabular_report and len(window) >= cfg.min_studies:
        tabular = tabular_drift_report(probability_frame(reference.probabilities),
                                       probability_frame(window.probabilities), out / "evidently.html")

    trigger = RetrainTrigger(cfg.state_dir)
    last, busy = trigger.state(is_running)
    identity = model_version or model_identity(model_dir)
    decision = decide(PolicyInput(signals.drift, alerts, now, last, busy, identity, now), cfg.cooldown_hours)
    outcome = {"fired": False, "why": f"decision is {decision.action}", "run": None}
    if decision.action == "retrain":
        if launch is None:
            outcome = {"fired": False, "why": "no launcher given (dry run): the decision is recorded only", "run": None}
        else:
            request = RetrainRequest(decision.idempotency_key, list(decision.reasons), identity,
                                     str(out / DRIFT_JSON), decision.to_dict())
            outcome = trigger.fire(decision, request, launch)

    cycle = {"at": now.isoformat(), "model_version": identity, "purged_rows": purged,
             "window_studies": len(window), "validated_studies": len(validated),
             "drift": {k: drift[k] for k in ("status", "is_drift", "p_value", "distance", "threshold", "n_reference",
                                             "n_current", "method")},
             "label_drift": drift["label_drift"]["status"], "cusum": drift["cusum"]["status"],
             "concept_drift": concept_result.to_dict(), "signals": signals.__dict__, "alerts": to_dicts(alerts),
             "effects": effects, "undelivered": [e["effect"] for e in effects if not e["delivered"]],
             "tabular_drift": tabular, "decision": decision.to_dict(), "trigger": outcome}
    atomic_write_text(out / CYCLE_JSON, json.dumps(cycle, indent=2, default=str))
    log.info("monitoring cycle: %d studies, drift %s, %d alert(s), decision %s", len(window), drift["status"],
             len(alerts), decision.action)
    return cycle
