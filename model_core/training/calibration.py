"""Detection-head calibration and operating points, fitted on the validation split.

- Temperature scaling: one scalar T for all 14 logits, fitted by minimising BCE on validation logits;
  kept only if it lowers the validation ECE (otherwise T = 1).
- Expected calibration error: 15 equal-width bins over all (study, label) probabilities.
- Thresholds: critical findings get the highest threshold that reaches the target sensitivity (0.98) on
  validation; other labels the threshold that maximises F1. A label without validation positives keeps 0.5
  and is listed as such (it cannot be tuned, and the gate will fail closed on it).
"""

from __future__ import annotations

import numpy as np
import torch

from model_core.chexpert import CHEXPERT_LABELS, CRITICAL_FINDINGS
from model_core.stats import expected_calibration_error, threshold_for_sensitivity


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> dict:
    """Fit T > 0 on validation logits (N, 14); returns {temperature, ece_before, ece_after, applied}."""
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(targets), dtype=torch.float64)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=100)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    before = expected_calibration_error(torch.sigmoid(z).numpy(), y.numpy())
    after = expected_calibration_error(torch.sigmoid(z / t).numpy(), y.numpy())
    applied = after < before
    return {"temperature": t if applied else 1.0, "fitted_temperature": t, "ece_before": before,
            "ece_after": after, "applied": applied}


def operating_thresholds(probs: np.ndarray, targets: np.ndarray, target_sensitivity: float = 0.98) -> dict:
    """The detection head's operating point per label, from validation probabilities (N, 14) and 0/1 targets.

    Critical findings: the highest threshold reaching `target_sensitivity`; other labels: max F1 (ties go to
    the lowest threshold); no validation positives: 0.5. (The template baseline's rule is a different one:
    `model_core.evaluation.baseline.max_f1_thresholds`.)
    Returns {"thresholds": {label: t}, "rule": {label: how it was chosen}}.
    """
    thresholds, rule = {}, {}
    for k, label in enumerate(CHEXPERT_LABELS):
        y, p = targets[:, k].astype(int), probs[:, k]
        if y.sum() == 0:
            thresholds[label], rule[label] = 0.5, "default 0.5: no validation positives"
            continue
        if label in CRITICAL_FINDINGS:
            chosen = threshold_for_sensitivity(y, p, target=target_sensitivity)
            thresholds[label] = chosen["threshold"]
            rule[label] = (f"highest threshold with validation sensitivity >= {target_sensitivity} "
                           f"({int(y.sum())} positives)")
            continue
        best_t, best_f1 = 0.5, -1.0
        for t in np.unique(p):
            pred = p >= t
            tp = float((pred & (y == 1)).sum())
            f1 = 2 * tp / (pred.sum() + y.sum()) if pred.sum() + y.sum() else 0.0
            if f1 > best_f1:
                best_t, best_f1 = float(t), f1
        thresholds[label], rule[label] = best_t, f"max validation F1 ({best_f1:.3f})"
    return {"thresholds": thresholds, "rule": rule}


def hint_thresholds(probs: np.ndarray, targets: np.ndarray, critical_false_share: float = 0.005) -> dict:
    """Probability thresholds at which the findings hint (`model_core.modeling.hints`) states each label, chosen on
    validation probabilities (N, 14) and 0/1 targets: max F1 (ties: the highest threshold, the fewer statements);
    for critical findings only among thresholds whose false statements (negatives at or above it) are at most
    `critical_false_share` of the studies, so the drafts' critical-finding hallucinations stay within budget.
    No Finding, labels without validation positives, and labels where no threshold qualifies: 1.0 (never stated).
    Returns {"thresholds": {label: t}, "rule": {label: how it was chosen}}.
    """
    thresholds, rule = {}, {}
    n = len(targets)
    for k, label in enumerate(CHEXPERT_LABELS):
        y, p = targets[:, k].astype(int), probs[:, k]
        if label == "No Finding" or y.sum() == 0:
            thresholds[label], rule[label] = 1.0, "never stated: " + ("no validation positives" if y.sum() == 0
                                                                       else "'Detected: none' says it")
            continue
        best_t, best_f1 = 1.0, 0.0
        for t in np.unique(p)[::-1]:
            pred = p >= t
            if label in CRITICAL_FINDINGS and (pred & (y == 0)).sum() > critical_false_share * n:
                break                  # lower thresholds only add false statements
            tp = float((pred & (y == 1)).sum())
            f1 = 2 * tp / (pred.sum() + y.sum())
            if f1 > best_f1:
                best_t, best_f1 = float(t), f1
        limit = f", false statements ≤ {critical_false_share:.1%} of studies" if label in CRITICAL_FINDINGS else ""
        thresholds[label] = best_t
        rule[label] = (f"max validation F1 ({best_f1:.3f}{limit})" if best_f1 > 0
                       else f"never stated: no threshold with F1 > 0{limit}")
    return {"thresholds": thresholds, "rule": rule}


