"""The report service (seed §4): FastAPI app, dynamic batching, QA, FHIR output, auth, audit, metrics.

    app = create_app("runs/demo/kfp/<run>/train/model", pacs_client=PacsClient("http://orthanc:8042/dicom-web"))
    serve("models:/rrg-chest-xray@champion", host="127.0.0.1", port=8080, pacs_url=...)   # blocking (uvicorn)

Endpoints (see docs/serving.md and /openapi.json):
    POST /api/v1/studies/{study_id}/report         JSON body (ReportRequest): images fetched from the PACS
    POST /api/v1/studies/{study_id}/report:upload  multipart: `files` (DICOM/PNG/JPEG) + optional `request` JSON
    GET  /api/v1/reports/{report_id}               the report (ReportResponse)
    GET  /api/v1/reports/{report_id}/fhir          HL7 FHIR R4 DiagnosticReport (preliminary)
    GET  /api/v1/reports/{report_id}/text?template=structured|narrative|impression   text/plain
    GET  /healthz  /readyz  /metrics

Privacy: report text, clinical context and pixel data are never logged; study ids appear in logs and the audit
log only as SHA-256; uvicorn's access log (which would print study ids in URL paths) is replaced by one line
per request that names the route template, the status and the time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from fastapi import FastAPI, HTTPException, Query, Request, Security
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPBearer
from pydantic import ValidationError

from model_core.config import ConfigError, ServingConfig
from serving import images as image_io
from serving.auth import AuditLog, AuthConfigError, Authenticator, Principal, load_tokens, sha256_hex
from serving.backends import LoadedModel, ModelSourceError, load_model
from serving.batching import BatcherClosed, MicroBatcher, QueueFull
from serving.schemas import (
    FRONTAL_VIEWS,
    ID_PATTERN,
    LATERAL_VIEWS,
    ErrorResponse,
    Finding,
    ReadyResponse,
    ReportRequest,
    ReportResponse,
    ReportTemplate,
    UploadOptions,
)
from serving.store import ReportStore

log = logging.getLogger("serving")

API = "/api/v1"
MAX_JSON_BYTES = 1024 * 1024
DISCLAIMER = "AI-generated draft for radiologist review; not for autonomous diagnosis."


# --------------------------------------------------------------------------- metrics

class Metrics:
    """Prometheus metrics in a registry of their own (several apps in one process do not collide)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
        self.flagged = Counter("rrg_review_flagged_reports_total", "reports flagged for radiologist review",
                               registry=self.registry)
        self.review_reasons = Counter("rrg_review_flags_total", "review reasons by kind "
                                      "(detector_only, text_only, low_confidence)", ["kind"], registry=self.registry)
        self.model_info = Gauge("rrg_model_info", "the model being served (value 1)", ["version", "backend"],
                                registry=self.registry)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


