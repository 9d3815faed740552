"""Grounded drafting: the detection head's findings written into the LM's draft (`ModelConfig.grounded_findings`).

    stated = stated_findings(label_logits, model.config.grounding_logit_thresholds)   # [["Cardiomegaly"], [], ...]
    text = ground_report(draft, stated[0])
    # "FINDINGS: The heart is normal in size. The lungs are clear. IMPRESSION: No acute disease."
    #   + ["Cardiomegaly"] → "FINDINGS: The heart is enlarged. The lungs are clear. IMPRESSION: Cardiomegaly."

Why: a small LM trained on 2,700 IU X-ray reports writes the normal templates of the collection's radiologists and
almost never names a finding, even when its detection head sees it (measured: 0 of 11 test effusions named; the
findings hint in the prompt did not change that, `model_core.modeling.hints`). A radiologist reading the draft must
see what the head detects, in the report's own words and place, without a sentence beside it that rules it out.

What happens to one draft, for each label the head states (probability at or above the label's statement threshold,
chosen on validation by `model_core.training.calibration.grounding_thresholds`; the critical findings within one
shared false-statement budget, so the hallucination gate still holds):
  * a sentence that already asserts the label (the labeler reads it positive or uncertain) is kept as written;
  * otherwise the first FINDINGS sentence that rules it out (a negated mention, or a normal-anatomy sentence of the
    label's region: "The lungs are clear." for atelectasis) is replaced by the label's statement (`STATEMENTS`);
    other labels that sentence ruled out and the head does not state keep a negation sentence of their own;
    further contradicting sentences are dropped;
  * with no contradicting sentence, the statement goes in reading order (heart, mediastinum, lungs, pleura, bones,
    devices);
  * an IMPRESSION that states a normal study becomes the stated labels' impressions ("Cardiomegaly. Pleural
    effusion."); support devices alone leave it as it is.
Labels the head does not state are left as the LM wrote them (the QA check flags a text the head disagrees with).
The same function runs after the torch and the ONNX Runtime decoders, so every path serves the same text.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

from model_core.chexpert import CHEXPERT_LABELS, LABEL_INDEX, NEGATIVE
from model_core.data.reports import format_report, split_sections
from model_core.labels.aggregate import mentioned_labels
from model_core.labels.labeler import find_mentions
from model_core.modeling.hints import labels_at_or_above, logit_threshold

_SENTENCE = re.compile(r"(?<=[.!?])\s+")


@dataclasses.dataclass(frozen=True)
class Statement:
    slot: str          # the region of the report it belongs to (reading order: SLOTS)
    finding: str       # the FINDINGS sentence that states the label
    impression: str    # its IMPRESSION phrase
    negation: str      # how a sentence that rules the label out names it ("no {negation}")


SLOTS = ("heart", "mediastinum", "lungs", "pleura", "bones", "devices")

# One sentence per label, IU X-ray wording; each is read back as its own label, positive, by
# `model_core.labels` (tests), so the clinical-efficacy figures measure the head, not the phrasing.
STATEMENTS: dict[str, Statement] = {
    "Enlarged Cardiomediastinum": Statement("mediastinum", "The mediastinal contour is widened.",
                                            "Widened mediastinum.", "mediastinal widening"),
    "Cardiomegaly": Statement("heart", "The heart is enlarged.", "Cardiomegaly.", "cardiomegaly"),
    "Lung Opacity": Statement("lungs", "There is an airspace opacity.", "Airspace opacity.", "focal airspace disease"),
    "Lung Lesion": Statement("lungs", "There is a pulmonary nodule.", "Pulmonary nodule.", "pulmonary nodule"),
    "Edema": Statement("lungs", "There is pulmonary edema.", "Pulmonary edema.", "pulmonary edema"),
    "Consolidation": Statement("lungs", "There is focal consolidation.", "Focal consolidation.",
                               "focal consolidation"),
    "Pneumonia": Statement("lungs", "Findings are consistent with pneumonia.", "Pneumonia.", "pneumonia"),
    "Atelectasis": Statement("lungs", "There is atelectasis.", "Atelectasis.", "atelectasis"),
    "Pneumothorax": Statement("pleura", "There is a pneumothorax.", "Pneumothorax.", "pneumothorax"),
    "Pleural Effusion": Statement("pleura", "There is a pleural effusion.", "Pleural effusion.", "pleural effusion"),
    "Pleural Other": Statement("pleura", "There is pleural thickening.", "Pleural thickening.", "pleural thickening"),
    "Fracture": Statement("bones", "There is a fracture.", "Fracture.", "acute fracture"),
    "Support Devices": Statement("devices", "Support devices are present.", "Support devices in place.",
                                 "support device"),
}

# The region a normal-anatomy sentence speaks for ("The lungs are clear." rules out what the lungs slot states).
_REGION = {
    "heart": re.compile(r"\b(?:heart|cardiac|cardiomediastinal)\b", re.IGNORECASE),
    "mediastinum": re.compile(r"\b(?:cardiomediastinal|mediastin\w*)\b", re.IGNORECASE),
    "lungs": re.compile(r"\blungs?\b(?! volume)|\bairspaces?\b|\blung fields?\b|\bpulmonary vascula\w*",
                        re.IGNORECASE),
    "pleura": re.compile(r"\bpleura(?:l spaces?)?\b|\bcostophrenic\b", re.IGNORECASE),
    "bones": re.compile(r"\b(?:osseous|bony|bones?|skeletal|ribs?)\b", re.IGNORECASE),
}
_NORMAL_CUE = re.compile(r"\b(?:normal|clear|unremarkable|intact|negative|no acute|well[- ](?:expanded|aerated)"
                         r"|within normal limits|without (?:acute |evidence of )?(?:abnormality|abnormalities|disease))"
                         r"\b", re.IGNORECASE)


def stated_findings(label_logits, logit_thresholds: Sequence[float] | None) -> list[list[str]]:
    """Per study, the labels the head states: raw logit (B, 14) ≥ the label's threshold (No Finding never)."""
    if logit_thresholds is None:
        raise ValueError("the model grounds its drafts in the detection head (grounded_findings) but has no statement "
                         "thresholds; training chooses them on validation (model_core.training.calibration)")
    return [[label for label in labels if label in STATEMENTS]
            for labels in labels_at_or_above(label_logits, logit_thresholds, "grounding")]


