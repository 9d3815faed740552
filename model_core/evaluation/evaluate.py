"""Evaluation of the report generator on any IU-format test set, beside the template baseline.

Per study (frontal images; lateral ones stand in when a study has no frontal image):
- NLG: BLEU-1..4 and ROUGE-L (`model_core.evaluation.metrics`, R2Gen conventions, findings section).
- Clinical efficacy: labeler on the generated text vs the MeSH-derived truth, micro/macro and per finding.
- Critical-finding detection (pneumothorax, fracture, lung lesion = mass, pleural effusion): sensitivity and
  specificity of the detection head at the validation-chosen thresholds (Wilson 95 % CI, plus bootstrap).
- Hallucination: a critical finding asserted (positive) in the generated text that is not supported
  (a) by the ground truth (the gated figure) and (b) by the detection head (the online QA signal).
  Rate = share of generated reports with at least one unsupported critical assertion; the per-assertion
  share is reported too.
- Detection head: per-finding AUROC with bootstrap CIs and positives, macro AUROC over the labels with >= 10 test
  positives; calibration (ECE before/after temperature, bootstrap CIs).
- Naming: per critical finding, how many MeSH-positive studies' drafts name it (labeler on the draft), and the
  number of distinct drafts (a model that writes one text for every study names nothing).
- Generation latency (beam 4, batch 1 and 8).
- RadGraph F1 only when the `radgraph` package and its model are installed locally.
Every rate carries a 95 % bootstrap CI (studies resampled, `model_core.stats`).
"""

from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from model_core.artifacts import BASELINE_EVAL_DIR, CALIBRATION_PLOT, METRICS, PER_FINDING_F1_PLOT, PREDICTIONS
from model_core.chexpert import CHEXPERT_LABELS, CRITICAL_FINDINGS, LABEL_INDEX, binarize
from model_core.config import EvalConfig, GenerationConfig, build_section
from model_core.data.images import load_images, stack_views
from model_core.data.iu_xray import group_studies, load_iu_xray, view_slots
from model_core.evaluation.baseline import dataset_paths, evaluate_baseline
from model_core.evaluation.metrics import detection_auroc, distinct_drafts, finding_naming, report_generation_metrics
from model_core.files import atomic_write_bytes, atomic_write_text
from model_core.labels.labeler import label_reports
from model_core.modeling.generation import generate_texts, structure_report
from model_core.modeling.grounding import ground_report, stated_findings
from model_core.modeling.model import RadiologyMultimodalModel
from model_core.modeling.model_dir import load_model_dir
from model_core.stats import bootstrap_ci, expected_calibration_error, latency_summary, sensitivity_specificity
from model_core.training.examples import slot_features

log = logging.getLogger(__name__)


@torch.no_grad()
def predict_studies(model: RadiologyMultimodalModel, dataset: dict, gen: GenerationConfig, batch_size: int = 8,
                    use_context: bool = True, feature_cache: str | None = None) -> dict:
    """Generate one report per study from its view slots, filled exactly as in training and serving
    (`view_slots`: frontal then lateral for a two-view model, a missing view marked, never an image twice).

    Returns the study table, texts, label logits (S, 14), per-batch seconds and "study_pixels" (S, V, 1, H, W);
    "lm_drafts": the LM's texts before grounded drafting (`model_core.modeling.grounding`; the same as "texts" when
    the model does not ground), for the ablation.
    feature_cache: a frozen encoder's on-disk cache (the training run's); the features are then read from it
    rather than recomputed (same weights, same image bytes, same size: the cache's key).
    use_context=False prompts with the instruction alone (the clinical-context ablation)."""
    studies = group_studies(dataset)
    slots = [view_slots(s, model.num_views) for s in studies]
    pixels = load_images(dataset["images"], model.image_size, "evaluation")
    study_pixels = torch.stack([stack_views([pixels[r] if r is not None else None for r in slot], model.image_size)
                                for slot in slots])
    features = None
    if feature_cache and model.config.vision.freeze:
        features = slot_features(model, list(dataset["images"]), slots, feature_cache, batch_size)
    texts, drafts, logits, batch_seconds = [], [], [], []
    for start in tqdm(range(0, len(studies), batch_size), desc="generate", leave=False, disable=None):
        chunk = slice(start, start + batch_size)
        t0 = time.perf_counter()
        contexts = [s["metadata"] if use_context else None for s in studies[chunk]]
        if features is not None:
            out_drafts, out_logits = generate_texts(model, None, contexts, gen, vision_features=features[chunk],
                                                    ground=False)
        else:
            out_drafts, out_logits = generate_texts(model, study_pixels[chunk], contexts, gen, ground=False)
        out_texts = out_drafts
        if model.config.grounded_findings:   # what generate_texts would do itself, the drafts kept for the ablation
            stated = stated_findings(out_logits.numpy(), model.config.grounding_logit_thresholds)
            out_texts = [ground_report(text, labels) for text, labels in zip(out_drafts, stated)]
        batch_seconds.append((time.perf_counter() - t0, len(out_texts)))
        texts += out_texts
        drafts += out_drafts
        logits.append(out_logits)
    return {"studies": studies, "texts": texts, "lm_drafts": drafts, "logits": torch.cat(logits).numpy(),
            "batch_seconds": batch_seconds, "study_pixels": study_pixels}


