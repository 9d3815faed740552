"""The report service's FastAPI app: dynamic batching, QA, FHIR output, auth, audit, metrics.

    app = create_app("runs/demo/kfp/<run>/train/model", pacs_client=PacsClient("http://orthanc:8042/dicom-web"))
    serve("models:/rrg-chest-xray@champion", host="127.0.0.1", port=8080, pacs_url=...)   # blocking (uvicorn)

Endpoints (see docs/serving.md and /openapi.json):
    POST /api/v1/studies/{study_id}/report         JSON body (ReportRequest): images fetched from the PACS
    POST /api/v1/studies/{study_id}/report:upload  multipart: `files` (DICOM/PNG/JPEG) + optional `request` JSON
    GET  /api/v1/reports/{report_id}               the report (ReportResponse)
    GET  /api/v1/reports/{report_id}/fhir          HL7 FHIR R4 DiagnosticReport (preliminary)
    GET  /api/v1/reports/{report_id}/text?template=structured|narrative|impression   text/plain
    GET  /api/v1/reports/{report_id}/heatmaps/{finding}  PNG: a finding's heatmap over each view (report.read)
    POST /api/v1/reports/{report_id}/feedback      a radiologist's sign-off (FeedbackRequest; scope report.feedback)
    GET|POST /api/v1/admin/automation              pause / resume automated reports (scope service.admin)
    GET  /healthz  /readyz  /metrics

The rooms: serving/routes (one router per group of endpoints), serving/deps.py (what routes depend on),
serving/service.py (the work, free of HTTP), serving/errors.py → serving/http_errors.py (errors and their HTTP
answers), serving/middleware.py (auth before the body is read, metrics, access log).

Privacy: report text, clinical context and pixel data are never logged; study ids appear in logs and the audit
log only as SHA-256; uvicorn's access log (which would print study ids in URL paths) is replaced by one line
per request that names the route template, the status and the time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from model_core.config import MonitoringConfig, RolloutConfig, ServingConfig
from model_core.prediction_log import PredictionLog
from serving.auth import AuditLog, AuthConfigError, Authenticator, load_tokens
from serving.automation import AutomationControl
from serving.backends import LoadedModel, ModelSourceError
from serving.dicom import decode_dicom as default_decode_dicom
from serving.http_errors import install_error_handlers
from serving.ingest import PacsClient
from serving.logs import RedactUidFilter, configure_logging
from serving.middleware import ServiceMiddleware
from serving.model_swap import follow_alias, follow_arms
from serving.report_text import render_text
from serving.routes import admin, feedback, health, heatmaps, reports, reports_read
from serving.schemas import UploadOptions
from serving.service import ReportService, load_configured_model
from serving.settings import parallelism, serving_config
from serving.store import ReportStore

log = logging.getLogger("serving")
_KEEP = object()        # create_app: no validated_pool override


def create_app(model_source: str | os.PathLike | None = None, pacs_client: Any = None,
               tokens: str | dict | None = None, *, model: LoadedModel | None = None,
               decode_dicom: Callable | None = None, audit_log: str | os.PathLike | None = None,
               report_store: str | os.PathLike | None = None, allow_anonymous: bool = False,
               config: ServingConfig | None = None, monitoring: MonitoringConfig | None = None,
               prediction_log: str | None = None, allow_ungated_model: bool = False,
               gate_record: str | os.PathLike | None = None, alias_poll_s: float | None = None,
               rollout: RolloutConfig | None = None, **config_overrides) -> FastAPI:
    """The FastAPI app. The model is loaded when the app starts (lifespan), not here.

    model_source: a model directory or `models:/NAME@ALIAS`; `model` injects an already loaded model instead
    (tests, benchmarks). pacs_client: an object with `fetch_instances(study_uid, [(series_uid, instance_uid)])
    -> list[bytes]` (e.g. `serving.ingest.PacsClient`) and optionally `ping()`; None: only uploads work.
    tokens: RRG_API_TOKENS-format string or {token: [scopes]}; None reads RRG_API_TOKENS. Without tokens the
    app refuses to start unless allow_anonymous=True (development only).
    decode_dicom: `(bytes, size) -> (tensor (1,size,size), safe_metadata)`; default `serving.dicom.decode_dicom`.
    audit_log / report_store: the audit log (JSONL) and the report store (SQLite file, or ":memory:"); default
    $RRG_AUDIT_LOG / $RRG_REPORT_STORE, else the config's (runs/serving/…); the validated-study pool likewise
    ($RRG_VALIDATED_POOL, else serving.validated_pool).
    config / config_overrides: a `model_core.config.ServingConfig` (the `serving:` section of the config tree)
    and fields to override in it (max_batch, max_wait_ms, max_queue, backend, precision, …).
    monitoring / prediction_log: the `monitoring:` section (its log_url and retention_days) and an override of the
    prediction log's location (SQLite path or SQLAlchemy URL); default $RRG_PREDICTION_LOG, else monitoring.log_url.
    The same database holds the automation switch (serving.automation).
    gate_record / allow_ungated_model: where a model directory's signed gate decision is (default
    <model_dir>/gate/), and the development-only switch to serve a model without a passing one (logged; see
    serving.backends.loading). A registry version brings its run's decision.
    alias_poll_s: follow a `models:/NAME@ALIAS` source, looking every alias_poll_s seconds; a move is hot-swapped
    in (serving.model_swap; `rrg serve` passes rollout.watch_poll_s). None: the loaded model is kept. A
    `models:/NAME@champion` source also follows NAME's `shadow` and `ab` aliases (serving.model_swap.follow_arms),
    with rollout's shadow_share, ab_share and ab_salt (default RolloutConfig()).
    """
    if model is None and model_source is None:
        raise ValueError("create_app needs a model_source (model directory or models:/NAME@ALIAS) or a model")
    # validated_pool=None in the overrides turns the pool off (serving_config ignores None overrides)
    pool = config_overrides.pop("validated_pool", os.environ.get("RRG_VALIDATED_POOL") or _KEEP)
    config = serving_config(config, **config_overrides)
    if pool is not _KEEP:
        config = dataclasses.replace(config, validated_pool=pool)
    token_table = load_tokens(tokens)
    if not token_table and not allow_anonymous:
        raise AuthConfigError("no API tokens configured: set RRG_API_TOKENS (see serving/auth.py) or pass "
                              "allow_anonymous=True for local development")
    if not token_table:
        log.warning("no API tokens: the API is open to anyone who can reach it (development only)")
    service = ReportService(
        config=config, model_source=str(model_source) if model_source is not None else None, model=model,
        pacs=pacs_client, decode_dicom=decode_dicom or default_decode_dicom,
        auth=Authenticator(token_table) if token_table else None,
        audit_path=Path(audit_log or os.environ.get("RRG_AUDIT_LOG") or config.audit_log),
        report_store_path=str(report_store or os.environ.get("RRG_REPORT_STORE") or config.report_store),
        prediction_log_url=prediction_log_url(monitoring, prediction_log),
        log_retention_days=(monitoring or MonitoringConfig()).retention_days,
        allow_ungated_model=allow_ungated_model, gate_record=str(gate_record) if gate_record is not None else None)

    def load_version(uri: str) -> LoadedModel:
        return load_configured_model(uri, config, allow_ungated_model=allow_ungated_model)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await service.start()
        watcher = arms = None
        if alias_poll_s is not None and model_source is not None:
            # `models:/NAME@ALIAS`: follow the alias (a promotion or rollback is hot-swapped in, the old model
            # drained; serving.model_swap); None for a fixed source (a directory, NAME/VERSION)
            watcher = await follow_alias(str(model_source), load_version, service.swap_model, service.model.version,
                                         alias_poll_s)
            plan = rollout or RolloutConfig()
            arms = await follow_arms(str(model_source), load_version, service, plan.shadow_share, plan.ab_share,
                                     plan.ab_salt, alias_poll_s)
        try:
            yield
        finally:
            for follower in (arms, watcher):
                if follower is not None:
                    await follower.stop()
            await service.stop()

    app = FastAPI(
        title="Chest X-ray report generator", version="1.0.0", lifespan=lifespan,
        description="Draft chest X-ray reports for radiologist review (not for autonomous diagnosis). "
                    "Bearer tokens with scopes report.write / report.read / report.feedback / service.admin "
                    "(see docs/serving.md).",
    )
    app.state.service = service
    app.add_middleware(ServiceMiddleware, service=service)
    install_error_handlers(app)
    for router in (health.router, reports.router, reports_read.router, heatmaps.router, feedback.router,
                   admin.router):
        app.include_router(router)
    app.openapi = lambda: _openapi_with_upload_options(app)
    return app


def _openapi_with_upload_options(app: FastAPI) -> dict:
    """The OpenAPI document, with UploadOptions (and the models it uses) among the components: the upload's
    `request` part is parsed by hand, so FastAPI does not see its model."""
    if app.openapi_schema is None:
        schema = FastAPI.openapi(app)
        extra = UploadOptions.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, definition in extra.pop("$defs", {}).items():
            components.setdefault(name, definition)
        components["UploadOptions"] = extra
        app.openapi_schema = schema
    return app.openapi_schema


def prediction_log_url(monitoring: MonitoringConfig | None = None, override: str | None = None) -> str:
    """Where the prediction log (and the automation switch) lives: override, $RRG_PREDICTION_LOG, else the
    `monitoring:` section's log_url."""
    return override or os.environ.get("RRG_PREDICTION_LOG") or (monitoring or MonitoringConfig()).log_url