_ROUTES = [
    (re.compile(r"^/api/v1/studies/[^/]+/report$"), "/api/v1/studies/{study_id}/report", "report.write"),
    (re.compile(r"^/api/v1/studies/[^/]+/report:upload$"), "/api/v1/studies/{study_id}/report:upload",
     "report.write"),
    (re.compile(r"^/api/v1/reports/[^/]+$"), "/api/v1/reports/{report_id}", "report.read"),
    (re.compile(r"^/api/v1/reports/[^/]+/fhir$"), "/api/v1/reports/{report_id}/fhir", "report.read"),
    (re.compile(r"^/api/v1/reports/[^/]+/text$"), "/api/v1/reports/{report_id}/text", "report.read"),
]
_OPEN_ROUTES = {"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}


def classify(path: str) -> tuple[str, str | None]:
    """(route template, required scope); unknown /api paths need a token too, other paths are 'other'."""
    for pattern, template, scope in _ROUTES:
        if pattern.match(path):
            return template, scope
    if path in _OPEN_ROUTES:
        return path, None
    if path.startswith(API):
        return "other-api", "report.read"
    return "other", None


# --------------------------------------------------------------------------- the service state

@dataclass
class Service:
    config: ServingConfig
    model_source: str | None
    model: LoadedModel | None
    pacs: Any
    decode_dicom: Callable | None
    auth: Authenticator | None           # None: anonymous access allowed (development only)
    audit_path: Path
    metrics: Metrics = field(default_factory=Metrics)
    batcher: MicroBatcher | None = None
    audit: AuditLog | None = None
    report_store_path: str = ":memory:"
    reports: ReportStore | None = None

    def infer(self, items: list[tuple[torch.Tensor, dict]]) -> list[tuple[str, np.ndarray]]:
        """The batch function (worker thread): [(images (K,1,H,W), context)] → [(text, probs (14,))]."""
        return self.model.backend.generate([i for i, _ in items], [c for _, c in items])

    def store(self, report_id: str, record: dict) -> None:
        self.reports.put(report_id, record)

    def get(self, report_id: str) -> dict:
        if self.reports is None:
            raise HTTPException(503, "the service is starting: the report store is not open yet")
        record = self.reports.get(report_id)
        if record is None:
            raise HTTPException(404, f"report {report_id} not found (unknown id, or older than the "
                                     f"{self.config.report_retention_days:g}-day retention)")
        return record

    def audit_event(self, event: str, principal: Principal | None, study_id: str | None, status: int,
                    report_id: str | None = None, requires_review: bool | None = None,
                    unauthenticated: bool = False) -> None:
        if self.audit is None:
            return
        who = principal.token_id if principal else "unauthenticated" if unauthenticated or self.auth else "anonymous"
        try:
            self.audit.record(event, who, study_id, status,
                              self.model.version if self.model else None, report_id, requires_review)
        except OSError as exc:
            log.error("audit log write failed: %s", type(exc).__name__)


class ServiceMiddleware:
    """Pure ASGI middleware: bearer-token auth (before the body is read), per-route metrics, access log."""

    def __init__(self, app, service: Service):
        self.app, self.service = app, service

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        route, needed = classify(scope["path"])
        status = [500]

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            if needed is not None and self.service.auth is not None:
                headers = dict(scope.get("headers") or [])
                authorization = headers.get(b"authorization", b"").decode("latin-1") or None
                principal = self.service.auth.authenticate(authorization)
                if principal is None:
                    detail = ("missing bearer token (Authorization: Bearer <token>)" if not authorization
                              else "invalid bearer token")
                    response = JSONResponse({"detail": detail}, 401,
                                            headers={"WWW-Authenticate": 'Bearer realm="rrg"'})
                    return await response(scope, receive, send_wrapper)
                if needed not in principal.scopes:
                    response = JSONResponse(
                        {"detail": f"this token lacks the scope {needed!r} needed for {route}"}, 403,
                        headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{needed}"'})
                    return await response(scope, receive, send_wrapper)
                scope.setdefault("state", {})["principal"] = principal
            if route == "/api/v1/studies/{study_id}/report":
                length = dict(scope.get("headers") or []).get(b"content-length", b"0")
                if not length.isdigit() or int(length) > MAX_JSON_BYTES:
                    response = JSONResponse({"detail": f"JSON body above the {MAX_JSON_BYTES}-byte limit"}, 413)
                    return await response(scope, receive, send_wrapper)
            await self.app(scope, receive, send_wrapper)
        finally:
            seconds = time.perf_counter() - started
            if needed == "report.write" and status[0] != 200:
                # Refused or failed report requests are audited too (successes are audited by the handler).
                match = re.match(r"^/api/v1/studies/([^/]+)/", scope["path"])
                state = scope.get("state") or {}
                self.service.audit_event("report.create.refused" if status[0] < 500 else "report.create.failed",
                                         state.get("principal"), match.group(1) if match else None, status[0],
                                         unauthenticated=status[0] == 401)
            metrics = self.service.metrics
            metrics.latency.labels(route).observe(seconds)
            metrics.requests.labels(route, str(status[0])).inc()
            if route not in ("/metrics", "/healthz", "/readyz"):
                log.info("%s %s → %d in %.0f ms", scope["method"], route, status[0], 1000 * seconds)


# --------------------------------------------------------------------------- errors

def _error_message(errors: list[dict]) -> tuple[str, list[dict]]:
    """Pydantic errors → one sentence naming each field, and the list without the offending input values."""
    clean, parts = [], []
    for e in errors:
        loc = [str(p) for p in e.get("loc", ())]
        where = ".".join(loc) or "body"
        msg = "unknown field (not part of the API)" if e.get("type") == "extra_forbidden" else e.get("msg", "")
        parts.append(f"{where}: {msg}")
        clean.append({"loc": loc, "msg": msg, "type": e.get("type")})
    return "; ".join(parts), clean


def _validation_response(errors: list[dict], prefix: str = "") -> JSONResponse:
    json_errors = [e for e in errors if e.get("type") == "json_invalid"]
    if json_errors:
        ctx = json_errors[0].get("ctx") or {}
        reason = ctx.get("error") or json_errors[0].get("msg", "")
        return JSONResponse({"detail": f"{prefix}malformed JSON: {reason}"}, 400)
    message, clean = _error_message(errors)
    return JSONResponse({"detail": f"{prefix}{message}", "errors": clean}, 422)


def _status_of(exc: BaseException, default: int) -> int:
    code = getattr(exc, "status_code", None)
    return code if isinstance(code, int) and 400 <= code < 600 else default


def _pacs_error(exc: BaseException, study_id: str) -> HTTPException:
    """Map PACS client errors (serving.ingest, or any client following its naming) to HTTP errors."""
    kind = type(exc).__name__
    if kind == "InstanceNotFound":
        return HTTPException(_status_of(exc, 404), f"not found in the PACS: {exc}")
    if kind == "PacsUnavailable" or isinstance(exc, (ConnectionError, TimeoutError, OSError)):
        return HTTPException(503, f"PACS unavailable: {exc or kind}; retry later or upload the images to "
                                  f"{API}/studies/{{study_id}}/report:upload", )
    code = getattr(exc, "status_code", None)
    if isinstance(code, int) and 400 <= code < 600:
        return HTTPException(code, f"PACS error: {exc}")
    raise exc


def _default_decode_dicom() -> Callable | None:
    try:
        from serving.dicom import decode_dicom
    except ImportError:
        return None
    return decode_dicom


def _dicom_view(metadata: dict | None) -> str | None:
    """The request View of a DICOM file from its safe metadata (ViewPosition), or None when absent."""
    if not metadata:
        return None
    raw = next((metadata[k] for k in ("view_position", "ViewPosition", "view") if metadata.get(k)), None)
    if raw is None:
        return None
    value = str(raw).strip().upper()
    if value in ("PA", "AP"):
        return value
    if value in ("LL", "RL"):
        return value
    if value in ("LAT", "LATERAL", "LLD", "RLD"):
        return "Lateral"
    return None


def _choose(views: list[str | None], max_views: int) -> list[int]:
    """Indices of the images fed to the model: frontal ones first (PA, AP, Frontal; unknown counts as frontal)."""
    frontal = [i for i, v in enumerate(views) if v is None or v in FRONTAL_VIEWS]
    if not frontal:
        laterals = sum(1 for v in views if v in LATERAL_VIEWS)
        raise HTTPException(422, f"no frontal view: the study's {laterals} image(s) are all lateral; the model "
                                 "needs a frontal (PA, AP or Frontal) radiograph")
    return frontal[:max_views]


# --------------------------------------------------------------------------- text rendering

def render_text(record: dict, template: str) -> str:
    response = record["response"]
    head = (f"{DISCLAIMER}\nModel {response['model_version']}. Report {response['report_id']}.")
    review = ""
    if response["requires_radiologist_review"]:
        review = "\n\nRADIOLOGIST REVIEW REQUIRED:\n" + "\n".join(f"- {r}" for r in response["review_reasons"])
    impression = response["impression"] or "(no impression generated)"
    if template == "impression":
        return f"{head}\n\nIMPRESSION: {impression}{review}\n"
    recs = response["recommendations"]
    if template == "narrative":
        findings = record.get("findings_text") or "(no findings text generated)"
        body = f"FINDINGS: {findings}\n\nIMPRESSION: {impression}"
        if recs:
            body += "\n\nRECOMMENDATIONS: " + " ".join(recs)
        return f"{head}\n\n{body}{review}\n"
    lines = ["FINDINGS:"]
    for f in response["findings"]:
        tags = [f"confidence {f['confidence']:.2f}"]
        if f["severity"]:
            tags.append(f["severity"])
        if f["is_critical"]:
            tags.append("CRITICAL")
        lines.append(f"- {f['finding']} [{', '.join(tags)}]")
    if not response["findings"]:
        lines.append("- No abnormal findings listed.")
    lines += ["", f"IMPRESSION:\n{impression}", "", "RECOMMENDATIONS:"]
    lines += [f"- {r}" for r in recs] or ["- None."]
    return f"{head}\n\n" + "\n".join(lines) + f"{review}\n"


# --------------------------------------------------------------------------- the app

_UPLOAD_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["files"],
            "properties": {
                "files": {"type": "array", "items": {"type": "string", "format": "binary"},
                          "description": "one or more DICOM (CR/DX), PNG or JPEG files of the study"},
                "request": {"$ref": "#/components/schemas/UploadOptions"},
            }},
            "encoding": {"request": {"contentType": "application/json"}}}},
    },
}

