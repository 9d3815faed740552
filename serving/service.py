"""The report service behind the API, with no HTTP in it: the model, the batcher, the report store, the audit
log, the PACS client, the QA check and the metrics.

    service = ReportService(config, model_source, model=None, pacs=..., decode_dicom=decode_dicom, auth=...,
                            audit_path=Path("runs/serving/audit.jsonl"))
    await service.start()                                  # loads the model, opens the store, starts the batcher
    response = await service.report_from_pacs(study_id, ReportRequest(...), principal, received_at)
    text = await service.report_text(response.report_id, "impression", principal)
    await service.stop()

Operations take and return plain Python and pydantic objects (`serving.schemas`) and raise `serving.errors`
(`BadInput`, `NotFound`, `Overloaded`, `Unavailable`, …); `serving.routes` translate them to HTTP.

Privacy: report text, clinical context and pixel data are never logged; study ids appear in logs and the audit
log only as SHA-256.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anyio.to_thread
import numpy as np
import torch
from pydantic import ValidationError

from model_core.config import ServingConfig
from model_core.modeling.generation import structure_report
from serving import images as image_io
from serving.auth import AuditLog, Authenticator, Principal, sha256_hex
from serving.backends import LoadedModel, load_model
from serving.batching import BatcherClosed, MicroBatcher, QueueFull
from serving.errors import (
    BadInput,
    NotFound,
    Overloaded,
    ServiceError,
    TimedOut,
    Unavailable,
    UnsupportedMedia,
    UpstreamError,
    invalid_input,
    status_of,
)
from serving.fhir import diagnostic_report
from serving.metrics import Metrics
from serving.qa import review
from serving.report_text import render_text
from serving.schemas import (
    API,
    FRONTAL_VIEWS,
    LATERAL_VIEWS,
    Finding,
    ReadyResponse,
    ReportRequest,
    ReportResponse,
    UploadOptions,
)
from serving.settings import parallelism
from serving.store import ReportStore

log = logging.getLogger("serving")      # the service's own log lines, under one name (app, routes, service)

READ_EVENTS = {"json": "report.read", "fhir": "report.read.fhir", "text": "report.read.text"}


@dataclass
class UploadedFile:
    """One uploaded file of a study, as the client sent it."""

    filename: str | None
    content_type: str | None
    data: bytes


def load_configured_model(model_source: str | os.PathLike, config: ServingConfig) -> LoadedModel:
    """The model as the `serving:` config says: backend, precision, export, intra-op threads, Triton."""
    return load_model(model_source, backend=config.backend, precision=config.precision,
                      allow_export_at_startup=config.allow_export_at_startup, threads=parallelism(config)[1],
                      triton_url=config.triton_url, triton_model=config.triton_model)


async def _in_thread(fn: Callable, *args):
    """Run blocking work (decoding, SQLite, the PACS) off the event loop, in the worker threads of the server."""
    return await anyio.to_thread.run_sync(functools.partial(fn, *args))


@dataclass
class ReportService:
    config: ServingConfig
    model_source: str | None
    model: LoadedModel | None
    pacs: Any                            # fetch_instances(study, [(series, instance)]) -> [bytes]; optional ping()
    decode_dicom: Callable               # (bytes, size) -> (tensor (1,size,size), safe metadata)
    auth: Authenticator | None           # None: anonymous access allowed (development only)
    audit_path: Path
    metrics: Metrics = field(default_factory=Metrics)
    batcher: MicroBatcher | None = None
    audit: AuditLog | None = None
    report_store_path: str = ":memory:"
    reports: ReportStore | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Load the model (unless one was given), open the report store and the audit log, start the batcher."""
        if self.model is None:
            self.model = await asyncio.to_thread(load_configured_model, self.model_source, self.config)
        workers, threads = parallelism(self.config, self.model.backend.name)
        if self.model.backend.name == "torch":
            torch.set_num_threads(threads)                 # process-wide: the service runs one model
        self.metrics.model_info.labels(self.model.version, self.model.backend.name).set(1)
        self.reports = ReportStore(self.report_store_path, self.config.report_retention_days)
        self.audit = AuditLog(self.audit_path)
        self.batcher = MicroBatcher(
            self.infer, max_batch=self.config.max_batch, max_wait_ms=self.config.max_wait_ms,
            max_queue=self.config.max_queue,
            on_batch=lambda n, s: (self.metrics.batch_size.observe(n), self.metrics.inference.observe(s)),
            on_queue_depth=self.metrics.queue_depth.set, workers=workers)
        await self.batcher.start()
        log.info("serving model %s (backend %s); batching: max %d, wait %.0f ms, queue %d, %d worker(s); PACS %s",
                 self.model.version, self.model.backend.name, self.config.max_batch, self.config.max_wait_ms,
                 self.config.max_queue, workers, "configured" if self.pacs is not None else "not configured")

    async def stop(self) -> None:
        await self.batcher.close()
        self.audit.close()
        self.audit = None
        self.reports.close()
        self.reports = None

    async def readiness(self) -> ReadyResponse:
        """Ready when the model is loaded, the batcher runs, and the PACS answers (when one is configured)."""
        model_ok = self.model is not None and self.batcher is not None and self.batcher.running
        pacs_state, pacs_ok = "not configured (uploads only)", True
        if self.pacs is not None:
            ping = getattr(self.pacs, "ping", None)
            if ping is None:
                pacs_state = "configured (client has no ping)"
            else:
                try:
                    answer = await asyncio.wait_for(_in_thread(ping), self.config.pacs_timeout_s)
                    pacs_ok = answer is not False
                    pacs_state = "reachable" if pacs_ok else "unreachable"
                except Exception as exc:  # noqa: BLE001 — any failure: not ready
                    pacs_ok, pacs_state = False, f"unreachable ({type(exc).__name__})"
        return ReadyResponse(ready=model_ok and pacs_ok, model="loaded" if model_ok else "not loaded",
                             model_version=self.model.version if self.model else None,
                             backend=self.model.backend.name if self.model else None, pacs=pacs_state)

    # ------------------------------------------------------------------ writing reports

    async def report_from_pacs(self, study_id: str, request: ReportRequest, principal: Principal | None,
                               received_at: float) -> ReportResponse:
        """A draft report of a study whose images are in the PACS (only the chosen frontal ones are fetched).
        received_at: time.perf_counter() when the request arrived (processing_time_ms counts from it)."""
        _check_study_id(study_id, request.study_id)
        chosen = _choose([im.view for im in request.images], self.model.max_views)
        if self.pacs is None:
            raise Unavailable(f"no PACS is configured for this service; upload the images to "
                              f"{API}/studies/{{study_id}}/report:upload instead")
        wanted = [(request.images[i].series_uid, request.images[i].instance_uid) for i in chosen]
        try:
            blobs = await _in_thread(self.pacs.fetch_instances, study_id, wanted)
        except Exception as exc:  # noqa: BLE001 — _pacs_error maps every PACS failure to a status without echoing it
            raise _pacs_error(exc) from None
        if len(blobs) != len(wanted):
            raise UpstreamError(f"the PACS returned {len(blobs)} instances for {len(wanted)} requested")
        tensors = []
        for (series, instance), data in zip(wanted, blobs):
            tensor, _ = await self._decode_dicom(data, f"instance {instance} of series {series}")
            tensors.append(tensor)
        return await self._generate(study_id, request, tensors, principal, received_at)

    async def report_from_files(self, study_id: str, options: UploadOptions, files: list[UploadedFile],
                                principal: Principal | None, received_at: float) -> ReportResponse:
        """A draft report from uploaded DICOM (CR/DX), PNG or JPEG files; the projection of each comes from
        options.views, else a DICOM file's ViewPosition, else it counts as frontal."""
        _check_study_id(study_id, options.study_id)
        if options.views is not None and len(options.views) != len(files):
            raise BadInput(f"request part: views has {len(options.views)} entries for {len(files)} files")
        tensors, views = [], []
        for i, upload in enumerate(files):
            what = f"files[{i}] ({upload.filename!r})"
            kind = image_io.sniff(upload.data, upload.content_type)
            if kind is None:
                raise UnsupportedMedia(f"{what}: not a DICOM, PNG or JPEG file (unrecognised content)")
            if kind == image_io.DICOM:
                tensor, meta = await self._decode_dicom(upload.data, what)
                view = _dicom_view(meta)
            else:
                try:
                    tensor = await _in_thread(image_io.decode_image, upload.data, self.model.backend.image_size,
                                              what)
                except image_io.ImageInputError as exc:
                    raise BadInput(str(exc), exc.status_code) from None
                view = None
            tensors.append(tensor)
            views.append(options.views[i] if options.views is not None else view)
        chosen = _choose(views, self.model.max_views)
        return await self._generate(study_id, options, [tensors[i] for i in chosen], principal, received_at)

    async def _decode_dicom(self, data: bytes, what: str) -> tuple[torch.Tensor, dict]:
        try:
            tensor, meta = await _in_thread(self.decode_dicom, data, self.model.backend.image_size)
        except ServiceError:
            raise
        except Exception as exc:
            if type(exc).__name__ == "DicomInputError" or isinstance(exc, ValueError):
                raise BadInput(f"{what}: {exc}", status_of(exc, 422)) from None
            raise
        return tensor, meta or {}

    async def _generate(self, study_id: str, options: ReportRequest | UploadOptions, images: list[torch.Tensor],
                        principal: Principal | None, received_at: float) -> ReportResponse:
        """Run the model on the chosen images (through the batcher), structure and check the text, store the
        report, count it and audit it."""
        loaded = self.model
        study_images = torch.stack(images)                      # (K, 1, H, W)
        context = options.clinical_context.prompt_context()
        if self.batcher is None:
            raise Unavailable("the model is not loaded yet")
        try:
            text, probs = await asyncio.wait_for(self.batcher.submit((study_images, context)),
                                                 self.config.request_timeout_s)
        except asyncio.TimeoutError:
            raise TimedOut(f"inference did not finish within {self.config.request_timeout_s:.0f} s") from None
        except BatcherClosed as exc:
            raise Unavailable(str(exc)) from None
        except QueueFull as exc:
            self.metrics.queue_rejections.inc()
            raise Overloaded(str(exc), exc.retry_after) from None

        def postprocess():
            structured = structure_report(text, probs, loaded.thresholds, options.confidence_threshold)
            qa = review(text, probs, loaded.thresholds, options.confidence_threshold, structured.findings)
            return structured, qa

        structured, qa = await _in_thread(postprocess)
        report_id = str(uuid.uuid4())
        response = ReportResponse(
            report_id=report_id,
            findings=[Finding(finding=f.finding, confidence=f.confidence, severity=f.severity, bounding_box=None,
                              is_critical=f.is_critical) for f in structured.findings],
            impression=structured.impression, recommendations=structured.recommendations,
            processing_time_ms=round(1000 * (time.perf_counter() - received_at), 1), model_version=loaded.version,
            requires_radiologist_review=qa.requires_review, review_reasons=qa.reasons)
        record = {"response": response.model_dump(), "study_id": study_id,
                  "labels": [f.label for f in structured.findings],
                  "created": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                  "template": options.report_template, "findings_text": structured.findings_text}
        record["text_rendering"] = render_text(record, options.report_template)
        await _in_thread(self.store, report_id, record)       # SQLite: off the event loop
        m = self.metrics
        m.reports.inc()
        for f in structured.findings:
            if f.is_critical:
                m.critical.labels(f.label).inc()
        if qa.requires_review:
            m.flagged.inc()
            for kind in qa.kinds:
                m.review_reasons.labels(kind).inc()
        self.audit_event("report.create", principal, study_id, 200, report_id, qa.requires_review)
        log.info("report %s study=%s views=%d findings=%d review=%s reasons=%s %.0f ms", report_id,
                 sha256_hex(study_id)[:12], len(images), len(structured.findings), qa.requires_review,
                 qa.kinds, response.processing_time_ms)
        return response

    def infer(self, items: list[tuple[torch.Tensor, dict]]) -> list[tuple[str, np.ndarray]]:
        """The batch function (worker thread): [(images (K,1,H,W), context)] → [(text, probs (14,))]."""
        return self.model.backend.generate([i for i, _ in items], [c for _, c in items])

    def store(self, report_id: str, record: dict) -> None:
        self.reports.put(report_id, record)

    # ------------------------------------------------------------------ reading reports

    async def read_report(self, report_id: str, principal: Principal | None) -> ReportResponse:
        record = await self._read(report_id, "json", principal)
        return ReportResponse(**record["response"])

    async def report_fhir(self, report_id: str, principal: Principal | None) -> dict:
        """The report as an HL7 FHIR R4 DiagnosticReport (a JSON-ready dict)."""
        return diagnostic_report(await self._read(report_id, "fhir", principal))

    async def report_text(self, report_id: str, template: str | None, principal: Principal | None) -> str:
        """The report as text in `template` (default: the one the report was requested with)."""
        record = await self._read(report_id, "text", principal)
        return render_text(record, template or record["template"])

    async def _read(self, report_id: str, form: str, principal: Principal | None) -> dict:
        record = await _in_thread(self.get, report_id)
        self.audit_event(READ_EVENTS[form], principal, record["study_id"], 200, report_id,
                         record["response"]["requires_radiologist_review"])
        return record

    def get(self, report_id: str) -> dict:
        if self.reports is None:
            raise Unavailable("the service is starting: the report store is not open yet")
        record = self.reports.get(report_id)
        if record is None:
            raise NotFound(f"report {report_id} not found (unknown id, or older than the "
                           f"{self.config.report_retention_days:g}-day retention)")
        return record

    # ------------------------------------------------------------------ audit

    def audit_event(self, event: str, principal: Principal | None, study_id: str | None, status: int,
                    report_id: str | None = None, requires_review: bool | None = None,
                    unauthenticated: bool = False) -> None:
        """One audit record (who by token id, the study by SHA-256); a failed write is logged, never raised."""
        if self.audit is None:
            return
        who = principal.token_id if principal else "unauthenticated" if unauthenticated or self.auth else "anonymous"
        try:
            self.audit.record(event, who, study_id, status,
                              self.model.version if self.model else None, report_id, requires_review)
        except OSError as exc:
            log.error("audit log write failed: %s", type(exc).__name__)