@torch.no_grad()
def measure_latency(model: RadiologyMultimodalModel, study_pixels: torch.Tensor, gen: GenerationConfig,
                    n_single: int = 20, n_batches: int = 3) -> dict:
    """Wall time per report of the torch model, encoder included, on studies' view slots (S, V, 1, H, W) as
    served: batch 1 (n_single reports) and batch 8 (n_batches batches; per-report = batch/8), each summarized
    by `model_core.stats.latency_summary`."""
    single = []
    for i in range(min(n_single, len(study_pixels))):
        t0 = time.perf_counter()
        generate_texts(model, study_pixels[i:i + 1], None, gen)
        single.append(1000 * (time.perf_counter() - t0))
    batched = []
    for b in range(n_batches):
        chunk = study_pixels[(b * 8) % max(len(study_pixels) - 8, 1):][:8]
        t0 = time.perf_counter()
        generate_texts(model, chunk, None, gen)
        batched.append(1000 * (time.perf_counter() - t0) / len(chunk))
    return {"num_beams": gen.num_beams, "threads": torch.get_num_threads(), "views": int(study_pixels.shape[1]),
            "batch_1": latency_summary(single), "batch_8_per_report": latency_summary(batched)}


def critical_detection(probs: np.ndarray, truth: np.ndarray, thresholds: dict, n_boot: int, seed: int) -> dict:
    """Sensitivity/specificity per critical finding at its threshold, Wilson and bootstrap 95 % CIs."""
    out = {}
    for label in CRITICAL_FINDINGS:
        k = LABEL_INDEX[label]
        y, p, t = truth[:, k].astype(int), probs[:, k], float(thresholds.get(label, 0.5))
        stats = sensitivity_specificity(y, p, t)
        stats["positives"], stats["negatives"] = int(y.sum()), int((1 - y).sum())
        pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
        if len(pos):
            stats["sensitivity_bootstrap"] = bootstrap_ci(lambda i: float((p[pos][i] >= t).mean()), len(pos),
                                                          n_boot, seed)
        if len(neg):
            stats["specificity_bootstrap"] = bootstrap_ci(lambda i: float((p[neg][i] < t).mean()), len(neg),
                                                          n_boot, seed)
        # Radiologist-review rate implied by this operating point: share of studies flagged for this finding.
        stats["flag_rate"] = float((p >= t).mean())
        out[label] = stats
    return out


def grounding_ablation(model: RadiologyMultimodalModel, detection: dict, references: list[str], drafts: list[str],
                       truth: np.ndarray, eval_cfg: EvalConfig) -> dict:
    """Grounded drafting on/off: the LM's own drafts scored like the served texts (same references, labels and
    resamples), so what grounding buys or costs is measured on every evaluation."""
    if not model.config.grounded_findings:
        return {"enabled": False}
    nb, seed = eval_cfg.n_bootstrap, eval_cfg.seed
    draft_labels = label_reports(drafts)
    lm = report_generation_metrics(references, drafts, truth, draft_labels, n_boot=nb, seed=seed,
                                   section=eval_cfg.section)
    chosen = detection.get("grounding", {})
    return {
        "enabled": True,
        "thresholds": chosen.get("thresholds"), "rule": chosen.get("rule"),
        "critical_false_share": model.config.grounding_critical_false_share,
        "lm_drafts": {
            "BLEU-4": lm["nlg"]["BLEU-4"], "ROUGE-L": lm["nlg"]["ROUGE-L"],
            "CE micro F1": lm["clinical_efficacy"]["micro"]["f1"],
            "CE macro F1": lm["clinical_efficacy"]["macro"]["f1"],
            "hallucination_rate": hallucinations(draft_labels, truth, nb, seed)["rate"],
            "naming": {name: {"named": v["named"], "positives": v["positives"]}
                       for name, v in finding_naming(draft_labels, truth).items()},
            "distinct": distinct_drafts(drafts)["distinct"],
        },
    }