def grounding_thresholds(probs: np.ndarray, targets: np.ndarray, critical_false_share: float = 0.015,
                         min_positives: int = 5) -> dict:
    """Probability thresholds at which grounded drafting (`model_core.modeling.grounding`) writes each label into
    the draft, from validation probabilities (N, 14) and 0/1 targets.

    Non-critical labels: max validation F1 (ties: the highest threshold), as `hint_thresholds`. Critical findings
    share ONE budget, as the hallucination gate does: the validation studies given at least one false critical
    statement stay within `critical_false_share` of all studies. Starting from "never stated", thresholds are
    lowered greedily to a positive's score, taking the step that adds the fewest false studies per unit of F1
    gained, while the budget holds. Half the gate's 3 % by default, so that the gate's conservative end
    (the 95 % CI upper bound on a test split of a few hundred studies) can still pass. A label with fewer than
    `min_positives` validation positives is never stated: a threshold fitted to two or three studies is noise, and
    each false statement is a sentence a radiologist has to delete.
    Returns {"thresholds", "rule", "critical_false_studies": count on validation, "critical_budget_studies"}.
    """
    probs, targets = np.asarray(probs, dtype=np.float64), np.asarray(targets).astype(int)
    n = len(targets)
    chosen = hint_thresholds(probs, targets, critical_false_share=1.0)   # the non-critical labels' rule
    thresholds, rule = dict(chosen["thresholds"]), dict(chosen["rule"])
    budget = int(np.floor(critical_false_share * n + 1e-9))
    positives = {label: int(targets[:, k].sum()) for k, label in enumerate(CHEXPERT_LABELS)}
    for label, count in positives.items():
        if 0 < count < min_positives and label not in CRITICAL_FINDINGS:
            thresholds[label], rule[label] = 1.0, f"never stated: {count} validation positives (< {min_positives})"
    critical = [c for c in CRITICAL_FINDINGS if positives[c] >= min_positives]
    current = {c: np.inf for c in CRITICAL_FINDINGS}

    def false_studies(state: dict) -> np.ndarray:
        out = np.zeros(n, bool)
        for c, t in state.items():
            k = CHEXPERT_LABELS.index(c)
            out |= (probs[:, k] >= t) & (targets[:, k] == 0)
        return out

    def f1(c: str, t: float) -> float:
        k = CHEXPERT_LABELS.index(c)
        pred = probs[:, k] >= t
        tp = float((pred & (targets[:, k] == 1)).sum())
        return 2 * tp / (pred.sum() + targets[:, k].sum()) if tp else 0.0

    while True:
        base = false_studies(current).sum()
        best = None
        for c in critical:
            k = CHEXPERT_LABELS.index(c)
            # Any lower threshold at a positive's score (a step may pass positives that do not pay on their own).
            for t in np.unique(probs[(targets[:, k] == 1) & (probs[:, k] < current[c]), k]):
                trial = {**current, c: float(t)}
                falses = int(false_studies(trial).sum())
                gain = f1(c, float(t)) - f1(c, current[c])
                if falses > budget or gain <= 0:
                    continue
                score = (falses - base) / gain
                if best is None or score < best[0]:
                    best = (score, c, float(t))
        if best is None:
            break
        current[best[1]] = best[2]
    for c in CRITICAL_FINDINGS:
        stated = np.isfinite(current[c])
        thresholds[c] = float(current[c]) if stated else 1.0
        rule[c] = (f"critical: validation F1 {f1(c, current[c]):.3f} within the shared budget" if stated else
                   "never stated: no true statement fits the shared critical budget" if c in critical else
                   f"never stated: {positives[c]} validation positives (< {min_positives})" if positives[c] else
                   "never stated: no validation positives")
    return {"thresholds": thresholds, "rule": rule,
            "critical_false_studies": int(false_studies(current).sum()), "critical_budget_studies": budget}
