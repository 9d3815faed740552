"""Online QA over every critical finding and its equality boundaries (issue 12, item 5: QA ignoring Fracture and
`>=` → `>` mutants survived tests that used Pneumothorax only). A probability exactly at the threshold is a
detector positive; a confidence exactly at the requested threshold is not low. Reasons, kinds and codes are
asserted as literals (they are logged and counted). Run by benchmarks/mutation_safety.py (module qa)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from model_core.chexpert import CHEXPERT_LABELS, CRITICAL_FINDINGS, LABEL_INDEX
from serving.qa import DETECTOR_ONLY, LOW_CONFIDENCE, TEXT_ONLY, review, unsupported_critical

STATES = {"Pneumothorax": "Small right pneumothorax.", "Fracture": "Acute rib fracture.",
          "Lung Lesion": "A 2 cm lung mass in the right upper lobe.",
          "Pleural Effusion": "Large left pleural effusion."}
UNCERTAIN = {"Pneumothorax": "Cannot exclude pneumothorax.", "Fracture": "Possible rib fracture.",
             "Lung Lesion": "Possible lung mass.", "Pleural Effusion": "Possible small pleural effusion."}
NEUTRAL = "Heart size is normal."
THRESHOLDS = {"Pneumothorax": 0.3, "Fracture": 0.35, "Lung Lesion": 0.4, "Pleural Effusion": 0.45}


def _probs(finding: str, p: float) -> np.ndarray:
    probs = np.full(len(CHEXPERT_LABELS), 0.99)      # non-critical labels high: QA must not read them
    for other in CRITICAL_FINDINGS:
        probs[LABEL_INDEX[other]] = 0.0
    probs[LABEL_INDEX[finding]] = p
    return probs


def _code(kind: str, finding: str) -> str:
    return f"{kind}:{finding.replace(' ', '_')}"


@pytest.mark.parametrize("finding", CRITICAL_FINDINGS)
def test_detector_at_its_threshold_without_the_text_is_flagged(finding):
    t = THRESHOLDS[finding]
    qa = review(NEUTRAL, _probs(finding, t), THRESHOLDS, 0.5)
    assert qa.requires_review is True
    assert qa.reasons == [f"{finding}: the detector flags it (p={t:.2f} ≥ threshold {t:.2f}) but the report text "
                          "does not state it"]
    assert (qa.kinds, qa.codes) == ([DETECTOR_ONLY], [_code("detector_only", finding)])
    assert (qa.detector_critical, qa.text_critical) == ([finding], [])


@pytest.mark.parametrize("finding", CRITICAL_FINDINGS)
def test_detector_just_below_its_threshold_without_the_text_passes(finding):
    qa = review(NEUTRAL, _probs(finding, THRESHOLDS[finding] - 0.01), THRESHOLDS, 0.5)
    assert (qa.requires_review, qa.reasons, qa.detector_critical, qa.text_critical) == (False, [], [], [])


@pytest.mark.parametrize("finding", CRITICAL_FINDINGS)
def test_text_without_the_detector_is_flagged(finding):
    p = THRESHOLDS[finding] - 0.01
    qa = review(STATES[finding], _probs(finding, p), THRESHOLDS, 0.5)
    assert qa.requires_review is True
    assert qa.reasons == [f"{finding}: the report text states it but the detector does not support it "
                          f"(p={p:.2f} < threshold {THRESHOLDS[finding]:.2f})"]
    assert (qa.kinds, qa.codes) == ([TEXT_ONLY], [_code("text_only", finding)])
    assert (qa.detector_critical, qa.text_critical) == ([], [finding])


@pytest.mark.parametrize("finding", CRITICAL_FINDINGS)
@pytest.mark.parametrize("texts", [STATES, UNCERTAIN], ids=["stated", "uncertain"])
def test_text_and_detector_at_its_threshold_agree(finding, texts):
    qa = review(texts[finding], _probs(finding, THRESHOLDS[finding]), THRESHOLDS, 0.5)
    assert (qa.requires_review, qa.reasons, qa.kinds, qa.codes) == (False, [], [], [])
    assert qa.detector_critical == qa.text_critical == [finding]


@pytest.mark.parametrize("finding", CRITICAL_FINDINGS)
def test_a_negated_finding_is_not_in_the_text(finding):
    text = f"No {STATES[finding].rstrip('.').split()[-1].lower()}."
    qa = review(text, _probs(finding, 0.0), THRESHOLDS, 0.5)
    assert (qa.requires_review, qa.text_critical) == (False, [])


@pytest.mark.parametrize("finding", CRITICAL_FINDINGS)
def test_a_finding_without_a_threshold_uses_one_half(finding):
    others = {k: v for k, v in THRESHOLDS.items() if k != finding}
    assert review(NEUTRAL, _probs(finding, 0.5), others, 0.5).kinds == [DETECTOR_ONLY]
    assert review(NEUTRAL, _probs(finding, 0.49), others, 0.5).requires_review is False


def test_every_disagreement_is_reported_in_critical_finding_order():
    probs = _probs("Fracture", 0.9)
    probs[LABEL_INDEX["Pleural Effusion"]] = 0.9
    text = STATES["Pneumothorax"] + " " + STATES["Lung Lesion"] + " " + STATES["Pleural Effusion"]
    qa = review(text, probs, THRESHOLDS, 0.5)
    assert qa.codes == ["text_only:Pneumothorax", "detector_only:Fracture", "text_only:Lung_Lesion"]
    assert qa.detector_critical == ["Fracture", "Pleural Effusion"]
    assert qa.text_critical == ["Pneumothorax", "Lung Lesion", "Pleural Effusion"]


@dataclass
class Finding:
    label: str
    confidence: float
    is_critical: bool


@pytest.mark.parametrize("finding", CRITICAL_FINDINGS)
def test_low_confidence_is_strictly_below_the_requested_threshold(finding):
    probs, t = _probs(finding, THRESHOLDS[finding]), THRESHOLDS[finding]
    at = review(STATES[finding], probs, THRESHOLDS, 0.6, [Finding(finding, 0.6, True)])
    assert (at.requires_review, at.reasons) == (False, [])
    below = review(STATES[finding], probs, THRESHOLDS, 0.6, [Finding(finding, 0.59, True)])
    assert below.requires_review is True
    assert below.reasons == [f"{finding}: critical finding reported with confidence 0.59, below the requested "
                             "threshold 0.60"]
    assert (below.kinds, below.codes) == ([LOW_CONFIDENCE], [_code("low_confidence", finding)])
    assert below.detector_critical == below.text_critical == [finding] and t == THRESHOLDS[finding]


def test_low_confidence_of_a_non_critical_finding_is_not_flagged():
    qa = review(NEUTRAL, _probs("Fracture", 0.0), THRESHOLDS, 0.6, [Finding("Cardiomegaly", 0.1, False)])
    assert (qa.requires_review, qa.reasons) == (False, [])


@pytest.mark.parametrize("finding", CRITICAL_FINDINGS)
def test_unsupported_critical_is_a_positive_text_label_below_its_threshold(finding):
    text_labels = np.zeros(len(CHEXPERT_LABELS))
    text_labels[LABEL_INDEX[finding]] = 1
    t = THRESHOLDS[finding]
    assert unsupported_critical(text_labels, _probs(finding, t), THRESHOLDS) == []
    assert unsupported_critical(text_labels, _probs(finding, t - 0.01), THRESHOLDS) == [finding]
    others = {k: v for k, v in THRESHOLDS.items() if k != finding}
    assert unsupported_critical(text_labels, _probs(finding, 0.49), others) == [finding]
    assert unsupported_critical(text_labels, _probs(finding, 0.5), others) == []
    text_labels[LABEL_INDEX[finding]] = -1                         # uncertain: not an assertion
    assert unsupported_critical(text_labels, _probs(finding, 0.0), THRESHOLDS) == []
