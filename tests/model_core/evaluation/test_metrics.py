"""model_core.evaluation.metrics: R2Gen tokenization, BLEU/ROUGE-L, clinical efficacy, bootstrap CIs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score, precision_recall_fscore_support

from model_core.chexpert import CHEXPERT_LABELS, NUM_LABELS
from model_core.data.manifest import EMBEDDED_ROOT
from model_core.evaluation import metrics
from model_core.evaluation.metrics import (
    clean_report_iu_xray,
    clinical_efficacy,
    corpus_bleu,
    prepare_texts,
    pycoco_bleu,
    report_generation_metrics,
    rouge_l_per_study,
    select_section,
    tokenize_report,
)
from model_core.stats import bootstrap_ci

NORMAL = "FINDINGS: The heart is normal in size. The lungs are clear. IMPRESSION: No acute disease."


# --------------------------------------------------------------------------- tokenization

def test_clean_report_follows_r2gen():
    text = "The heart is normal.. 2. No XXXX effusion (small); x-XXXX at T12. Lungs: clear!"
    assert clean_report_iu_xray(text) == "the heart is normal . no xxxx effusion small x-xxxx at t12 . lungs clear ."


def test_clean_report_range_in_r2gen_regex_removes_angle_brackets_and_equals():
    # R2Gen's class contains the range ':-[' (0x3A-0x5B): ';<=>?@' are removed, '-' is kept.
    assert clean_report_iu_xray("a<b=c>d @e well-defined") == "abcd e well-defined ."


def test_sections_and_deid_convention():
    report = "FINDINGS: XXXX lungs are clear. IMPRESSION: Normal chest x-XXXX."
    assert select_section(report) == "XXXX lungs are clear."
    assert select_section("IMPRESSION: No acute disease.") == "No acute disease."  # empty findings → impression
    assert select_section(report, "full") == "XXXX lungs are clear. Normal chest x-XXXX."
    assert select_section("Plain text without headers.") == "Plain text without headers."
    assert tokenize_report(report) == "xxxx lungs are clear ."
    assert tokenize_report(report, "full", drop_deid=True) == "lungs are clear . normal chest ."
    with pytest.raises(ValueError, match="section"):
        select_section(report, "impression_only")


# --------------------------------------------------------------------------- BLEU / ROUGE-L

def test_perfect_match_scores_one():
    refs = [NORMAL, "FINDINGS: Mild cardiomegaly. Small left pleural effusion. IMPRESSION: Cardiomegaly."]
    r, h = prepare_texts(refs, refs)
    assert np.allclose(corpus_bleu(r, h), 1.0)
    assert np.allclose(rouge_l_per_study(r, h), 1.0)


def test_disjoint_texts_score_zero():
    r, h = prepare_texts(["FINDINGS: alpha beta gamma delta epsilon"], ["FINDINGS: one two three four five"])
    # "." is a token on both sides, so strip it to make the texts truly disjoint.
    r, h = [r[0].replace(" .", "")], [h[0].replace(" .", "")]
    assert max(corpus_bleu(r, h)) < 1e-6
    assert rouge_l_per_study(r, h)[0] == 0.0


def _embedded_findings() -> list[str]:
    manifest = pd.read_csv(EMBEDDED_ROOT / "manifest.csv", dtype=str, keep_default_na=False).drop_duplicates("uid")
    return [clean_report_iu_xray(f or i) for f, i in zip(manifest["findings"], manifest["impression"])]


def test_fast_bleu_equals_pycocoevalcap_on_the_full_embedded_set():
    refs = _embedded_findings()
    hyps = [refs[i] for i in np.random.default_rng(0).permutation(len(refs))]  # other studies' reports
    fast, slow = corpus_bleu(refs, hyps), pycoco_bleu(refs, hyps)
    assert len(refs) > 3000
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-9)
    # Also with hypotheses much shorter than references (brevity penalty active).
    short = [" ".join(h.split()[:5]) for h in hyps]
    np.testing.assert_allclose(corpus_bleu(refs, short), pycoco_bleu(refs, short), rtol=0, atol=1e-9)


def test_vectorized_bootstrap_matches_generic_bootstrap():
    refs = _embedded_findings()[:40]
    hyps = refs[1:] + refs[:1]
    labels = np.zeros((40, NUM_LABELS))
    out = report_generation_metrics(refs, hyps, labels, labels, n_boot=30, seed=3)
    generic = bootstrap_ci(lambda idx: corpus_bleu([refs[i] for i in idx], [hyps[i] for i in idx])[3], 40,
                           n_boot=30, seed=3)
    for key in ("value", "ci_low", "ci_high"):
        assert out["nlg"]["BLEU-4"][key] == pytest.approx(generic[key], abs=1e-12)
    rouge = rouge_l_per_study(*prepare_texts(refs, hyps))
    generic = bootstrap_ci(lambda idx: rouge[idx].mean(), 40, n_boot=30, seed=3)
    assert out["nlg"]["ROUGE-L"]["ci_low"] == pytest.approx(generic["ci_low"], abs=1e-12)


# --------------------------------------------------------------------------- clinical efficacy

def _random_labels(seed: int, n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    true = rng.choice([0.0, 1.0, -1.0], size=(n, NUM_LABELS), p=[0.7, 0.25, 0.05])
    pred = rng.choice([0.0, 1.0, -1.0], size=(n, NUM_LABELS), p=[0.6, 0.35, 0.05])
    true[:, 5] = 0  # a label without support: must be left out of the macro average
    return true, pred


def test_clinical_efficacy_matches_sklearn():
    true, pred = _random_labels(0)
    yt, yp = (true != 0).astype(int), (pred != 0).astype(int)  # U-Ones
    ce = clinical_efficacy(true, pred)
    p, r, f, _ = precision_recall_fscore_support(yt, yp, average="micro", zero_division=0)
    assert (ce["micro"]["precision"], ce["micro"]["recall"], ce["micro"]["f1"]) == pytest.approx((p, r, f))
    supported = [j for j in range(NUM_LABELS) if yt[:, j].any()]
    assert ce["macro"]["f1"] == pytest.approx(f1_score(yt, yp, labels=supported, average="macro", zero_division=0))
    assert ce["excluded_from_macro"] == [CHEXPERT_LABELS[5]]
    per_p, per_r, per_f, support = precision_recall_fscore_support(yt, yp, average=None, zero_division=0)
    for j, name in enumerate(CHEXPERT_LABELS):
        got = ce["per_label"][name]
        assert (got["precision"], got["recall"], got["f1"]) == pytest.approx((per_p[j], per_r[j], per_f[j]))
        assert got["support"] == support[j]


def test_uncertain_counts_as_positive():
    true = np.zeros((2, NUM_LABELS))
    pred = np.zeros((2, NUM_LABELS))
    true[0, 2], pred[0, 2] = -1, 1
    assert clinical_efficacy(true, pred)["micro"]["f1"] == 1.0


def test_report_generation_metrics_ci_contains_point_and_is_seeded():
    refs = _embedded_findings()[:60]
    hyps = refs[2:] + refs[:2]
    true, pred = _random_labels(1, n=60)
    a = report_generation_metrics(refs, hyps, true, pred, n_boot=200, seed=7)
    b = report_generation_metrics(refs, hyps, true, pred, n_boot=200, seed=7)
    c = report_generation_metrics(refs, hyps, true, pred, n_boot=200, seed=8)
    assert a == b
    assert a["nlg"]["BLEU-4"]["ci_low"] != c["nlg"]["BLEU-4"]["ci_low"]
    figures = [*a["nlg"].values()] + [a["clinical_efficacy"][avg][k] for avg in ("micro", "macro")
                                       for k in ("precision", "recall", "f1")]
    for fig in figures:
        assert fig["ci_low"] <= fig["value"] <= fig["ci_high"]
        assert fig["n_boot"] == 200
    assert a["n_studies"] == 60 and a["section"] == "findings"
    assert set(a["nlg"]) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L"}
    assert a["clinical_efficacy"]["per_label"]["Cardiomegaly"]["f1_ci_low"] is not None


def test_default_pred_labels_come_from_the_labeler(monkeypatch):
    seen = []

    def fake_label_reports(texts):
        seen.extend(texts)
        return np.zeros((len(texts), NUM_LABELS))

    monkeypatch.setattr(metrics, "label_reports", fake_label_reports)
    out = report_generation_metrics([NORMAL], [NORMAL], np.zeros((1, NUM_LABELS)), n_boot=5)
    assert seen == [NORMAL]  # the full hypothesis text, not the tokenized findings
    assert out["clinical_efficacy"]["micro"]["f1"]["value"] == 0.0


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: prepare_texts(["a"], ["a", "b"]), "lengths must match"),
        (lambda: prepare_texts([], []), "empty"),
        (lambda: prepare_texts("a", "a"), "single string"),
        (lambda: prepare_texts(["FINDINGS:  IMPRESSION: "], ["x"]), "no findings text"),
        (lambda: clinical_efficacy(np.zeros((3, 13)), np.zeros((3, 13))), r"shape \(N, 14\)"),
        (lambda: clinical_efficacy(np.zeros(14), np.zeros(14)), r"shape \(N, 14\)"),
        (lambda: clinical_efficacy(np.zeros((3, 14)), np.zeros((2, 14))), "lengths must match"),
        (lambda: clinical_efficacy(np.zeros((0, 14)), np.zeros((0, 14))), "empty"),
        (lambda: clinical_efficacy(np.full((1, 14), 2.0), np.zeros((1, 14))), "must be 1, 0 or -1"),
        (lambda: report_generation_metrics([NORMAL], [NORMAL], np.zeros((2, 14)), np.zeros((1, 14))),
         "lengths must match"),
    ],
)
def test_bad_input_raises_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_module_documents_its_conventions():
    doc = metrics.__doc__
    for phrase in ("clean_report_iu_xray", "FINDINGS", "XXXX", "U-Ones", "percentile"):
        assert phrase in doc