def parse_upload_options(raw: str | None) -> UploadOptions:
    """The upload's optional `request` part (JSON) → UploadOptions; BadInput naming the field otherwise."""
    try:
        return UploadOptions.model_validate_json(raw) if raw else UploadOptions()
    except ValidationError as exc:
        raise invalid_input(exc.errors(), prefix="request part: ") from None


def _check_study_id(path_id: str, body_id: str | None) -> None:
    if body_id is not None and body_id != path_id:
        raise BadInput("study_id in the body differs from the study id in the path")


def _pacs_error(exc: BaseException) -> ServiceError:
    """The service error for a PACS client error (serving.ingest, or any client following its naming)."""
    kind = type(exc).__name__
    if kind == "InstanceNotFound":
        return NotFound(f"not found in the PACS: {exc}", status_of(exc, 404))
    if kind == "PacsUnavailable" or isinstance(exc, (ConnectionError, TimeoutError, OSError)):
        return Unavailable(f"PACS unavailable: {exc or kind}; retry later or upload the images to "
                           f"{API}/studies/{{study_id}}/report:upload")
    code = getattr(exc, "status_code", None)
    if isinstance(code, int) and 400 <= code < 600:
        return UpstreamError(f"PACS error: {exc}", code)
    raise exc


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
        raise BadInput(f"no frontal view: the study's {laterals} image(s) are all lateral; the model "
                       "needs a frontal (PA, AP or Frontal) radiograph")
    return frontal[:max_views]