def serve(model_source: str | os.PathLike, config: ServingConfig | None = None, *, tokens: str | None = None,
          log_level: str = "info", allow_anonymous: bool = False, monitoring: MonitoringConfig | None = None,
          allow_ungated_model: bool = False, gate_record: str | os.PathLike | None = None,
          rollout: RolloutConfig | None = None, **overrides) -> None:
    """Run the service with uvicorn (blocking; one process: the model and the batcher live in it).

    model_source: a model directory or models:/NAME@ALIAS (MLflow registry from MLFLOW_TRACKING_URI).
    config: the `serving:` section of the config tree (`model_core.config.ServingConfig`); overrides: fields of
    it (host, port, pacs_url, backend, precision, max_batch, audit_log, report_store, …). The PACS is the
    DICOMweb base URL in pacs_url (e.g. Orthanc's http://HOST:8042/dicom-web), default $RRG_PACS_URL; tokens
    default to $RRG_API_TOKENS. Everything that can be wrong is checked before the port opens: the config and
    the token configuration (ConfigError / AuthConfigError, ValueErrors) first, then the report store
    (ReportStoreError) and the model (ModelSourceError; RuntimeErrors); each carries a message meant for the
    user (`error: <message>`). The prediction log and the automation switch (`monitoring.log_url`, or
    $RRG_PREDICTION_LOG) are opened before the port opens too (PredictionLogError / AutomationStateError).
    The model must carry a passing signed gate decision (gate_record: a model directory's, default
    <model_dir>/gate/); allow_ungated_model=True (development only, logged at WARNING) serves one without.
    """
    config = serving_config(config, **overrides)
    configure_logging(log_level)
    token_table = load_tokens(tokens)
    if not token_table and not allow_anonymous:
        raise AuthConfigError("no API tokens configured: set RRG_API_TOKENS (see docs/serving.md)")
    pacs_url = config.pacs_url or os.environ.get("RRG_PACS_URL")
    pacs = PacsClient(pacs_url) if pacs_url else None
    store_path = os.environ.get("RRG_REPORT_STORE") or config.report_store
    ReportStore(store_path, config.report_retention_days).close()       # fails here, before the port opens
    AuditLog(os.environ.get("RRG_AUDIT_LOG") or config.audit_log).close()  # AuditError here, before the port opens
    log_url = prediction_log_url(monitoring)
    PredictionLog(log_url).close()
    AutomationControl(log_url).close()
    model = load_configured_model(model_source, config, allow_ungated_model=allow_ungated_model,
                                  gate_record=gate_record)
    app = create_app(model_source, pacs_client=pacs, tokens=tokens, model=model, report_store=store_path,
                     allow_anonymous=allow_anonymous, config=config, monitoring=monitoring, prediction_log=log_url,
                     allow_ungated_model=allow_ungated_model, alias_poll_s=(rollout or RolloutConfig()).watch_poll_s,
                     rollout=rollout)
    # access_log=False: uvicorn's access log prints URL paths, which hold study ids; ServiceMiddleware logs
    # the route template instead.
    uvicorn.run(app, host=config.host, port=config.port, log_level=log_level, access_log=False, workers=1)


__all__ = ["create_app", "serve", "serving_config", "parallelism", "ServingConfig", "render_text",
           "ModelSourceError", "configure_logging", "RedactUidFilter"]
