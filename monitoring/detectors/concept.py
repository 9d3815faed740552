"""Concept drift: does the model still agree with radiologists as well as it did on the reference?

Ground truth comes from radiologist-validated studies (the report labeler on the signed report, U-Ones), the
model's answer from its detection head at the operating thresholds, both as the reference statistics define them
(`model_core.modeling.reference.per_finding_agreement`). The F1 of each finding over a trailing window (a week by
default, recomputed daily for the series in the report) is compared with the reference F1; a critical finding more
than `points` F1 points below its reference → drift (the retrain trigger). A finding with fewer than
`min_positives` validated positives in the window is not judged ("insufficient data" for it, said so).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from model_core.chexpert import CRITICAL_FINDINGS
from model_core.modeling.reference import per_finding_agreement
from monitoring.detectors.base import DRIFT, INSUFFICIENT, OK, DriftDetector, DriftResult


@dataclass
class ValidatedWindow:
    """Validated studies in time order: predicted (M, 14) 0/1 (model), labels (M, 14) 0/1 (signed reports),
    times (M,) naive-UTC datetimes of the sign-off."""
    predicted: np.ndarray
    labels: np.ndarray
    times: list[datetime]

    def __len__(self) -> int:
        return len(self.times)


class ConceptDriftDetector(DriftDetector):
    method = "concept_f1"

    def __init__(self, points: float = 5.0, min_positives: int = 10, window_days: float = 7.0,
                 findings: tuple[str, ...] = CRITICAL_FINDINGS):
        super().__init__(min_samples=1)
        self.points, self.min_positives, self.window = points, min_positives, timedelta(days=window_days)
        self.findings = findings
        self.reference: dict | None = None

    def prepare(self, reference: dict) -> "ConceptDriftDetector":
        """reference: {finding: {f1, sensitivity, ...}} (the reference summary's `per_finding`)."""
        missing = [f for f in self.findings if f not in reference]
        if missing:
            raise ValueError(f"the reference lacks per-finding figures for {len(missing)} finding(s)")
        self.reference = reference
        self.n_reference = max((int(reference[f].get("positives", 0)) for f in self.findings), default=0)
        return self

    def agreement(self, window: ValidatedWindow, end: datetime) -> dict:
        """Per-finding agreement over (end − window, end]."""
        keep = np.array([end - self.window < t <= end for t in window.times], dtype=bool)
        return per_finding_agreement(window.predicted[keep], window.labels[keep]) if keep.any() else {}

    def predict(self, sample: ValidatedWindow) -> DriftResult:
        if self.reference is None:
            raise RuntimeError("ConceptDriftDetector.predict before prepare")
        if len(sample) == 0:
            return self.insufficient(0, "no radiologist-validated studies in the window")
        end = max(sample.times)
        current = self.agreement(sample, end)
        n_window = sum(1 for t in sample.times if end - self.window < t <= end)
        findings, drifted, judged = {}, [], 0
        for name in self.findings:
            ref_f1, cur = self.reference[name].get("f1"), current.get(name, {})
            enough = cur.get("positives", 0) >= self.min_positives and ref_f1 is not None and cur.get("f1") is not None
            drop = (ref_f1 - cur["f1"]) * 100 if enough else None
            findings[name] = {"reference_f1": ref_f1, "current_f1": cur.get("f1"), "drop_points": drop,
                              "sensitivity": cur.get("sensitivity"), "positives": cur.get("positives", 0),
                              "status": INSUFFICIENT if not enough else DRIFT if drop > self.points else OK}
            judged += enough
            if enough and drop > self.points:
                drifted.append(name)
        if not judged:
            return DriftResult(self.method, INSUFFICIENT, self.n_reference, n_window,
                               threshold=self.points, details={
                                   "reason": f"no critical finding has {self.min_positives} validated positives in "
                                             "the window", "findings": findings})
        worst = max((f["drop_points"] for f in findings.values() if f["drop_points"] is not None), default=None)
        return DriftResult(self.method, DRIFT if drifted else OK, self.n_reference, n_window, distance=worst,
                           threshold=self.points, details={"drifted": drifted, "findings": findings,
                                                           "window_days": self.window.days,
                                                           "series": self.series(sample)})

    def series(self, sample: ValidatedWindow) -> list[dict]:
        """Daily points of the trailing-window F1 per judged finding (for the HTML report)."""
        start, end = min(sample.times), max(sample.times)
        days = int((end - start).total_seconds() // 86400) + 1
        points = []
        for d in range(days):
            at = end - timedelta(days=days - 1 - d)
            agree = self.agreement(sample, at)
            points.append({"end": at.isoformat(), **{name: agree.get(name, {}).get("f1") for name in self.findings}})
        return points
