"""Label drift: has the share of studies the model calls positive moved, finding by finding?

`LabelDriftDetector`: per finding, a two-proportion z-test (pooled variance, two-sided) of the window's predicted
prevalence against the reference's; Bonferroni across the 14 findings (drift when any p < alpha / 14).
`bernoulli_cusum` / `CusumDetector`: a CUSUM on one finding's predicted rate in time order (the seed's example:
pneumothorax), tuned to a rate that doubles (upper) or halves (lower). Each study adds the log-likelihood ratio
    w = x·log(p1/p0) + (1 − x)·log((1 − p1)/(1 − p0)),   S_t = max(0, S_{t−1} + w_t),   alarm when S_t > h.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import norm

from model_core.chexpert import CHEXPERT_LABELS, NUM_LABELS
from monitoring.detectors.base import DRIFT, OK, DriftDetector, DriftResult


def two_proportion_test(x1: int, n1: int, x2: int, n2: int) -> tuple[float, float]:
    """(z, two-sided p) of H0: p1 = p2 with the pooled proportion; (0, 1) when the pooled rate is 0 or 1."""
    if n1 <= 0 or n2 <= 0:
        raise ValueError("both samples need at least one study")
    pooled = (x1 + x2) / (n1 + n2)
    var = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if var <= 0:
        return 0.0, 1.0
    z = (x2 / n2 - x1 / n1) / math.sqrt(var)
    return z, float(2 * norm.sf(abs(z)))


class LabelDriftDetector(DriftDetector):
    """prepare(reference 0/1 predictions (N, 14)), predict(window 0/1 predictions (M, 14))."""

    method = "label_prevalence"

    def __init__(self, alpha: float = 0.05, min_samples: int = 50):
        super().__init__(min_samples)
        self.alpha = alpha
        self._positives: np.ndarray | None = None

    def prepare(self, reference: np.ndarray) -> "LabelDriftDetector":
        ref = _binary(reference, "reference predictions")
        self.n_reference, self._positives = len(ref), ref.sum(axis=0)
        return self

    def predict(self, sample: np.ndarray) -> DriftResult:
        if self._positives is None:
            raise RuntimeError("LabelDriftDetector.predict before prepare")
        cur = _binary(sample, "window predictions", allow_empty=True)
        if len(cur) < self.min_samples:
            return self.insufficient(len(cur), f"{len(cur)} studies in the window; at least {self.min_samples} needed")
        per_test_alpha = self.alpha / NUM_LABELS
        findings, smallest = {}, 1.0
        for j, name in enumerate(CHEXPERT_LABELS):
            x1, x2 = int(self._positives[j]), int(cur[:, j].sum())
            z, p = two_proportion_test(x1, self.n_reference, x2, len(cur))
            smallest = min(smallest, p)
            findings[name] = {"reference_rate": x1 / self.n_reference, "current_rate": x2 / len(cur), "z": z,
                              "p_value": p, "drift": p < per_test_alpha}
        drifted = [name for name, f in findings.items() if f["drift"]]
        return DriftResult(self.method, DRIFT if drifted else OK, self.n_reference, len(cur),
                           p_value=min(1.0, smallest * NUM_LABELS), threshold=self.alpha,
                           details={"test": "two-proportion z (pooled), Bonferroni over 14 findings",
                                    "per_test_alpha": per_test_alpha, "drifted": drifted, "findings": findings})


def bernoulli_cusum(outcomes, p0: float, p1: float, threshold: float) -> dict:
    """CUSUM of 0/1 outcomes (time order) for a rate change p0 → p1 (p1 > p0: an increase; p1 < p0: a decrease).

    Returns {statistic: final S, max: max S, path: list of S_t, alarm_at: first index t with S_t > threshold or
    None, weights: (w if x=1, w if x=0)}."""
    if not (0 < p0 < 1 and 0 < p1 < 1) or p0 == p1:
        raise ValueError(f"CUSUM rates must lie in (0, 1) and differ, got p0={p0}, p1={p1}")
    w_pos, w_neg = math.log(p1 / p0), math.log((1 - p1) / (1 - p0))
    s, path, alarm = 0.0, [], None
    for t, x in enumerate(np.asarray(outcomes).reshape(-1)):
        s = max(0.0, s + (w_pos if x else w_neg))
        path.append(s)
        if alarm is None and s > threshold:
            alarm = t
    return {"statistic": s, "max": max(path, default=0.0), "path": path, "alarm_at": alarm,
            "weights": (w_pos, w_neg)}


class CusumDetector(DriftDetector):
    """prepare(reference rate p0 and its sample size), predict(0/1 outcomes of one finding in time order): a
    two-sided Bernoulli CUSUM (rate × ratio and rate / ratio). p0 is kept inside (0.5/n, 1 − 0.5/n) so a finding
    the reference never showed still has a finite log-likelihood ratio."""

    method = "cusum"

    def __init__(self, finding: str = "Pneumothorax", rate_ratio: float = 2.0, threshold: float = 4.0,
                 min_samples: int = 50):
        super().__init__(min_samples)
        if finding not in CHEXPERT_LABELS:
            raise ValueError("the CUSUM finding must be one of the 14 CheXpert findings")
        if rate_ratio <= 0 or rate_ratio == 1:
            raise ValueError("the CUSUM rate ratio must be > 0 and differ from 1")
        self.finding, self.rate_ratio, self.threshold = finding, max(rate_ratio, 1 / rate_ratio), threshold
        self.p0: float | None = None

    def prepare(self, reference: tuple[float, int]) -> "CusumDetector":
        rate, n = reference
        if n < 1:
            raise ValueError("the CUSUM reference needs at least one study")
        self.n_reference = int(n)
        self.p0 = float(min(max(rate, 0.5 / n), 1 - 0.5 / n))
        return self

    def predict(self, sample) -> DriftResult:
        if self.p0 is None:
            raise RuntimeError("CusumDetector.predict before prepare")
        x = (np.asarray(sample).reshape(-1) > 0).astype(np.int8)
        if len(x) < self.min_samples:
            return self.insufficient(len(x), f"{len(x)} studies in the window; at least {self.min_samples} needed")
        up = bernoulli_cusum(x, self.p0, min(self.p0 * self.rate_ratio, 0.999), self.threshold)
        down = bernoulli_cusum(x, self.p0, self.p0 / self.rate_ratio, self.threshold)
        alarms = {side: r["alarm_at"] for side, r in (("up", up), ("down", down)) if r["alarm_at"] is not None}
        return DriftResult(self.method, DRIFT if alarms else OK, self.n_reference, len(x),
                           distance=max(up["max"], down["max"]), threshold=self.threshold,
                           details={"finding": self.finding, "p0": self.p0, "rate_ratio": self.rate_ratio,
                                    "current_rate": float(x.mean()), "alarms": alarms,
                                    "up": {k: up[k] for k in ("statistic", "max", "alarm_at")},
                                    "down": {k: down[k] for k in ("statistic", "max", "alarm_at")}})


def _binary(values, name: str, allow_empty: bool = False) -> np.ndarray:
    arr = np.asarray(values)
    if arr.size == 0 and allow_empty:
        return np.zeros((0, NUM_LABELS), dtype=np.int8)
    if arr.ndim != 2 or arr.shape[1] != NUM_LABELS or (not allow_empty and len(arr) == 0):
        raise ValueError(f"{name} must be (N, {NUM_LABELS}) 0/1")
    return (arr > 0).astype(np.int8)
