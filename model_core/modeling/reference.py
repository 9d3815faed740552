"""Reference statistics saved with every trained model: what monitoring compares the served model's traffic with.

    build_reference_stats(model, reference_ds, model_dir, detection=detection, fit_ds=val_ds)   # end of training
    ref = load_reference_stats(model_dir)                                                     # monitoring

Written into the model directory (names from `model_core.artifacts`):
  reference_stats.npz   embeddings (N, D) float32 of the held-out reference studies (`study_embedding`: the mean
                        of the study's visual tokens, as serving logs it); pca_mean (D,), pca_components (k, D)
                        fitted on `fit_ds` (studies kept OUT of the reference set, so the projection is not tuned
                        to the reference sample); probabilities (N, 14) calibrated detection-head probabilities;
                        labels (N, 14) 0/1: the report labeler on the reference reports (U-Ones), the same kind of
                        ground truth a radiologist's signed report gives in production; thresholds (14,).
  reference_stats.json  sizes, predicted and true prevalences, per-finding F1 / sensitivity / specificity of the
                        thresholded detection head against those labels, the PCA's explained variance.
`--model DIR` alone is then enough to check drift. The .npz is written before the .json, both atomically: a
directory with the .json has both.
"""

from __future__ import annotations

import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model_core.artifacts import REFERENCE_STATS, REFERENCE_SUMMARY
from model_core.chexpert import CHEXPERT_LABELS, NUM_LABELS, binarize
from model_core.data.iu_xray import group_studies, view_slots
from model_core.data.manifest import DataError
from model_core.files import atomic_write_bytes, atomic_write_text
from model_core.labels.labeler import label_reports
from model_core.modeling.feature_cache import encode_image_files, model_feature_cache, study_features
from model_core.prediction_log import study_embedding
from model_core.stats import precision_recall_f1

FORMAT = "rrg-reference/v1"
EMBEDDING_DEFINITION = "mean of the study's visual tokens (model_core.prediction_log.study_embedding)"


@dataclass
class ReferenceStats:
    embeddings: np.ndarray        # (N, D) float32
    pca_mean: np.ndarray          # (D,)
    pca_components: np.ndarray    # (k, D)
    probabilities: np.ndarray     # (N, 14)
    labels: np.ndarray            # (N, 14) 0/1
    thresholds: np.ndarray        # (14,)
    summary: dict

    def reduce(self, embeddings: np.ndarray) -> np.ndarray:
        """(M, D) embeddings → (M, k) on the saved PCA projection."""
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[1] != self.pca_mean.shape[0]:
            raise DataError(f"embeddings have {emb.shape[-1] if emb.ndim else 0} dimensions; the model's reference "
                            f"has {self.pca_mean.shape[0]}: they come from another encoder")
        return (emb - self.pca_mean) @ self.pca_components.T

    def predicted(self, probabilities: np.ndarray) -> np.ndarray:
        """(M, 14) probabilities → 0/1 at the model's operating thresholds."""
        return (np.asarray(probabilities) >= self.thresholds).astype(np.int8)


