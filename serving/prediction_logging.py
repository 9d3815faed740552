"""Writing the prediction log (`model_core.prediction_log`) without slowing the request path.

    writer = PredictionWriter(log, ModelIdentity("rrg", "3", "champion"), metrics, pool=ValidatedPool(dir),
                              retention_days=90, image_retention_days=30)
    writer.start()
    writer.submit(ServedStudy(...))     # on the event loop: a queue put, never blocks, never raises
    writer.health()                     # (ok, words) for /readyz
    writer.flush(); writer.stop()       # wait for what is queued (tests, shutdown)

The request path hands over what it already has (probabilities, labels, embedding, flags, the model input); one
background thread builds each PHI-free `PredictionRecord` (the study id only as SHA-256), appends it, and keeps the
model input in the validated-study pool (`model_core.data.validated`) until a radiologist signs the report off or
the report retention passes. It purges log rows past the retention at most once an hour.

A failed write DEGRADES, it does not refuse reports: the prediction log is monitoring data, not the audit trail
(the audit log, written on the request path, stays the record of who did what). The loss is never silent: every
lost record counts in `rrg_prediction_log_failures_total{reason}`, `rrg_prediction_log_ok` drops to 0 while writes
fail, /readyz says "failing …", and the alert rule RrgPredictionLogFailing pages, since drift monitoring is blind
meanwhile. A full queue (the database far slower than the service) drops records the same, counted, way.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from model_core.artifacts import MODEL_CARD
from model_core.data.validated import ValidatedPool
from model_core.prediction_log import ROLES, PredictionLog, PredictionRecord, study_hash
from serving.backends import LoadedModel
from serving.metrics import Metrics

log = logging.getLogger("serving")

_STOP = object()
PURGE_EVERY_S = 3600.0


@dataclass(frozen=True)
class ModelIdentity:
    name: str
    version: str
    role: str                   # champion | challenger | shadow (model_core.prediction_log.ROLES)


@dataclass
class ServedStudy:
    """What the request path knows about one generated report (study_id in clear: hashed in the writer thread)."""
    report_id: str
    study_id: str
    created_at: str
    probabilities: np.ndarray                       # (14,)
    text_labels: list[int]                          # (14,) the report labeler on the generated text
    embedding: np.ndarray | None                    # (D,), None when the backend gives none
    review_required: bool
    review_codes: list[str]
    latency_ms: float
    acquisition: dict
    images: list[tuple[torch.Tensor, str | None]] = field(default_factory=list)   # model input (1, H, W), view
    # Which model answered and in which arm (role: champion, challenger for the A/B arm, shadow for a mirrored
    # run); None: the writer's own identity. Set per study because the served model can change (hot swap).
    identity: ModelIdentity | None = None


class PredictionWriter:
    """One background thread between the service and the prediction log (see the module docstring)."""

    def __init__(self, prediction_log: PredictionLog, identity: ModelIdentity, metrics: Metrics, *,
                 pool: ValidatedPool | None = None, retention_days: float = 90.0,
                 image_retention_days: float = 30.0, max_pending: int = 1024):
        self.log, self.identity, self.metrics, self.pool = prediction_log, identity, metrics, pool
        self.retention_days, self.image_retention_days = retention_days, image_retention_days
        self._queue: queue.Queue = queue.Queue(max_pending)
        self._thread: threading.Thread | None = None
        self._failing_since: str | None = None
        self._last_error: str | None = None
        self._no_embedding = False
        self._last_purge = -float("inf")
        self.written = 0

    def start(self) -> None:
        self.metrics.prediction_log_ok.set(1)
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def submit(self, study: ServedStudy) -> None:
        """Queue a study for the log (O(1), never blocks); a full queue drops it, counted."""
        try:
            self._queue.put_nowait(study)
        except queue.Full:
            self.metrics.prediction_log_failures.labels("queue_full").inc()
            log.error("prediction log queue full (%d pending): a record was dropped", self._queue.maxsize)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued study is handled; False on timeout."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)
        return not self._queue.unfinished_tasks

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued (up to `timeout`), then end the thread."""
        if self._thread is None:
            return
        self.flush(timeout)
        try:
            self._queue.put(_STOP, timeout=1.0)
        except queue.Full:
            pass
        self._thread.join(timeout=1.0)
        self._thread = None

    def health(self) -> tuple[bool, str]:
        """(writes succeed, a sentence for /readyz)."""
        if self._failing_since:
            return False, (f"failing since {self._failing_since} ({self._last_error}); reports continue, "
                           "their prediction-log records are lost (rrg_prediction_log_failures_total)")
        if self._no_embedding:
            return False, "the backend gives no embedding: predictions are not logged (drift monitoring is blind)"
        return True, f"ok ({self.written} record(s) written by this process)"

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                self._write(item)
                self._maybe_purge()
            except Exception:  # noqa: BLE001 — the writer thread must outlive any one bad record; logged with trace
                log.exception("prediction log writer: unexpected error (record dropped)")
                self.metrics.prediction_log_failures.labels("write_error").inc()
            finally:
                self._queue.task_done()

    def _write(self, study: ServedStudy) -> None:
        if study.images and self.pool is not None:
            try:
                self.pool.keep_images(study.report_id, [(_to_uint8(t), v) for t, v in study.images])
            except (OSError, ValueError) as exc:
                log.error("validated pool: model input not kept (%s)", type(exc).__name__)
        if study.embedding is None:
            self._no_embedding = True
            self.metrics.prediction_log_failures.labels("no_embedding").inc()
            return
        identity = study.identity or self.identity
        record = PredictionRecord(
            study_hash=study_hash(study.study_id), created_at=study.created_at, model_name=identity.name,
            model_version=identity.version, role=identity.role, report_id=study.report_id,
            embedding=study.embedding, probabilities=np.clip(study.probabilities, 0.0, 1.0),
            text_labels=study.text_labels, review_required=study.review_required, review_reasons=study.review_codes,
            latency_ms=study.latency_ms, acquisition=study.acquisition)
        try:
            self.log.append(record)
        except Exception as exc:  # noqa: BLE001 — any database failure degrades the same way (counted, in /readyz)
            self.metrics.prediction_log_failures.labels("write_error").inc()
            self.metrics.prediction_log_ok.set(0)
            if self._failing_since is None:
                self._failing_since = datetime.now(timezone.utc).isoformat(timespec="seconds")
                log.error("prediction log writes failing (%s): reports continue without records",
                          type(exc).__name__)
            self._last_error = type(exc).__name__
            return
        if self._failing_since is not None:
            log.warning("prediction log writes succeed again (failing since %s)", self._failing_since)
        self._failing_since, self._last_error = None, None
        self.metrics.prediction_log_ok.set(1)
        self.metrics.prediction_log_writes.inc()
        self.written += 1

    def _maybe_purge(self) -> None:
        if time.monotonic() - self._last_purge < PURGE_EVERY_S:
            return
        self._last_purge = time.monotonic()
        try:
            purged = self.log.purge(self.retention_days)
            pruned = self.pool.prune(self.image_retention_days) if self.pool is not None else 0
        except (OSError, ValueError) as exc:             # PredictionLogError is a ValueError
            log.error("prediction log purge failed (%s)", type(exc).__name__)
            return
        if purged or pruned:
            log.info("prediction log: %d row(s) past %g days purged; %d kept model input(s) pruned", purged,
                     self.retention_days, pruned)


