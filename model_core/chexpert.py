"""The 14 CheXpert observations and the label encoding shared by every part of the project.

Encoding of a label vector (float, shape (14,), CheXpert order below):
  1.0  positive (the finding is present)
  0.0  negative, or not mentioned at all
 -1.0  uncertain ("possible", "cannot exclude"); only the report labeler and MIMIC's
       CheXpert file produce it. Training code turns it into 0/1 with `binarize`.
MeSH-derived IU X-ray labels (human annotation) are always 0/1.
"""

from __future__ import annotations

import numpy as np

CHEXPERT_LABELS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
NUM_LABELS = len(CHEXPERT_LABELS)
LABEL_INDEX = {name: i for i, name in enumerate(CHEXPERT_LABELS)}

# Findings whose miss is a clinical emergency; "mass" is CheXpert's Lung Lesion.
CRITICAL_FINDINGS: tuple[str, ...] = ("Pneumothorax", "Fracture", "Lung Lesion", "Pleural Effusion")

POSITIVE, NEGATIVE, UNCERTAIN = 1.0, 0.0, -1.0


def binarize(labels: np.ndarray, uncertain: str = "ones") -> np.ndarray:
    """Map {1, 0, -1} labels to {1, 0}: uncertain becomes 1 ("ones", U-Ones) or 0 ("zeros", U-Zeros)."""
    if uncertain not in ("ones", "zeros"):
        raise ValueError(f"uncertain policy must be 'ones' or 'zeros', got {uncertain!r}")
    out = np.asarray(labels, dtype=np.float32).copy()
    out[out == UNCERTAIN] = 1.0 if uncertain == "ones" else 0.0
    return out