StudyPath = Annotated[str, PathParam(pattern=ID_PATTERN, description="StudyInstanceUID or study id")]
_ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 413, 415, 422, 429, 503, 504)}


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
    threads = parallelism(config)[1]        # for the runtime's sessions; workers are set once the backend is known
    token_table = load_tokens(tokens)
    if not token_table and not allow_anonymous:
        raise AuthConfigError("no API tokens configured: set RRG_API_TOKENS (see serving/auth.py) or pass "
                              "allow_anonymous=True for local development")
    if not token_table:
        log.warning("no API tokens: the API is open to anyone who can reach it (development only)")
    service = Service(
        config=config, model_source=str(model_source) if model_source is not None else None, model=model,
        pacs=pacs_client, decode_dicom=decode_dicom or _default_decode_dicom(),
        auth=Authenticator(token_table) if token_table else None,
        audit_path=Path(audit_log or os.environ.get("RRG_AUDIT_LOG") or config.audit_log),
        report_store_path=str(report_store or os.environ.get("RRG_REPORT_STORE") or config.report_store))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if service.model is None:
            service.model = await asyncio.to_thread(
                load_model, service.model_source, backend=config.backend, precision=config.precision,
                export=config.export_on_startup, threads=threads, triton_url=config.triton_url,
                triton_model=config.triton_model)
        workers, threads_ = parallelism(config, service.model.backend.name)
        if service.model.backend.name == "torch":
            torch.set_num_threads(threads_)                # process-wide: the service runs one model
        service.metrics.model_info.labels(service.model.version, service.model.backend.name).set(1)
        service.reports = ReportStore(service.report_store_path, config.report_retention_days)
        service.audit = AuditLog(service.audit_path)
        service.batcher = MicroBatcher(
            service.infer, max_batch=config.max_batch, max_wait_ms=config.max_wait_ms, max_queue=config.max_queue,
            on_batch=lambda n, s: (service.metrics.batch_size.observe(n), service.metrics.inference.observe(s)),
            on_queue_depth=service.metrics.queue_depth.set, workers=workers)
        await service.batcher.start()
        log.info("serving model %s (backend %s); batching: max %d, wait %.0f ms, queue %d, %d worker(s); PACS %s",
                 service.model.version, service.model.backend.name, config.max_batch, config.max_wait_ms,
                 config.max_queue, workers, "configured" if service.pacs is not None else "not configured")
        try:
            yield
        finally:
            await service.batcher.close()
            service.audit.close()
            service.audit = None
            service.reports.close()
            service.reports = None

    app = FastAPI(
        title="Chest X-ray report generator", version="1.0.0", lifespan=lifespan,
        description="Draft chest X-ray reports for radiologist review (not for autonomous diagnosis). "
                    "Bearer tokens with scopes report.write / report.read (see docs/serving.md).",
    )
    app.state.service = service
    app.add_middleware(ServiceMiddleware, service=service)

    def openapi() -> dict:
        # The upload's `request` part is parsed by hand (it may arrive as a field or a file part), so FastAPI
        # does not see its model: add UploadOptions (and the models it uses) to the components.
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)
            extra = UploadOptions.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, definition in extra.pop("$defs", {}).items():
                components.setdefault(name, definition)
            components["UploadOptions"] = extra
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
    bearer = HTTPBearer(auto_error=False, description="RRG_API_TOKENS token")

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        return _validation_response(list(exc.errors()))

    @app.exception_handler(QueueFull)
    async def _queue_full(request: Request, exc: QueueFull):
        service.metrics.queue_rejections.inc()
        return JSONResponse({"detail": str(exc)}, 429, headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        ref = uuid.uuid4().hex[:12]
        log.error("internal error %s on %s: %s", ref, classify(request.url.path)[0], type(exc).__name__,
                  exc_info=(type(exc), exc, exc.__traceback__))
        return JSONResponse({"detail": f"internal error (reference {ref}); the service is still running"}, 500)

    # ---- probes and metrics

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], response_model=ReadyResponse, responses={503: {"model": ReadyResponse}})
    async def readyz():
        """Readiness: the model is loaded, the batcher runs, and the PACS answers (when one is configured)."""
        model_ok = service.model is not None and service.batcher is not None and service.batcher.running
        pacs_state, pacs_ok = "not configured (uploads only)", True
        if service.pacs is not None:
            ping = getattr(service.pacs, "ping", None)
            if ping is None:
                pacs_state = "configured (client has no ping)"
            else:
                try:
                    answer = await asyncio.wait_for(run_in_threadpool(ping), config.pacs_timeout_s)
                    pacs_ok = answer is not False
                    pacs_state = "reachable" if pacs_ok else "unreachable"
                except Exception as exc:  # noqa: BLE001 — any failure: not ready
                    pacs_ok, pacs_state = False, f"unreachable ({type(exc).__name__})"
        body = ReadyResponse(ready=model_ok and pacs_ok, model="loaded" if model_ok else "not loaded",
                             model_version=service.model.version if service.model else None,
                             backend=service.model.backend.name if service.model else None, pacs=pacs_state)
        return JSONResponse(body.model_dump(), 200 if body.ready else 503)

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    async def metrics() -> Response:
        payload, content_type = service.metrics.render()
        return Response(payload, media_type=content_type)

    # ---- generating a report

    async def run_report(request: Request, study_id: str, options, images: list[torch.Tensor],
                         started: float) -> ReportResponse:
        from model_core.modeling.generation import structure_report
        from serving.qa import review

        principal = getattr(request.state, "principal", None)
        loaded = service.model
        study_images = torch.stack(images)                      # (K, 1, H, W)
        context = options.clinical_context.prompt_context()
        if service.batcher is None:
            raise HTTPException(503, "the model is not loaded yet")
        try:
            text, probs = await asyncio.wait_for(service.batcher.submit((study_images, context)),
                                                 config.request_timeout_s)
        except asyncio.TimeoutError:
            raise HTTPException(504, f"inference did not finish within {config.request_timeout_s:.0f} s") from None
        except BatcherClosed as exc:
            raise HTTPException(503, str(exc)) from None

        def postprocess():
            structured = structure_report(text, probs, loaded.thresholds, options.confidence_threshold)
            qa = review(text, probs, loaded.thresholds, options.confidence_threshold, structured.findings)
            return structured, qa

        structured, qa = await run_in_threadpool(postprocess)
        report_id = str(uuid.uuid4())
        response = ReportResponse(
            report_id=report_id,
            findings=[Finding(finding=f.finding, confidence=f.confidence, severity=f.severity, bounding_box=None,
                              is_critical=f.is_critical) for f in structured.findings],
            impression=structured.impression, recommendations=structured.recommendations,
            processing_time_ms=round(1000 * (time.perf_counter() - started), 1), model_version=loaded.version,
            requires_radiologist_review=qa.requires_review, review_reasons=qa.reasons)
        record = {"response": response.model_dump(), "study_id": study_id,
                  "labels": [f.label for f in structured.findings],
                  "created": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                  "template": options.report_template, "findings_text": structured.findings_text}
        record["text_rendering"] = render_text(record, options.report_template)
        await run_in_threadpool(service.store, report_id, record)       # SQLite: off the event loop
        m = service.metrics
        m.reports.inc()
        for f in structured.findings:
            if f.is_critical:
                m.critical.labels(f.label).inc()
        if qa.requires_review:
            m.flagged.inc()
            for kind in qa.kinds:
                m.review_reasons.labels(kind).inc()
        service.audit_event("report.create", principal, study_id, 200, report_id, qa.requires_review)
        log.info("report %s study=%s views=%d findings=%d review=%s reasons=%s %.0f ms", report_id,
                 sha256_hex(study_id)[:12], len(images), len(structured.findings), qa.requires_review,
                 qa.kinds, response.processing_time_ms)
        return response

    def check_study_id(path_id: str, body_id: str | None) -> None:
        if body_id is not None and body_id != path_id:
            raise HTTPException(422, "study_id in the body differs from the study id in the path")

    def dicom_decoder() -> Callable:
        if service.decode_dicom is None:
            raise HTTPException(501, "DICOM decoding is not available in this deployment (serving.dicom missing)")
        return service.decode_dicom

    async def decode_dicom_bytes(data: bytes, what: str) -> tuple[torch.Tensor, dict]:
        decode = dicom_decoder()
        try:
            tensor, meta = await run_in_threadpool(decode, data, service.model.backend.image_size)
        except HTTPException:
            raise
        except Exception as exc:  # noqa: BLE001 — mapped below; unknown errors are re-raised
            if type(exc).__name__ == "DicomInputError" or isinstance(exc, ValueError):
                raise HTTPException(_status_of(exc, 422), f"{what}: {exc}") from None
            raise
        return tensor, meta or {}

    @app.post(f"{API}/studies/{{study_id}}/report", response_model=ReportResponse, tags=["reports"],
              responses=_ERRORS, dependencies=[Security(bearer)])
    async def create_report(request: Request, study_id: StudyPath, body: ReportRequest) -> ReportResponse:
        """Generate a draft report for a study whose images are in the PACS (fetched by UID over DICOMweb)."""
        started = time.perf_counter()
        check_study_id(study_id, body.study_id)
        chosen = _choose([im.view for im in body.images], service.model.max_views)
        if service.pacs is None:
            raise HTTPException(503, f"no PACS is configured for this service; upload the images to "
                                     f"{API}/studies/{{study_id}}/report:upload instead")
        wanted = [(body.images[i].series_uid, body.images[i].instance_uid) for i in chosen]
        try:
            blobs = await run_in_threadpool(service.pacs.fetch_instances, study_id, wanted)
        except Exception as exc:  # noqa: BLE001 — mapped by name/type; anything else is re-raised
            raise _pacs_error(exc, study_id) from None
        if len(blobs) != len(wanted):
            raise HTTPException(502, f"the PACS returned {len(blobs)} instances for {len(wanted)} requested")
        tensors = []
        for (series, instance), data in zip(wanted, blobs):
            tensor, _ = await decode_dicom_bytes(data, f"instance {instance} of series {series}")
            tensors.append(tensor)
        return await run_report(request, study_id, body, tensors, started)

    @app.post(f"{API}/studies/{{study_id}}/report:upload", response_model=ReportResponse, tags=["reports"],
              responses=_ERRORS, dependencies=[Security(bearer)], openapi_extra=_UPLOAD_SCHEMA)
    async def upload_report(request: Request, study_id: StudyPath) -> ReportResponse:
        """Generate a draft report from uploaded files: multipart `files` parts (DICOM CR/DX, PNG or JPEG) and an
        optional `request` part (JSON: clinical_context, report_template, confidence_threshold, views)."""
        from starlette.datastructures import UploadFile
        from starlette.formparsers import MultiPartException

        started = time.perf_counter()
        content_type = request.headers.get("content-type", "")
        if not content_type.lower().startswith("multipart/form-data"):
            raise HTTPException(415, "send multipart/form-data with one or more `files` parts")
        length = request.headers.get("content-length")
        if length is None:
            raise HTTPException(411, "a Content-Length header is required for uploads")
        if not length.isdigit() or int(length) > config.max_upload_bytes:
            raise HTTPException(413, f"upload of {length} bytes is above the {config.max_upload_bytes}-byte limit")
        try:
            form = await request.form(max_files=config.max_files, max_fields=4)
        except MultiPartException as exc:
            raise HTTPException(400, f"malformed multipart body: {exc.message}") from None
        try:
            unknown = sorted(set(form.keys()) - {"files", "request"})
            if unknown:
                raise HTTPException(422, f"unknown form part(s) {unknown}; expected `files` and optional `request`")
            files = form.getlist("files")
            if not files:
                raise HTTPException(422, "no `files` part: upload at least one frontal image (DICOM, PNG or JPEG)")
            if any(not isinstance(f, UploadFile) for f in files):
                raise HTTPException(422, "every `files` part must be a file upload (with a filename)")
            raw = form.get("request")
            if isinstance(raw, UploadFile):
                raw = (await raw.read()).decode("utf-8", errors="replace")
            try:
                options = UploadOptions.model_validate_json(raw) if raw else UploadOptions()
            except ValidationError as exc:
                response = _validation_response(exc.errors(), prefix="request part: ")
                raise HTTPException(response.status_code, _response_detail(response)) from None
            check_study_id(study_id, options.study_id)
            if options.views is not None and len(options.views) != len(files):
                raise HTTPException(422, f"request part: views has {len(options.views)} entries for "
                                         f"{len(files)} files")
            tensors, views = [], []
            for i, upload in enumerate(files):
                what = f"files[{i}] ({upload.filename!r})"
                data = await upload.read()
                kind = image_io.sniff(data, upload.content_type)
                if kind is None:
                    raise HTTPException(415, f"{what}: not a DICOM, PNG or JPEG file (unrecognised content)")
                if kind == image_io.DICOM:
                    tensor, meta = await decode_dicom_bytes(data, what)
                    view = _dicom_view(meta)
                else:
                    try:
                        tensor = await run_in_threadpool(image_io.decode_image, data,
                                                         service.model.backend.image_size, what)
                    except image_io.ImageInputError as exc:
                        raise HTTPException(exc.status_code, str(exc)) from None
                    view = None
                tensors.append(tensor)
                views.append(options.views[i] if options.views is not None else view)
        finally:
            await form.close()
        chosen = _choose(views, service.model.max_views)
        return await run_report(request, study_id, options, [tensors[i] for i in chosen], started)

    # ---- reading reports

    @app.get(f"{API}/reports/{{report_id}}", response_model=ReportResponse, tags=["reports"],
             responses=_ERRORS, dependencies=[Security(bearer)])
    async def get_report(request: Request, report_id: str) -> ReportResponse:
        record = await run_in_threadpool(service.get, report_id)
        service.audit_event("report.read", getattr(request.state, "principal", None), record["study_id"], 200,
                            report_id, record["response"]["requires_radiologist_review"])
        return ReportResponse(**record["response"])

    @app.get(f"{API}/reports/{{report_id}}/fhir", tags=["reports"], responses=_ERRORS,
             dependencies=[Security(bearer)])
    async def get_report_fhir(request: Request, report_id: str) -> JSONResponse:
        """The report as an HL7 FHIR R4 DiagnosticReport (status preliminary), media type application/fhir+json."""
        from serving.fhir import diagnostic_report

        record = await run_in_threadpool(service.get, report_id)
        service.audit_event("report.read.fhir", getattr(request.state, "principal", None), record["study_id"],
                            200, report_id, record["response"]["requires_radiologist_review"])
        return JSONResponse(diagnostic_report(record), media_type="application/fhir+json")

    @app.get(f"{API}/reports/{{report_id}}/text", tags=["reports"], responses=_ERRORS,
             response_class=PlainTextResponse, dependencies=[Security(bearer)])
    async def get_report_text(request: Request, report_id: str,
                              template: Annotated[ReportTemplate | None, Query()] = None) -> PlainTextResponse:
        """Plain text: structured (findings with confidences), narrative, or impression only
        (default: the request's report_template)."""
        record = await run_in_threadpool(service.get, report_id)
        service.audit_event("report.read.text", getattr(request.state, "principal", None), record["study_id"],
                            200, report_id, record["response"]["requires_radiologist_review"])
        return PlainTextResponse(render_text(record, template or record["template"]))

    return app


