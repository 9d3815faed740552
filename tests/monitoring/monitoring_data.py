"""Synthetic data of the monitoring tests: reference statistics in a model directory, and a prediction log filled
with in-distribution or shifted studies (synthetic embeddings: no model runs). Fixtures are in conftest.py."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np

from model_core.artifacts import MODEL_CARD
from model_core.chexpert import CHEXPERT_LABELS, NUM_LABELS
from model_core.modeling.reference import save_reference_stats
from model_core.prediction_log import PredictionLog, PredictionRecord, study_hash

DIM = 24
PNEUMOTHORAX = CHEXPERT_LABELS.index("Pneumothorax")


def synthetic_embeddings(n: int, rng: np.random.Generator, shift: float = 0.0) -> np.ndarray:
    """n studies from one fixed 24-d Gaussian (shift: added to the first 4 coordinates, in SD units)."""
    x = rng.normal(size=(n, DIM)).astype(np.float32)
    x[:, :4] += shift
    return x


def synthetic_probabilities(n: int, rng: np.random.Generator) -> np.ndarray:
    probs = rng.uniform(0.0, 0.4, size=(n, NUM_LABELS))
    positive = rng.random(n) < 0.2                      # ~20 % of studies show pneumothorax
    probs[positive, PNEUMOTHORAX] = 0.9
    return probs


def write_reference_model_dir(out):
    """A model directory holding only a model card and reference statistics (400 reference studies)."""
    rng = np.random.default_rng(0)
    probs = synthetic_probabilities(400, rng)
    labels = (probs >= 0.5).astype(np.int8)
    save_reference_stats(out, embeddings=synthetic_embeddings(400, rng), fit_embeddings=synthetic_embeddings(200, rng),
                         probabilities=probs, labels=labels, thresholds=np.full(NUM_LABELS, 0.5), pca_components=8,
                         source="synthetic")
    (out / MODEL_CARD).write_text(json.dumps({"name": "synthetic", "version": "0.1.0+test",
                                              "created": "2026-01-01T00:00:00Z"}))
    return out


def fill_log(url: str, n: int, *, seed: int, shift: float = 0.0, now: datetime | None = None,
             text_labels=None, latency_ms: float = 900.0, version: str = "7") -> list[str]:
    """Append n champion predictions spread over the last 3 days; returns their report ids."""
    rng = np.random.default_rng(seed)
    now = now or datetime.now(timezone.utc)
    emb, probs = synthetic_embeddings(n, rng, shift), synthetic_probabilities(n, rng)
    log, ids = PredictionLog(url), []
    for i in range(n):
        rid = f"s{seed}-{i}"
        log.append(PredictionRecord(
            study_hash=study_hash(f"1.2.3.{seed}.{i}"), created_at=now - timedelta(hours=72 * (n - i) / n),
            model_name="rrg", model_version=version, role="champion", report_id=rid, embedding=emb[i],
            probabilities=probs[i], text_labels=text_labels if text_labels is not None else [0] * NUM_LABELS,
            review_required=False, review_reasons=[], latency_ms=latency_ms, acquisition={"modality": "DX"}))
        ids.append(rid)
    log.close()
    return ids


class Recorder:
    """A local HTTP server that records POSTs (path, headers, JSON body) and answers 200 (a stand-in for
    Alertmanager and the report service's admin endpoint)."""

    def __init__(self):
        import threading
        from http.server import BaseHTTPRequestHandler, HTTPServer

        self.requests = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                recorder.requests.append((self.path, dict(self.headers), json.loads(body or b"null")))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
