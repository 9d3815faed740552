"""The report service's FastAPI app: dynamic batching, QA, FHIR output, auth, audit, metrics.

    app = create_app("runs/demo/kfp/<run>/train/model", pacs_client=PacsClient("http://orthanc:8042/dicom-web"))
    serve("models:/rrg-chest-xray@champion", host="127.0.0.1", port=8080, pacs_url=...)   # blocking (uvicorn)

Endpoints (see docs/serving.md and /openapi.json):
    POST /api/v1/studies/{study_id}/report         JSON body (ReportRequest): images fetched from the PACS
    POST /api/v1/studies/{study_id}/report:upload  multipart: `files` (DICOM/PNG/JPEG) + optional `request` JSON
    GET  /api/v1/reports/{report_id}               the report (ReportResponse)
    GET  /api/v1/reports/{report_id}/fhir          HL7 FHIR R4 DiagnosticReport (preliminary)
    GET  /api/v1/reports/{report_id}/text?template=structured|narrative|impression   text/plain
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
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from model_core.config import ServingConfig
from serving.auth import AuthConfigError, Authenticator, load_tokens
from serving.backends import LoadedModel, ModelSourceError
from serving.dicom import decode_dicom as default_decode_dicom
from serving.http_errors import install_error_handlers
from serving.ingest import PacsClient
from serving.logs import RedactUidFilter, configure_logging
from serving.middleware import ServiceMiddleware
from serving.report_text import render_text
from serving.routes import health, reports, reports_read
from serving.schemas import UploadOptions
from serving.service import ReportService, load_configured_model
from serving.settings import parallelism, serving_config
from serving.store import ReportStore

log = logging.getLogger("serving")


def create_app(model_source: str | os.PathLike | None = None, pacs_client: Any = None,
               tokens: str | dict | None = None, *, model: LoadedModel | None = None,
               decode_dicom: Callable | None = None, audit_log: str | os.PathLike | None = None,
               report_store: str | os.PathLike | None = None, allow_anonymous: bool = False,
               config: ServingConfig | None = None, **config_overrides) -> FastAPI:
    """The FastAPI app. The model is loaded when the app starts (lifespan), not here.

    model_source: a model directory or `models:/NAME@ALIAS`; `model` injects an already loaded model instead
    (tests, benchmarks). pacs_client: an object with `fetch_instances(study_uid, [(series_uid, instance_uid)])
    -> list[bytes]` (e.g. `serving.ingest.PacsClient`) and optionally `ping()`; None: only uploads work.
    tokens: RRG_API_TOKENS-format string or {token: [scopes]}; None reads RRG_API_TOKENS. Without tokens the
    app refuses to start unless allow_anonymous=True (development only).
    decode_dicom: `(bytes, size) -> (tensor (1,size,size), safe_metadata)`; default `serving.dicom.decode_dicom`.
    audit_log / report_store: the audit log (JSONL) and the report store (SQLite file, or ":memory:"); default
    $RRG_AUDIT_LOG / $RRG_REPORT_STORE, else the config's (runs/serving/…).
    config / config_overrides: a `model_core.config.ServingConfig` (the `serving:` section of the config tree)
    and fields to override in it (max_batch, max_wait_ms, max_queue, backend, precision, …).
    """
    if model is None and model_source is None:
        raise ValueError("create_app needs a model_source (model directory or models:/NAME@ALIAS) or a model")
    config = serving_config(config, **config_overrides)
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
        report_store_path=str(report_store or os.environ.get("RRG_REPORT_STORE") or config.report_store))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="Chest X-ray report generator", version="1.0.0", lifespan=lifespan,
        description="Draft chest X-ray reports for radiologist review (not for autonomous diagnosis). "
                    "Bearer tokens with scopes report.write / report.read (see docs/serving.md).",
    )
    app.state.service = service
    app.add_middleware(ServiceMiddleware, service=service)
    install_error_handlers(app)
    for router in (health.router, reports.router, reports_read.router):
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


def serve(model_source: str | os.PathLike, config: ServingConfig | None = None, *, tokens: str | None = None,
          log_level: str = "info", allow_anonymous: bool = False, **overrides) -> None:
    """Run the service with uvicorn (blocking; one process: the model and the batcher live in it).

    model_source: a model directory or models:/NAME@ALIAS (MLflow registry from MLFLOW_TRACKING_URI).
    config: the `serving:` section of the config tree (`model_core.config.ServingConfig`); overrides: fields of
    it (host, port, pacs_url, backend, precision, max_batch, audit_log, report_store, …). The PACS is the
    DICOMweb base URL in pacs_url (e.g. Orthanc's http://HOST:8042/dicom-web), default $RRG_PACS_URL; tokens
    default to $RRG_API_TOKENS. Everything that can be wrong is checked before the port opens: the config and
    the token configuration (ConfigError / AuthConfigError, ValueErrors) first, then the report store
    (ReportStoreError) and the model (ModelSourceError; RuntimeErrors); each carries a message meant for the
    user (`error: <message>`).
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
    model = load_configured_model(model_source, config)
    app = create_app(model_source, pacs_client=pacs, tokens=tokens, model=model, report_store=store_path,
                     allow_anonymous=allow_anonymous, config=config)
    # access_log=False: uvicorn's access log prints URL paths, which hold study ids; ServiceMiddleware logs
    # the route template instead.
    uvicorn.run(app, host=config.host, port=config.port, log_level=log_level, access_log=False, workers=1)


__all__ = ["create_app", "serve", "serving_config", "parallelism", "ServingConfig", "render_text",
           "ModelSourceError", "configure_logging", "RedactUidFilter"]