def model_identity(model: LoadedModel) -> ModelIdentity:
    """Name, version and role of the served model for the log: `models:/NAME@ALIAS` gives NAME and, when the alias
    is a role (champion, challenger, shadow), the role; a model directory gives its card's name. The model that
    answers requests is the champion unless its alias says otherwise."""
    name = role = None
    if model.source.startswith("models:/"):            # models:/NAME@ALIAS or models:/NAME/VERSION
        path, _, role = model.source.removeprefix("models:/").partition("@")
        name = path.split("/")[0]
    else:
        try:
            name = json.loads((Path(model.model_dir) / MODEL_CARD).read_text()).get("name")
        except (OSError, ValueError):
            name = None
    return ModelIdentity(_log_name(name or Path(model.source).name or "model"),
                         _log_name(model.version), role if role in ROLES else "champion")


def _log_name(text: str) -> str:
    """A name as the prediction log accepts it: [A-Za-z0-9._:@/+-], at most 200 characters."""
    return re.sub(r"[^A-Za-z0-9._:@/+-]", "_", str(text))[:200] or "unknown"


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    """A model input (1, H, W) or (H, W) in [0, 1] → uint8 (H, W) (what an 8-bit image file holds)."""
    arr = image.detach().float().cpu().reshape(image.shape[-2:]).clamp(0, 1).numpy()
    return np.rint(arr * 255).astype(np.uint8)
