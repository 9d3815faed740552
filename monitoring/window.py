"""The current window: the studies a drift check looks at, from the prediction log or from an IU-format manifest.

    window = window_from_log("runs/serving/predictions.sqlite3", since=parse_since("7d"))
    window = window_from_manifest(model_dir, manifest_csv, images_root)     # embeds the studies with the model

Either way a `Window` holds per study the embedding (`model_core.prediction_log.study_embedding`), the calibrated
detection probabilities and, from the log, the report labeler's labels of the draft, latency, QA flags and the
non-identifying acquisition metadata.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np

from model_core.chexpert import NUM_LABELS
from model_core.data.iu_xray import load_iu_xray
from model_core.data.manifest import DataError
from model_core.modeling.model_dir import load_model_dir
from model_core.modeling.reference import embed_studies
from model_core.prediction_log import PredictionLog, parse_time

_SINCE = re.compile(r"^(\d+(?:\.\d+)?)([dhm])$")


@dataclass
class Window:
    source: str
    embeddings: np.ndarray                 # (M, D) float32
    probabilities: np.ndarray              # (M, 14)
    text_labels: np.ndarray | None = None  # (M, 14) in {1, 0, -1}; None for a manifest window
    latency_ms: np.ndarray | None = None   # (M,)
    review_required: np.ndarray | None = None
    acquisition: list[dict] = field(default_factory=list)
    times: list[datetime] = field(default_factory=list)
    model_versions: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.probabilities)


def utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """"7d", "36h", "90m" before now, or an ISO-8601 time → naive UTC datetime."""
    now = now or utc_now()
    match = _SINCE.match(str(text).strip())
    if match:
        amount, unit = float(match.group(1)), match.group(2)
        return now - timedelta(**{{"d": "days", "h": "hours", "m": "minutes"}[unit]: amount})
    try:
        return parse_time(str(text).strip(), "--since")
    except ValueError:
        raise DataError("--since must look like 7d, 36h, 90m or an ISO-8601 time") from None


def window_from_log(url: str, since: datetime, until: datetime | None = None, model_version: str | None = None,
                    role: str | None = "champion") -> Window:
    """Predictions logged in [since, until) (by one model version when given; the champion's by default)."""
    if "://" not in url and url != ":memory:" and not os.path.isfile(url):
        raise DataError(f"prediction log not found: {url}")
    prediction_log = PredictionLog(url)
    try:
        records = prediction_log.predictions(since=since, until=until, model_version=model_version, role=role)
    finally:
        prediction_log.close()
    if not records:
        return Window(f"prediction log, since {since.isoformat()}", np.zeros((0, 0), np.float32),
                      np.zeros((0, NUM_LABELS), np.float32), np.zeros((0, NUM_LABELS), np.int8), np.zeros(0),
                      np.zeros(0, bool))
    dims = {r.embedding.shape[0] for r in records}
    if len(dims) > 1:
        raise DataError(f"the window mixes embeddings of {len(dims)} sizes (several encoders); pass --model-version")
    return Window(
        source=f"prediction log, since {since.isoformat()}" + (f", model version {model_version}" if model_version
                                                              else ""),
        embeddings=np.stack([r.embedding for r in records]).astype(np.float32),
        probabilities=np.array([r.probabilities for r in records], dtype=np.float32),
        text_labels=np.array([r.text_labels for r in records], dtype=np.int8),
        latency_ms=np.array([r.latency_ms for r in records], dtype=np.float64),
        review_required=np.array([r.review_required for r in records], dtype=bool),
        acquisition=[r.acquisition for r in records],
        times=[parse_time(r.created_at) for r in records],
        model_versions=[r.model_version for r in records])


def window_from_manifest(model_dir: str | os.PathLike, manifest: str | os.PathLike,
                         images_root: str | os.PathLike, batch_size: int = 16) -> Window:
    """Every study of an IU-format manifest, embedded and scored by the model of model_dir (the views it was
    trained on; no report generation, so no text labels or latency)."""
    model, detection, saved = load_model_dir(model_dir)
    views = tuple(saved.get("data", {}).get("views") or ("Frontal",))
    dataset = load_iu_xray(root=images_root, split="all", views=views, image_size=model.image_size,
                           manifest=manifest)
    studies, embeddings, logits = embed_studies(model, dataset, None, batch_size)
    temperature = float(detection.get("temperature", 1.0))
    probabilities = (1.0 / (1.0 + np.exp(-logits / temperature))).astype(np.float32)
    acquisition = [{"view": s["metadata"].get("view")} for s in studies]
    return Window(f"manifest {os.path.basename(str(manifest))} ({len(studies)} studies)", embeddings, probabilities,
                  acquisition=acquisition)
