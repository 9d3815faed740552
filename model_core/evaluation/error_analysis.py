"""Error analysis of generated reports: what kind of error, for which finding, on which studies, and why.

Per study, each finding (CheXpert label, No Finding excluded) can be in error as
    missed_finding          FN: the ground truth has it, the generated text does not assert it
    hallucinated_finding    FP: the generated text asserts it (positive or uncertain), the ground truth does not
and, when both the generated and the reference text describe the finding (asserted, not negated):
    wrong_laterality        both state a side and the sides differ (left vs right; bilateral = both sides)
    severity_mismatch       both grade it and the grades differ (trace/minimal/tiny/mild/small < moderate <
                            large/severe/massive)
    incomplete_description  the reference gives its location (side, lobe, zone, ...) or size (a measurement or a
                            grade) and the generated text gives none of that kind
Truth for FN/FP is the study's label vector (MeSH-derived for IU X-ray, the gated truth; uncertain counts positive,
as the clinical-efficacy metrics count it). Descriptions come from the report labeler's mentions
(`model_core.labels.labeler.find_mentions`): the words of a mention's clause that belong to it (see
`_mention_windows`). Rule-based, like the labeler: "small left effusion" is read, "the effusion on the left side has
decreased since the prior study" is read as left, with no grade.

`analyse_errors` aggregates (rates with bootstrap CIs, per-finding counts, a confusion matrix per critical finding,
the correlation of errors with image exposure/contrast); `run_error_analysis` is the pipeline step: it reads the
evaluation's predictions, writes `error_analysis.json` (per study, with study ids: internal, MLflow),
`error_summary.json` (aggregates only: no study id, no text, no image; safe for the packet) and the figures
(confusion matrices, error rate vs prevalence, examples with heatmaps, error vs image
quality). Report text is never logged.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from model_core.artifacts import (  # file names live in the one table; re-exported here for callers
    CONFUSION_PLOT,
    ERROR_ANALYSIS,
    ERROR_SUMMARY,
    EXAMPLES_PLOT,
    PREDICTIONS,
    PREVALENCE_PLOT,
    QUALITY_PLOT,
)
from model_core.chexpert import CHEXPERT_LABELS, CRITICAL_FINDINGS, LABEL_INDEX, binarize
from model_core.data.images import load_images
from model_core.data.iu_xray import group_studies, load_iu_xray
from model_core.evaluation.baseline import dataset_paths
from model_core.files import atomic_write_bytes, atomic_write_text
from model_core.labels.classify import Mention
from model_core.labels.extract import clause_spans, mask_pseudo_negations, normalize_report
from model_core.labels.labeler import find_mentions, label_reports
from model_core.modeling.explain import finding_heatmap, overlay_rgb
from model_core.modeling.model_dir import load_model_dir
from model_core.stats import bootstrap_ci

MISSED, HALLUCINATED = "missed_finding", "hallucinated_finding"
LATERALITY, SEVERITY, INCOMPLETE = "wrong_laterality", "severity_mismatch", "incomplete_description"
ERROR_CATEGORIES = (MISSED, HALLUCINATED, LATERALITY, SEVERITY, INCOMPLETE)
FINDINGS = tuple(label for label in CHEXPERT_LABELS if label != "No Finding")
QUALITY_STATISTICS = ("exposure", "contrast")


_SIDE = re.compile(r"\b(left|right|bilateral(?:ly)?|both)\b")
_GRADE = {"trace": 1, "minimal": 1, "tiny": 1, "mild": 1, "small": 1, "moderate": 2, "large": 3, "severe": 3,
          "massive": 3}
_GRADE_RE = re.compile(rf"\b({'|'.join(_GRADE)})\b")
_MEASURE = re.compile(r"\b\d+(?:\.\d+)?\s*(?:cm|mm)\b")
_LOCATION = re.compile(r"\b(upper|middle|mid|lower|lobes?|lingula(?:r)?|apex|apices|apical|apicolateral|bases?|"
                       r"basilar|basal|bibasilar|hilar|perihilar|retrocardiac|costophrenic|subpulmonic|paratracheal|"
                       r"zones?|anterior|posterior|lateral|medial|\d+(?:st|nd|rd|th))\b")
# Words that end the part of a gap between two mentions that belongs to the earlier one ("left effusion and
# right pneumothorax": "and" hands "right" to the pneumothorax; modifiers precede their noun).
_GAP_SPLIT = re.compile(r",|\b(?:and|or|with|without|plus)\b")


@dataclass(frozen=True)
class Description:
    """What a report says about one finding: the sides, grades, whether it locates and measures it."""

    sides: frozenset = field(default_factory=frozenset)     # {"left", "right"}
    grades: frozenset = field(default_factory=frozenset)    # {1, 2, 3}
    located: bool = False
    measured: bool = False

    def merge(self, other: "Description") -> "Description":
        return Description(self.sides | other.sides, self.grades | other.grades, self.located or other.located,
                           self.measured or other.measured)


def _read(window: str) -> Description:
    sides = set()
    for word in _SIDE.findall(window):
        sides |= {"left", "right"} if word.startswith(("bilateral", "both")) else {word}
    return Description(frozenset(sides), frozenset(_GRADE[w] for w in _GRADE_RE.findall(window)),
                       bool(_LOCATION.search(window)), bool(_MEASURE.search(window)))


def _split_gap(text: str, start: int, end: int) -> int:
    """Where a gap between two mentions divides: after its last conjunction/comma (all of it to the later one
    when it has none)."""
    splits = list(_GAP_SPLIT.finditer(text, start, end))
    return splits[-1].end() if splits else start


def _mention_windows(normalized: str, masked: str, mentions: list[Mention]) -> list[tuple[Mention, str]]:
    """Each mention with the words of its clause that belong to it (its modifiers before, its complements after)."""
    out = []
    for c0, c1 in clause_spans(masked):
        inside = sorted((m for m in mentions if c0 <= m.start < c1), key=lambda m: m.start)
        for i, mention in enumerate(inside):
            lo = c0 if i == 0 else _split_gap(normalized, inside[i - 1].end, mention.start)
            hi = c1 if i == len(inside) - 1 else _split_gap(normalized, mention.end, inside[i + 1].start)
            out.append((mention, normalized[lo:hi]))
    return out


def describe_findings(text: str) -> dict[str, Description]:
    """{finding: Description} for the findings a report asserts (positive or uncertain mentions; negated ones
    such as "no left effusion" describe nothing)."""
    normalized = normalize_report(text)
    masked = mask_pseudo_negations(normalized)
    described: dict[str, Description] = {}
    for mention, window in _mention_windows(normalized, masked, find_mentions(text)):
        if mention.label in LABEL_INDEX and mention.state != 0:
            described[mention.label] = described.get(mention.label, Description()).merge(_read(window))
    return described


def _compare(finding: str, generated: Description, reference: Description) -> list[dict]:
    errors = []
    if generated.sides and reference.sides and generated.sides != reference.sides:
        errors.append({"category": LATERALITY, "finding": finding,
                       "detail": f"generated {'/'.join(sorted(generated.sides))}, "
                                 f"reference {'/'.join(sorted(reference.sides))}"})
    if generated.grades and reference.grades and not generated.grades & reference.grades:
        errors.append({"category": SEVERITY, "finding": finding,
                       "detail": f"generated grade {max(generated.grades)}, reference grade {max(reference.grades)}"})
    omitted = []
    if (reference.located or reference.sides) and not (generated.located or generated.sides):
        omitted.append("location")
    if (reference.measured or reference.grades) and not (generated.measured or generated.grades):
        omitted.append("size")
    if omitted:
        errors.append({"category": INCOMPLETE, "finding": finding, "detail": "omits " + " and ".join(omitted)})
    return errors


def study_errors(generated: str, reference: str, truth, generated_labels=None) -> list[dict]:
    """The errors of one generated report: [{"category", "finding", "detail"?}], in CheXpert order.

    truth: the study's label vector (14,) (1 / 0 / -1; uncertain counts positive); generated_labels: the labeler's
    vector of the generated text (computed when None)."""
    truth = binarize(np.asarray(truth, dtype=np.float32).reshape(-1))
    if truth.shape != (len(CHEXPERT_LABELS),):
        raise ValueError(f"truth must be a label vector of {len(CHEXPERT_LABELS)} values, got {truth.size}")
    asserted = (label_reports([generated])[0] if generated_labels is None
                else np.asarray(generated_labels, dtype=np.float32)) != 0
    described_gen, described_ref = describe_findings(generated), describe_findings(reference)
    errors = []
    for finding in FINDINGS:
        k = LABEL_INDEX[finding]
        if truth[k] == 1 and not asserted[k]:
            errors.append({"category": MISSED, "finding": finding})
        elif truth[k] == 0 and asserted[k]:
            errors.append({"category": HALLUCINATED, "finding": finding})
        elif truth[k] == 1 and finding in described_gen and finding in described_ref:
            errors += _compare(finding, described_gen[finding], described_ref[finding])
    return errors


# --------------------------------------------------------------------------- aggregation

def image_quality(pixels: torch.Tensor) -> np.ndarray:
    """(N, 1, H, W) model-input images in [0, 1] → (N, 2): exposure (mean grey level) and contrast (RMS contrast:
    the standard deviation of the grey levels)."""
    flat = pixels.reshape(len(pixels), -1).double()
    return torch.stack([flat.mean(dim=1), flat.std(dim=1)], dim=1).numpy()


def _correlation(x: np.ndarray, y: np.ndarray) -> float:
    if x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def quality_correlation(has_error: np.ndarray, quality: np.ndarray, n_boot: int, seed: int) -> dict:
    """Point-biserial (Pearson) correlation of a per-study 0/1 error with each image statistic, 95 % bootstrap CI,
    and the statistic's mean in studies with and without the error."""
    out = {}
    for j, name in enumerate(QUALITY_STATISTICS):
        stat = quality[:, j]
        corr = bootstrap_ci(lambda i: _correlation(has_error[i], stat[i]), len(stat), n_boot, seed)
        with_error, without = stat[has_error == 1], stat[has_error == 0]
        out[name] = {"correlation": corr,
                     "mean_with_error": float(with_error.mean()) if len(with_error) else None,
                     "mean_without_error": float(without.mean()) if len(without) else None}
    return out


