"""The template baseline's report writer: positive CheXpert labels → a fixed-phrase radiology report.

    positive labels ──template table──► {"findings", "impression"} ──► "FINDINGS: … IMPRESSION: …"

A study with no positive label (other than "No Finding") gets the normal report; each positive label
replaces the normal sentence of its anatomical slot. The classifier that picks the labels is
`model_core.evaluation.baseline`.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict

import numpy as np
import torch

from model_core.chexpert import CHEXPERT_LABELS, LABEL_INDEX, NUM_LABELS

# One sentence per anatomical slot of the normal report, in reading order. IU X-ray phrasing: among
# eleven candidate wordings built from the most frequent normal sentences of the train reports (e.g.
# "The heart is normal in size. The mediastinum is unremarkable. The lungs are clear.", 45 studies verbatim),
# this one scored the best findings BLEU-4 as an all-normal report on the val split (0.169; the 3-sentence
# version scores 0.060, mostly from BLEU's brevity penalty) and on train alike. Test was never looked at.
NORMAL_FINDINGS: "OrderedDict[str, str]" = OrderedDict([
    ("heart", "The heart size is normal."),
    ("mediastinum", "The mediastinal contour is within normal limits."),
    ("lungs", "The lungs are clear."),
    ("pleura", "There is no pleural effusion or pneumothorax."),
    ("bones", "There are no acute bony findings."),
])
NORMAL_IMPRESSION = "No acute cardiopulmonary abnormality."  # the most frequent IU X-ray normal impression


@dataclasses.dataclass(frozen=True)
class Template:
    slot: str          # the normal-report slot the finding replaces (or "devices": appended)
    finding: str       # sentence for the FINDINGS section
    impression: str    # phrase for the IMPRESSION section


# The explicit label → sentence table. "No Finding" has no entry: a study is normal when no other label
# is predicted, whatever the "No Finding" output says. Each wording is checked (tests) to be read back as
# its own label by `model_core.labels.label_report`, so CE measures the classifier, not the phrasing.
TEMPLATES: dict[str, Template] = {
    "Enlarged Cardiomediastinum": Template("mediastinum", "The mediastinal contour is widened.",
                                           "Widened mediastinum."),
    "Cardiomegaly": Template("heart", "The heart is enlarged.", "Cardiomegaly."),
    "Lung Opacity": Template("lungs", "There is an airspace opacity.", "Airspace opacity."),
    "Lung Lesion": Template("lungs", "There is a pulmonary nodule.", "Pulmonary nodule."),
    "Edema": Template("lungs", "There is pulmonary edema.", "Pulmonary edema."),
    "Consolidation": Template("lungs", "There is focal consolidation.", "Focal consolidation."),
    "Pneumonia": Template("lungs", "Findings are consistent with pneumonia.", "Pneumonia."),
    "Atelectasis": Template("lungs", "There is atelectasis.", "Atelectasis."),
    "Pneumothorax": Template("pleura", "There is a pneumothorax.", "Pneumothorax."),
    "Pleural Effusion": Template("pleura", "There is a pleural effusion.", "Pleural effusion."),
    "Pleural Other": Template("pleura", "There is pleural thickening.", "Pleural thickening."),
    "Fracture": Template("bones", "There is a fracture.", "Fracture."),
    "Support Devices": Template("devices", "Support devices are present.", "Support devices in place."),
}
# When only one of pneumothorax / effusion is present, the other is still explicitly negated.
_PLEURA_NEGATIONS = {"Pneumothorax": "There is no pneumothorax.", "Pleural Effusion": "There is no pleural effusion."}


def template_report(labels) -> dict:
    """Report for a label vector (14,) (positive = 1 or -1) or an iterable of positive label names.

    Returns {"findings": str, "impression": str, "text": "FINDINGS: … IMPRESSION: …",
    "positive_labels": [names in CheXpert order, "No Finding" excluded]}.
    """
    if isinstance(labels, (str, bytes)):
        raise ValueError("labels must be a label vector or an iterable of label names, not a string")
    arr = np.asarray(list(labels) if not isinstance(labels, np.ndarray | torch.Tensor) else labels)
    if arr.dtype.kind in "iuf" and arr.shape == (NUM_LABELS,):
        names = [CHEXPERT_LABELS[j] for j in np.flatnonzero(arr != 0)]
    else:
        names = [str(x) for x in arr.ravel()]
        unknown = [x for x in names if x not in LABEL_INDEX]
        if unknown:
            raise ValueError(f"unknown label name(s) {unknown}; expected names from CHEXPERT_LABELS")
    positive = [n for n in CHEXPERT_LABELS if n in set(names) and n in TEMPLATES]

    slots: dict[str, list[str]] = {slot: [] for slot in (*NORMAL_FINDINGS, "devices")}
    for name in positive:
        slots[TEMPLATES[name].slot].append(TEMPLATES[name].finding)
    # Pneumothorax / effusion that are not predicted stay explicitly negated, as radiologists write them.
    pleural = [n for n in _PLEURA_NEGATIONS if n in positive]
    if not pleural and slots["pleura"]:  # only "Pleural Other": keep the full normal negation first
        slots["pleura"].insert(0, NORMAL_FINDINGS["pleura"])
    elif len(pleural) == 1:
        (other,) = set(_PLEURA_NEGATIONS) - set(pleural)
        slots["pleura"].insert(1, _PLEURA_NEGATIONS[other])
    sentences = []
    for slot, normal in NORMAL_FINDINGS.items():
        sentences.extend(slots[slot] or [normal])
    sentences.extend(slots["devices"])
    findings = " ".join(sentences)
    impression = " ".join(TEMPLATES[n].impression for n in positive) if positive else NORMAL_IMPRESSION
    return {"findings": findings, "impression": impression,
            "text": f"FINDINGS: {findings} IMPRESSION: {impression}", "positive_labels": positive}