def hallucinations(text_labels: np.ndarray, support: np.ndarray, n_boot: int, seed: int) -> dict:
    """Critical findings asserted positive in the text (S, 14) but absent from `support` (S, 14, 0/1)."""
    idx = [LABEL_INDEX[c] for c in CRITICAL_FINDINGS]
    asserted = text_labels[:, idx] == 1
    unsupported = asserted & (support[:, idx] == 0)
    per_report = unsupported.any(axis=1).astype(float)
    n_assert = int(asserted.sum())
    return {
        "rate": bootstrap_ci(lambda i: float(per_report[i].mean()), len(per_report), n_boot, seed),
        "reports_with_unsupported_critical": int(per_report.sum()),
        "reports": int(len(per_report)),
        "critical_assertions": n_assert,
        "unsupported_assertions": int(unsupported.sum()),
        "per_assertion_rate": float(unsupported.sum() / n_assert) if n_assert else 0.0,
        "by_finding": {c: int(unsupported[:, j].sum()) for j, c in enumerate(CRITICAL_FINDINGS)},
    }


def calibration(raw_probs: np.ndarray, probs: np.ndarray, truth: np.ndarray, temperature: float, n_boot: int,
                seed: int) -> dict:
    """ECE of the detection head (all 14 labels) before and after temperature scaling, with bootstrap CIs."""
    def ece_ci(p):
        return bootstrap_ci(lambda i: expected_calibration_error(p[i], truth[i]), len(truth), n_boot, seed)

    before, after = ece_ci(raw_probs), ece_ci(probs)
    return {"temperature": temperature, "test_ece_uncalibrated": before["value"], "test_ece": after["value"],
            "test_ece_uncalibrated_ci": before, "test_ece_ci": after}


def radgraph_f1(references: list[str], hypotheses: list[str]) -> dict | str:
    try:
        # radgraph is optional (not a dependency) and needs its model files locally: imported only here.
        from radgraph import F1RadGraph
    except ImportError:
        return "not computed: the radgraph package is not installed (its model cannot be downloaded here)"
    try:
        scorer = F1RadGraph(reward_level="partial")
        score, *_ = scorer(refs=references, hyps=hypotheses)
        return {"partial_f1": float(score)}
    except Exception as exc:  # noqa: BLE001 — a missing local model must not fail the evaluation
        return f"not computed: radgraph could not load its model locally ({type(exc).__name__})"