def analyse_errors(records: list[dict], quality: np.ndarray | None = None, n_boot: int = 1000, seed: int = 0,
                   max_examples: int = 3) -> dict:
    """records: one per study, {"study_id", "generated", "reference", "truth" (14,), "generated_labels"? (14,)};
    quality: (S, 2) exposure/contrast per study (or None). Returns {"per_study", "examples" (study ids per
    category), "summary"}; "summary" holds no study id and no text (see module docstring)."""
    if not records:
        raise ValueError("error analysis needs at least one study")
    per_study = [{"study_id": r["study_id"], "errors": study_errors(r["generated"], r["reference"], r["truth"],
                                                                    r.get("generated_labels"))} for r in records]
    n = len(per_study)
    has = {c: np.array([any(e["category"] == c for e in s["errors"]) for s in per_study], dtype=float)
           for c in ERROR_CATEGORIES}
    has_any = np.array([bool(s["errors"]) for s in per_study], dtype=float)
    truth = np.stack([binarize(np.asarray(r["truth"], dtype=np.float32)) for r in records])
    categories = {c: {"studies": int(has[c].sum()),
                      "errors": sum(e["category"] == c for s in per_study for e in s["errors"]),
                      "study_rate": bootstrap_ci(lambda i: float(has[c][i].mean()), n, n_boot, seed)}
                  for c in ERROR_CATEGORIES}
    by_finding = {}
    for finding in FINDINGS:
        k = LABEL_INDEX[finding]
        counts = {c: sum(e["category"] == c and e["finding"] == finding for s in per_study for e in s["errors"])
                  for c in ERROR_CATEGORIES}
        positives = int(truth[:, k].sum())
        by_finding[finding] = {
            "positives": positives, "prevalence": positives / n, **counts,
            "miss_rate": counts[MISSED] / positives if positives else None,
            "false_alarm_rate": counts[HALLUCINATED] / (n - positives) if n - positives else None,
            "error_rate": sum(counts.values()) / n}
    confusion = {}
    for finding in CRITICAL_FINDINGS:
        fn, fp, positives = by_finding[finding][MISSED], by_finding[finding][HALLUCINATED], \
            by_finding[finding]["positives"]
        confusion[finding] = {"tp": positives - fn, "fn": fn, "fp": fp, "tn": n - positives - fp}
    examples = {c: [s["study_id"] for s in per_study if any(e["category"] == c for e in s["errors"])][:max_examples]
                for c in ERROR_CATEGORIES}
    summary = {
        "studies": n, "studies_with_errors": int(has_any.sum()),
        "study_error_rate": bootstrap_ci(lambda i: float(has_any[i].mean()), n, n_boot, seed),
        "categories": categories, "by_finding": by_finding,
        "confusion_critical": confusion,
        "truth": "study label vectors (MeSH-derived for IU X-ray); uncertain counted positive",
        "definitions": {MISSED: "truth positive, generated text does not assert it",
                        HALLUCINATED: "generated text asserts it (positive or uncertain), truth negative",
                        LATERALITY: "both texts state a side for the finding and the sides differ",
                        SEVERITY: "both texts grade the finding and the grades differ",
                        INCOMPLETE: "the reference gives location or size, the generated text none of that kind"},
        "image_quality": None,
    }
    if quality is not None:
        quality = np.asarray(quality, dtype=np.float64)
        if quality.shape != (n, len(QUALITY_STATISTICS)):
            raise ValueError(f"quality must be (studies, 2) = ({n}, 2), got {quality.shape}")
        summary["image_quality"] = {
            "statistics": {"exposure": "mean grey level of the model input in [0, 1]",
                           "contrast": "RMS contrast: standard deviation of the grey levels in [0, 1]"},
            "any_error": quality_correlation(has_any, quality, n_boot, seed),
            **{c: quality_correlation(has[c], quality, n_boot, seed) for c in (MISSED, HALLUCINATED)
               if 0 < has[c].sum() < n}}
    return {"per_study": per_study, "examples": examples, "summary": summary}


