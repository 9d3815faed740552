"""Comparing two models, one implementation each: the statistics of the safe rollout (registry/rollout.py,
monitoring/ab.py) and the champion-vs-challenger check on the same test studies.

Which test fits which design:
- the same studies read by both models (the gate's test split, shadow mode) are PAIRED: paired bootstrap of a
  corpus metric's difference (BLEU-4, CE micro F1), exact McNemar on per-study correctness, paired t-test on a
  per-study score;
- A/B arms hold different patients, so they are UNPAIRED: Welch t on per-study scores (rating, edit distance,
  turnaround), two-proportion z and Fisher exact on rates (critical-finding sensitivity);
- several metrics at once: Bonferroni (each p-value times the number of tests).
p-values are two-sided unless a function says otherwise; `difference` is always b − a (challenger − champion).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats as sps

from model_core.chexpert import CRITICAL_FINDINGS, LABEL_INDEX
from model_core.evaluation.metrics import (
    _ce_counts,
    _ce_from_totals,
    bleu_stats,
    check_labels,
    corpus_bleu_from_stats,
    prepare_texts,
)
from model_core.stats import percentile_ci, resample_weights

# --------------------------------------------------------------------------- A/B assignment


def ab_arm(study_uid: str, salt: str, share: float) -> str:
    """"challenger" for a deterministic `share` of studies, else "champion": SHA-256(salt ":" UID) read as a
    number in [0, 1) below the share. Sticky (same study, same arm within one experiment), uniform, and a new
    salt is a new randomisation. Serving routes with it; monitoring reads the arm back from the prediction log."""
    if not 0 <= share <= 1:
        raise ValueError(f"share must be in [0, 1], got {share}")
    digest = hashlib.sha256(f"{salt}:{study_uid}".encode()).digest()
    return "challenger" if int.from_bytes(digest[:8], "big") / 2 ** 64 < share else "champion"


# --------------------------------------------------------------------------- paired tests (same studies)


def _pair(a, b, what: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"{what}: paired samples must be 1-D and of equal length, got {a.shape} and {b.shape}")
    if a.size < 2:
        raise ValueError(f"{what}: at least 2 pairs are needed, got {a.size}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError(f"{what}: samples hold non-finite values")
    return a, b


def paired_t_test(a, b) -> dict:
    """Paired t-test of per-study scores b − a (the seed's test for shadow pairs). {statistic, p_value, df,
    mean_difference, n}; a zero-variance difference gives p = 1 when the mean difference is 0, else 0."""
    a, b = _pair(a, b, "paired t-test")
    d = b - a
    n, mean, sd = d.size, float(d.mean()), float(d.std(ddof=1))
    if sd == 0:
        t, p = (0.0, 1.0) if mean == 0 else (math.copysign(math.inf, mean), 0.0)
    else:
        t = mean / (sd / math.sqrt(n))
        p = float(2 * sps.t.sf(abs(t), n - 1))
    return {"test": "paired t", "statistic": t, "p_value": p, "df": n - 1, "mean_difference": mean, "n": n}


def mcnemar_exact(correct_a, correct_b) -> dict:
    """Exact McNemar test on per-study correctness (bool arrays over the same studies): the discordant pairs
    only — a right where b is wrong (`a_only`) vs b right where a is wrong (`b_only`) — against Binomial(k, ½)."""
    a, b = _pair(correct_a, correct_b, "McNemar")
    a, b = a.astype(bool), b.astype(bool)
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    k = a_only + b_only
    p = 1.0 if k == 0 else min(1.0, float(2 * sps.binom.cdf(min(a_only, b_only), k, 0.5)))
    return {"test": "exact McNemar", "a_only": a_only, "b_only": b_only, "p_value": p,
            "accuracy_a": float(a.mean()), "accuracy_b": float(b.mean()), "n": int(a.size)}


def paired_bootstrap(stats_a, stats_b, statistic: Callable[[np.ndarray], np.ndarray], n_boot: int = 1000,
                     seed: int = 0, alpha: float = 0.05) -> dict:
    """Paired bootstrap of a corpus metric on the same studies.

    stats_a, stats_b: per-study additive sufficient statistics (N, K) (BLEU n-gram counts, CE tp/fp/fn, …);
    statistic: totals (..., K) → metric (...). Both sides use the same study resamples, so the CI of b − a
    keeps the pairing. Returns {"a", "b", "difference"} (each {value, ci_low, ci_high, n_boot}) and a two-sided
    bootstrap p-value of "no difference" (twice the smaller share of resampled differences on either side of 0).
    """
    sa, sb = np.asarray(stats_a, dtype=np.float64), np.asarray(stats_b, dtype=np.float64)
    if sa.ndim != 2 or sa.shape != sb.shape or sa.shape[0] == 0:
        raise ValueError(f"paired bootstrap: per-study statistics must be (N, K) of equal shape, got {sa.shape} "
                         f"and {sb.shape}")
    weights = resample_weights(sa.shape[0], n_boot, seed)
    point_a, point_b = float(statistic(sa.sum(axis=0))), float(statistic(sb.sum(axis=0)))
    boot_a, boot_b = statistic(weights @ sa), statistic(weights @ sb)
    diff = boot_b - boot_a
    diff = diff[np.isfinite(diff)]
    p = min(1.0, 2 * min(float((diff <= 0).mean()), float((diff >= 0).mean()))) if diff.size else None
    return {"a": percentile_ci(point_a, boot_a, alpha), "b": percentile_ci(point_b, boot_b, alpha),
            "difference": percentile_ci(point_b - point_a, boot_b - boot_a, alpha), "p_value": p,
            "n": int(sa.shape[0])}


def non_inferior(difference_ci: dict, margin: float) -> bool:
    """b is non-inferior to a when the lower CI bound of b − a lies above −margin (a higher-is-better metric)."""
    if margin < 0:
        raise ValueError(f"a non-inferiority margin must be ≥ 0, got {margin}")
    low = difference_ci.get("ci_low")
    return low is not None and low > -margin


# --------------------------------------------------------------------------- unpaired tests (A/B arms)


def welch_t_test(a, b) -> dict:
    """Welch's unequal-variance t-test of b vs a (different studies in each). {statistic, p_value, df,
    mean_difference (b − a), n_a, n_b}."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1 or a.size < 2 or b.size < 2:
        raise ValueError(f"Welch t-test: each arm needs ≥ 2 studies, got {a.size} and {b.size}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("Welch t-test: samples hold non-finite values")
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    mean = float(b.mean() - a.mean())
    if va + vb == 0:
        t, p, df = (0.0, 1.0, float(a.size + b.size - 2)) if mean == 0 else (math.copysign(math.inf, mean), 0.0,
                                                                             float(a.size + b.size - 2))
    else:
        t = mean / math.sqrt(va + vb)
        df = float((va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1)))
        p = float(2 * sps.t.sf(abs(t), df))
    return {"test": "Welch t", "statistic": t, "p_value": p, "df": df, "mean_difference": mean,
            "n_a": int(a.size), "n_b": int(b.size)}


