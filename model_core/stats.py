"""Statistics used across the project, one implementation each: bootstrap CIs, Wilson intervals,
sensitivity/specificity at a threshold, the threshold for a target sensitivity, precision/recall/F1 from
counts, calibration error, latency percentiles.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from scipy.special import ndtri  # the standard normal quantile (what scipy.stats.norm.ppf computes)

# --------------------------------------------------------------------------- bootstrap

def bootstrap_indices(n: int, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """Study-level resamples with replacement, int64 (n_boot, n); the same seed gives the same resamples."""
    if n <= 0:
        raise ValueError(f"cannot bootstrap an empty set (n={n})")
    if n_boot <= 0:
        raise ValueError(f"n_boot must be positive, got {n_boot}")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def resample_weights(n: int, n_boot: int, seed: int) -> np.ndarray:
    """How often each study appears in each resample, float64 (n_boot, n): sums over a resample = W @ x.

    Built from `bootstrap_indices`, so vectorized CIs use exactly the resamples `bootstrap_ci` uses.
    """
    idx = bootstrap_indices(n, n_boot, seed)
    weights = np.zeros((n_boot, n), dtype=np.float64)
    np.add.at(weights, (np.repeat(np.arange(n_boot), n), idx.ravel()), 1.0)
    return weights


def percentile_ci(point, samples, alpha: float = 0.05) -> dict:
    """{"value", "ci_low", "ci_high", "n_boot"} from a point estimate and bootstrap samples (n_boot,).

    Non-finite samples (e.g. a macro average over a resample without any positive label) are dropped;
    `n_boot` reports how many resamples the interval rests on.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    samples = np.asarray(samples, dtype=np.float64)
    samples = samples[np.isfinite(samples)]
    point = float(point)
    if samples.size == 0 or not math.isfinite(point):
        return {"value": point if math.isfinite(point) else None, "ci_low": None, "ci_high": None,
                "n_boot": int(samples.size)}
    low, high = np.quantile(samples, [alpha / 2, 1 - alpha / 2])
    return {"value": point, "ci_low": float(low), "ci_high": float(high), "n_boot": int(samples.size)}