def _response_detail(response: JSONResponse) -> str:
    import json

    return json.loads(response.body)["detail"]


# --------------------------------------------------------------------------- running it

# A DICOM UID in free text: five or more dot-separated numbers (IPv4 addresses have four, versions fewer).
_UID_IN_TEXT = re.compile(r"(?<![\d.])\d+(?:\.\d+){4,}(?![\d.])")


class RedactUidFilter(logging.Filter):
    """Safety net on the log handlers: any DICOM UID in a log message (from this service or a library such as
    dicomweb_client) is replaced by `uid#<first 12 hex digits of its SHA-256>`."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 — a broken format string is the logging module's to report
            return True
        redacted = _UID_IN_TEXT.sub(lambda m: "uid#" + sha256_hex(m.group(0))[:12], message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def configure_logging(level: str = "info") -> None:
    """Root logging for the service: INFO lines without PHI, UIDs redacted, chatty libraries at WARNING."""
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactUidFilter) for f in handler.filters):
            handler.addFilter(RedactUidFilter())
    # dicomweb_client logs study/series/instance UIDs at INFO for every retrieval.
    for name in ("dicomweb_client", "httpx", "urllib3", "multipart"):
        logging.getLogger(name).setLevel(logging.WARNING)


def parallelism(config: ServingConfig, backend: str | None = None) -> tuple[int, int]:
    """(workers, intra-op threads per worker) for a backend name (default: the configured backend).

    ONNX Runtime and Triton: one worker per core (at most 4), one thread each. A decoder step of the report model
    is a few small matrix products: split across cores they gain little (32 ms/report with 2 threads vs 32 ms
    with 1 at batch 8), while whole batches on separate cores scale (session.run releases the GIL).
    torch: one worker with every core, since transformers' generate loop holds the GIL (two workers were slower
    than one). See benchmarks/serving_batching.py."""
    cores = os.cpu_count() or 1
    torch_backend = (backend or config.backend) == "torch"
    workers = config.workers or (1 if torch_backend else max(1, min(4, cores)))
    threads = config.threads or max(1, cores // workers)
    return workers, threads


def serving_config(config: ServingConfig | None = None, **overrides) -> ServingConfig:
    """A checked copy of `config` (default: ServingConfig()) with `overrides` applied; None values are ignored.

    Raises ConfigError naming the key for an unknown option or a bad value."""
    config = config or ServingConfig()
    known = {f.name for f in dataclasses.fields(ServingConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"unknown serving option(s): {', '.join(unknown)} (see model_core.config.ServingConfig)")
    return dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})


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
    import uvicorn

    from serving.store import ReportStore

    config = serving_config(config, **overrides)
    configure_logging(log_level)
    token_table = load_tokens(tokens)
    if not token_table and not allow_anonymous:
        raise AuthConfigError("no API tokens configured: set RRG_API_TOKENS (see docs/serving.md)")
    pacs_url = config.pacs_url or os.environ.get("RRG_PACS_URL")
    pacs = None
    if pacs_url:
        from serving.ingest import PacsClient

        pacs = PacsClient(pacs_url)
    store_path = os.environ.get("RRG_REPORT_STORE") or config.report_store
    ReportStore(store_path, config.report_retention_days).close()       # fails here, before the port opens
    model = load_model(model_source, backend=config.backend, precision=config.precision,
                       export=config.export_on_startup, threads=parallelism(config)[1],
                       triton_url=config.triton_url, triton_model=config.triton_model)
    app = create_app(model_source, pacs_client=pacs, tokens=tokens, model=model, report_store=store_path,
                     allow_anonymous=allow_anonymous, config=config)
    # access_log=False: uvicorn's access log prints URL paths, which hold study ids; ServiceMiddleware logs
    # the route template instead.
    uvicorn.run(app, host=config.host, port=config.port, log_level=log_level, access_log=False, workers=1)


__all__ = ["create_app", "serve", "serving_config", "ServingConfig", "render_text", "ModelSourceError", "configure_logging"]