# --------------------------------------------------------------------------- figures

def _save(fig: Figure, path: Path) -> None:
    # A bare Figure (no pyplot): renders with Agg, touches no global backend state, needs no close().
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    atomic_write_bytes(path, buffer.getvalue())


def plot_confusion_matrices(confusion: dict, path: Path) -> None:
    """One 2×2 matrix per critical finding: truth (rows) vs the generated text (columns)."""
    fig = Figure(figsize=(3.2 * len(confusion), 3.4))
    for ax, (finding, c) in zip(np.atleast_1d(fig.subplots(1, len(confusion))), confusion.items()):
        matrix = np.array([[c["tp"], c["fn"]], [c["fp"], c["tn"]]])
        ax.imshow(matrix, cmap="Blues")
        for (r, q), value in np.ndenumerate(matrix):
            ax.text(q, r, str(value), ha="center", va="center",
                    color="white" if value > matrix.max() / 2 else "black", fontsize=12)
        ax.set_xticks([0, 1], ["asserted", "not asserted"])
        ax.set_yticks([0, 1], ["truth +", "truth −"])
        ax.set_title(finding, fontsize=10)
    fig.suptitle("Critical findings: generated text vs truth (studies)", fontsize=11)
    fig.tight_layout()
    _save(fig, path)


