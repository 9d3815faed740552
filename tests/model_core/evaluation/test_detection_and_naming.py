"""model_core.evaluation.metrics: detection-head AUROC with bootstrap CIs, naming, distinct drafts, paired ablation."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from model_core.chexpert import LABEL_INDEX, NUM_LABELS
from model_core.evaluation.metrics import (
    detection_auroc,
    distinct_drafts,
    finding_naming,
    paired_comparison,
    weighted_auroc,
)
from model_core.stats import bootstrap_indices, resample_weights


@pytest.fixture(scope="module")
def scored():
    """60 studies: labels with 0, 5 and 20 positives; scores informative for some labels, tied for one."""
    rng = np.random.default_rng(3)
    truth = np.zeros((60, NUM_LABELS))
    truth[:20, LABEL_INDEX["Cardiomegaly"]] = 1
    truth[:12, LABEL_INDEX["Pleural Effusion"]] = 1
    truth[::12, LABEL_INDEX["Lung Lesion"]] = 1                         # 5 positives
    truth[30:, LABEL_INDEX["No Finding"]] = 1                          # reported, never averaged
    probs = rng.uniform(size=truth.shape)
    probs[:, LABEL_INDEX["Cardiomegaly"]] += truth[:, LABEL_INDEX["Cardiomegaly"]]
    probs[:, LABEL_INDEX["Pleural Effusion"]] = np.round(probs[:, LABEL_INDEX["Pleural Effusion"]], 1)  # ties
    return probs / probs.max(), truth


def test_weighted_auroc_is_sklearns_auroc_with_ties_and_on_each_resample(scored):
    probs, truth = scored
    for name in ("Cardiomegaly", "Pleural Effusion", "Lung Lesion"):
        k = LABEL_INDEX[name]
        assert weighted_auroc(probs[:, k], truth[:, k], np.ones((1, 60)))[0] == pytest.approx(
            roc_auc_score(truth[:, k], probs[:, k]), abs=1e-12)
        idx = bootstrap_indices(60, 5, seed=1)
        resampled = weighted_auroc(probs[:, k], truth[:, k], resample_weights(60, 5, seed=1))
        for row, value in zip(idx, resampled):
            y = truth[row, k]
            expected = roc_auc_score(y, probs[row, k]) if 0 < y.sum() < len(y) else np.nan
            np.testing.assert_allclose(value, expected, atol=1e-12)


def test_detection_auroc_reports_positives_cis_and_a_macro_over_well_supported_labels(scored):
    probs, truth = scored
    out = detection_auroc(probs, truth, n_boot=200, seed=0, min_positives=10)
    cardio = out["per_label"]["Cardiomegaly"]
    assert cardio["positives"] == 20 and cardio["negatives"] == 40
    assert cardio["ci_low"] <= cardio["value"] <= cardio["ci_high"] and cardio["n_boot"] == 200
    assert out["per_label"]["Fracture"]["value"] is None and out["per_label"]["Fracture"]["positives"] == 0
    assert out["per_label"]["Lung Lesion"]["value"] is not None              # listed, but not in the macro
    assert out["macro_labels"] == ["Cardiomegaly", "Pleural Effusion"]
    assert out["per_label"]["No Finding"]["positives"] == 30 and out["per_label"]["No Finding"]["value"] is not None
    expected = np.mean([roc_auc_score(truth[:, LABEL_INDEX[n]], probs[:, LABEL_INDEX[n]]) for n in out["macro_labels"]])
    assert out["macro"]["value"] == pytest.approx(expected)
    assert out["macro"]["ci_low"] <= out["macro"]["value"] <= out["macro"]["ci_high"]


def test_detection_auroc_without_any_well_supported_label_has_no_macro(scored):
    probs, truth = scored
    out = detection_auroc(probs, truth, n_boot=20, min_positives=50)
    assert out["macro"]["value"] is None and out["macro_labels"] == []


@pytest.mark.parametrize(("probs", "truth", "message"), [
    (np.zeros((3, 14)), np.zeros((3, 13)), r"must both be \(N, 14\)"),
    (np.zeros((3, 14)), np.full((3, 14), -1.0), "only 0 and 1"),
])
def test_detection_auroc_refuses_bad_shapes_and_uncertain_truth(probs, truth, message):
    with pytest.raises(ValueError, match=message):
        detection_auroc(probs, truth, n_boot=5)


def test_finding_naming_counts_drafts_that_name_the_positive_studies_findings():
    truth = np.zeros((5, NUM_LABELS))
    text = np.zeros((5, NUM_LABELS))
    eff = LABEL_INDEX["Pleural Effusion"]
    truth[:4, eff] = 1
    text[0, eff], text[1, eff], text[4, eff] = 1, -1, 1       # uncertain names it too; study 4 is not positive
    out = finding_naming(text, truth)
    assert out["Pleural Effusion"]["positives"] == 4 and out["Pleural Effusion"]["named"] == 2
    assert out["Pleural Effusion"]["share"] == 0.5
    low, high = out["Pleural Effusion"]["share_ci"]
    assert 0 < low < 0.5 < high < 1
    assert out["Pneumothorax"] == {"positives": 0, "named": 0, "share": None, "share_ci": [None, None],
                                   "ci_method": "Wilson score"}
    assert set(out) == {"Pneumothorax", "Fracture", "Lung Lesion", "Pleural Effusion"}


def test_distinct_drafts_counts_texts_after_whitespace_normalisation():
    out = distinct_drafts(["No acute disease.", "No  acute disease. ", "Small effusion.", "No acute disease."])
    assert out == {"distinct": 2, "studies": 4, "distinct_share": 0.5, "most_common_share": 0.75}
    with pytest.raises(ValueError, match="non-empty"):
        distinct_drafts([])


def test_paired_comparison_of_a_system_with_itself_is_zero_and_a_better_system_wins():
    refs = ["FINDINGS: Small right pleural effusion. IMPRESSION: Effusion.",
            "FINDINGS: The lungs are clear. IMPRESSION: No acute disease.",
            "FINDINGS: Mild cardiomegaly. IMPRESSION: Cardiomegaly."]
    truth = np.zeros((3, NUM_LABELS))
    truth[0, LABEL_INDEX["Pleural Effusion"]] = truth[2, LABEL_INDEX["Cardiomegaly"]] = 1
    truth[1, LABEL_INDEX["No Finding"]] = 1
    normal = ["FINDINGS: The lungs are clear. IMPRESSION: No acute disease."] * 3
    same = paired_comparison(refs, normal, normal, truth, n_boot=50)
    assert all(v["value"] == 0 and v["ci_low"] == v["ci_high"] == 0 for v in same["a_minus_b"].values())
    better = paired_comparison(refs, refs, normal, truth, n_boot=50)
    assert better["a_minus_b"]["CE macro F1"]["value"] > 0 and better["a_minus_b"]["ROUGE-L"]["value"] > 0
    assert better["a"]["ROUGE-L"]["value"] == pytest.approx(1.0) and better["n_studies"] == 3
    assert set(better["a"]) == {"BLEU-4", "ROUGE-L", "CE micro F1", "CE macro F1"}
