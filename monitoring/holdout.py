"""The drift monitor on in-distribution held-out studies, for the packet's drift row: the monitor's own MMD test
(`monitoring.drift.data_drift`'s detector, the model's saved PCA, `monitoring.alpha` / `.permutations` /
`.min_studies`) run once at release time, so the risk table cites measured figures of the monitor that will watch
this model.

Design: the model's reference set (held-out test studies, embedded at training; `reference_stats.npz`) is split by a
seeded permutation into a window of `window` studies (default half) and the rest, which plays the reference. Both
halves come from one held-out sample, so the test's null hypothesis holds by construction: drift here means the
monitor raises false alarms on data like the test set (a broken or mis-calibrated monitor), and no drift means the
monitor installed with this model is quiet where it should be. The PCA fit set (the validation split) is not
used: its embeddings are not saved with the model, and re-embedding it would repeat training's work in a second
place; it is also the set the projection was fitted on, so it is not a neutral sample in that projection.
The check does not show that the monitor detects real shifts: that power is measured by benchmarks/drift_power.py.
"""

from __future__ import annotations

import os
import time

import numpy as np

from model_core.config import MonitoringConfig
from model_core.modeling.reference import load_reference_stats
from monitoring.detectors.base import INSUFFICIENT
from monitoring.detectors.mmd import MMDDetector

DESIGN = ("in-distribution check: the model's held-out reference studies split at random (seeded) into a window "
          "and the rest as reference; an alarm here is a false alarm")


def holdout_drift_check(model_dir: str | os.PathLike, cfg: MonitoringConfig, window: int | None = None,
                        seed: int = 0) -> dict:
    """{method, statistic (MMD²), p_value, threshold (MMD² critical value at alpha), alpha, drift_detected (None
    when there are too few studies), status, window, n_reference, permutations, pca_components, seconds, design}.
    window: studies in the window (default: half the reference set)."""
    t0 = time.perf_counter()
    reference = load_reference_stats(model_dir)
    reduced = reference.reduce(reference.embeddings)
    n = len(reduced)
    window = n // 2 if window is None else int(window)
    if not 0 < window < n:
        raise ValueError(f"the window must hold between 1 and {n - 1} of the {n} reference studies, got {window}")
    order = np.random.default_rng(seed).permutation(n)
    current, rest = reduced[order[:window]], reduced[order[window:]]
    detector = MMDDetector(cfg.alpha, cfg.permutations, cfg.min_studies, seed)
    if len(rest) < 2:
        result = detector.insufficient(window, f"{len(rest)} reference studies left beside the window")
    else:
        result = detector.prepare(rest).predict(current)
    return {"method": "MMD² permutation test (monitoring.detectors.mmd, alibi-detect MMDDrift, PyTorch backend)",
            "statistic": result.distance, "p_value": result.p_value, "threshold": result.threshold,
            "alpha": cfg.alpha, "drift_detected": None if result.status == INSUFFICIENT else result.is_drift,
            "status": result.status, "window": window, "n_reference": len(rest), "permutations": cfg.permutations,
            "pca_components": int(reference.pca_components.shape[0]), "seed": seed,
            "seconds": round(time.perf_counter() - t0, 3), "design": DESIGN}