def evaluate_model(model: RadiologyMultimodalModel, test_dataset: dict, detection: dict | None = None,
                   gen: GenerationConfig | None = None, eval_cfg: EvalConfig | None = None,
                   out_dir: str | Path | None = None, baseline_metrics: dict | None = None,
                   latency: bool = True, feature_cache: str | None = None) -> dict:
    """Score the model on a loaded test set; with out_dir, write metrics.json, predictions.jsonl and plots.
    feature_cache: a frozen encoder's feature cache (`predict_studies`)."""
    gen, eval_cfg = gen or GenerationConfig(), eval_cfg or EvalConfig()
    detection = detection or {"temperature": 1.0, "thresholds": {}}
    started = time.perf_counter()
    pred = predict_studies(model, test_dataset, gen, feature_cache=feature_cache)
    studies, texts = pred["studies"], pred["texts"]
    temperature = float(detection.get("temperature", 1.0))
    probs = 1 / (1 + np.exp(-pred["logits"] / temperature))
    raw_probs = 1 / (1 + np.exp(-pred["logits"]))
    truth = binarize(np.stack([s["labels"] for s in studies]))
    references = [s["report"] for s in studies]
    text_labels = label_reports(texts)
    reference_text_labels = label_reports(references)
    nb, seed = eval_cfg.n_bootstrap, eval_cfg.seed

    metrics = report_generation_metrics(references, texts, truth, text_labels, n_boot=nb, seed=seed,
                                        section=eval_cfg.section)
    metrics["ce_protocol"] = "labeler(generated full report) vs MeSH-derived labels; U-Ones"
    vs_ref = report_generation_metrics(references, texts, reference_text_labels, text_labels, n_boot=nb, seed=seed,
                                       section=eval_cfg.section)["clinical_efficacy"]
    metrics["clinical_efficacy_vs_reference_labeler"] = {
        "micro_f1": vs_ref["micro"]["f1"], "macro_f1": vs_ref["macro"]["f1"],
        "protocol": "labeler(generated) vs labeler(reference report)"}
    thresholds = detection.get("thresholds", {})
    detector_positive = np.stack([probs[:, k] >= thresholds.get(label, 0.5) for k, label in
                                  enumerate(CHEXPERT_LABELS)], axis=1).astype(int)
    metrics["critical_findings"] = critical_detection(probs, truth, thresholds, nb, seed)
    metrics["hallucination"] = {
        "vs_ground_truth": hallucinations(text_labels, truth, nb, seed),
        "vs_detection_head": hallucinations(text_labels, detector_positive, nb, seed),
        "definition": "share of generated reports asserting a critical finding (labeler positive) that the "
                      "reference (MeSH) or the detection head does not support",
    }
    metrics["detection"] = detection_auroc(probs, truth, nb, seed)
    metrics["naming"] = finding_naming(text_labels, truth)
    metrics["drafts"] = distinct_drafts(texts)
    metrics["grounding"] = grounding_ablation(model, detection, references, pred["lm_drafts"], truth, eval_cfg)
    metrics["calibration"] = calibration(raw_probs, probs, truth, temperature, nb, seed)
    metrics["radgraph"] = radgraph_f1(references, texts)
    generation_seconds = sum(s for s, _ in pred["batch_seconds"])
    metrics["generation"] = {"num_beams": gen.num_beams, "eval_batch_size": 8,
                             "mean_ms_per_report": 1000 * generation_seconds / max(len(texts), 1)}
    if latency:
        metrics["latency"] = measure_latency(model, pred["study_pixels"], gen)
    metrics["summary"] = _summary(metrics)
    if baseline_metrics is not None:
        metrics["baseline"] = baseline_metrics.get("summary", baseline_metrics)
    metrics["view_fallback_studies"] = sum(s["view_fallback"] for s in studies)
    metrics["seconds"] = round(time.perf_counter() - started, 1)

    if out_dir is not None:
        write_evaluation(Path(out_dir), metrics, studies, texts, text_labels, reference_text_labels, truth, probs,
                         thresholds)
    return metrics


def _summary(metrics: dict) -> dict:
    ce = metrics["clinical_efficacy"]
    out = {name: metrics["nlg"][name] for name in ("BLEU-1", "BLEU-4", "ROUGE-L")}
    out["CE micro F1"], out["CE macro F1"] = ce["micro"]["f1"], ce["macro"]["f1"]
    out["hallucination rate"] = metrics["hallucination"]["vs_ground_truth"]["rate"]
    out["detection macro AUROC"] = metrics["detection"]["macro"]
    return out


def write_evaluation(out: Path, metrics: dict, studies, texts, text_labels, reference_text_labels, truth, probs,
                     thresholds) -> None:
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, s in enumerate(studies):
        structured = structure_report(texts[i], probs[i], thresholds)
        lines.append(json.dumps({
            "study_id": s["study_id"], "generated": texts[i], "structured": structured.to_dict(),
            "reference": s["report"], "generated_labels": text_labels[i].tolist(),
            "reference_text_labels": reference_text_labels[i].tolist(), "mesh_labels": truth[i].tolist(),
            "detection_probabilities": [round(float(p), 5) for p in probs[i]], "view_fallback": s["view_fallback"],
        }))
    atomic_write_text(out / PREDICTIONS, "\n".join(lines) + "\n")
    plot_per_finding_f1(metrics, out / PER_FINDING_F1_PLOT)
    plot_reliability(probs, truth, out / CALIBRATION_PLOT)
    atomic_write_text(out / METRICS, json.dumps(metrics, indent=2, default=float))


