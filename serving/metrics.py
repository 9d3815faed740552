"""Prometheus metrics of the report service (the names are part of its operations contract: docs/serving.md)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    """Prometheus metrics in a registry of their own (several apps in one process do not collide)."""

    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=True)
        self.latency = Histogram("rrg_request_latency_seconds", "HTTP request latency by route",
                                 ["route"], registry=self.registry,
                                 buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
        self.requests = Counter("rrg_requests_total", "HTTP requests by route and status", ["route", "status"],
                                registry=self.registry)
        self.batch_size = Histogram("rrg_batch_size", "studies per model call (dynamic batching)",
                                    registry=self.registry, buckets=(1, 2, 3, 4, 5, 6, 7, 8, 16, 32))
        self.inference = Histogram("rrg_inference_seconds", "wall time of one batched model call",
                                   registry=self.registry,
                                   buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.queue_depth = Gauge("rrg_queue_depth", "studies waiting for the model", registry=self.registry)
        self.queue_rejections = Counter("rrg_queue_rejected_total", "requests refused with 429 (queue full)",
                                        registry=self.registry)
        self.critical = Counter("rrg_critical_findings_total", "critical findings listed in generated reports",
                                ["finding"], registry=self.registry)
        self.reports = Counter("rrg_reports_total", "reports generated", registry=self.registry)
        self.audit_failures = Counter("rrg_audit_write_failures_total", "audit records that could not be written "
                                      "(the request was refused when it had not been answered yet)",
                                      registry=self.registry)
        self.store_failures = Counter("rrg_report_store_failures_total", "report-store reads and writes that "
                                      "failed (the request was answered 503)", registry=self.registry)
        self.decode_in_flight = Gauge("rrg_decode_bytes_in_flight", "estimated memory of the images being decoded now "
                                      "(bytes, from their headers; serving.decode_budget_bytes caps it)",
                                      registry=self.registry)
        self.decode_peak = Gauge("rrg_decode_bytes_peak", "the most decode memory ever reserved at once (bytes)",
                                 registry=self.registry)
        self.decode_budget_rejections = Counter("rrg_decode_budget_rejections_total", "requests refused with 503 "
                                                "because the decode budget was taken", registry=self.registry)
        self.flagged = Counter("rrg_review_flagged_reports_total", "reports flagged for radiologist review",
                               registry=self.registry)
        self.review_reasons = Counter("rrg_review_flags_total", "review reasons by kind (detector_only, text_only, "
                                      "low_confidence, automation_paused)", ["kind"], registry=self.registry)
        self.unsupported_critical = Counter(
            "rrg_unsupported_critical_reports_total", "reports whose text asserts a critical finding the detection "
            "head does not support (the evaluation's hallucination rate vs the detection head)", registry=self.registry)
        self.automation_paused = Gauge("rrg_automation_paused", "1 while automated reports are paused (every report "
                                       "flagged for radiologist review), else 0", registry=self.registry)
        self.prediction_log_writes = Counter("rrg_prediction_log_writes_total", "records written to the prediction "
                                             "log", registry=self.registry)
        self.prediction_log_failures = Counter(
            "rrg_prediction_log_failures_total", "prediction-log records lost, by reason (write_error, queue_full, "
            "no_embedding)", ["reason"], registry=self.registry)
        self.prediction_log_ok = Gauge("rrg_prediction_log_ok", "0 while the latest prediction-log write failed, "
                                       "else 1", registry=self.registry)
        self.feedback = Counter("rrg_feedback_total", "radiologist sign-offs received, by outcome", ["outcome"],
                                registry=self.registry)
        self.model_info = Gauge("rrg_model_info", "the model being served (value 1)", ["version", "backend"],
                                registry=self.registry)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