def _check_counts(x_a: int, n_a: int, x_b: int, n_b: int, what: str) -> None:
    for x, n in ((x_a, n_a), (x_b, n_b)):
        if not (0 <= x <= n) or n < 1:
            raise ValueError(f"{what}: successes must lie in 0..n with n ≥ 1, got {x} of {n}")


def two_proportion_z_test(x_a: int, n_a: int, x_b: int, n_b: int) -> dict:
    """Pooled two-proportion z-test of rate b vs rate a. {statistic, p_value, rate_a, rate_b, difference}."""
    _check_counts(x_a, n_a, x_b, n_b, "two-proportion z-test")
    ra, rb = x_a / n_a, x_b / n_b
    pooled = (x_a + x_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if se == 0:
        z, p = 0.0, 1.0
    else:
        z = (rb - ra) / se
        p = float(2 * sps.norm.sf(abs(z)))
    return {"test": "two-proportion z", "statistic": z, "p_value": p, "rate_a": ra, "rate_b": rb,
            "difference": rb - ra, "n_a": n_a, "n_b": n_b}


def fisher_exact_test(x_a: int, n_a: int, x_b: int, n_b: int) -> dict:
    """Two-sided Fisher exact test of the 2×2 table [[x_a, n_a − x_a], [x_b, n_b − x_b]] (small counts: rare
    critical findings). p sums the hypergeometric probabilities of tables no likelier than the observed one."""
    _check_counts(x_a, n_a, x_b, n_b, "Fisher exact test")
    total, successes = n_a + n_b, x_a + x_b
    support = np.arange(max(0, successes - n_b), min(successes, n_a) + 1)
    pmf = sps.hypergeom.pmf(support, total, successes, n_a)
    observed = sps.hypergeom.pmf(x_a, total, successes, n_a)
    p = float(min(1.0, pmf[pmf <= observed * (1 + 1e-7)].sum()))   # the relative tolerance scipy uses
    return {"test": "Fisher exact", "p_value": p, "rate_a": x_a / n_a, "rate_b": x_b / n_b,
            "difference": x_b / n_b - x_a / n_a, "n_a": n_a, "n_b": n_b}


# --------------------------------------------------------------------------- several metrics, sample sizes


def bonferroni(p_values: dict[str, float | None], alpha: float) -> dict[str, dict]:
    """Each p-value times the number of tests (capped at 1), and whether it rejects at `alpha` family-wise.
    A None p-value (test not computable) counts in the number of tests and never rejects."""
    m = len(p_values)
    return {name: {"p_value": p, "p_adjusted": None if p is None else min(1.0, p * m),
                   "rejects": p is not None and p * m < alpha} for name, p in p_values.items()}


def _z(q: float) -> float:
    return float(sps.norm.ppf(q))


def sample_size_two_means(effect: float, sd: float, alpha: float, power: float, ratio: float = 1.0) -> dict:
    """Studies per arm to detect a mean difference `effect` (sd `sd`) with a two-sided test at `alpha`:
    normal approximation, n_a = (z_{1−α/2} + z_{power})² (1 + 1/ratio) / d², n_b = ratio · n_a (d = effect / sd;
    ratio = n_b / n_a, e.g. 1/9 for a 10 % challenger arm)."""
    _check_power(alpha, power, ratio)
    if effect == 0 or sd <= 0:
        raise ValueError(f"sample size: effect must be ≠ 0 and sd > 0, got {effect} and {sd}")
    d = abs(effect) / sd
    n_a = (_z(1 - alpha / 2) + _z(power)) ** 2 * (1 + 1 / ratio) / d ** 2
    return {"n_a": math.ceil(n_a), "n_b": math.ceil(n_a * ratio), "effect_size": d}


def sample_size_two_proportions(rate_a: float, rate_b: float, alpha: float, power: float,
                                ratio: float = 1.0) -> dict:
    """Studies per arm to tell rate_b from rate_a (Cohen's h = 2 asin √b − 2 asin √a, normal approximation as in
    statsmodels' NormalIndPower). For a sensitivity these are POSITIVE studies: divide by the prevalence."""
    for r in (rate_a, rate_b):
        if not 0 <= r <= 1:
            raise ValueError(f"sample size: rates must be in [0, 1], got {r}")
    h = 2 * math.asin(math.sqrt(rate_b)) - 2 * math.asin(math.sqrt(rate_a))
    out = sample_size_two_means(h, 1.0, alpha, power, ratio)
    return {**out, "effect_size": abs(h)}


def sample_size_paired(effect: float, sd_difference: float, alpha: float, power: float) -> dict:
    """Pairs needed for a paired test of mean difference `effect`: n = ((z_{1−α/2} + z_{power}) σ_d / effect)²."""
    _check_power(alpha, power, 1.0)
    if effect == 0 or sd_difference <= 0:
        raise ValueError(f"sample size: effect must be ≠ 0 and sd > 0, got {effect} and {sd_difference}")
    n = ((_z(1 - alpha / 2) + _z(power)) * sd_difference / abs(effect)) ** 2
    return {"n_pairs": math.ceil(n), "effect_size": abs(effect) / sd_difference}


def _check_power(alpha: float, power: float, ratio: float) -> None:
    if not 0 < alpha < 1 or not 0 < power < 1 or ratio <= 0:
        raise ValueError(f"sample size: alpha and power must be in (0, 1) and ratio > 0, got {alpha}, {power}, "
                         f"{ratio}")


# --------------------------------------------------------------------------- champion vs challenger


def _bleu4(totals: np.ndarray) -> np.ndarray:
    return np.asarray(corpus_bleu_from_stats(totals))[..., 3]


def _micro_f1(totals: np.ndarray) -> np.ndarray:
    k = totals.shape[-1] // 3
    return _ce_from_totals(totals[..., :k], totals[..., k:2 * k], totals[..., 2 * k:])["micro_f1"]


def _aligned(champion: Sequence[dict], challenger: Sequence[dict]) -> tuple[list[dict], list[dict]]:
    """Both models' prediction rows (evaluation's predictions.jsonl) in the same study order; the study sets
    must be equal (the paired tests need the same studies)."""
    a = {row["study_id"]: row for row in champion}
    b = {row["study_id"]: row for row in challenger}
    if len(a) != len(champion) or len(b) != len(challenger):
        raise ValueError("champion vs challenger: a predictions file lists a study twice")
    if a.keys() != b.keys():
        raise ValueError(f"champion vs challenger: the predictions cover different studies "
                         f"({len(a.keys() - b.keys())} only in the champion's, {len(b.keys() - a.keys())} only in "
                         f"the challenger's); the comparison needs the same test studies")
    order = sorted(a)
    return [a[s] for s in order], [b[s] for s in order]


def critical_correct(generated_labels: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per study: does the draft state exactly the critical findings the truth holds (uncertain = positive)? (N,)"""
    idx = [LABEL_INDEX[name] for name in CRITICAL_FINDINGS]
    return ((generated_labels[:, idx] != 0) == (truth[:, idx] != 0)).all(axis=1)


def champion_challenger_check(champion: Sequence[dict], challenger: Sequence[dict], *, margin_ce_f1: float,
                              margin_bleu4: float, mcnemar_alpha: float = 0.05, n_boot: int = 1000, seed: int = 0,
                              alpha: float = 0.05) -> dict:
    """The challenger against the champion on the same test studies, from each one's evaluation rows
    (`predictions.jsonl`: study_id, generated, reference, generated_labels, mesh_labels).

    Passes when the challenger is non-inferior on BLEU-4 and CE micro F1 (paired bootstrap CI of challenger −
    champion above −margin) and not significantly worse on per-study critical-finding correctness (exact
    McNemar at `mcnemar_alpha`). Returns {passed, reasons, champion: figures, challenger: figures, tests, n}.
    """
    rows_a, rows_b = _aligned(champion, challenger)
    references = [r["reference"] for r in rows_a]
    truth = check_labels([r["mesh_labels"] for r in rows_a], "mesh_labels")
    bleu, ce, correct = {}, {}, {}
    for side, rows in (("champion", rows_a), ("challenger", rows_b)):
        refs, hyps = prepare_texts(references, [r["generated"] for r in rows])
        bleu[side] = bleu_stats(refs, hyps)
        generated = check_labels([r["generated_labels"] for r in rows], "generated_labels", n=len(rows))
        ce[side] = np.concatenate(_ce_counts(truth, generated), axis=1)
        correct[side] = critical_correct(generated, truth)
    tests = {
        "BLEU-4": paired_bootstrap(bleu["champion"], bleu["challenger"], _bleu4, n_boot, seed, alpha),
        "CE micro F1": paired_bootstrap(ce["champion"], ce["challenger"], _micro_f1, n_boot, seed, alpha),
        "critical-finding correctness": mcnemar_exact(correct["champion"], correct["challenger"]),
    }
    margins = {"BLEU-4": margin_bleu4, "CE micro F1": margin_ce_f1}
    reasons = []
    for name, margin in margins.items():
        tests[name]["margin"] = margin
        tests[name]["non_inferior"] = ok = non_inferior(tests[name]["difference"], margin)
        if not ok:
            reasons.append(f"{name}: challenger − champion lower CI bound {tests[name]['difference']['ci_low']:.4f} "
                           f"is not above −{margin:g} (non-inferiority margin)")
    mc = tests["critical-finding correctness"]
    mc["alpha"] = mcnemar_alpha
    if mc["p_value"] < mcnemar_alpha and mc["b_only"] < mc["a_only"]:
        reasons.append(f"critical-finding correctness: challenger worse ({mc['accuracy_b']:.3f} vs "
                       f"{mc['accuracy_a']:.3f}; McNemar p = {mc['p_value']:.4g} < {mcnemar_alpha:g})")

    def figures(key: str) -> dict:                  # key: "a" (champion) or "b" (challenger)
        return {"BLEU-4": tests["BLEU-4"][key]["value"], "CE micro F1": tests["CE micro F1"][key]["value"],
                "critical-finding correctness": mc[f"accuracy_{key}"]}

    return {"passed": not reasons, "reasons": reasons or ["challenger non-inferior to the champion on every check"],
            "champion": figures("a"), "challenger": figures("b"), "tests": tests, "n_studies": len(rows_a)}