def plot_per_finding_f1(metrics: dict, path: Path) -> None:
    per = metrics["clinical_efficacy"]["per_label"]
    labels = list(CHEXPERT_LABELS)
    f1 = [per[name]["f1"] or 0.0 for name in labels]
    fig = Figure(figsize=(9, 5))
    ax = fig.subplots()
    ax.barh(labels[::-1], f1[::-1], color=["#c0392b" if n in CRITICAL_FINDINGS else "#3b6ea8" for n in labels[::-1]])
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1 (labeler on generated report vs MeSH-derived truth)")
    ax.set_title(f"Per-finding F1, {metrics['n_studies']} test studies (red: critical findings)")
    for y, v in enumerate(f1[::-1]):
        ax.text(v + 0.01, y, f"{v:.2f}", va="center", fontsize=8)
    fig.tight_layout()
    _save_fig(fig, path)


def plot_reliability(probs: np.ndarray, truth: np.ndarray, path: Path, bins: int = 10) -> None:
    p, y = probs.ravel(), truth.ravel()
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    centres = [(edges[b] + edges[b + 1]) / 2 for b in range(bins) if (which == b).any()]
    observed = [y[which == b].mean() for b in range(bins) if (which == b).any()]
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.plot(centres, observed, "o-", label=f"detection head (ECE {expected_calibration_error(p, y):.3f})")
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed frequency")
    ax.set_title("Detection-head reliability (test, all 14 labels)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    _save_fig(fig, path)


def _save_fig(fig: Figure, path: Path) -> None:
    # A bare Figure (no pyplot): renders with Agg, touches no global backend state, needs no close().
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    atomic_write_bytes(path, buffer.getvalue())


def evaluate_model_dir(model_dir: str | Path, manifest: str | Path | None, images_root: str | Path,
                       out_dir: str | Path, split: str = "all", eval_cfg: EvalConfig | None = None,
                       gen: GenerationConfig | None = None, baseline_metrics: dict | None = None,
                       limit_studies: int | None = None) -> dict:
    """`rrg evaluate`: a trained model directory on any IU-format manifest (all views; frontal preferred)."""
    model, detection, saved = load_model_dir(model_dir)
    if gen is None:
        gen = build_section(GenerationConfig, saved.get("generation", {}), "generation.")
    dataset = load_iu_xray(root=images_root, split=split, views=("Frontal", "Lateral"), manifest=manifest,
                           image_size=model.image_size, limit_studies=limit_studies)
    # The training run's feature cache (keyed by weights, image bytes and size) spares re-encoding the images.
    feature_cache = saved.get("train", {}).get("feature_cache")
    metrics = evaluate_model(model, dataset, detection, gen, eval_cfg, out_dir=out_dir,
                             baseline_metrics=baseline_metrics, feature_cache=feature_cache)
    metrics["model_dir"], metrics["split"] = str(model_dir), split
    atomic_write_text(Path(out_dir) / METRICS, json.dumps(metrics, indent=2, default=float))
    return metrics


def evaluate_candidate(cfg, model_dir: str | Path, out_dir: str | Path, baseline_dir: str | Path) -> dict:
    """The pipeline's evaluation step: the trained template baseline (`baseline_dir`, written by
    `model_core.evaluation.baseline.train_baseline` in its own step) and the candidate model (`model_dir`)
    on the test split of `cfg.data`, side by side. Trains nothing.

    Writes `out_dir/metrics.json` (the candidate's, with the baseline's summary under "baseline"), its
    predictions and plots, and `out_dir/baseline/eval/` (the baseline's metrics.json, predictions.jsonl).
    """
    out = Path(out_dir)
    root, manifest = dataset_paths(cfg.data)
    baseline = evaluate_baseline(baseline_dir, manifest=manifest, images_root=root, out_dir=out / BASELINE_EVAL_DIR,
                                 split="test", n_boot=cfg.eval.n_bootstrap, seed=cfg.eval.seed,
                                 section=cfg.eval.section, limit_studies=cfg.data.limit_studies)
    return evaluate_model_dir(model_dir, manifest, root, out, split="test", eval_cfg=cfg.eval,
                              baseline_metrics=baseline, limit_studies=cfg.data.limit_studies)
