"""The detectors on synthetic data with known answers: MMD (null, shift, small windows), label drift and the CUSUM
against hand-computed values, concept drift against the reference F1."""

from datetime import datetime, timedelta

import numpy as np
import pytest
import torch
from alibi_detect.utils.pytorch.distance import mmd2_from_kernel_matrix
from monitoring_data import synthetic_embeddings

from model_core.chexpert import CHEXPERT_LABELS, NUM_LABELS
from monitoring.detectors.base import DRIFT, INSUFFICIENT, OK
from monitoring.detectors.concept import ConceptDriftDetector, ValidatedWindow
from monitoring.detectors.labels import CusumDetector, LabelDriftDetector, bernoulli_cusum, two_proportion_test
from monitoring.detectors.mmd import MMDDetector, permutation_mmd2


@pytest.fixture(scope="module")
def mmd():
    return MMDDetector(alpha=0.01, permutations=1000, min_samples=30, seed=0).prepare(
        synthetic_embeddings(300, np.random.default_rng(1)))


def test_batched_permutations_equal_alibis_own_statistic():
    k = torch.rand(40, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    k = (k + k.T) / 2
    k = k - torch.diag(k.diag())
    perms = [torch.randperm(40, generator=torch.Generator().manual_seed(s)) for s in range(6)]
    ours = permutation_mmd2(k, 15, torch.stack([p[-15:] for p in perms]))
    theirs = torch.stack([mmd2_from_kernel_matrix(k[p][:, p], 15, zero_diag=False) for p in perms])
    assert torch.allclose(ours, theirs, atol=1e-12)


def test_mmd_same_distribution_is_not_drift(mmd):
    result = mmd.predict(synthetic_embeddings(100, np.random.default_rng(2)))
    assert result.status == OK and result.p_value > 0.01 and result.n_current == 100 and result.n_reference == 300


def test_mmd_flags_a_mean_shift_with_a_p_value_that_counts_the_observed_statistic(mmd):
    result = mmd.predict(synthetic_embeddings(100, np.random.default_rng(3), shift=0.5))
    assert result.status == DRIFT and result.is_drift
    assert result.p_value == pytest.approx(1 / 1001)      # never 0: (1 + #permuted ≥ observed) / (1 + B)
    assert result.distance > result.threshold


def test_mmd_is_deterministic_for_a_seed(mmd):
    window = synthetic_embeddings(60, np.random.default_rng(4), shift=0.1)
    assert mmd.predict(window).p_value == mmd.predict(window).p_value


def test_mmd_on_too_few_studies_is_insufficient_data_not_an_alarm(mmd):
    result = mmd.predict(synthetic_embeddings(10, np.random.default_rng(5), shift=3.0))
    assert result.status == INSUFFICIENT and not result.is_drift and result.p_value is None
    assert "30" in result.details["reason"]


def test_two_proportion_test_matches_hand_computation():
    # 10/100 vs 25/100: pooled 0.175, var 0.175·0.825·(2/100) = 0.0028875, z = 0.15 / 0.0537355 = 2.79145
    z, p = two_proportion_test(10, 100, 25, 100)
    assert z == pytest.approx(2.791453, abs=1e-6) and p == pytest.approx(0.0052472, abs=1e-7)
    assert two_proportion_test(0, 50, 0, 80) == (0.0, 1.0)


def test_label_drift_applies_bonferroni_over_14_findings():
    ref = np.zeros((100, NUM_LABELS), np.int8)
    ref[:10, 9] = 1                                   # Pneumothorax 10 %
    cur = np.zeros((100, NUM_LABELS), np.int8)
    cur[:25, 9] = 1                                   # 25 %: p = 0.0052 < 0.05 but > 0.05 / 14 = 0.00357
    detector = LabelDriftDetector(alpha=0.05, min_samples=50).prepare(ref)
    result = detector.predict(cur)
    assert result.status == OK and result.details["findings"]["Pneumothorax"]["p_value"] == pytest.approx(0.0052472,
                                                                                                         abs=1e-6)
    cur[:30, 9] = 1                                   # 30 %: z = 3.54, p = 0.0004 < 0.00357
    result = detector.predict(cur)
    assert result.status == DRIFT and result.details["drifted"] == ["Pneumothorax"]
    assert detector.predict(cur[:20]).status == INSUFFICIENT


def test_bernoulli_cusum_matches_hand_computation():
    # p0 0.1 → p1 0.2: w(1) = ln 2 = 0.693147, w(0) = ln(0.8 / 0.9) = −0.117783
    out = bernoulli_cusum([1, 1, 0, 1, 1, 1], 0.1, 0.2, threshold=3.0)
    assert out["path"] == pytest.approx([0.693147, 1.386294, 1.268511, 1.961659, 2.654806, 3.347953], abs=1e-6)
    assert out["alarm_at"] == 5 and out["weights"] == pytest.approx((0.693147, -0.117783), abs=1e-6)
    assert bernoulli_cusum([0] * 50, 0.1, 0.2, 3.0)["statistic"] == 0.0     # reset at zero, never negative


def test_cusum_detector_is_two_sided():
    detector = CusumDetector("Pneumothorax", rate_ratio=2.0, threshold=4.0, min_samples=50).prepare((0.1, 400))
    rng = np.random.default_rng(0)
    assert detector.predict(rng.random(300) < 0.1).status == OK
    up = detector.predict(rng.random(300) < 0.3)
    assert up.status == DRIFT and "up" in up.details["alarms"]
    down = detector.predict(np.zeros(300))
    assert down.status == DRIFT and "down" in down.details["alarms"]


def _validated(tp: int, fp: int, fn: int, tn: int, finding: str = "Pneumothorax") -> ValidatedWindow:
    j = CHEXPERT_LABELS.index(finding)
    n = tp + fp + fn + tn
    pred, lab = np.zeros((n, NUM_LABELS), np.int8), np.zeros((n, NUM_LABELS), np.int8)
    pred[:tp + fp, j] = 1
    lab[:tp, j] = 1
    lab[tp + fp:tp + fp + fn, j] = 1
    start = datetime(2026, 3, 1)
    return ValidatedWindow(pred, lab, [start + timedelta(hours=i) for i in range(n)])


def test_concept_drift_compares_the_weekly_f1_with_the_reference():
    reference = {f: {"f1": 0.80, "positives": 40} for f in ("Pneumothorax", "Fracture", "Lung Lesion",
                                                              "Pleural Effusion")}
    detector = ConceptDriftDetector(points=5.0, min_positives=10, window_days=7).prepare(reference)
    same = detector.predict(_validated(tp=16, fp=4, fn=4, tn=100))          # F1 = 32 / 40 = 0.80
    assert same.status == OK and same.details["findings"]["Pneumothorax"]["drop_points"] == pytest.approx(0.0)
    worse = detector.predict(_validated(tp=14, fp=6, fn=6, tn=100))         # F1 = 28 / 40 = 0.70: 10 points down
    assert worse.status == DRIFT and worse.details["drifted"] == ["Pneumothorax"]
    assert worse.details["findings"]["Pneumothorax"]["sensitivity"] == pytest.approx(0.7)
    assert detector.predict(_validated(tp=3, fp=1, fn=2, tn=100)).status == INSUFFICIENT   # 5 positives < 10
