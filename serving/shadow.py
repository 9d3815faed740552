"""Shadow mode: the challenger drafts a mirrored share of studies off the response path; the caller never sees
its output, and nothing it does (slowness, errors, a full queue) reaches a response.

    shadow = ShadowRunner(model, share=1.0, salt="rrg-shadow", writer=service.writer, identity=...)
    shadow.start()
    shadow.offer(report_id, study_id, images, context, confidence_threshold)   # after the champion answered; O(1)
    shadow.stop()

`offer` is a non-blocking queue put (a full queue drops the mirror, counted); one background thread runs the
shadow model, structures and checks its draft exactly as the service does, and writes a prediction-log record
with role `shadow` (same study hash as the champion's record, so the window's comparison is paired on the same
studies: monitoring.ab.analyze_shadow). Every failure is counted and logged by type only. Which studies are
mirrored is deterministic (model_core.evaluation.comparison.ab_arm with the shadow salt). On this CPU the
shadow competes with the champion for cores; in production it runs on its own replica or GPU.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import torch

from model_core.evaluation.comparison import ab_arm
from model_core.labels.labeler import label_report
from model_core.modeling.generation import structure_report
from serving.backends import LoadedModel
from serving.backends.base import generate_outputs
from serving.prediction_logging import ModelIdentity, PredictionWriter, ServedStudy
from serving.qa import review

log = logging.getLogger("serving")
_STOP = object()


@dataclass
class ShadowStats:
    offered: int = 0        # studies selected for mirroring
    written: int = 0        # shadow drafts handed to the prediction log
    failed: int = 0         # shadow model or post-processing errors
    dropped: int = 0        # queue full: mirror skipped
    last_error: str | None = None


@dataclass
class _Mirror:
    report_id: str
    study_id: str
    images: torch.Tensor            # (K, 1, H, W), the champion's exact input
    context: dict
    confidence_threshold: float
    acquisition: dict = field(default_factory=dict)


class ShadowRunner:
    """Runs `model` on a deterministic `share` of studies in one background thread (see the module docstring)."""

    def __init__(self, model: LoadedModel, share: float, salt: str, writer: PredictionWriter | None,
                 identity: ModelIdentity, max_pending: int = 64):
        if not 0 < share <= 1:
            raise ValueError(f"shadow share must be in (0, 1], got {share}")
        self.model, self.share, self.salt, self.writer = model, share, salt, writer
        self.identity = ModelIdentity(identity.name, identity.version, "shadow")
        self.stats = ShadowStats()
        self._queue: queue.Queue = queue.Queue(max_pending)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="rrg-shadow", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is None:
            return
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout=timeout)
        self._thread = None

    def flush(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)
        return not self._queue.unfinished_tasks

    def offer(self, report_id: str, study_id: str, images: torch.Tensor, context: dict,
              confidence_threshold: float, acquisition: dict | None = None) -> bool:
        """Mirror the study when it falls in the share; never blocks, never raises. True when queued."""
        try:
            if ab_arm(study_id, self.salt, self.share) != "challenger":
                return False
            self.stats.offered += 1
            self._queue.put_nowait(_Mirror(report_id, study_id, images, dict(context), confidence_threshold,
                                           acquisition or {}))
            return True
        except queue.Full:
            self.stats.dropped += 1
            return False
        except Exception as exc:  # noqa: BLE001 — shadow mode must never reach the response path
            self._failed(exc)
            return False

    def _failed(self, exc: BaseException) -> None:
        self.stats.failed += 1
        self.stats.last_error = type(exc).__name__
        log.error("shadow model %s failed on a mirrored study (%s); responses are unaffected", self.identity.version,
                  type(exc).__name__)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                self._draft(item)
            except Exception as exc:  # noqa: BLE001 — one failing mirror must not end the shadow thread
                self._failed(exc)
            finally:
                self._queue.task_done()

    def _draft(self, item: _Mirror) -> None:
        started = time.perf_counter()
        ((text, probs, embedding),) = generate_outputs(self.model.backend, [item.images], [item.context])
        thresholds = self.model.thresholds
        structured = structure_report(text, probs, thresholds, item.confidence_threshold)
        qa = review(text, probs, thresholds, item.confidence_threshold, structured.findings)
        labels = [int(v) for v in label_report(text)]
        latency_ms = round(1000 * (time.perf_counter() - started), 1)
        if self.writer is not None:
            self.writer.submit(ServedStudy(
                report_id=f"shadow:{item.report_id}", study_id=item.study_id,
                created_at=datetime.now(timezone.utc).isoformat(timespec="milliseconds"), probabilities=probs,
                text_labels=labels, embedding=embedding, review_required=qa.requires_review, review_codes=qa.codes,
                latency_ms=latency_ms, acquisition=item.acquisition, identity=self.identity))
        self.stats.written += 1
