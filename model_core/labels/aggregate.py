"""Labeler stage 3, aggregation: a report's mentions -> one state per label, and the (14,) label vector."""

from __future__ import annotations

from typing import Iterable

import numpy as np

from model_core.chexpert import LABEL_INDEX, NEGATIVE, NUM_LABELS, POSITIVE, UNCERTAIN
from model_core.labels.classify import Mention
from model_core.labels.targets import NO_FINDING, OTHER, SUPPORT_DEVICES


def aggregate_states(states: list[float]) -> float:
    """CheXpert's rule for several mentions of one label: positive > uncertain > negative."""
    if POSITIVE in states:
        return POSITIVE
    if UNCERTAIN in states:
        return UNCERTAIN
    return NEGATIVE


def _states_by_label(mentions: Iterable[Mention]) -> dict[str, float]:
    states: dict[str, list[float]] = {}
    for m in mentions:
        states.setdefault(m.label, []).append(m.state)
    return {label: aggregate_states(s) for label, s in states.items()}


def mentioned_labels(mentions: Iterable[Mention]) -> dict[str, float]:
    """{label: state} of the CheXpert labels mentioned (OTHER left out), in first-mention order."""
    return {label: state for label, state in _states_by_label(mentions).items() if label != OTHER}


def label_vector(mentions: Iterable[Mention]) -> np.ndarray:
    """float32 (14,) in CheXpert order: 1 positive, -1 uncertain, 0 negative/unmentioned.

    No Finding = 1 when no label but Support Devices, and no OTHER abnormality, is positive or uncertain.
    """
    out = np.zeros(NUM_LABELS, dtype=np.float32)
    abnormal = False
    for label, state in _states_by_label(mentions).items():
        if label != OTHER:
            out[LABEL_INDEX[label]] = state
        if label != SUPPORT_DEVICES and state != NEGATIVE:
            abnormal = True
    out[LABEL_INDEX[NO_FINDING]] = 0.0 if abnormal else POSITIVE
    return out
