"""model_core.evaluation.comparison against scipy and statsmodels on fixed data, and the champion-vs-challenger
check on hand-built prediction rows."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_effectsize, proportions_ztest

from model_core.chexpert import LABEL_INDEX
from model_core.evaluation.comparison import (
    bonferroni,
    champion_challenger_check,
    fisher_exact_test,
    mcnemar_exact,
    non_inferior,
    paired_bootstrap,
    paired_t_test,
    sample_size_paired,
    sample_size_two_means,
    sample_size_two_proportions,
    two_proportion_z_test,
    welch_t_test,
)

RNG = np.random.default_rng(20261130)
A = RNG.normal(3.6, 0.9, 60).round(1)          # e.g. radiologist ratings, champion
B = (A + RNG.normal(0.25, 0.5, 60)).round(1)   # the same studies, challenger
C = RNG.normal(3.9, 1.4, 23).round(1)          # another arm: different studies, other size and spread


def test_paired_t_matches_scipy():
    ours, ref = paired_t_test(A, B), sps.ttest_rel(B, A)
    assert ours["statistic"] == pytest.approx(ref.statistic, rel=1e-12)
    assert ours["p_value"] == pytest.approx(ref.pvalue, rel=1e-10)
    assert ours["df"] == 59 and ours["mean_difference"] == pytest.approx(float((B - A).mean()))


def test_welch_t_matches_scipy():
    ours, ref = welch_t_test(A, C), sps.ttest_ind(C, A, equal_var=False)
    assert ours["statistic"] == pytest.approx(ref.statistic, rel=1e-12)
    assert ours["p_value"] == pytest.approx(ref.pvalue, rel=1e-10)
    assert ours["df"] == pytest.approx(ref.df, rel=1e-12)


@pytest.mark.parametrize("table", [(45, 50, 38, 50), (9, 10, 3, 11), (0, 12, 5, 14), (130, 200, 7, 30)])
def test_fisher_exact_matches_scipy(table):
    x_a, n_a, x_b, n_b = table
    ref = sps.fisher_exact([[x_a, n_a - x_a], [x_b, n_b - x_b]], alternative="two-sided")
    assert fisher_exact_test(*table)["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)


@pytest.mark.parametrize("table", [(45, 50, 38, 50), (130, 200, 7, 30), (12, 40, 12, 40)])
def test_two_proportion_z_matches_statsmodels(table):
    x_a, n_a, x_b, n_b = table
    z, p = proportions_ztest([x_b, x_a], [n_b, n_a])
    ours = two_proportion_z_test(*table)
    assert ours["statistic"] == pytest.approx(z, rel=1e-10, abs=1e-12)
    assert ours["p_value"] == pytest.approx(p, rel=1e-10)


def test_exact_mcnemar_matches_statsmodels():
    right_a = np.array([1] * 30 + [0] * 4 + [1] * 11 + [0] * 5, bool)
    right_b = np.array([1] * 30 + [1] * 4 + [0] * 11 + [0] * 5, bool)
    ours = mcnemar_exact(right_a, right_b)
    both, a_only, b_only, neither = 30, 11, 4, 5
    ref = mcnemar([[both, a_only], [b_only, neither]], exact=True)
    assert (ours["a_only"], ours["b_only"]) == (a_only, b_only)
    assert ours["p_value"] == pytest.approx(ref.pvalue, rel=1e-12)
    assert mcnemar_exact(right_a, right_a)["p_value"] == 1.0        # no discordant pair


def test_bonferroni_multiplies_by_the_number_of_tests_and_caps_at_one():
    out = bonferroni({"rating": 0.002, "edit distance": 0.004, "sensitivity": 0.5, "turnaround": None}, 0.01)
    assert out["rating"] == {"p_value": 0.002, "p_adjusted": 0.008, "rejects": True}
    assert out["edit distance"]["p_adjusted"] == pytest.approx(0.016) and not out["edit distance"]["rejects"]
    assert out["sensitivity"]["p_adjusted"] == 1.0 and out["turnaround"]["rejects"] is False


def test_sample_sizes_match_statsmodels_normal_power():
    # A/B with 10 % on the challenger: ratio n_b / n_a = 1/9
    means = sample_size_two_means(effect=0.2, sd=1.0, alpha=0.01 / 4, power=0.8, ratio=1 / 9)
    ref = NormalIndPower().solve_power(effect_size=0.2, alpha=0.01 / 4, power=0.8, ratio=1 / 9)
    assert means["n_a"] == math.ceil(ref) and means["n_b"] == math.ceil(ref / 9)
    props = sample_size_two_proportions(0.95, 0.90, alpha=0.0025, power=0.8, ratio=1 / 9)
    h = proportion_effectsize(0.95, 0.90)
    ref = NormalIndPower().solve_power(effect_size=h, alpha=0.0025, power=0.8, ratio=1 / 9)
    assert props["n_a"] == math.ceil(ref) and props["effect_size"] == pytest.approx(abs(h), rel=1e-12)
    paired = sample_size_paired(effect=0.25, sd_difference=0.5, alpha=0.01, power=0.8)
    assert paired["n_pairs"] == math.ceil(((sps.norm.ppf(0.995) + sps.norm.ppf(0.8)) * 2) ** 2)   # by hand: 47
    assert paired["n_pairs"] == 47
    with pytest.raises(ValueError, match="effect must be"):
        sample_size_two_means(0.0, 1.0, 0.01, 0.8)


def test_paired_bootstrap_of_a_mean_covers_the_paired_difference_and_keeps_the_pairing():
    out = paired_bootstrap(A[:, None], B[:, None], lambda totals: totals[..., 0] / len(A), n_boot=2000, seed=3)
    assert out["difference"]["value"] == pytest.approx(float((B - A).mean()))
    # the paired CI is much narrower than an unpaired one would be (the arms are strongly correlated)
    paired_width = out["difference"]["ci_high"] - out["difference"]["ci_low"]
    unpaired_se = math.sqrt(A.var(ddof=1) / len(A) + B.var(ddof=1) / len(B))
    assert paired_width < 0.6 * (2 * 1.96 * unpaired_se)
    assert out["p_value"] < 0.01
    assert non_inferior(out["difference"], margin=0.0) and not non_inferior({"ci_low": -0.05}, margin=0.02)


def _rows(n: int, *, wrong_critical: int = 0, bland: bool = False) -> list[dict]:
    """Prediction rows: even studies have a pleural effusion (truth and reference). `bland` drafts always say
    'no effusion' and describe the heart oddly; `wrong_critical` studies get a spurious pneumothorax."""
    rows = []
    for i in range(n):
        effusion = i % 2 == 0
        truth = np.zeros(14)
        truth[LABEL_INDEX["Pleural Effusion"]] = float(effusion)
        reference = ("FINDINGS: Small left pleural effusion. Heart size is normal. Lungs are clear otherwise."
                     if effusion else "FINDINGS: Heart size is normal. The lungs are clear. No effusion.")
        generated, labels = reference, truth.copy()
        if bland:
            generated, labels = "FINDINGS: Cardiac silhouette unremarkable appearance today.", np.zeros(14)
        if i < wrong_critical:
            labels = labels.copy()
            labels[LABEL_INDEX["Pneumothorax"]] = 1.0
        rows.append({"study_id": f"s{i:03d}", "generated": generated, "reference": reference,
                     "generated_labels": labels.tolist(), "mesh_labels": truth.tolist()})
    return rows


def test_champion_vs_challenger_passes_an_equal_challenger_and_records_both_models_figures():
    champion = _rows(40)
    challenger = list(reversed(_rows(40)))       # same studies, another order
    out = champion_challenger_check(champion, challenger, margin_ce_f1=0.02, margin_bleu4=0.02, n_boot=200)
    assert out["passed"], out["reasons"]
    assert out["n_studies"] == 40 and out["champion"] == out["challenger"]
    assert out["champion"]["CE micro F1"] == 1.0 and out["champion"]["critical-finding correctness"] == 1.0


def test_champion_vs_challenger_fails_a_worse_challenger_naming_each_check():
    out = champion_challenger_check(_rows(40), _rows(40, bland=True, wrong_critical=20), margin_ce_f1=0.02,
                                    margin_bleu4=0.02, n_boot=200)
    assert not out["passed"]
    text = " ".join(out["reasons"])
    assert "BLEU-4" in text and "CE micro F1" in text and "critical-finding correctness" in text
    assert out["challenger"]["CE micro F1"] == 0.0 and out["champion"]["CE micro F1"] == 1.0


def test_champion_vs_challenger_needs_the_same_studies():
    with pytest.raises(ValueError, match="different studies"):
        champion_challenger_check(_rows(10), _rows(11), margin_ce_f1=0.02, margin_bleu4=0.02)
