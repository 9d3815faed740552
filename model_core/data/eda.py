"""Exploratory data analysis of a report-generation dataset: four PNG figures and a JSON summary.

    paths = run_eda("out/eda")                      # the embedded IU X-ray data, all splits
    paths = run_eda("out/eda", split="train", limit_studies=20)
    paths = run_eda("out/eda", dataset=load_mimic_cxr_dataset(...))   # any load_iu_xray-style dict

Everything is counted per *study* (a study's label vector and report are shared by its images):

  label_frequency.png  positive (dataset labels; MeSH-derived for IU X-ray) and uncertain (report
                       labeler, or the dataset's own -1 labels when it has them, e.g. MIMIC's
                       CheXpert file) studies per CheXpert class, log scale, ratio to the most common
                       class annotated, rare classes (< 1 % of studies) in red.
  report_length.png    histogram of report length in words (findings + impression), mean / median marked.
  sample_grid.png      3×3 seeded sample of frontal images, each titled with its report's first sentence.
  cooccurrence.png     14×14 counts of studies positive for both classes (diagonal: class count).
  eda_summary.json     the numbers behind the figures.

Figures are drawn with matplotlib's Agg canvas on standalone `Figure` objects (no pyplot global
state) and every file is written atomically (temp file, then rename).
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import textwrap
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from tqdm import tqdm

from model_core.chexpert import CHEXPERT_LABELS, NUM_LABELS, POSITIVE, UNCERTAIN
from model_core.data.images import load_image
from model_core.data.iu_xray import dataset_stats, load_iu_xray
from model_core.data.manifest import EMBEDDED_ROOT
from model_core.files import atomic_write_bytes, atomic_write_text
from model_core.labels.agreement import labeler_agreement
from model_core.labels.labeler import label_report

log = logging.getLogger(__name__)

FILES = {
    "label_frequency": "label_frequency.png",
    "report_length": "report_length.png",
    "sample_grid": "sample_grid.png",
    "cooccurrence": "cooccurrence.png",
    "summary": "eda_summary.json",
}
RARE_PREVALENCE = 0.01        # a class positive in fewer than 1 % of studies is "rare"
GRID_ROWS = GRID_COLS = 3
TITLE_MAX_CHARS = 80          # sample-grid titles: first sentence truncated to this many characters
TITLE_WRAP_CHARS = 42         # ... and wrapped at this width (fits a 3-column grid at 8.5 pt)
GRID_IMAGE_SIZE = 256         # pixels per side of the displayed images (the embedded JPEGs are 256 px)
DPI = 150
PROGRESS_DELAY_S = 2.0        # tqdm bars appear only when a step takes longer than this

FRONTAL_VIEWS = {"FRONTAL", "PA", "AP"}   # IU X-ray "Frontal"; MIMIC ViewPosition PA / AP
# De-identification placeholders: IU X-ray's "XXXX", MIMIC's "___".
_DEID_RE = re.compile(r"\bX{2,}\b|_{3,}")
_SENTENCE_END_RE = re.compile(r"(?<=[.!?])\s+")

COLOUR_POSITIVE = "#3b6ea8"
COLOUR_RARE = "#c0392b"
COLOUR_UNCERTAIN = "#f0a030"


# --------------------------------------------------------------------------- entry point

def run_eda(
    out_dir: str | os.PathLike,
    *,
    root: str | os.PathLike | None = None,
    split: str = "all",
    manifest: str | os.PathLike | None = None,
    dataset: dict | None = None,
    limit_studies: int | None = None,
    seed: int = 0,
) -> dict[str, Path]:
    """Write the EDA figures and summary into out_dir; returns {name: path} for the five files.

    Args:
        out_dir: output folder (created).
        root, split, manifest, limit_studies: passed to `load_iu_xray` (all views, so that studies
            with a lateral image only still count); root defaults to the embedded IU X-ray data.
        dataset: an already loaded `load_iu_xray`-style dict (e.g. from `load_mimic_cxr_dataset`);
            when given, root/split/manifest/limit_studies are not used.
        seed: seed of the sample-grid choice.
    """
    out_dir = Path(out_dir)
    if dataset is None:
        dataset = load_iu_xray(root if root is not None else EMBEDDED_ROOT, split=split,
                               views=("Frontal", "Lateral"), manifest=manifest, limit_studies=limit_studies)
        source = "IU X-ray, " + ("all splits" if split == "all" else f"{split} split")
        positive_source = "MeSH-derived labels"
    else:
        source = "dataset"
        positive_source = "dataset labels"
    studies = study_table(dataset)
    uncertain, uncertain_source = uncertain_labels(studies)
    positive = studies["labels"] == POSITIVE                                   # (S, 14) bool
    words = np.array([report_words(f, i) for f, i in zip(studies["findings"], studies["impression"])])
    counts = label_counts(positive, uncertain)
    cooc = cooccurrence(positive)
    log.info("EDA over %d studies / %d images (%s)", len(studies["study_id"]), len(dataset["images"]), source)

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / filename for name, filename in FILES.items()}
    n_studies = len(studies["study_id"])
    _save(plot_label_frequency(counts, n_studies, source, positive_source, uncertain_source), paths["label_frequency"])
    _save(plot_report_length(words, source), paths["report_length"])
    grid_fig, grid_ids = plot_sample_grid(studies, seed)
    _save(grid_fig, paths["sample_grid"])
    _save(plot_cooccurrence(cooc, n_studies, source), paths["cooccurrence"])

    summary = {
        "source": source,
        "n_studies": n_studies,
        "n_images": len(dataset["images"]),
        "n_frontal_images": int(sum(len(p) for p in studies["frontal_images"])),
        "positive_source": positive_source,
        "uncertain_source": uncertain_source,
        "rare_prevalence_threshold": RARE_PREVALENCE,
        "most_common_label": counts["most_common"],
        "labels": counts["per_label"],
        "report_words": _describe(words),
        "cooccurrence": {"labels": list(CHEXPERT_LABELS), "counts": cooc.tolist()},
        "sample_grid_study_ids": grid_ids,
        "files": {name: path.name for name, path in paths.items()},
    }
    atomic_write_text(paths["summary"], json.dumps(summary, indent=2) + "\n")
    log.info("EDA wrote %d files to %s", len(paths), out_dir)
    return paths


# --------------------------------------------------------------------------- study-level tables

def study_table(dataset: dict) -> dict:
    """Collapse a per-image dataset dict to one entry per study (first image's row for shared fields).

    Returns {"study_id": [S], "labels": float32 (S, 14), "report": [S str], "findings": [S str],
    "impression": [S str], "frontal_images": [S list[str]]}, studies in first-appearance order.
    """
    index: dict = {}
    frontal: dict = {}
    for i, meta in enumerate(dataset["metadata"]):
        sid = meta["study_id"]
        index.setdefault(sid, i)
        frontal.setdefault(sid, [])
        if str(meta.get("view", "")).upper() in FRONTAL_VIEWS:
            frontal[sid].append(dataset["images"][i])
    rows = list(index.values())
    labels = np.asarray(dataset["labels"], dtype=np.float32).reshape(-1, NUM_LABELS)
    return {
        "study_id": list(index),
        "labels": labels[rows] if rows else np.zeros((0, NUM_LABELS), np.float32),
        "report": [dataset["reports"][i] for i in rows],
        "findings": [dataset["metadata"][i].get("findings") or "" for i in rows],
        "impression": [dataset["metadata"][i].get("impression") or "" for i in rows],
        "frontal_images": [frontal[sid] for sid in index],
    }


def uncertain_labels(studies: dict) -> tuple[np.ndarray, str]:
    """(S, 14) bool of uncertain mentions, and where they came from.

    A dataset whose labels already use -1 (MIMIC's CheXpert file) is its own source; otherwise
    (IU X-ray's MeSH labels are 0/1) every report's findings + impression text is run through
    `model_core.labels.label_report`.
    """
    labels = studies["labels"]
    if (labels == UNCERTAIN).any():
        return labels == UNCERTAIN, "dataset labels (-1 entries)"
    # Same input as the labeler-vs-MeSH agreement: findings + impression, no section headers.
    texts = [f"{f} {i}".strip() or report
             for f, i, report in zip(studies["findings"], studies["impression"], studies["report"])]
    texts = tqdm(texts, desc="Labelling reports", unit="report", delay=PROGRESS_DELAY_S, leave=False)
    rows = [np.asarray(label_report(text), dtype=np.float32).reshape(NUM_LABELS) for text in texts]
    report_labels = np.stack(rows) if rows else np.zeros((0, NUM_LABELS), np.float32)
    return report_labels == UNCERTAIN, "report labeler (model_core.labels.label_report)"


def report_words(findings: str, impression: str) -> int:
    """Words in findings + impression: whitespace tokens holding a letter or digit, XXXX / ___ not counted."""
    tokens = _DEID_RE.sub(" ", f"{findings} {impression}").split()
    return sum(1 for token in tokens if any(ch.isalnum() for ch in token))


def label_counts(positive: np.ndarray, uncertain: np.ndarray) -> dict:
    """Per-class positive / uncertain study counts, prevalence and imbalance ratios.

    positive, uncertain: bool (S, 14). imbalance_ratio = most common class's positives / this class's
    (None when it has none); negative_to_positive = (S - positives) / positives (BCE pos_weight).
    """
    n = positive.shape[0]
    pos = positive.sum(axis=0).astype(int)
    unc = uncertain.sum(axis=0).astype(int)
    top = int(np.argmax(pos))
    per_label = {}
    for k, name in enumerate(CHEXPERT_LABELS):
        p = int(pos[k])
        per_label[name] = {
            "positive": p,
            "uncertain": int(unc[k]),
            "prevalence": round(p / n, 5) if n else 0.0,
            "imbalance_ratio": round(int(pos[top]) / p, 2) if p else None,
            "negative_to_positive": round((n - p) / p, 2) if p else None,
            "rare": bool(n and p / n < RARE_PREVALENCE),
        }
    return {"per_label": per_label, "most_common": CHEXPERT_LABELS[top], "positive": pos, "uncertain": unc}


def cooccurrence(positive: np.ndarray) -> np.ndarray:
    """int (14, 14): studies positive for both classes; the diagonal is each class's positive count."""
    p = positive.astype(np.int64)
    return p.T @ p


def first_sentence(report: str, max_chars: int = TITLE_MAX_CHARS) -> str:
    """First sentence of a report, section headers and de-identification tokens removed, truncated."""
    text = re.sub(r"\b(FINDINGS|IMPRESSION)\s*:\s*", "", report)
    text = _DEID_RE.sub(" ", text)
    text = " ".join(text.split())
    text = re.sub(r"\s+([.,;:!?])", r"\1", text)          # "no  ." left by a removed token
    sentence = _SENTENCE_END_RE.split(text, maxsplit=1)[0] if text else ""
    if len(sentence) > max_chars:
        sentence = sentence[: max_chars - 1].rstrip(" ,;:") + "…"
    return sentence or "(empty report)"


# --------------------------------------------------------------------------- figures

def plot_label_frequency(counts: dict, n_studies: int, source: str, positive_source: str,
                         uncertain_source: str) -> Figure:
    """Horizontal grouped bars per class (sorted by positives), log x-axis, ratio to the top class."""
    pos, unc = counts["positive"], counts["uncertain"]
    order = sorted(range(NUM_LABELS), key=lambda k: (-pos[k], -unc[k]))
    per_label = counts["per_label"]
    fig = Figure(figsize=(10.5, 7.0), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(NUM_LABELS)
    height = 0.4
    names = [CHEXPERT_LABELS[k] for k in order]
    rare = [per_label[name]["rare"] for name in names]
    pos_colours = [COLOUR_RARE if r else COLOUR_POSITIVE for r in rare]
    ax.barh(y - height / 2, [pos[k] for k in order], height, color=pos_colours)
    ax.barh(y + height / 2, [unc[k] for k in order], height, color=COLOUR_UNCERTAIN)
    ax.set_xscale("log")
    x_max = max(int(pos.max(initial=0)), int(unc.max(initial=0)), 1)
    ax.set_xlim(0.7, x_max * 12)        # room on the right for the annotations
    top = counts["most_common"]
    for yi, k, name in zip(y, order, names):
        ratio = per_label[name]["imbalance_ratio"]
        if name == top:
            note = f"{pos[k]}  (most common, {per_label[name]['prevalence']:.1%})"
        elif ratio is None:
            note = "0"
        else:
            note = f"{pos[k]}  (1 : {ratio:.1f} vs {top})"
        ax.text(max(pos[k], 0.75) * 1.08, yi - height / 2, note, va="center", fontsize=8.5,
                color=COLOUR_RARE if per_label[name]["rare"] else "black")
        ax.text(max(unc[k], 0.75) * 1.08, yi + height / 2, str(unc[k]), va="center", fontsize=8, color="#8a5a00")
    ax.set_yticks(y, names)
    for tick, is_rare in zip(ax.get_yticklabels(), rare):
        if is_rare:
            tick.set_color(COLOUR_RARE)
            tick.set_fontweight("bold")
    ax.invert_yaxis()
    ax.set_xlabel("studies (log scale)")
    ax.grid(axis="x", which="major", alpha=0.3)
    ax.set_title(f"CheXpert label frequency — {source}, {n_studies} studies", fontsize=12)
    ax.legend(handles=[
        Patch(color=COLOUR_POSITIVE, label=f"positive ({positive_source})"),
        Patch(color=COLOUR_RARE, label=f"positive, rare class (< {RARE_PREVALENCE:.0%} of studies)"),
        Patch(color=COLOUR_UNCERTAIN, label=f"uncertain ({_short_source(uncertain_source)})"),
    ], loc="lower right", fontsize=9, framealpha=0.95)
    return fig


def plot_report_length(words: np.ndarray, source: str) -> Figure:
    """Histogram of words per report (findings + impression), mean and median as vertical lines."""
    fig = Figure(figsize=(9.0, 5.0), layout="constrained")
    ax = fig.add_subplot()
    if len(words):
        bin_width = max(1, int(np.ceil(words.max() / 60)))
        bins = np.arange(0, words.max() + 2 * bin_width, bin_width)
        ax.hist(words, bins=bins, color=COLOUR_POSITIVE, alpha=0.85, edgecolor="white", linewidth=0.5)
        mean, median = float(words.mean()), float(np.median(words))
        ax.axvline(mean, color=COLOUR_RARE, linestyle="--", linewidth=1.8, label=f"mean {mean:.1f} words")
        ax.axvline(median, color="black", linestyle=":", linewidth=1.8, label=f"median {median:.0f} words")
        ax.legend(fontsize=10)
    ax.set_xlabel("report length (words, findings + impression; XXXX tokens not counted)")
    ax.set_ylabel("studies")
    ax.set_title(f"Report length — {source}, {len(words)} studies", fontsize=12)
    ax.grid(axis="y", alpha=0.3)
    return fig


def plot_sample_grid(studies: dict, seed: int) -> tuple[Figure, list]:
    """3×3 grid of one frontal image from each of 9 seeded studies, titled with the report's first sentence.

    Returns the figure and the chosen study ids (in grid order, row-major).
    """
    candidates = [i for i, paths in enumerate(studies["frontal_images"]) if paths]
    rng = np.random.default_rng(seed)
    n_cells = GRID_ROWS * GRID_COLS
    chosen = sorted(rng.choice(len(candidates), size=min(n_cells, len(candidates)), replace=False).tolist())
    picks = [candidates[c] for c in chosen]
    fig = Figure(figsize=(10.0, 11.5), layout="constrained")
    axes = fig.subplots(GRID_ROWS, GRID_COLS).ravel()
    for ax in axes:
        ax.set_axis_off()
    progress = tqdm(picks, desc="Loading sample images", unit="image", delay=PROGRESS_DELAY_S, leave=False)
    for ax, i in zip(axes, progress):
        image = load_image(studies["frontal_images"][i][0], size=GRID_IMAGE_SIZE)[0].numpy()  # (H, W) in [0, 1]
        ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0)
        title = "\n".join(textwrap.wrap(first_sentence(studies["report"][i]), TITLE_WRAP_CHARS)[:3])
        ax.set_title(title, fontsize=8.5, loc="left")
        ax.text(0.01, 0.01, f"study {studies['study_id'][i]}", transform=ax.transAxes, fontsize=7,
                color="white", va="bottom", ha="left",
                bbox={"facecolor": "black", "alpha": 0.6, "edgecolor": "none", "pad": 1.5})
    if not picks:
        axes[0].text(0.5, 0.5, "no frontal images", ha="center", va="center")
    fig.suptitle(f"Sample frontal images (seed {seed}) with the first sentence of their report", fontsize=12)
    return fig, [studies["study_id"][i] for i in picks]


def plot_cooccurrence(cooc: np.ndarray, n_studies: int, source: str) -> Figure:
    """14×14 heatmap (log colour scale, zero cells blank) with every count annotated."""
    fig = Figure(figsize=(10.5, 9.0), layout="constrained")
    ax = fig.add_subplot()
    masked = np.ma.masked_equal(cooc, 0)
    vmax = max(int(cooc.max(initial=0)), 2)
    im = ax.imshow(masked, cmap="viridis", norm=LogNorm(vmin=1, vmax=vmax))
    ax.set_facecolor("#f4f4f4")
    threshold = np.sqrt(vmax)          # geometric middle of the log scale: text colour switch
    for r in range(NUM_LABELS):
        for c in range(NUM_LABELS):
            value = int(cooc[r, c])
            colour = "#999999" if value == 0 else ("white" if value < threshold else "black")
            ax.text(c, r, str(value), ha="center", va="center", fontsize=7.5, color=colour,
                    fontweight="bold" if r == c else "normal")
    ticks = np.arange(NUM_LABELS)
    ax.set_xticks(ticks, CHEXPERT_LABELS, rotation=45, ha="right", rotation_mode="anchor", fontsize=9)
    ax.set_yticks(ticks, CHEXPERT_LABELS, fontsize=9)
    ax.set_xticks(ticks - 0.5, minor=True)
    ax.set_yticks(ticks - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=0.8)
    ax.tick_params(which="minor", length=0)
    fig.colorbar(im, ax=ax, shrink=0.8, label="studies positive for both (log scale)")
    ax.set_title(f"Finding co-occurrence — {source}, {n_studies} studies\n"
                 "(positive labels; diagonal = studies positive for the finding)", fontsize=11)
    return fig


# --------------------------------------------------------------------------- helpers

def _save(fig: Figure, path: Path) -> None:
    """Render with the Agg canvas and write the PNG atomically."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    atomic_write_bytes(path, buffer.getvalue())


def _describe(words: np.ndarray) -> dict:
    if not len(words):
        return {"n": 0}
    q = np.percentile(words, [5, 50, 95])
    return {"n": int(len(words)), "mean": round(float(words.mean()), 2), "median": float(q[1]),
            "p5": float(q[0]), "p95": float(q[2]), "min": int(words.min()), "max": int(words.max())}


def _short_source(source: str) -> str:
    return source.split(" (")[0]


def run_data_report(out_dir: str | os.PathLike, *, root: str | os.PathLike, manifest: str | os.PathLike,
                    limit_studies: int | None = None) -> dict[str, Path]:
    """The pipeline's EDA step: the figures of `run_eda`, plus per-split statistics (`data_stats.json`) and
    the report labeler's agreement with the MeSH labels (`labeler_agreement.json`)."""
    out_dir = Path(out_dir)
    paths = run_eda(out_dir, root=root, split="all", manifest=manifest, limit_studies=limit_studies)
    stats = {split: dataset_stats(load_iu_xray(root, split=split, manifest=manifest, limit_studies=limit_studies))
             for split in ("train", "val", "test")}
    paths["data_stats"] = out_dir / "data_stats.json"
    atomic_write_text(paths["data_stats"], json.dumps(stats, indent=2) + "\n")
    agreement = labeler_agreement(manifest)
    paths["labeler_agreement"] = out_dir / "labeler_agreement.json"
    atomic_write_text(paths["labeler_agreement"], json.dumps(_finite(agreement), indent=2) + "\n")
    return paths


def _finite(obj):
    """NaN (undefined F1 of a label nobody marks) → null, so the JSON stays strict."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and obj != obj:
        return None
    return obj