def bootstrap_ci(
    metric_fn: Callable[[np.ndarray], float], n: int, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> dict:
    """Percentile bootstrap CI of any study-level metric.

    metric_fn(indices: int array (n,)) -> float is called once on arange(n) (the point estimate) and once
    per resample of study indices. Returns {"value", "ci_low", "ci_high", "n_boot"}.
    Generic and simple; for BLEU / ROUGE / CE use `report_generation_metrics`, which computes the same
    resamples in vectorized form.
    """
    point = metric_fn(np.arange(n))
    samples = [metric_fn(idx) for idx in bootstrap_indices(n, n_boot, seed)]
    return percentile_ci(point, samples, alpha)


# --------------------------------------------------------------------------- binary classification (gates)

def wilson_interval(successes: int, total: int, alpha: float = 0.05) -> tuple[float | None, float | None]:
    """Wilson score interval of a binomial proportion; (None, None) when total is 0."""
    if successes < 0 or total < 0 or successes > total:
        raise ValueError(f"need 0 <= successes <= total, got {successes}/{total}")
    if total == 0:
        return None, None
    z = float(ndtri(1 - alpha / 2))
    p = successes / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _check_binary(y_true, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1:
        raise ValueError(f"y_true and scores must be 1-D, got shapes {y.shape} and {s.shape}")
    if y.shape != s.shape:
        raise ValueError(f"y_true has {y.shape[0]} entries but scores has {s.shape[0]}: lengths must match")
    if y.size == 0:
        raise ValueError("y_true and scores are empty")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must hold only 0 and 1")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return y.astype(bool), s


def sensitivity_specificity(y_true, scores, threshold: float, alpha: float = 0.05) -> dict:
    """Sensitivity and specificity of the rule `score >= threshold`, with Wilson score intervals.

    y_true: (N,) 0/1; scores: (N,) floats. Returns {threshold, sensitivity, sensitivity_ci (low, high),
    specificity, specificity_ci, tp, fn, tn, fp}; a rate is None when its denominator is 0.
    """
    y, s = _check_binary(y_true, scores)
    predicted = s >= threshold
    tp, fn = int((y & predicted).sum()), int((y & ~predicted).sum())
    tn, fp = int((~y & ~predicted).sum()), int((~y & predicted).sum())
    return {
        "threshold": float(threshold),
        "sensitivity": tp / (tp + fn) if tp + fn else None,
        "sensitivity_ci": wilson_interval(tp, tp + fn, alpha),
        "specificity": tn / (tn + fp) if tn + fp else None,
        "specificity_ci": wilson_interval(tn, tn + fp, alpha),
        "tp": tp, "fn": fn, "tn": tn, "fp": fp,
        "ci_method": "Wilson score",
    }


def threshold_for_sensitivity(
    y_true, scores, target: float = 0.95, alpha: float = 0.05, use_lower_bound: bool = False
) -> dict:
    """The highest threshold whose rule `score >= threshold` reaches `target` sensitivity on validation data.

    The highest such threshold maximizes specificity among the thresholds meeting the target. With
    `use_lower_bound=True` the Wilson lower bound of sensitivity (not the point estimate) must reach the
    target: a conservative choice for small validation sets. Returns `sensitivity_specificity` at the
    chosen threshold plus "target"; raises ValueError when there are no positives or the target is unreachable.
    """
    if not 0 < target <= 1:
        raise ValueError(f"target sensitivity must be in (0, 1], got {target}")
    y, s = _check_binary(y_true, scores)
    n_pos = int(y.sum())
    if n_pos == 0:
        raise ValueError("no positive cases: sensitivity is undefined")
    # Candidate thresholds are the positives' scores, highest first; sensitivity grows as the threshold falls.
    for threshold in np.unique(s[y])[::-1]:
        tp = int((s[y] >= threshold).sum())
        achieved = wilson_interval(tp, n_pos, alpha)[0] if use_lower_bound else tp / n_pos
        if achieved >= target:
            return {**sensitivity_specificity(y, s, float(threshold), alpha), "target": target,
                    "use_lower_bound": use_lower_bound}
    raise ValueError(
        f"target sensitivity {target} is unreachable with {n_pos} positives"
        + (" (Wilson lower bound)" if use_lower_bound else "")
    )


def precision_recall_f1(tp, fp, fn, zero_division: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F1 from true-positive / false-positive / false-negative counts of any shape.

    F1 = 2·tp / (2·tp + fp + fn). A figure whose denominator is 0 (no predicted positive for precision, no
    true positive for recall, neither for F1) is `zero_division`: 0 as sklearn's zero_division=0, or NaN
    where "undefined" must stay visible. Returns float64 arrays of the counts' broadcast shape.
    """
    tp, fp, fn = (np.asarray(c, dtype=np.float64) for c in (tp, fp, fn))
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), zero_division)
        recall = np.where(tp + fn > 0, tp / (tp + fn), zero_division)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), zero_division)
    return precision, recall, f1


# --------------------------------------------------------------------------- calibration

def expected_calibration_error(probs: np.ndarray, targets: np.ndarray, bins: int = 15) -> float:
    """ECE over all entries of (N, 14) probabilities vs 0/1 targets (equal-width bins)."""
    p, y = np.asarray(probs, dtype=np.float64).ravel(), np.asarray(targets, dtype=np.float64).ravel()
    if p.size == 0:
        raise ValueError("no probabilities to calibrate")
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            ece += mask.mean() * abs(p[mask].mean() - y[mask].mean())
    return float(ece)


# --------------------------------------------------------------------------- latency

def latency_summary(samples_ms, percentiles: tuple[int, ...] = (50, 95)) -> dict:
    """{"p50_ms", "p95_ms", "n"} of wall-time samples in milliseconds, each percentile rounded to 0.01 ms.

    `percentiles` names other points (e.g. (50, 95, 99)): one key f"p{q}_ms" each, in that order.
    """
    arr = np.asarray(samples_ms, dtype=np.float64).ravel()
    if arr.size == 0:
        raise ValueError("no latency samples to summarize")
    if not np.isfinite(arr).all():
        raise ValueError("latency samples must be finite")
    out = {f"p{q}_ms": round(float(np.percentile(arr, q)), 2) for q in percentiles}
    out["n"] = int(arr.size)
    return out
