"""Template baseline: the floor the report model must beat. A small CNN predicts the 14 CheXpert labels,
a fixed table (`model_core.evaluation.baseline_templates`) writes the report.

    frontal image (1, S, S) ──CNN──► 14 logits ──σ, per-label threshold (max F1 on val)──► positive labels
    positive labels ──template table──► {"findings", "impression"} ──► "FINDINGS: … IMPRESSION: …"

Training uses the frontal images of the train split with their MeSH-derived labels (BCE with a per-label
pos_weight for the class imbalance). A study's probability is the mean over its frontal images; a study
without any frontal image falls back to its lateral image(s) at val / test time, so every study of a
split is scored (the fallback count is recorded). Thresholds are chosen per label on the val split
(max F1); a label with fewer than 5 val positives is never predicted (threshold stored as null).

Artifacts of `train_baseline(…, out_dir)` (names: `model_core.artifacts`): `model.pt` (weights, thresholds,
config, input normalization; loadable with `torch.load(weights_only=True)`) and `baseline.json` (the same
minus weights, plus validation figures and timings), both written atomically. `evaluate_baseline` writes
`metrics.json` and `predictions.jsonl`.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn
from tqdm.auto import tqdm

from model_core.artifacts import BASELINE_SUMMARY, BASELINE_WEIGHTS, METRICS, PREDICTIONS
from model_core.chexpert import CHEXPERT_LABELS, NUM_LABELS, binarize
from model_core.config import BaselineConfig, Config, DataConfig, resolve_path
from model_core.data.images import load_images
from model_core.data.iu_xray import group_studies, load_iu_xray
from model_core.data.manifest import EMBEDDED_ROOT
from model_core.evaluation.baseline_templates import template_report
from model_core.evaluation.metrics import clinical_efficacy, report_generation_metrics
from model_core.files import atomic_write_bytes, atomic_write_text
from model_core.labels.labeler import label_reports
from model_core.stats import bootstrap_ci

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
# Ultra-rare labels (a handful of train positives) would get pos_weight in the hundreds and dominate the loss.
MAX_POS_WEIGHT = 50.0
# A threshold is only fit for labels with at least this many val positives (see `max_f1_thresholds`).
MIN_VAL_POSITIVES = 5

# --------------------------------------------------------------------------- model

class SmallCNN(nn.Module):
    """Conv blocks (3×3 conv, batch norm, ReLU, 2×2 max-pool) → global average pool → linear 14 logits.

    The first conv has stride 2: it makes an epoch ~6× cheaper on CPU at 128 px (the whole point of this
    baseline is to be quick), at little cost for a 14-way global classification.
    Input (B, 1, S, S) normalized with the train mean/std; output logits (B, 14).
    """

    def __init__(self, channels: list[int], dropout: float = 0.2):
        super().__init__()
        if not channels or any(c <= 0 for c in channels):
            raise ValueError(f"channels must be a non-empty list of positive ints, got {channels}")
        layers, c_in = [], 1
        for i, c in enumerate(channels):
            layers += [nn.Conv2d(c_in, c, 3, stride=2 if i == 0 else 1, padding=1, bias=False),
                       nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.MaxPool2d(2, ceil_mode=True)]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(c_in, NUM_LABELS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


# --------------------------------------------------------------------------- config

def resolve_config(config=None, **overrides) -> dict:
    """Baseline hyper-parameters as a plain dict: `BaselineConfig` defaults ← config ← keyword overrides.

    config: None, a `model_core.config.Config` (its `.baseline` is used), a `BaselineConfig` or a dict.
    """
    if isinstance(config, Config):
        config = config.baseline
    if config is None:
        base = {}
    elif isinstance(config, BaselineConfig):
        base = dataclasses.asdict(config)
    elif isinstance(config, dict):
        base = dict(config)
    else:
        raise ValueError(f"config must be None, Config, BaselineConfig or dict, got {type(config).__name__}")
    merged = {**base, **overrides}
    known = {f.name for f in dataclasses.fields(BaselineConfig)}
    unknown = sorted(set(merged) - known)
    if unknown:
        raise ValueError(f"unknown baseline config key(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    cfg = dataclasses.asdict(BaselineConfig(**merged))
    for key in ("image_size", "epochs", "batch_size"):
        if not isinstance(cfg[key], int) or cfg[key] <= 0:
            raise ValueError(f"baseline.{key} must be a positive int, got {cfg[key]!r}")
    if cfg["lr"] <= 0:
        raise ValueError(f"baseline.lr must be positive, got {cfg['lr']}")
    return cfg


# --------------------------------------------------------------------------- data

def dataset_paths(data: DataConfig) -> tuple[Path, Path]:
    """(images root, manifest) of a `DataConfig`, resolved from the repository root; the manifest defaults
    to `<root>/manifest.csv`."""
    root = resolve_path(data.root)
    return root, resolve_path(data.manifest) if data.manifest else root / "manifest.csv"


def _load_split(root, manifest, split: str, views, size: int, limit_studies, progress: bool):
    dataset = load_iu_xray(root=root, split=split, views=tuple(views), image_size=size, manifest=manifest,
                           limit_studies=limit_studies)
    return dataset, load_images(dataset["images"], size, f"{split} images")


# --------------------------------------------------------------------------- inference helpers

@torch.no_grad()
def _predict_probs(model: nn.Module, images: torch.Tensor, mean: float, std: float, batch_size: int) -> np.ndarray:
    """Sigmoid probabilities (N, 14) for normalized images, in eval mode."""
    model.eval()
    out = [torch.sigmoid(model((images[i : i + batch_size] - mean) / std)) for i in range(0, len(images), batch_size)]
    return torch.cat(out).numpy().astype(np.float64)


def _study_probs(image_probs: np.ndarray, table: list[dict]) -> np.ndarray:
    """Mean image probability per study, (n_studies, 14)."""
    return np.stack([image_probs[s["rows"]].mean(axis=0) for s in table])


def _mean_auroc(y: np.ndarray, probs: np.ndarray) -> tuple[float, dict]:
    """Macro AUROC over labels with both classes present; also per label (None when undefined)."""
    per_label = {}
    for j, name in enumerate(CHEXPERT_LABELS):
        pos = int(y[:, j].sum())
        per_label[name] = float(roc_auc_score(y[:, j], probs[:, j])) if 0 < pos < len(y) else None
    defined = [v for v in per_label.values() if v is not None]
    return (float(np.mean(defined)) if defined else float("nan")), per_label


def max_f1_thresholds(
    y_true: np.ndarray, probs: np.ndarray, min_positives: int = MIN_VAL_POSITIVES
) -> list[float | None]:
    """Per-label threshold maximizing F1 of `prob >= threshold` on validation studies.

    y_true, probs: (N, 14). A label with fewer than `min_positives` validation positives gets None (never
    predicted): with one or two positives the F1 optimum is fit to noise, typically "predict everyone"
    (seen on the embedded val split: 2 pneumothorax positives gave a threshold firing on 98 % of studies).
    Ties in F1 go to the highest threshold (fewer false alarms).
    """
    if min_positives < 1:
        raise ValueError(f"min_positives must be >= 1, got {min_positives}")
    thresholds: list[float | None] = []
    for j in range(NUM_LABELS):
        y, p = y_true[:, j].astype(bool), probs[:, j]
        if y.sum() < min_positives:
            thresholds.append(None)
            continue
        best_f1, best_t = -1.0, None
        for t in np.unique(p)[::-1]:  # highest first, so a tie keeps the higher threshold
            pred = p >= t
            tp = int((pred & y).sum())
            f1 = 2 * tp / (int(pred.sum()) + int(y.sum()))
            if f1 > best_f1:
                best_f1, best_t = f1, float(t)
        thresholds.append(best_t)
    return thresholds


def apply_thresholds(probs: np.ndarray, thresholds: list[float | None]) -> np.ndarray:
    """(N, 14) probabilities -> (N, 14) 0/1 float labels; a None threshold never fires."""
    t = np.array([math.inf if v is None else v for v in thresholds], dtype=np.float64)
    return (probs >= t).astype(np.float64)


# --------------------------------------------------------------------------- training

def train_baseline(
    config=None,
    out_dir: str | os.PathLike = "runs/baseline",
    *,
    root: str | os.PathLike | None = None,
    manifest: str | os.PathLike | None = None,
    limit_studies: int | None = None,
    min_val_positives: int = MIN_VAL_POSITIVES,
    progress: bool = True,
    **overrides,
) -> Path:
    """Train the CNN on the train split, pick per-label thresholds on val, save to out_dir; returns out_dir.

    config: see `resolve_config`; keyword overrides win (e.g. epochs=1, image_size=32).
    root / manifest / limit_studies: the IU-format data. Default: with a full `Config`, its `data` section
    (`dataset_paths`, so `train_baseline(cfg, out_dir)` alone trains on the configured data); otherwise the
    embedded data.
    min_val_positives: labels with fewer val positives get no threshold (see `max_f1_thresholds`).
    """
    if isinstance(config, Config):
        data_root, data_manifest = dataset_paths(config.data)
        root = root if root is not None else data_root
        manifest = manifest if manifest is not None else data_manifest
        limit_studies = limit_studies if limit_studies is not None else config.data.limit_studies
    root = Path(root) if root is not None else EMBEDDED_ROOT
    cfg = resolve_config(config, **overrides)
    out_dir = Path(out_dir)
    size, seed = cfg["image_size"], cfg["seed"]
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    train_set, train_x = _load_split(root, manifest, "train", ("Frontal",), size, limit_studies, progress)
    val_set, val_x = _load_split(root, manifest, "val", ("Frontal", "Lateral"), size, limit_studies, progress)
    val_table = group_studies(val_set)
    val_y = binarize(np.stack([s["labels"] for s in val_table]))
    train_y = torch.from_numpy(binarize(train_set["labels"].numpy()))
    timings["load_s"] = time.perf_counter() - t0
    log.info("baseline: %d train images, %d val studies, image size %d", len(train_x), len(val_table), size)

    # Normalization statistics from the train images only (stored with the model: serving needs them).
    mean, std = float(train_x.mean()), float(train_x.std().clamp_min(1e-6))
    positives = train_y.sum(0)
    pos_weight = ((len(train_y) - positives) / positives.clamp_min(1)).clamp(1.0, MAX_POS_WEIGHT)
    pos_weight[positives == 0] = 1.0

    torch.manual_seed(seed)
    model = SmallCNN(cfg["channels"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    steps_per_epoch = math.ceil(len(train_x) / cfg["batch_size"])
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg["epochs"] * steps_per_epoch)
    shuffler = torch.Generator().manual_seed(seed)

    t0 = time.perf_counter()
    best = {"auroc": -math.inf, "epoch": 0, "state": None}
    history = []
    for epoch in range(1, cfg["epochs"] + 1):
        model.train()
        order = torch.randperm(len(train_x), generator=shuffler)
        total = 0.0
        for start in tqdm(range(0, len(order), cfg["batch_size"]), desc=f"epoch {epoch}", disable=not progress,
                          leave=False):
            idx = order[start : start + cfg["batch_size"]]
            if len(idx) < 2:  # batch norm cannot train on a single image
                continue
            logits = model((train_x[idx] - mean) / std)
            loss = F.binary_cross_entropy_with_logits(logits, train_y[idx], pos_weight=pos_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(idx)
        val_probs = _study_probs(_predict_probs(model, val_x, mean, std, cfg["batch_size"]), val_table)
        auroc, _ = _mean_auroc(val_y, val_probs)
        history.append({"epoch": epoch, "train_loss": total / len(train_x), "val_macro_auroc": auroc})
        log.info("baseline epoch %d: train loss %.4f, val macro AUROC %.4f", epoch, total / len(train_x), auroc)
        # Model selection on val AUROC; NaN (no label with both classes, tiny subsets) keeps the last epoch.
        if not auroc <= best["auroc"]:
            best = {"auroc": auroc, "epoch": epoch, "state": copy.deepcopy(model.state_dict())}
    timings["train_s"] = time.perf_counter() - t0
    model.load_state_dict(best["state"])

    val_probs = _study_probs(_predict_probs(model, val_x, mean, std, cfg["batch_size"]), val_table)
    thresholds = max_f1_thresholds(val_y, val_probs, min_val_positives)
    _, val_auroc = _mean_auroc(val_y, val_probs)

    summary = {
        "format_version": FORMAT_VERSION,
        "kind": "template_baseline",
        "config": cfg,
        "label_names": list(CHEXPERT_LABELS),
        "thresholds": thresholds,
        "threshold_rule": f"max F1 on val studies; null (never predicted) below {min_val_positives} val positives",
        "normalization": {"mean": mean, "std": std},
        "data": {"root": str(root), "manifest": str(manifest) if manifest else None, "limit_studies": limit_studies,
                 "train_images": len(train_x), "val_studies": len(val_table),
                 "val_view_fallback_studies": sum(s["view_fallback"] for s in val_table),
                 "train_positives": {n: int(positives[j]) for j, n in enumerate(CHEXPERT_LABELS)},
                 "val_positives": {n: int(val_y[:, j].sum()) for j, n in enumerate(CHEXPERT_LABELS)}},
        "selected_epoch": best["epoch"],
        "history": history,
        "val_auroc_per_label": val_auroc,
        "timings_s": timings,
        "torch_version": torch.__version__,
    }
    checkpoint = {**{k: summary[k] for k in ("format_version", "config", "label_names", "thresholds",
                                              "normalization")}, "state_dict": model.state_dict()}
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    atomic_write_bytes(out_dir / BASELINE_WEIGHTS, buffer.getvalue())
    atomic_write_text(out_dir / BASELINE_SUMMARY, json.dumps(_jsonable(summary), indent=2) + "\n")
    log.info("baseline saved to %s (epoch %d selected, %.1f s training)", out_dir, best["epoch"], timings["train_s"])
    return out_dir


# --------------------------------------------------------------------------- loading and generation

@dataclasses.dataclass
class TemplateBaseline:
    """A trained baseline: CNN + thresholds + normalization + config."""

    model: SmallCNN
    thresholds: list[float | None]
    mean: float
    std: float
    config: dict

    @property
    def image_size(self) -> int:
        return int(self.config["image_size"])

    def predict_probs(self, images: torch.Tensor) -> np.ndarray:
        """(N, 1, S, S) images in [0, 1] -> (N, 14) label probabilities."""
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"images must have shape (N, 1, S, S), got {tuple(images.shape)}")
        return _predict_probs(self.model, images, self.mean, self.std, int(self.config["batch_size"]))

    def generate(self, images: torch.Tensor) -> dict:
        """Report for ONE study from its images (K, 1, S, S): mean probability, thresholds, templates.

        Returns `template_report`'s dict plus "probabilities" (14,) and "labels" (14,) 0/1.
        """
        probs = self.predict_probs(images).mean(axis=0)
        labels = apply_thresholds(probs[None], self.thresholds)[0]
        return {**template_report(labels), "probabilities": probs, "labels": labels}


def load_baseline(model_dir: str | os.PathLike) -> TemplateBaseline:
    """Load what `train_baseline` saved (weights-only unpickling: no code runs from the file)."""
    path = Path(model_dir) / BASELINE_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"no trained baseline in {model_dir} ({BASELINE_WEIGHTS} missing); "
                                f"train one with `rrg baseline train --out {model_dir}`")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported baseline format_version {ckpt.get('format_version')!r}")
    if list(ckpt["label_names"]) != list(CHEXPERT_LABELS):
        raise ValueError(f"{path}: label order differs from model_core.chexpert.CHEXPERT_LABELS")
    model = SmallCNN(list(ckpt["config"]["channels"]))
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return TemplateBaseline(model=model, thresholds=list(ckpt["thresholds"]), mean=float(ckpt["normalization"]["mean"]),
                            std=float(ckpt["normalization"]["std"]), config=dict(ckpt["config"]))


# --------------------------------------------------------------------------- evaluation

def evaluate_baseline(
    model_dir: str | os.PathLike,
    manifest: str | os.PathLike | None,
    images_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    split: str = "test",
    *,
    n_boot: int = 1000,
    seed: int = 0,
    section: str = "findings",
    limit_studies: int | None = None,
    progress: bool = True,
) -> dict:
    """Generate a report for every study of `split` and score it; writes metrics.json and predictions.jsonl.

    manifest: any IU-format manifest CSV (None: `images_root/manifest.csv`); images_root: the folder its
    image paths are relative to. Returns the metrics dict written to `out_dir/metrics.json`:
      "nlg" / "clinical_efficacy": `report_generation_metrics` output. CE compares the labeler's labels of the
        generated report with the human MeSH-derived labels (the project's ground truth, same protocol as
        `model_core.evaluation` for the report model);
      "clinical_efficacy_vs_reference_labeler": generated-report labels against the labeler's labels of the
        reference report (the usual CE protocol of MIMIC papers: labeler errors hit both sides alike);
      "classifier": the CNN's own per-label AUROC / F1 against MeSH labels (point estimates);
      "all_normal_template": the same figures when every study gets the normal template (the floor);
      plus n_studies, split, tokenization note, view fallback count, timings.
    """
    t_start = time.perf_counter()
    baseline = load_baseline(model_dir)
    out_dir = Path(out_dir)
    dataset, images = _load_split(Path(images_root), manifest, split, ("Frontal", "Lateral"), baseline.image_size,
                                  limit_studies, progress)
    table = group_studies(dataset)
    probs = _study_probs(baseline.predict_probs(images), table)
    predicted = apply_thresholds(probs, baseline.thresholds)
    generated = [template_report(row) for row in predicted]
    hypotheses = [g["text"] for g in generated]
    references = [s["report"] for s in table]
    mesh = np.stack([s["labels"] for s in table]).astype(np.float64)
    t_generate = time.perf_counter() - t_start

    t0 = time.perf_counter()
    ref_labels = np.asarray(label_reports(references), dtype=np.float64)
    gen_labels = np.asarray(label_reports(hypotheses), dtype=np.float64)
    metrics = report_generation_metrics(references, hypotheses, mesh, gen_labels, n_boot=n_boot, seed=seed,
                                        section=section)

    n = len(table)
    # The floor a classifier-driven template has to beat: every study gets the normal report.
    normal_text = template_report([])["text"]
    normal_labels = np.repeat(np.asarray(label_reports([normal_text]), dtype=np.float64), n, axis=0)
    all_normal = report_generation_metrics(references, [normal_text] * n, mesh, normal_labels, n_boot=n_boot,
                                           seed=seed, section=section)

    def f1_vs_reference(idx: np.ndarray, average: str) -> float:
        f1 = clinical_efficacy(ref_labels[idx], gen_labels[idx])[average]["f1"]
        return float("nan") if f1 is None else f1  # macro is undefined when a resample has no positive label

    vs_reference = {f"{avg}_f1": bootstrap_ci(lambda idx, avg=avg: f1_vs_reference(idx, avg), n, n_boot=n_boot,
                                              seed=seed) for avg in ("micro", "macro")}
    mesh_bin = binarize(mesh)
    macro_auroc, auroc = _mean_auroc(mesh_bin, probs)
    classifier_ce = clinical_efficacy(mesh, predicted)
    t_score = time.perf_counter() - t0

    metrics.update({
        "model": "template_baseline",
        "model_dir": str(Path(model_dir)),
        "split": split,
        "manifest": str(manifest) if manifest else str(Path(images_root) / "manifest.csv"),
        "label_names": list(CHEXPERT_LABELS),
        "ce_protocol": "labeler(generated full report) vs MeSH-derived labels; U-Ones",
        "view_fallback_studies": sum(s["view_fallback"] for s in table),
        "clinical_efficacy_vs_reference_labeler": {**vs_reference,
                                                   "protocol": "labeler(generated) vs labeler(reference report)"},
        "classifier": {"macro_auroc_vs_mesh": macro_auroc, "auroc_vs_mesh": auroc,
                       "micro_f1_vs_mesh": classifier_ce["micro"]["f1"],
                       "macro_f1_vs_mesh": classifier_ce["macro"]["f1"],
                       "predicted_normal_fraction": float(np.mean([not g["positive_labels"] for g in generated]))},
        "all_normal_template": {
            "note": "every study given the normal template; same references, labels, resamples",
            **{name: all_normal["nlg"][name] for name in ("BLEU-4", "ROUGE-L")},
            "CE micro F1": all_normal["clinical_efficacy"]["micro"]["f1"],
            "CE macro F1": all_normal["clinical_efficacy"]["macro"]["f1"],
        },
        "timings_s": {"generate": t_generate, "score": t_score, "total": time.perf_counter() - t_start},
    })
    # Headline figures at the top level, for dashboards and gates.
    metrics["summary"] = {name: metrics["nlg"][name] for name in ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L")}
    metrics["summary"]["CE micro F1"] = metrics["clinical_efficacy"]["micro"]["f1"]
    metrics["summary"]["CE macro F1"] = metrics["clinical_efficacy"]["macro"]["f1"]

    lines = [json.dumps(_jsonable({
        "study_id": s["study_id"], "generated": g["text"], "reference": ref,
        "generated_labels": gl, "reference_labels": rl, "mesh_labels": ml,
        "classifier_probabilities": [round(float(p), 6) for p in pr], "view_fallback": s["view_fallback"],
    })) for s, g, ref, gl, rl, ml, pr in zip(table, generated, references, gen_labels, ref_labels, mesh, probs)]
    atomic_write_text(out_dir / PREDICTIONS, "\n".join(lines) + "\n")
    atomic_write_text(out_dir / METRICS, json.dumps(_jsonable(metrics), indent=2) + "\n")
    log.info("baseline evaluated on %d %s studies: BLEU-4 %.4f, ROUGE-L %.4f, CE micro F1 %.4f", n, split,
             metrics["nlg"]["BLEU-4"]["value"], metrics["nlg"]["ROUGE-L"]["value"],
             metrics["clinical_efficacy"]["micro"]["f1"]["value"])
    return _jsonable(metrics)


def _jsonable(obj):
    """numpy / torch scalars and arrays -> plain Python; non-finite floats -> None (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj
