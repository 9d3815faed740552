"""The report service behind the API, with no HTTP in it: the model, the batcher, the report store, the audit
log, the PACS client, the QA check and the metrics.

    service = ReportService(config, model_source, model=None, pacs=..., decode_dicom=decode_dicom, auth=...,
                            audit_path=Path("runs/serving/audit.jsonl"))
    await service.start()                                  # loads the model, opens the store, starts the batcher
    response = await service.report_from_pacs(study_id, ReportRequest(...), principal, received_at)
    text = await service.report_text(response.report_id, "impression", principal)
    feedback = await service.submit_feedback(report_id, FeedbackRequest(...), principal)   # radiologist sign-off
    state = await service.set_automation(AutomationRequest(paused=True, reason=...), principal)
    await service.stop()

Each report also goes to the prediction log (serving.prediction_logging: off the request path) and, while an
operator has paused automated reports (serving.automation), is flagged for radiologist review with the reason.

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

from model_core.chexpert import CHEXPERT_LABELS
from model_core.config import ServingConfig
from model_core.data.images import stack_views
from model_core.data.validated import SignOff, ValidatedPool
from model_core.labels.labeler import label_report
from model_core.modeling.generation import structure_report
from model_core.phi import find_phi
from model_core.prediction_log import PredictionLog
from serving import images as image_io
from serving.admission import DecodeBudget, request_decode_bytes
from serving.auth import AuditError, AuditLog, Authenticator, Principal, may_access, sha256_hex
from serving.automation import AutomationControl, AutomationState, AutomationStateError
from serving.backends import LoadedModel, load_model
from serving.backends.base import generate_outputs
from serving.batching import BatcherClosed, MicroBatcher, QueueFull
from serving.errors import (
    BadInput,
    NotFound,
    Overloaded,
    ServiceError,
    TimedOut,
    Unavailable,
    UpstreamError,
    invalid_input,
    status_of,
)
from serving.feedback import signed_off
from serving.fhir import diagnostic_report
from serving.heatmaps import HEATMAP_INPUTS, encode_inputs
from serving.metrics import Metrics
from serving.model_swap import ModelSlot
from serving.prediction_logging import PredictionWriter, ServedStudy, model_identity
from serving.qa import AUTOMATION_PAUSED, review, unsupported_critical
from serving.report_text import render_text
from serving.rollout_arms import RolloutArms
from serving.schemas import (
    API,
    AutomationRequest,
    AutomationResponse,
    FeedbackRequest,
    FeedbackResponse,
    Finding,
    ReadyResponse,
    ReportRequest,
    ReportResponse,
    UploadOptions,
    join_recommendations,
)
from serving.settings import parallelism
from serving.shadow import ShadowRunner
from serving.store import ReportStore, ReportStoreError
from serving.studies import acquisition_metadata, check_study_id, choose, dicom_view, pacs_error, projection

log = logging.getLogger("serving")      # the service's own log lines, under one name (app, routes, service)

READ_EVENTS = {"json": "report.read", "fhir": "report.read.fhir", "text": "report.read.text"}


@dataclass
class UploadedFile:
    """One uploaded file of a study, as the client sent it."""

    filename: str | None
    content_type: str | None
    data: bytes


def load_configured_model(model_source: str | os.PathLike, config: ServingConfig, *,
                          allow_ungated_model: bool = False, gate_record: str | os.PathLike | None = None
                          ) -> LoadedModel:
    """The model as the `serving:` config says: backend, precision, export, intra-op threads, Triton. Refused
    (ModelSourceError) without a passing signed gate decision unless allow_ungated_model (development only)."""
    return load_model(model_source, backend=config.backend, precision=config.precision,
                      allow_export_at_startup=config.allow_export_at_startup, threads=parallelism(config)[1],
                      triton_url=config.triton_url, triton_model=config.triton_model,
                      allow_ungated_model=allow_ungated_model, gate_record=gate_record)


async def _in_thread(fn: Callable, *args):
    """Run blocking work (decoding, SQLite, the PACS) off the event loop, in the worker threads of the server."""
    return await anyio.to_thread.run_sync(functools.partial(fn, *args))


@dataclass
class ReportService(RolloutArms):
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
    prediction_log_url: str | None = None    # the prediction log (and the automation switch); None: neither
    log_retention_days: float = 90.0         # prediction-log rows older than this are purged
    prediction_log: PredictionLog | None = None
    writer: PredictionWriter | None = None
    automation: AutomationControl | None = None
    pool: ValidatedPool | None = None
    slot: ModelSlot = field(default_factory=ModelSlot)   # in-flight inference per model (hot swap drains it)
    challenger: LoadedModel | None = None    # A/B: answers its sticky share of studies (route); None: no A/B test
    ab_share: float = 0.0
    ab_salt: str = ""
    shadow: ShadowRunner | None = None       # shadow mode: mirrored studies, off the response path
    identities: dict = field(default_factory=dict)       # id(LoadedModel) → its prediction-log ModelIdentity
    allow_ungated_model: bool = False        # development only: load a model without a passing signed gate decision
    gate_record: str | None = None           # a model directory's signed gate decision (default <model_dir>/gate/)
    decode_budget: DecodeBudget | None = None  # images being decoded, against serving.decode_budget_bytes (start())

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Load the model (unless one was given), open the report store and the audit log, start the batcher."""
        if self.model is None:
            self.model = await asyncio.to_thread(functools.partial(
                load_configured_model, self.model_source, self.config, allow_ungated_model=self.allow_ungated_model,
                gate_record=self.gate_record))
        workers, threads = parallelism(self.config, self.model.backend.name)
        if self.model.backend.name == "torch":
            torch.set_num_threads(threads)                 # process-wide: the service runs one model
        self.metrics.model_info.labels(self.model.version, self.model.backend.name).set(1)
        self.reports = ReportStore(self.report_store_path, self.config.report_retention_days)
        self.decode_budget = DecodeBudget(self.config.decode_budget_bytes, self.metrics)
        self.audit = AuditLog(self.audit_path)
        if self.prediction_log_url is not None:
            self.automation = await asyncio.to_thread(AutomationControl, self.prediction_log_url)
            self.metrics.automation_paused.set(int(self.automation.state().paused))
            self.prediction_log = await asyncio.to_thread(PredictionLog, self.prediction_log_url)
            if self.config.validated_pool:
                self.pool = ValidatedPool(self.config.validated_pool)
            if self.config.log_predictions:
                self.writer = PredictionWriter(self.prediction_log, model_identity(self.model), self.metrics,
                                               pool=self.pool, retention_days=self.log_retention_days,
                                               image_retention_days=self.config.report_retention_days)
                self.writer.start()
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
        await self.stop_shadow()
        await self.batcher.close()
        if self.writer is not None:
            await asyncio.to_thread(self.writer.stop)
        for resource in (self.prediction_log, self.automation):
            if resource is not None:
                resource.close()
        self.audit.close()
        self.audit = None
        self.reports.close()
        self.reports = None

    async def readiness(self) -> ReadyResponse:
        """Ready when the model is loaded, the batcher runs, the PACS answers (when one is configured), and the audit
        log and the report store can be written."""
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
        automation = await self.automation_state()
        paused = (f"paused since {automation.since} by {automation.by}: {automation.reason}" if automation.readable
                  else f"paused: {automation.reason}") if automation.paused else "active"
        if self.writer is not None:
            log_state = self.writer.health()[1]
        else:
            log_state = "off (serving.log_predictions is false)" if self.prediction_log is not None else "off"
        # Neither state makes the service unready: paused reports are flagged, not refused, and a failing
        # prediction log degrades monitoring, not the drafts (serving.prediction_logging).
        audit_ok, audit_state = await _in_thread(self.audit_health)
        store_ok, store_state = self.reports.health() if self.reports is not None else (False, "not open")
        return ReadyResponse(ready=model_ok and pacs_ok and audit_ok and store_ok,
                             model="loaded" if model_ok else "not loaded", store=store_state,
                             model_version=self.model.version if self.model else None,
                             backend=self.model.backend.name if self.model else None, pacs=pacs_state,
                             automated_reports=paused, prediction_log=log_state, audit=audit_state,
                             rollout=self.rollout_state())

    # ------------------------------------------------------------------ writing reports

    async def report_from_pacs(self, study_id: str, request: ReportRequest, principal: Principal | None,
                               received_at: float) -> ReportResponse:
        """A draft report of a study whose images are in the PACS (only the chosen frontal ones are fetched).
        received_at: time.perf_counter() when the request arrived (processing_time_ms counts from it)."""
        check_study_id(study_id, request.study_id)
        self.check_store()                  # before the PACS, the decoder or the model spend anything on it
        chosen = choose([im.view for im in request.images], self.model.max_views)
        if self.pacs is None:
            raise Unavailable(f"no PACS is configured for this service; upload the images to "
                              f"{API}/studies/{{study_id}}/report:upload instead")
        present = [i for i in chosen if i is not None]
        wanted = [(request.images[i].series_uid, request.images[i].instance_uid) for i in present]
        try:
            blobs = await _in_thread(self.pacs.fetch_instances, study_id, wanted)
        except Exception as exc:  # noqa: BLE001 — pacs_error maps every PACS failure to a status without echoing it
            raise pacs_error(exc) from None
        if len(blobs) != len(wanted):
            raise UpstreamError(f"the PACS returned {len(blobs)} instances for {len(wanted)} requested")
        names = [f"instance {instance} of series {series}" for series, instance in wanted]
        need, largest = await _in_thread(request_decode_bytes, [(what, image_io.DICOM, data)
                                                                for what, data in zip(names, blobs)])
        tensors, metas = [], []
        with self.decode_budget.reserve(need, largest):
            for what, data in zip(names, blobs):
                tensor, meta = await self._decode_dicom(data, what)
                tensors.append(tensor)
                metas.append(meta)
        fetched = dict(zip(present, tensors))
        views = [request.images[i].view for i in present]
        return await self._generate(study_id, request, [fetched.get(i) for i in chosen], principal, received_at,
                                    views, acquisition_metadata(metas[0], views[0]))

    async def report_from_files(self, study_id: str, options: UploadOptions, files: list[UploadedFile],
                                principal: Principal | None, received_at: float) -> ReportResponse:
        """A draft report from uploaded DICOM (CR/DX), PNG or JPEG files; the projection of each comes from
        options.views, else a DICOM file's ViewPosition, else it counts as frontal."""
        check_study_id(study_id, options.study_id)
        self.check_store()
        if options.views is not None and len(options.views) != len(files):
            raise BadInput(f"request part: views has {len(options.views)} entries for {len(files)} files")
        kinds = [image_io.sniff(f.data, f.content_type) for f in files]
        # sized from the headers and reserved before any pixel is decoded (serving.admission)
        need, largest = await _in_thread(request_decode_bytes, [(f"files[{i}]", kind, f.data)
                                                                for i, (f, kind) in enumerate(zip(files, kinds))])
        tensors, views, metas = [], [], []
        with self.decode_budget.reserve(need, largest):
            for i, upload in enumerate(files):
                what = f"files[{i}]"     # by position: a file name can carry identifiers (DOE_JOHN_MRN….png)
                kind = kinds[i]
                if kind == image_io.DICOM:
                    tensor, meta = await self._decode_dicom(upload.data, what)
                    view = dicom_view(meta)
                    metas.append(meta)
                else:
                    try:
                        tensor = await _in_thread(image_io.decode_image, upload.data, self.model.backend.image_size,
                                                  what)
                    except image_io.ImageInputError as exc:
                        raise BadInput(str(exc), exc.status_code) from None
                    view = None
                    metas.append({})
                tensors.append(tensor)
                views.append(options.views[i] if options.views is not None else view)
        chosen = choose(views, self.model.max_views)
        present = [i for i in chosen if i is not None]
        first = present[0]
        return await self._generate(study_id, options, [tensors[i] if i is not None else None for i in chosen],
                                    principal, received_at, [views[i] for i in present],
                                    acquisition_metadata(metas[first], views[first]))

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

    async def _generate(self, study_id: str, options: ReportRequest | UploadOptions, images: list[torch.Tensor | None],
                        principal: Principal | None, received_at: float, views: list[str | None],
                        acquisition: dict) -> ReportResponse:
        """Run the model on the chosen images (through the batcher), structure and check the text, store the
        report, count it, audit it and hand it to the prediction log."""
        loaded = self.route(study_id)   # this request's model from here on, even across a hot swap (model_swap)
        # (K, 1, H, W): the model's view slots, a missing view marked as in training (`stack_views`)
        study_images = stack_views(images, loaded.backend.image_size)
        context = options.clinical_context.prompt_context()
        if self.batcher is None:
            raise Unavailable("the model is not loaded yet")
        self.check_store()                  # it may have failed while this request's images were decoded
        self.slot.hold(loaded)
        try:
            text, probs, embedding = await asyncio.wait_for(self.batcher.submit((study_images, context, loaded)),
                                                            self.config.request_timeout_s)
        except asyncio.TimeoutError:
            raise TimedOut(f"inference did not finish within {self.config.request_timeout_s:.0f} s") from None
        except BatcherClosed as exc:
            raise Unavailable(str(exc)) from None
        except QueueFull as exc:
            self.metrics.queue_rejections.inc()
            raise Overloaded(str(exc), exc.retry_after) from None
        finally:
            self.slot.release(loaded)

        def postprocess():
            structured = structure_report(text, probs, loaded.thresholds, options.confidence_threshold)
            qa = review(text, probs, loaded.thresholds, options.confidence_threshold, structured.findings)
            text_labels = label_report(text)
            return structured, qa, text_labels, unsupported_critical(text_labels, probs, loaded.thresholds)

        structured, qa, text_labels, unsupported = await _in_thread(postprocess)
        automation = await self.automation_state()
        if automation.paused:
            qa.requires_review = True
            qa.reasons.append(f"automated reports are paused by an operator: {automation.reason}")
            qa.kinds.append(AUTOMATION_PAUSED)
            qa.codes.append(AUTOMATION_PAUSED)
        report_id = str(uuid.uuid4())
        response = ReportResponse(
            report_id=report_id,
            findings=[Finding(finding=f.finding, confidence=f.confidence, severity=f.severity, bounding_box=None,
                              is_critical=f.is_critical) for f in structured.findings],
            impression=structured.impression, recommendations=join_recommendations(structured.recommendations),
            recommendation_items=structured.recommendations,
            processing_time_ms=round(1000 * (time.perf_counter() - received_at), 1), model_version=loaded.version,
            requires_radiologist_review=qa.requires_review, review_reasons=qa.reasons)
        record = {"response": response.model_dump(), "study_id": study_id,
                  "site": principal.site if principal else None,     # per-site tenancy (serving.auth.may_access)
                  "labels": [f.label for f in structured.findings],
                  "created": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                  "template": options.report_template, "findings_text": structured.findings_text}
        # The model inputs, for GET …/heatmaps/{finding}: kept and deleted with the report (serving/heatmaps.py).
        record[HEATMAP_INPUTS] = await _in_thread(encode_inputs, study_images)
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
        if unsupported:
            m.unsupported_critical.inc()
        try:
            self.audit_event("report.create", principal, study_id, 200, report_id, qa.requires_review)
        except Unavailable:
            await _in_thread(self.reports.delete, report_id)   # an unaudited report is neither kept nor returned
            raise
        if self.writer is not None:
            self.writer.submit(ServedStudy(
                report_id=report_id, study_id=study_id, created_at=record["created"], probabilities=probs,
                text_labels=[int(v) for v in text_labels], embedding=embedding, review_required=qa.requires_review,
                review_codes=qa.codes, latency_ms=response.processing_time_ms, acquisition=acquisition,
                images=list(zip([im for im in images if im is not None], map(projection, views)))
                if self.pool is not None else [],   # the study's images as given (views: the present slots')
                identity=self.identities.get(id(loaded))))
        if self.shadow is not None:             # a non-blocking put: nothing the shadow does reaches the caller
            self.shadow.offer(report_id, study_id, study_images, context, options.confidence_threshold, acquisition)
        log.info("report %s study=%s views=%d findings=%d review=%s reasons=%s %.0f ms", report_id,
                 sha256_hex(study_id)[:12], len(views), len(structured.findings), qa.requires_review,
                 qa.kinds, response.processing_time_ms)
        return response

    def infer(self, items: list[tuple[torch.Tensor, dict, LoadedModel]]) -> list[tuple[str, np.ndarray]]:
        """The batch function (worker thread): [(images (K,1,H,W), context, model)] → [(text, probs (14,),
        embedding)]. Each item runs on the model it was submitted with: across a hot swap one batch can hold both."""
        groups: dict[int, tuple[LoadedModel, list[int]]] = {}
        for i, (_, _, model) in enumerate(items):
            groups.setdefault(id(model), (model, []))[1].append(i)
        results: list = [None] * len(items)
        for model, indices in groups.values():
            outputs = generate_outputs(model.backend, [items[i][0] for i in indices], [items[i][1] for i in indices])
            for i, out in zip(indices, outputs):
                results[i] = out
        return results

    def store(self, report_id: str, record: dict) -> None:
        try:
            self.reports.put(report_id, record)
        except ReportStoreError as exc:
            self.metrics.store_failures.inc()
            raise Unavailable(f"{exc}: the report was not kept or returned. Retry later; operators: see /readyz"
                              ) from None

    def check_store(self) -> None:
        """Refuse a report before any work is spent on it while the store is known to be failing."""
        if self.reports is None:
            raise Unavailable("the service is starting: the report store is not open yet")
        if self.reports.failure is not None:
            raise Unavailable("the report store is failing, so no report could be kept: nothing was generated. "
                              "Retry later; operators: see /readyz")

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
        record = await _in_thread(self.get, report_id, principal)
        self.audit_event(READ_EVENTS[form], principal, record["study_id"], 200, report_id,
                         record["response"]["requires_radiologist_review"])
        return record

    def get(self, report_id: str, principal: Principal | None) -> dict:
        """The stored report, if `principal` may see it (serving.auth.may_access); NotFound otherwise."""
        if self.reports is None:
            raise Unavailable("the service is starting: the report store is not open yet")
        try:
            record = self.reports.get(report_id)
        except ReportStoreError as exc:
            self.metrics.store_failures.inc()
            raise Unavailable(f"{exc}; retry later; operators: see /readyz") from None
        # another site's report is answered as an unknown one (a 403 would confirm it exists); the id is not
        # repeated: the client has it, and an echoed id can be arbitrarily long
        if record is None or not may_access(principal, record.get("site")):
            raise NotFound(f"report not found (unknown id, or older than the "
                           f"{self.config.report_retention_days:g}-day retention)")
        return record

    # ------------------------------------------------------------------ radiologist feedback

    async def submit_feedback(self, report_id: str, request: FeedbackRequest,
                              principal: Principal | None) -> FeedbackResponse:
        """A radiologist's sign-off of a draft: edit distance and labels of the signed text into the prediction
        log (never the text), the study into the validated-study pool when its text passes the PHI screen."""
        if self.prediction_log is None:
            raise Unavailable("feedback is not recorded by this service: it has no prediction log")
        record = await _in_thread(self.get, report_id, principal)

        def work() -> tuple:
            feedback, draft_words = signed_off(report_id, record, request.final_report, request.rating,
                                               request.outcome)
            try:
                self.prediction_log.add_feedback(feedback)
            except ValueError as exc:                   # PredictionLogError: the database refused or is down
                raise Unavailable(f"the feedback could not be recorded ({type(exc).__name__}); retry later") from None
            if self.pool is None:
                return feedback, draft_words, SignOff(False, "validated studies are not kept (serving.validated_pool)")
            try:
                return feedback, draft_words, self.pool.add_signed(report_id, request.final_report)
            except (OSError, ValueError) as exc:        # the sign-off is recorded; only the pool missed it
                log.error("validated pool: sign-off of report %s not added (%s)", report_id, type(exc).__name__)
                return feedback, draft_words, SignOff(False, f"the validated pool could not be written "
                                                             f"({type(exc).__name__})")

        feedback, draft_words, sign_off = await _in_thread(work)
        self.metrics.feedback.labels(request.outcome).inc()
        self.audit_event("report.feedback", principal, record["study_id"], 200, report_id,
                         record["response"]["requires_radiologist_review"])
        if sign_off.added:
            dataset = "added"
        else:
            patterns = f" ({', '.join(sign_off.phi_patterns)})" if sign_off.phi_patterns else ""
            dataset = f"not added: {sign_off.reason}{patterns}"
        log.info("feedback on report %s: %s, rating %d, %d word edit(s); validated dataset: %s", report_id,
                 request.outcome, request.rating, feedback.edit_distance, "added" if sign_off.added else "not added")
        return FeedbackResponse(
            report_id=report_id, edit_distance=feedback.edit_distance, draft_words=draft_words,
            final_labels={name: v for name, v in zip(CHEXPERT_LABELS, feedback.final_labels) if v},
            validated_dataset=dataset)

    # ------------------------------------------------------------------ pausing automated reports

    async def automation_state(self) -> AutomationState:
        """The operator's pause switch (cached; read off the event loop when stale). Unset: active."""
        if self.automation is None:
            return AutomationState(False)
        state = self.automation.peek() or await _in_thread(self.automation.state)
        self.metrics.automation_paused.set(int(state.paused))
        return state

    async def set_automation(self, request: AutomationRequest, principal: Principal | None) -> AutomationResponse:
        """Pause or resume automated reports (audited); the reason must not carry identifiers."""
        if self.automation is None:
            raise Unavailable("this service has no automation state (no prediction log database configured)")
        patterns = find_phi(request.reason)
        if patterns:
            raise BadInput(f"reason: looks like it holds identifiers ({', '.join(patterns)}); describe the cause "
                           "without patient data")
        who = principal.token_id if principal else "anonymous"
        try:
            state = await _in_thread(self.automation.set, request.paused, request.reason, who)
        except AutomationStateError as exc:
            raise Unavailable(f"{exc}; the state is unchanged") from None
        self.metrics.automation_paused.set(int(state.paused))
        # required=False: the switch has moved already, and a pause is itself a safety action that a full audit
        # disk must not block (the failure is counted, logged and shown in /readyz)
        self.audit_event("automation.pause" if request.paused else "automation.resume", principal, None, 200,
                         required=False, detail={"paused": request.paused, "reason": request.reason})
        log.warning("automated reports %s by %s", "PAUSED" if request.paused else "resumed", who)
        return _automation_response(state)

    async def read_automation(self) -> AutomationResponse:
        return _automation_response(await self.automation_state())

    # ------------------------------------------------------------------ audit

    def audit_event(self, event: str, principal: Principal | None, study_id: str | None, status: int,
                    report_id: str | None = None, requires_review: bool | None = None,
                    unauthenticated: bool = False, required: bool = True, detail: dict | None = None) -> None:
        """One audit record (who by token id, the study by SHA-256), durably written (serving.auth.AuditLog).

        Fails closed: when the record cannot be written the work it records is refused (Unavailable, 503), the
        failure is counted and `/readyz` reports not ready. required=False (a refusal audited after its response
        was sent) only counts and logs the failure."""
        if self.audit is None:
            return
        who = principal.token_id if principal else "unauthenticated" if unauthenticated or self.auth else "anonymous"
        try:
            self.audit.record(event, who, study_id, status,
                              self.model.version if self.model else None, report_id, requires_review, detail)
        except AuditError as exc:
            self.metrics.audit_failures.inc()
            log.error("%s: %s", exc, "request refused" if required else "after the response was sent")
            if required:
                raise Unavailable("the audit record of this request cannot be written; nothing was stored or "
                                  "returned. Retry later; operators: see /readyz") from None

    def audit_health(self) -> tuple[bool, str]:
        """(healthy, state) of the audit log for /readyz. After a failure a probe record is tried, so the service
        becomes ready again by itself once the disk is writable."""
        if self.audit is None:
            return False, "not open"
        if self.audit.failure is not None:
            try:
                self.audit.record("audit.probe", "readiness", None, 200, None)
            except AuditError:
                return False, f"failing: {self.audit.failure} (requests are refused)"
        return True, "ok"


def parse_upload_options(raw: str | None) -> UploadOptions:
    """The upload's optional `request` part (JSON) → UploadOptions; BadInput naming the field otherwise."""
    try:
        return UploadOptions.model_validate_json(raw) if raw else UploadOptions()
    except ValidationError as exc:
        raise invalid_input(exc.errors(), prefix="request part: ") from None


def _automation_response(state: AutomationState) -> AutomationResponse:
    return AutomationResponse(paused=state.paused, reason=state.reason, since=state.since, by=state.by,
                              readable=state.readable)
