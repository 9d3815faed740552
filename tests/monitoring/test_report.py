"""Evidently's tabular drift report over per-finding probabilities (HTML written; a shifted column is found)."""

import numpy as np

from monitoring.report import probability_frame, tabular_drift_report


def test_evidently_report_finds_the_shifted_probability(tmp_path):
    rng = np.random.default_rng(0)
    reference, current = rng.uniform(0, 0.4, (300, 14)), rng.uniform(0, 0.4, (150, 14))
    current[:, 9] = rng.uniform(0.5, 0.9, 150)              # Pneumothorax probabilities moved up
    summary = tabular_drift_report(probability_frame(reference), probability_frame(current), tmp_path / "e.html")
    assert (tmp_path / "e.html").stat().st_size > 10_000
    pneumothorax = summary["columns"]["p_Pneumothorax"]["value"]
    steady = summary["columns"]["p_Cardiomegaly"]["value"]
    assert pneumothorax < 0.01 < steady and summary["drifted_share"] is not None
