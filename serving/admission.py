"""Admission before decoding: a request's images are sized from their headers, and that much memory is reserved
from one in-flight budget for the whole service before any pixel is decoded.

    budget = DecodeBudget(config.decode_budget_bytes, metrics)
    need, what = request_decode_bytes([(what, kind, data), ...])  # from headers only (PNG/JPEG: PIL lazy open;
                                                                  # DICOM: Rows/Columns/Samples/BitsAllocated)
    with budget.reserve(need, what):                            # 503 + Retry-After while others hold it
        ...decode...                                            # released when the block ends

Why: upload limits bound the bytes a client sends, not the memory they decode to. An 8 KB PNG can announce
8192×8192 pixels (64 MiB decoded); 32 of them at once took the server from 0.9 to 4.2 GB. A request's images are
decoded one after another, so it reserves its largest image's estimate. A single image whose estimate exceeds the
whole budget is refused with 413 (it could never be admitted); a request that would push the in-flight total past
the budget is refused at once with 503 and Retry-After (the decoding ahead of it takes about a second).
"""

from __future__ import annotations

import contextlib
import threading

from serving import dicom, images
from serving.errors import BadInput, Overloaded, TooLarge, UnsupportedMedia
from serving.metrics import Metrics

MIB = 1024 * 1024
RETRY_AFTER_S = 1


class DecodeBudgetFull(Overloaded):
    """The in-flight decode budget is taken by other requests: 503 with Retry-After (not the queue's 429: this
    is the server's memory, not the model's queue)."""

    status_code = 503


def image_decode_bytes(what: str, kind: str, data: bytes) -> int:
    """One file's decoding memory (bytes) from its header; `kind` as serving.images.sniff says. BadInput naming
    `what` (never a file name) for a PNG/JPEG whose header is unusable or above the pixel limit. A DICOM without
    a readable header reserves its own size: the decoder refuses it before decoding pixels."""
    if kind == images.DICOM:
        estimate = dicom.decoded_bytes(data)
        return estimate if estimate is not None else len(data)
    try:
        return images.decoded_bytes(data, what)
    except images.ImageInputError as exc:
        raise BadInput(str(exc), exc.status_code) from None


def request_decode_bytes(files: list[tuple[str, str | None, bytes]]) -> tuple[int, str]:
    """(bytes, which file) a request's decoding needs at its peak: its largest file's estimate (they are decoded
    in turn). files: (what, kind or None, data); a file of no known kind is UnsupportedMedia, as the decoder
    would say."""
    need, largest = 0, "the request's images"
    for what, kind, data in files:
        if kind is None:
            raise UnsupportedMedia(f"{what}: not a DICOM, PNG or JPEG file (unrecognised content)")
        estimate = image_decode_bytes(what, kind, data)
        if estimate > need:
            need, largest = estimate, what
    return need, largest


class DecodeBudget:
    """The bytes being decoded across the service, against `budget_bytes` (thread-safe). `peak` is the most ever
    reserved at once; `in_flight` what is reserved now; both also in the metrics."""

    def __init__(self, budget_bytes: int, metrics: Metrics | None = None):
        if budget_bytes < 1:
            raise ValueError(f"the decode budget must be ≥ 1 byte, got {budget_bytes}")
        self.budget_bytes = budget_bytes
        self.metrics = metrics
        self.in_flight = 0
        self.peak = 0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def reserve(self, nbytes: int, what: str = "this request's images"):
        """Hold `nbytes` of the budget for the block; TooLarge (413) if it exceeds the whole budget,
        DecodeBudgetFull (503, Retry-After) if others hold too much of it now."""
        if nbytes > self.budget_bytes:
            raise TooLarge(f"{what}: decoding would take about {_mib(nbytes)} MiB, above the service's whole "
                           f"decode budget of {_mib(self.budget_bytes)} MiB; send a smaller image")
        with self._lock:
            if self.in_flight + nbytes > self.budget_bytes:
                if self.metrics is not None:
                    self.metrics.decode_budget_rejections.inc()
                raise DecodeBudgetFull(f"the server is decoding other images (its {_mib(self.budget_bytes)} MiB "
                                       f"decode budget is taken); retry in {RETRY_AFTER_S} s", RETRY_AFTER_S)
            self.in_flight += nbytes
            self.peak = max(self.peak, self.in_flight)
            self._publish()
        try:
            yield
        finally:
            with self._lock:
                self.in_flight -= nbytes
                self._publish()

    def _publish(self) -> None:
        if self.metrics is not None:
            self.metrics.decode_in_flight.set(self.in_flight)
            self.metrics.decode_peak.set(self.peak)


def _mib(nbytes: int) -> str:
    return f"{nbytes / MIB:.0f}" if nbytes >= MIB else f"{nbytes / MIB:.2f}"