def logit_thresholds(probability_thresholds: dict[str, float], temperature: float) -> list[float]:
    """Calibrated probability thresholds {label: p} → raw-logit thresholds in CheXpert order (σ(logit / T) ≥ p);
    a label not named is never stated."""
    return [logit_threshold(float(probability_thresholds.get(label, 1.0)), temperature) for label in CHEXPERT_LABELS]


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text) if s.strip()]


def _ruled_out(sentence: str) -> tuple[set[str], set[str], set[str]]:
    """(labels the sentence asserts, labels it negates, regions a normal-anatomy sentence speaks for)."""
    states = mentioned_labels(find_mentions(sentence))
    asserted = {label for label, state in states.items() if state != NEGATIVE}
    negated = {label for label, state in states.items() if state == NEGATIVE}
    regions = set()
    if not asserted and _NORMAL_CUE.search(sentence):
        regions = {region for region, pattern in _REGION.items() if pattern.search(sentence)}
    return asserted, negated, regions


def _negation_sentence(labels: list[str]) -> str:
    names = [STATEMENTS[label].negation for label in labels]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
    return f"There is no {listed}."


def ground_report(text: str, stated: Sequence[str]) -> str:
    """The draft `text` ("FINDINGS: … IMPRESSION: …") with the labels in `stated` written in (module docstring)."""
    unknown = [label for label in stated if label not in STATEMENTS]
    if unknown:
        raise ValueError(f"{len(unknown)} stated label(s) are not CheXpert findings with a statement")
    stated = sorted(set(stated), key=LABEL_INDEX.__getitem__)
    if not stated:
        return text
    sections = split_sections(text)
    findings = _sentences(sections["findings"])
    parsed = [_ruled_out(s) for s in findings]
    already = set().union(*(p[0] for p in parsed)) if parsed else set()
    missing = [label for label in stated if label not in already]
    replaced: dict[int, list[str]] = {}          # sentence index → what stands in its place
    appended: list[tuple[int, str]] = []         # (slot rank, sentence)
    for label in missing:
        statement = STATEMENTS[label]
        contradicting = [i for i, (_, negated, regions) in enumerate(parsed)
                         if label in negated or statement.slot in regions]
        if not contradicting:
            appended.append((SLOTS.index(statement.slot), statement.finding))
            continue
        first, rest = contradicting[0], contradicting[1:]
        replaced.setdefault(first, []).append(statement.finding)
        for i in rest:
            replaced.setdefault(i, [])
    # A replaced sentence's other negations (labels not stated) survive as their own sentence.
    for i in sorted(replaced):
        kept = [label for label in CHEXPERT_LABELS if label in parsed[i][1] and label in STATEMENTS
                and label not in stated]
        if kept:
            replaced[i].append(_negation_sentence(kept))
    out: list[str] = []
    for i, sentence in enumerate(findings):
        out.extend(replaced.get(i, [sentence]))
    for rank, sentence in sorted(appended, key=lambda item: item[0]):
        # Before the first sentence of a later region, else at the end (reading order).
        position = len(out)
        for j, existing in enumerate(out):
            regions = {r for r, pattern in _REGION.items() if pattern.search(existing)}
            if regions and min(SLOTS.index(r) for r in regions) > rank:
                position = j
                break
        out.insert(position, sentence)
    seen, unique = set(), []
    for sentence in out:                         # two labels of one sentence can leave the same negation twice
        if sentence not in seen:
            seen.add(sentence)
            unique.append(sentence)
    impression = _ground_impression(sections["impression"], [label for label in stated if label != "Support Devices"])
    return format_report(" ".join(unique), impression)


def _ground_impression(impression: str, abnormal: list[str]) -> str:
    """The stated abnormal labels the impression does not assert go first; its sentences that state a normal study
    or rule out a stated label are dropped; what else it says (an abnormality outside the 14) stays."""
    sentences = _sentences(impression)
    parsed = [_ruled_out(s) for s in sentences]
    asserted = set().union(*(p[0] for p in parsed)) if parsed else set()
    missing = [label for label in abnormal if label not in asserted]
    if not missing:
        return impression
    kept = []
    for sentence, (labels, negated, regions) in zip(sentences, parsed):
        other = any(m.state != NEGATIVE for m in find_mentions(sentence))
        normal = not labels and not other and (bool(negated) or bool(regions) or bool(_NORMAL_CUE.search(sentence))
                                              or _NORMAL_IMPRESSION.search(sentence) is not None)
        if normal or set(missing) & negated:
            continue
        kept.append(sentence)
    return " ".join([STATEMENTS[label].impression for label in missing] + kept)


# "No acute disease.", "No evidence of active disease.": normal impressions the labeler reads as no mention at all.
_NORMAL_IMPRESSION = re.compile(r"^\s*(?:no\b|negative\b|normal\b|stable\b.*\bno\b)", re.IGNORECASE)