def plot_error_vs_prevalence(by_finding: dict, path: Path) -> None:
    """Miss rate (FN / positives) and false-alarm rate (FP / negatives) per finding against its prevalence."""
    fig = Figure(figsize=(8, 5.5))
    ax = fig.subplots()
    for key, colour, marker, name in (("miss_rate", "#c0392b", "o", "miss rate (FN / positives)"),
                                      ("false_alarm_rate", "#3b6ea8", "s", "false-alarm rate (FP / negatives)")):
        points = [(v["prevalence"], v[key]) for v in by_finding.values() if v[key] is not None]
        ax.scatter([p for p, _ in points], [r for _, r in points], c=colour, marker=marker, label=name)
    # One label per finding (at its miss rate, else its false-alarm rate), staggered so neighbours stay legible;
    # the pile at the origin (findings absent from the test set, no false alarm) stays unlabelled.
    labelled = sorted((v["prevalence"], v["miss_rate"] if v["miss_rate"] is not None else v["false_alarm_rate"], f)
                      for f, v in by_finding.items())
    for n, (prevalence, rate, finding) in enumerate(p for p in labelled if p[1] is not None and any(p[:2])):
        ax.annotate(finding, (prevalence, rate), fontsize=7, xytext=(3, -10 - 9 * (n % 4)), textcoords="offset points")
    ax.set_xscale("symlog", linthresh=0.01)
    ax.set_xlim(left=0)
    ax.set_ylim(-0.03, 1.05)
    ax.set_xlabel("prevalence in the test set (share of studies; symlog)")
    ax.set_ylabel("error rate")
    ax.set_title("Error rate vs finding prevalence (generated text vs truth)")
    ax.legend(loc="center right", fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def plot_error_examples(panels: list[dict], path: Path, columns: int = 4) -> None:
    """Example studies per error category: the model input with the finding's heatmap (no text, no identifier)."""
    rows = max(1, -(-len(panels) // columns))
    fig = Figure(figsize=(2.6 * columns, 2.9 * rows))
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, panel in zip(axes, panels):
        ax.imshow(overlay_rgb(panel["image"], panel["heat"]))
        ax.set_title(f"{panel['category'].replace('_', ' ')}\n{panel['finding']} (p={panel['probability']:.2f})",
                     fontsize=8)
    if not panels:
        axes[0].text(0.5, 0.5, "no errors to show", ha="center", va="center")
    fig.suptitle("Examples per error category: detection-head heatmap of the finding", fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def plot_error_vs_quality(quality: np.ndarray, has_error: np.ndarray, path: Path) -> None:
    """Exposure and contrast of studies with and without an error (box plots)."""
    fig = Figure(figsize=(8, 4))
    for j, (ax, name) in enumerate(zip(fig.subplots(1, len(QUALITY_STATISTICS)), QUALITY_STATISTICS)):
        groups = [quality[has_error == 1, j], quality[has_error == 0, j]]
        ax.boxplot([g for g in groups if len(g)], tick_labels=[label for g, label in
                                                              zip(groups, ("with error", "no error")) if len(g)])
        r = _correlation(has_error.astype(float), quality[:, j])
        ax.set_title(f"{name}: r = {r:.2f} (n = {int(has_error.sum())} / {int((has_error == 0).sum())})",
                     fontsize=10)
    fig.suptitle("Image quality of studies with and without a report error", fontsize=11)
    fig.tight_layout()
    _save(fig, path)


# --------------------------------------------------------------------------- the pipeline step

def read_predictions(evaluation_dir: str | Path) -> list[dict]:
    """The evaluation's predictions.jsonl as error-analysis records (truth = the MeSH-derived labels)."""
    path = Path(evaluation_dir) / PREDICTIONS
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run the evaluation first")
    records = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            records.append({"study_id": row["study_id"], "generated": row["generated"], "reference": row["reference"],
                            "truth": row["mesh_labels"], "generated_labels": row.get("generated_labels"),
                            "probabilities": row.get("detection_probabilities")})
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ValueError(f"{path.name} line {n} is not a prediction record") from None
    return records


def run_error_analysis(cfg, model_dir: str | Path, evaluation_dir: str | Path, out_dir: str | Path,
                       max_examples: int = 2) -> dict:
    """The pipeline step: error analysis of the evaluated test studies (`evaluation_dir/predictions.jsonl`) with
    image-quality statistics and heatmap examples from the model (`model_dir`) on the same images (`cfg.data`'s
    test split). Writes ERROR_ANALYSIS, ERROR_SUMMARY and the four figures into out_dir; returns the summary."""
    out = Path(out_dir)
    records = read_predictions(evaluation_dir)
    model, detection, _ = load_model_dir(model_dir)
    root, manifest = dataset_paths(cfg.data)
    dataset = load_iu_xray(root=root, split="test", views=("Frontal", "Lateral"), manifest=manifest,
                           image_size=model.image_size, limit_studies=cfg.data.limit_studies)
    studies = {s["study_id"]: s for s in group_studies(dataset)}
    missing = [r for r in records if r["study_id"] not in studies]
    if missing:
        raise ValueError(f"{len(missing)} evaluated studies are not in the test split of {manifest.name}")
    first_rows = [studies[r["study_id"]]["rows"][0] for r in records]
    pixels = load_images([dataset["images"][i] for i in first_rows], model.image_size, "error analysis")
    result = analyse_errors(records, image_quality(pixels), cfg.eval.n_bootstrap, cfg.eval.seed, max_examples)
    index = {r["study_id"]: i for i, r in enumerate(records)}
    panels = []
    for category, study_ids in result["examples"].items():
        for study_id in study_ids:
            i = index[study_id]
            finding = next(e["finding"] for e in result["per_study"][i]["errors"] if e["category"] == category)
            heat = finding_heatmap(model, pixels[i:i + 1], finding, float(detection.get("temperature", 1.0)))
            panels.append({"category": category, "finding": finding, "image": pixels[i, 0].numpy(),
                           "heat": heat.upsampled(model.image_size)[0], "probability": float(heat.probability[0])})
    out.mkdir(parents=True, exist_ok=True)
    summary = result["summary"]
    plot_confusion_matrices(summary["confusion_critical"], out / CONFUSION_PLOT)
    plot_error_vs_prevalence(summary["by_finding"], out / PREVALENCE_PLOT)
    plot_error_examples(panels, out / EXAMPLES_PLOT)
    plot_error_vs_quality(image_quality(pixels), np.array([bool(s["errors"]) for s in result["per_study"]]),
                          out / QUALITY_PLOT)
    atomic_write_text(out / ERROR_ANALYSIS, json.dumps(result, indent=2, default=float))
    atomic_write_text(out / ERROR_SUMMARY, json.dumps(summary, indent=2, default=float))
    return summary
