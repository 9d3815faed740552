"""One drift check of a window against a model's reference: data drift (MMD), label drift, the pneumothorax CUSUM.

    result = check_drift(model_dir, window, cfg.monitoring, out_dir)   # writes out_dir/drift.json + drift.html

drift.json: {status, is_drift, method: "mmd", p_value, distance, threshold (the MMD² critical value at alpha),
alpha, n_reference, n_current, permutations, label_drift {...}, cusum {...}, window {...}, model {...}}.
status is "insufficient data" (is_drift false, p_value null) when the window has fewer than `min_studies` studies:
never a false alarm, never a traceback.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from model_core.chexpert import CHEXPERT_LABELS
from model_core.config import MonitoringConfig
from model_core.files import atomic_write_text
from model_core.modeling.reference import ReferenceStats, load_reference_stats
from monitoring.detectors.base import DriftResult
from monitoring.detectors.labels import CusumDetector, LabelDriftDetector
from monitoring.detectors.mmd import MMDDetector
from monitoring.report import render_drift_html
from monitoring.window import Window, parse_since, window_from_log, window_from_manifest

log = logging.getLogger(__name__)

DRIFT_JSON, DRIFT_HTML = "drift.json", "drift.html"


def data_drift(reference: ReferenceStats, window: Window, cfg: MonitoringConfig, seed: int = 0) -> DriftResult:
    detector = MMDDetector(cfg.alpha, cfg.permutations, cfg.min_studies, seed)
    detector.prepare(reference.reduce(reference.embeddings))
    if len(window) < cfg.min_studies:
        return detector.predict(np.zeros((len(window), reference.pca_components.shape[0]), np.float32))
    return detector.predict(reference.reduce(window.embeddings))


def label_drift(reference: ReferenceStats, window: Window, cfg: MonitoringConfig) -> tuple[DriftResult, DriftResult]:
    ref_pred = reference.predicted(reference.probabilities)
    cur_pred = reference.predicted(window.probabilities) if len(window) else np.zeros((0, len(CHEXPERT_LABELS)))
    labels = LabelDriftDetector(cfg.label_alpha, cfg.min_studies).prepare(ref_pred).predict(cur_pred)
    j = CHEXPERT_LABELS.index(cfg.cusum_finding) if cfg.cusum_finding in CHEXPERT_LABELS else None
    if j is None:
        raise ValueError("monitoring.cusum_finding must be one of the 14 CheXpert findings")
    cusum = CusumDetector(cfg.cusum_finding, cfg.cusum_rate_ratio, cfg.cusum_threshold, cfg.min_studies)
    cusum.prepare((float(ref_pred[:, j].mean()), len(ref_pred)))
    order = np.argsort(np.array([t.timestamp() for t in window.times])) if window.times else np.arange(len(window))
    return labels, cusum.predict(cur_pred[order, j] if len(window) else np.zeros(0))


def check_drift(model_dir: str | os.PathLike, window: Window, cfg: MonitoringConfig, out_dir: str | os.PathLike,
                seed: int = 0) -> dict:
    """Run the window's drift tests against the model's reference; write drift.json and drift.html into out_dir."""
    reference = load_reference_stats(model_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mmd = data_drift(reference, window, cfg, seed)
    labels, cusum = label_drift(reference, window, cfg)
    result = {
        "status": mmd.status, "is_drift": mmd.is_drift, "method": "mmd", "p_value": mmd.p_value,
        "distance": mmd.distance, "threshold": mmd.threshold, "alpha": cfg.alpha,
        "n_reference": mmd.n_reference, "n_current": len(window), "permutations": cfg.permutations,
        "min_studies": cfg.min_studies, "mmd": mmd.to_dict(),
        "label_drift": labels.to_dict(), "cusum": cusum.to_dict(),
        "window": {"source": window.source, "studies": len(window),
                   "first": min(window.times).isoformat() if window.times else None,
                   "last": max(window.times).isoformat() if window.times else None,
                   "model_versions": sorted(set(window.model_versions))},
        "model": {"dir": str(Path(model_dir).resolve()), "reference": {
            k: reference.summary.get(k) for k in ("source", "n_reference", "n_fit", "pca_components",
                                                  "pca_explained_variance", "embedding")}},
    }
    atomic_write_text(out / DRIFT_JSON, json.dumps(result, indent=2))
    atomic_write_text(out / DRIFT_HTML, render_drift_html(result))
    log.info("drift check: %s (p=%s, %d current vs %d reference studies)", result["status"], result["p_value"],
             len(window), mmd.n_reference)
    return result


def run_drift_check(model_dir: str | os.PathLike, cfg: MonitoringConfig, out_dir: str | os.PathLike, *,
                    manifest: str | os.PathLike | None = None, images_root: str | os.PathLike | None = None,
                    log_url: str | None = None, since: str = "7d", model_version: str | None = None) -> dict:
    """`rrg monitor drift`: the window from a manifest (embedded with the model) or from the prediction log
    (predictions since `since`: "7d", "36h" or an ISO time), checked against the model's reference."""
    if (manifest is None) == (log_url is None):
        raise ValueError("give either --manifest (with --images-root) or --log")
    load_reference_stats(model_dir)   # fail fast on a model without a reference, before reading any window
    if manifest is not None:
        window = window_from_manifest(model_dir, manifest, images_root or Path(manifest).parent)
    else:
        window = window_from_log(log_url, parse_since(since), model_version=model_version)
    return check_drift(model_dir, window, cfg, out_dir)