def fit_pca(embeddings: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(mean (D,), components (k, D), explained variance ratio of the k) of centred embeddings; k ≤ min(N-1, D)."""
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or len(x) < 3:
        raise DataError("the PCA needs at least 3 embedded studies kept out of the reference set")
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    k = max(1, min(n_components, len(x) - 1, x.shape[1]))
    var = s ** 2
    return mean.astype(np.float32), vt[:k].astype(np.float32), float(var[:k].sum() / max(var.sum(), 1e-12))


@torch.no_grad()
def embed_studies(model, dataset: dict, feature_cache: str | os.PathLike | None = None,
                  batch_size: int = 32) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """(studies, embeddings (S, D) float32, logits (S, 14)) of a loaded dataset, view slots filled as in training.
    feature_cache: an on-disk cache root, used only for a frozen encoder (its weights key the cache)."""
    studies = group_studies(dataset)
    if not studies:
        raise DataError("no studies to embed")
    slots = [view_slots(s, model.num_views) for s in studies]
    rows = sorted({r for study in slots for r in study if r is not None})
    frozen = bool(getattr(model.config.vision, "freeze", False))
    cache = model_feature_cache(model, feature_cache) if feature_cache and frozen else None
    images = list(dataset["images"])
    feats = encode_image_files(model, [images[r] for r in rows], cache, batch_size)
    index = {r: i for i, r in enumerate(rows)}
    per_study = study_features(feats, [[index[r] if r is not None else None for r in s] for s in slots])
    was_training = model.training
    model.eval()
    try:
        logits = model.detect(per_study).float().numpy()
        tokens = model.project_visual_tokens(per_study).float().numpy()
    finally:
        model.train(was_training)
    return studies, study_embedding(tokens).astype(np.float32), logits


def per_finding_agreement(predicted: np.ndarray, labels: np.ndarray) -> dict:
    """{finding: {f1, sensitivity, specificity, positives, predicted_positives}} of 0/1 predictions (N, 14) against
    0/1 labels (N, 14); a rate without a denominator is None. Reference and concept drift use this one definition."""
    predicted, labels = np.asarray(predicted).astype(bool), np.asarray(labels).astype(bool)
    tp = (predicted & labels).sum(axis=0)
    fp = (predicted & ~labels).sum(axis=0)
    fn = (~predicted & labels).sum(axis=0)
    tn = (~predicted & ~labels).sum(axis=0)
    _, _, f1 = precision_recall_f1(tp, fp, fn, zero_division=np.nan)
    out = {}
    for j, name in enumerate(CHEXPERT_LABELS):
        out[name] = {"f1": None if np.isnan(f1[j]) else float(f1[j]),
                     "sensitivity": float(tp[j] / (tp[j] + fn[j])) if tp[j] + fn[j] else None,
                     "specificity": float(tn[j] / (tn[j] + fp[j])) if tn[j] + fp[j] else None,
                     "positives": int(tp[j] + fn[j]), "predicted_positives": int(tp[j] + fp[j])}
    return out


def build_reference_stats(model, reference_ds: dict, out_dir: str | os.PathLike, *, detection: dict, fit_ds: dict,
                          max_reference: int = 2000, pca_components: int = 32,
                          feature_cache: str | os.PathLike | None = None, batch_size: int = 32, seed: int = 0,
                          source: str = "test split") -> dict:
    """Embed `reference_ds` (held-out studies) and `fit_ds` (studies kept out of the reference, for the PCA), and
    write reference_stats.npz + .json into out_dir (a model directory). detection: the model's detection.json
    (temperature, thresholds). Returns the summary written to the .json."""
    temperature = float(detection.get("temperature", 1.0))
    thresholds = np.array([float(detection.get("thresholds", {}).get(n, 0.5)) for n in CHEXPERT_LABELS],
                          dtype=np.float32)
    studies, embeddings, logits = embed_studies(model, reference_ds, feature_cache, batch_size)
    if len(studies) > max_reference:   # a seeded subsample keeps the MMD kernel matrix bounded
        keep = np.sort(np.random.default_rng(seed).choice(len(studies), max_reference, replace=False))
        studies, embeddings, logits = [studies[i] for i in keep], embeddings[keep], logits[keep]
    fit_studies, fit_embeddings, _ = embed_studies(model, fit_ds, feature_cache, batch_size)
    overlap = {s["study_id"] for s in studies} & {s["study_id"] for s in fit_studies}
    if overlap:
        raise DataError(f"{len(overlap)} studies are in both the reference set and the PCA fit set; "
                        "the PCA must be fitted on studies kept out of the reference")
    probabilities = 1.0 / (1.0 + np.exp(-logits / temperature))
    labels = binarize(label_reports([s["report"] for s in studies]).reshape(len(studies), NUM_LABELS))
    return save_reference_stats(out_dir, embeddings=embeddings, fit_embeddings=fit_embeddings,
                                probabilities=probabilities, labels=labels, thresholds=thresholds,
                                temperature=temperature, pca_components=pca_components, source=source)


def save_reference_stats(out_dir: str | os.PathLike, *, embeddings: np.ndarray, fit_embeddings: np.ndarray,
                         probabilities: np.ndarray, labels: np.ndarray, thresholds: np.ndarray,
                         temperature: float = 1.0, pca_components: int = 32, source: str = "") -> dict:
    """Fit the PCA on fit_embeddings and write reference_stats.npz + .json from arrays: embeddings (N, D),
    probabilities (N, 14), labels (N, 14) 0/1, thresholds (14,). Returns the summary."""
    embeddings, probabilities = np.asarray(embeddings, np.float32), np.asarray(probabilities, np.float32)
    labels, thresholds = np.asarray(labels).astype(np.int8), np.asarray(thresholds, np.float32)
    if embeddings.ndim != 2 or len(embeddings) < 2 or probabilities.shape != (len(embeddings), NUM_LABELS) \
            or labels.shape != probabilities.shape or thresholds.shape != (NUM_LABELS,):
        raise DataError("reference statistics need embeddings (N ≥ 2, D), probabilities and labels (N, 14) and "
                        "thresholds (14,)")
    pca_mean, components, explained = fit_pca(fit_embeddings, pca_components)
    predicted = (probabilities >= thresholds).astype(np.int8)
    summary = {
        "format": FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "source": source,
        "n_reference": len(embeddings), "n_fit": len(fit_embeddings), "embedding_dim": int(embeddings.shape[1]),
        "embedding": EMBEDDING_DEFINITION, "pca_components": int(components.shape[0]),
        "pca_explained_variance": round(explained, 4), "temperature": float(temperature),
        "labels": "report labeler on the reference reports, uncertain counted positive (U-Ones)",
        "thresholds": dict(zip(CHEXPERT_LABELS, thresholds.tolist())),
        "predicted_prevalence": dict(zip(CHEXPERT_LABELS, predicted.mean(axis=0).round(6).tolist())),
        "label_prevalence": dict(zip(CHEXPERT_LABELS, labels.mean(axis=0).round(6).tolist())),
        "per_finding": per_finding_agreement(predicted, labels),
    }
    out = Path(out_dir)
    buf = io.BytesIO()
    np.savez_compressed(buf, embeddings=embeddings, pca_mean=pca_mean, pca_components=components,
                        probabilities=probabilities, labels=labels, thresholds=thresholds)
    atomic_write_bytes(out / REFERENCE_STATS, buf.getvalue())
    atomic_write_text(out / REFERENCE_SUMMARY, json.dumps(summary, indent=2))
    return summary


def load_reference_stats(model_dir: str | os.PathLike) -> ReferenceStats:
    """The reference statistics of a model directory; a clear error when it has none (trained before they existed)."""
    model_dir = Path(model_dir)
    summary_path, arrays_path = model_dir / REFERENCE_SUMMARY, model_dir / REFERENCE_STATS
    if not summary_path.is_file() or not arrays_path.is_file():
        raise DataError(f"{model_dir} has no monitoring reference ({REFERENCE_SUMMARY}); models trained by the "
                        "pipeline write one (model_core.modeling.reference.build_reference_stats)")
    try:
        summary = json.loads(summary_path.read_text())
        with np.load(arrays_path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in ("embeddings", "pca_mean", "pca_components", "probabilities", "labels",
                                          "thresholds")}
    except (OSError, ValueError, KeyError):
        raise DataError(f"the monitoring reference in {model_dir} is unreadable or incomplete") from None
    if summary.get("format") != FORMAT:
        raise DataError(f"the monitoring reference in {model_dir} has an unknown format")
    return ReferenceStats(summary=summary, **arrays)
