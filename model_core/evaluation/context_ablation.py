"""The clinical-context ablation: one trained model's drafts of the same validation studies, prompted with the
clinical context (indication, sex/age, prior study) and without it (the instruction alone).

What it measures is how much the trained model uses the context it was trained with; a model trained without
context at all is a separate training run. Scored on validation, never on test (decisions are taken on it).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from model_core.chexpert import binarize
from model_core.config import GenerationConfig, build_section
from model_core.data.iu_xray import load_iu_xray
from model_core.data.manifest import EMBEDDED_ROOT
from model_core.evaluation.evaluate import predict_studies
from model_core.evaluation.metrics import distinct_drafts, finding_naming, paired_comparison
from model_core.labels.labeler import label_reports
from model_core.modeling.model_dir import load_model_dir


def context_ablation(model, dataset: dict, gen: GenerationConfig, n_boot: int = 1000, seed: int = 0) -> dict:
    """Drafts with and without clinical context for every study of `dataset`; paired differences (with - without).

    Returns {"with_context", "without_context", "with_minus_without": {BLEU-4, ROUGE-L, CE micro F1, CE macro F1:
    CI dict}, "naming": {side: per critical finding}, "drafts": {side: distinct drafts}, "changed_drafts": share
    of studies whose draft changes, "n_studies", "seconds"}.
    """
    started = time.perf_counter()
    with_ctx = predict_studies(model, dataset, gen, use_context=True)
    without = predict_studies(model, dataset, gen, use_context=False)
    studies = with_ctx["studies"]
    references = [s["report"] for s in studies]
    truth = binarize(np.stack([s["labels"] for s in studies]))
    compared = paired_comparison(references, with_ctx["texts"], without["texts"], truth, n_boot, seed)
    return {
        "with_context": compared["a"], "without_context": compared["b"], "with_minus_without": compared["a_minus_b"],
        "naming": {"with_context": finding_naming(label_reports(with_ctx["texts"]), truth),
                   "without_context": finding_naming(label_reports(without["texts"]), truth)},
        "drafts": {"with_context": distinct_drafts(with_ctx["texts"]),
                   "without_context": distinct_drafts(without["texts"])},
        "changed_drafts": float(np.mean([a != b for a, b in zip(with_ctx["texts"], without["texts"])])),
        "studies_with_prior_stated": sum(1 for s in studies if str(s["metadata"].get("comparison") or "").strip()),
        "n_studies": compared["n_studies"], "seconds": round(time.perf_counter() - started, 1),
    }


def context_ablation_on_validation(model_dir: str | Path, images_root: str | Path = EMBEDDED_ROOT,
                                   manifest: str | Path | None = None, limit_studies: int | None = None,
                                   n_boot: int = 1000, seed: int = 0) -> dict:
    """`context_ablation` of a trained model directory on the validation split (the first `limit_studies`)."""
    model, _, saved = load_model_dir(model_dir)
    gen = build_section(GenerationConfig, saved.get("generation", {}), "generation.")
    dataset = load_iu_xray(root=images_root, split="val", views=("Frontal", "Lateral"), manifest=manifest,
                           image_size=model.image_size, limit_studies=limit_studies)
    out = context_ablation(model, dataset, gen, n_boot, seed)
    out["model_dir"], out["split"] = str(model_dir), "val"
    return out
