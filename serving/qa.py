"""Online quality assurance of each generated report: when must a radiologist look first?

Two independent readings of the critical findings (pneumothorax, fracture, lung lesion, pleural effusion):
- the detection head, positive when its calibrated probability reaches the model's operating threshold
  (`detection.json`: screening points tuned on validation for high sensitivity);
- the report labeler (`model_core.labels.text_mentions`) on the generated text, positive when the text asserts
  the finding or raises it as possible (uncertain counts: "cannot exclude pneumothorax" must be seen).

Review is required when they disagree in either direction, or when a critical finding listed in the report has
a confidence below the request's `confidence_threshold`. Reasons name only findings and numbers (no report
text, no identifiers), so they may be logged, counted and returned.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from model_core.chexpert import CRITICAL_FINDINGS, LABEL_INDEX, NEGATIVE
from model_core.labels.labeler import text_mentions

DETECTOR_ONLY, TEXT_ONLY, LOW_CONFIDENCE = "detector_only", "text_only", "low_confidence"
AUTOMATION_PAUSED = "automation_paused"      # not a QA finding: the operator's pause (serving.automation)


@dataclass
class QAResult:
    requires_review: bool
    reasons: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)          # one of the constants above per reason
    codes: list[str] = field(default_factory=list)          # per reason "<kind>:<Finding_Name>" (prediction log)
    detector_critical: list[str] = field(default_factory=list)
    text_critical: list[str] = field(default_factory=list)


def review(text: str, probs: np.ndarray, thresholds: dict[str, float], confidence_threshold: float,
           findings: list | None = None) -> QAResult:
    """Compare detector and text on the critical findings; see the module docstring.

    findings: the structured report's findings (objects with .label, .confidence, .is_critical); the
    low-confidence rule looks at the critical ones among them.
    """
    mentions = text_mentions(text)
    detector, in_text, reasons, kinds, labels = [], [], [], [], []
    for label in CRITICAL_FINDINGS:
        p, t = float(probs[LABEL_INDEX[label]]), float(thresholds.get(label, 0.5))
        det = p >= t
        txt = mentions.get(label, NEGATIVE) != NEGATIVE
        if det:
            detector.append(label)
        if txt:
            in_text.append(label)
        if det and not txt:
            reasons.append(f"{label}: the detector flags it (p={p:.2f} ≥ threshold {t:.2f}) but the report text "
                           "does not state it")
            kinds.append(DETECTOR_ONLY)
            labels.append(label)
        elif txt and not det:
            reasons.append(f"{label}: the report text states it but the detector does not support it "
                           f"(p={p:.2f} < threshold {t:.2f})")
            kinds.append(TEXT_ONLY)
            labels.append(label)
    for f in findings or []:
        if f.is_critical and f.confidence < confidence_threshold:
            reasons.append(f"{f.label}: critical finding reported with confidence {f.confidence:.2f}, below the "
                           f"requested threshold {confidence_threshold:.2f}")
            kinds.append(LOW_CONFIDENCE)
            labels.append(f.label)
    codes = [f"{kind}:{label.replace(' ', '_')}" for kind, label in zip(kinds, labels)]
    return QAResult(bool(reasons), reasons, kinds, codes, detector, in_text)


def unsupported_critical(text_labels: np.ndarray, probs: np.ndarray, thresholds: dict[str, float]) -> list[str]:
    """Critical findings the text asserts positive (`label_report` == 1) that the detection head does not reach
    its threshold for: the evaluation's hallucination rate vs the detection head
    (`model_core.evaluation.evaluate.hallucinations`), counted per report for the pause alert."""
    return [label for label in CRITICAL_FINDINGS
            if text_labels[LABEL_INDEX[label]] == 1 and float(probs[LABEL_INDEX[label]]) < thresholds.get(label, 0.5)]
