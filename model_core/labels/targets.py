"""What a MeSH term or a report phrase can point at: a CheXpert label, OTHER or NEUTRAL."""

from __future__ import annotations

from model_core.chexpert import CHEXPERT_LABELS

NO_FINDING = "No Finding"
SUPPORT_DEVICES = "Support Devices"
# Labels whose positive (or uncertain) mention rules out "No Finding" (CheXpert: all but Support Devices).
PATHOLOGY_LABELS: tuple[str, ...] = tuple(x for x in CHEXPERT_LABELS if x not in (NO_FINDING, SUPPORT_DEVICES))

OTHER = "other abnormality"  # an abnormality outside the 14: maps to no label, but rules out No Finding
NEUTRAL = "neutral"          # not an abnormality of the patient (or no information): maps to nothing
