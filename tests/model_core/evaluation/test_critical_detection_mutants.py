"""`critical_detection` on fixed probabilities (issue 12, item 5): the numbers the clinical gate reads. Each study is
counted by hand below: probabilities exactly at a finding's threshold count as flagged, a finding missing from the
thresholds uses 0.5, every finding has its own threshold and its own column, and the other ten labels are set so
that reading a wrong column would change every count. Run by benchmarks/mutation_safety.py (critical_detection)."""

from __future__ import annotations

import numpy as np
import pytest

from model_core.chexpert import CHEXPERT_LABELS, CRITICAL_FINDINGS, LABEL_INDEX
from model_core.evaluation.evaluate import critical_detection
from model_core.stats import bootstrap_ci, wilson_interval

THRESHOLDS = {"Pneumothorax": 0.3, "Fracture": 0.6, "Pleural Effusion": 0.45}   # Lung Lesion: the 0.5 default
COLUMNS = {
    #                    truth                     probability
    "Pneumothorax":     ([1, 1, 1, 0, 0, 0, 0, 0], [0.3, 0.9, 0.29, 0.3, 0.1, 0.0, 0.2, 0.29]),
    "Fracture":         ([0, 1, 0, 1, 1, 1, 0, 0], [0.7, 0.6, 0.1, 0.59, 0.95, 0.61, 0.6, 0.0]),
    "Lung Lesion":      ([0, 0, 0, 0, 0, 0, 0, 1], [0.5, 0.49, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5]),
    "Pleural Effusion": ([0, 0, 0, 0, 0, 0, 0, 0], [0.45, 0.44, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]),
}
# Counted by hand from the columns above: (tp, fn, tn, fp, flagged studies)
EXPECTED = {"Pneumothorax": (2, 1, 4, 1, 3), "Fracture": (3, 1, 2, 2, 5), "Lung Lesion": (1, 0, 6, 1, 2),
            "Pleural Effusion": (0, 0, 7, 1, 1)}
N_BOOT, SEED = 50, 7


def _arrays(columns=COLUMNS):
    truth = np.ones((8, len(CHEXPERT_LABELS)))         # every other label positive and certain: a wrong column
    probs = np.full((8, len(CHEXPERT_LABELS)), 0.99)   # would count 8 true positives
    for label, (y, p) in columns.items():
        truth[:, LABEL_INDEX[label]], probs[:, LABEL_INDEX[label]] = y, p
    return probs, truth


@pytest.fixture()   # per test (cheap): mutmut maps a function to the tests that call it, not to a cached fixture
def detection():
    probs, truth = _arrays()
    return critical_detection(probs, truth, THRESHOLDS, N_BOOT, SEED)


def test_every_critical_finding_and_only_those(detection):
    assert list(detection) == list(CRITICAL_FINDINGS)


@pytest.mark.parametrize("finding", CRITICAL_FINDINGS)
def test_each_study_is_counted_at_the_findings_own_threshold(detection, finding):
    tp, fn, tn, fp, flagged = EXPECTED[finding]
    got = detection[finding]
    assert (got["tp"], got["fn"], got["tn"], got["fp"]) == (tp, fn, tn, fp)
    assert (got["positives"], got["negatives"]) == (tp + fn, tn + fp)
    assert got["threshold"] == THRESHOLDS.get(finding, 0.5)
    assert got["flag_rate"] == flagged / 8
    assert got["sensitivity"] == (tp / (tp + fn) if tp + fn else None)
    assert got["specificity"] == tn / (tn + fp)
    assert got["sensitivity_ci"] == wilson_interval(tp, tp + fn)
    assert got["specificity_ci"] == wilson_interval(tn, tn + fp)


@pytest.mark.parametrize("finding", CRITICAL_FINDINGS)
def test_bootstrap_intervals_resample_the_findings_own_studies(detection, finding):
    y, p = (np.array(v) for v in COLUMNS[finding])
    t = THRESHOLDS.get(finding, 0.5)
    pos, neg = p[y == 1], p[y == 0]
    got = detection[finding]
    if len(pos):
        assert got["sensitivity_bootstrap"] == bootstrap_ci(lambda i: float((pos[i] >= t).mean()), len(pos),
                                                            N_BOOT, SEED)
        assert got["sensitivity_bootstrap"]["value"] == got["sensitivity"]
    else:
        assert "sensitivity_bootstrap" not in got        # no positives: no interval, not a made-up one
    assert got["specificity_bootstrap"] == bootstrap_ci(lambda i: float((neg[i] < t).mean()), len(neg), N_BOOT, SEED)
    assert got["specificity_bootstrap"]["value"] == got["specificity"]


def test_a_finding_without_negatives_has_no_specificity_interval():
    columns = dict(COLUMNS, Fracture=([1] * 8, [0.7, 0.6, 0.1, 0.59, 0.95, 0.61, 0.6, 0.0]))
    probs, truth = _arrays(columns)
    got = critical_detection(probs, truth, THRESHOLDS, N_BOOT, SEED)["Fracture"]
    assert (got["tp"], got["fn"], got["negatives"], got["specificity"]) == (5, 3, 0, None)
    assert "specificity_bootstrap" not in got
    assert got["sensitivity_bootstrap"]["value"] == 5 / 8
