"""model_core.stats: bootstrap CIs, Wilson intervals, gate helpers, precision/recall/F1, ECE, latency."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import precision_recall_fscore_support

from model_core.stats import (
    bootstrap_ci,
    expected_calibration_error,
    latency_summary,
    precision_recall_f1,
    sensitivity_specificity,
    threshold_for_sensitivity,
    wilson_interval,
)


def test_bootstrap_ci_is_deterministic_and_contains_point():
    values = np.random.default_rng(0).normal(size=100)
    ci = bootstrap_ci(lambda idx: values[idx].mean(), 100, n_boot=500, seed=1)
    assert ci == bootstrap_ci(lambda idx: values[idx].mean(), 100, n_boot=500, seed=1)
    assert ci["ci_low"] < ci["value"] < ci["ci_high"]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: bootstrap_ci(lambda idx: 0.0, 0), "empty"),
        (lambda: bootstrap_ci(lambda idx: 0.0, 5, n_boot=0), "n_boot"),
        (lambda: sensitivity_specificity([0, 1], [0.1], 0.5), "lengths must match"),
        (lambda: sensitivity_specificity([0, 2], [0.1, 0.2], 0.5), "0 and 1"),
        (lambda: threshold_for_sensitivity([0, 0], [0.1, 0.2]), "no positive"),
        (lambda: latency_summary([]), "no latency samples"),
        (lambda: latency_summary([1.0, float("nan")]), "finite"),
    ],
)
def test_bad_input_raises_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_wilson_interval_known_value():
    low, high = wilson_interval(8, 10)
    assert (low, high) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson_interval(0, 0) == (None, None)


def test_sensitivity_specificity_and_threshold_for_target():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    s = np.array([0.9, 0.8, 0.6, 0.3, 0.7, 0.2, 0.1, 0.05, 0.4, 0.0])
    out = sensitivity_specificity(y, s, 0.5)
    assert (out["tp"], out["fn"], out["tn"], out["fp"]) == (3, 1, 5, 1)
    assert out["sensitivity"] == 0.75 and out["specificity"] == pytest.approx(5 / 6)
    assert out["sensitivity_ci"][0] < 0.75 < out["sensitivity_ci"][1]
    chosen = threshold_for_sensitivity(y, s, target=0.75)
    assert chosen["threshold"] == 0.6 and chosen["sensitivity"] == 0.75  # highest threshold reaching 75 %
    assert threshold_for_sensitivity(y, s, target=1.0)["threshold"] == 0.3
    with pytest.raises(ValueError, match="unreachable"):
        threshold_for_sensitivity(y, s, target=0.9, use_lower_bound=True)  # 4 positives cannot prove 90 %


def test_ece_perfectly_calibrated_is_small():
    rng = np.random.default_rng(1)
    p = rng.random(20000)
    y = (rng.random(20000) < p).astype(float)
    assert expected_calibration_error(p, y) < 0.02
    with pytest.raises(ValueError):
        expected_calibration_error(np.array([]), np.array([]))


# --------------------------------------------------------------------------- precision / recall / F1

def test_precision_recall_f1_matches_sklearn_zero_division_0():
    rng = np.random.default_rng(4)
    y_true, y_pred = rng.random((50, 6)) < 0.3, rng.random((50, 6)) < 0.4
    y_true[:, 2] = False                  # no true positive: recall undefined
    y_pred[:, 3] = False                  # no predicted positive: precision undefined
    y_true[:, 4] = y_pred[:, 4] = False   # nothing at all: F1 undefined
    tp, fp, fn = ((y_true & y_pred).sum(0), (~y_true & y_pred).sum(0), (y_true & ~y_pred).sum(0))
    got = precision_recall_f1(tp, fp, fn)
    want = precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)[:3]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-12)


def test_precision_recall_f1_can_keep_undefined_as_nan():
    precision, recall, f1 = precision_recall_f1([0, 0, 2], [3, 0, 0], [0, 0, 2], zero_division=math.nan)
    assert precision[0] == 0.0 and math.isnan(recall[0]) and f1[0] == 0.0   # predicted only false positives
    assert all(math.isnan(v) for v in (precision[1], recall[1], f1[1]))     # no case at all
    assert (precision[2], recall[2], f1[2]) == (1.0, 0.5, pytest.approx(2 / 3))
    assert [float(v) for v in precision_recall_f1(0, 0, 0)] == [0.0, 0.0, 0.0]


# --------------------------------------------------------------------------- latency

def test_latency_summary_percentiles_rounded_with_count():
    samples = [10.0, 20.0, 30.0, 40.0, 1000.0 / 3]
    assert latency_summary(samples) == {"p50_ms": 30.0, "p95_ms": round(float(np.percentile(samples, 95)), 2),
                                        "n": 5}
    assert list(latency_summary(samples, percentiles=(50, 95, 99))) == ["p50_ms", "p95_ms", "p99_ms", "n"]
    assert latency_summary([1.23456]) == {"p50_ms": 1.23, "p95_ms": 1.23, "n": 1}
