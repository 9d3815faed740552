"""The findings hint: the detection head's findings stated in the report prompt (`ModelConfig.findings_hint`).

    findings = hinted_findings(label_logits, model.config.hint_logit_thresholds)   # [["cardiomegaly"], [], ...]
    prompt = build_prompt(context, findings=findings[0])       # "... Detected: cardiomegaly. Indication: ..."

A small LM trained on 2,700 reports learns the normal template long before it learns to read findings from
visual tokens; stated findings give it the words. Training states each study's own labels (MeSH-derived, the
uncertain policy applied), generation states the head's at thresholds chosen on validation, so the draft names
what the head detects. The QA check (head vs text) then agrees more by construction: the head's operating
thresholds for review flags are separate and unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from model_core.chexpert import CHEXPERT_LABELS

NO_FINDING = "No Finding"
# How the prompt names each label (No Finding is never stated: "Detected: none." says it).
HINT_NAMES = {label: label.lower() for label in CHEXPERT_LABELS if label != NO_FINDING}
HINT_NAMES["Pleural Other"] = "other pleural abnormality"


def names_of(positive: Sequence[bool] | np.ndarray) -> list[str]:
    """The hint of one study from a 0/1 (or bool) vector over the 14 labels, in CheXpert order."""
    return [HINT_NAMES[label] for label, on in zip(CHEXPERT_LABELS, positive) if on and label in HINT_NAMES]


def hinted_findings(label_logits, logit_thresholds: Sequence[float] | None) -> list[list[str]]:
    """Per study, the findings the head states: raw logit (B, 14) ≥ the label's threshold."""
    if logit_thresholds is None:
        raise ValueError("the model states its findings in the prompt (findings_hint) but has no hint thresholds; "
                         "training chooses them on validation (model_core.training.calibration.hint_thresholds)")
    return [[HINT_NAMES[label] for label in labels if label in HINT_NAMES]
            for labels in labels_at_or_above(label_logits, logit_thresholds, "hints")]


def labels_at_or_above(label_logits, logit_thresholds: Sequence[float], what: str) -> list[list[str]]:
    """Per study, the CheXpert labels (in order) whose raw logit (B, 14) is ≥ its threshold (14 values)."""
    logits = np.asarray(label_logits, dtype=np.float64)
    thresholds = np.asarray(logit_thresholds, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[1] != len(CHEXPERT_LABELS) or thresholds.shape != (len(CHEXPERT_LABELS),):
        raise ValueError(f"{what} need logits (B, {len(CHEXPERT_LABELS)}) and {len(CHEXPERT_LABELS)} thresholds")
    return [[label for label, on in zip(CHEXPERT_LABELS, row) if on] for row in logits >= thresholds]


def logit_threshold(probability: float, temperature: float) -> float:
    """The raw-logit threshold equal to a calibrated probability threshold (σ(logit / T) ≥ p)."""
    if probability >= 1.0:
        return math.inf
    if probability <= 0.0:
        return -math.inf
    return float(temperature * math.log(probability / (1.0 - probability)))
