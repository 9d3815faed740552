"""Evaluation of generated radiology reports: the one metrics module of the project.

What is measured
  * NLG: corpus BLEU-1..4 (pycocoevalcap's `Bleu`, "closest" reference length) and ROUGE-L
    (pycocoevalcap's `Rouge`, beta 1.2, mean of per-study scores).
  * Clinical efficacy (CE): precision / recall / F1 of the 14 CheXpert labels of the generated report
    against the labels of the reference, micro and macro averaged, plus per label.
  * Detection head: per-finding AUROC (bootstrap CI, positives) and the macro AUROC over the labels with enough
    test positives (`detection_auroc`).
  * Whether the drafts name what the image shows: per finding, the share of truth-positive studies whose draft
    names it (`finding_naming`); how many distinct drafts there are (`distinct_drafts`).
  * Every top-level figure carries a 95 % study-level bootstrap confidence interval (percentile method).
  The statistics underneath (bootstrap resamples, percentile CIs, precision/recall/F1 from counts, and the
  gates' sensitivity / specificity with Wilson intervals) live in `model_core.stats`.

Tokenization (R2Gen convention for IU X-ray)
  Texts are cleaned with a faithful port of `clean_report_iu_xray` from R2Gen's `modules/tokenizers.py`
  (Chen et al., EMNLP 2020), the convention most IU X-ray papers report under:
    - collapse '..' to '.', drop list numbering ("1. ", " 2. " ... " 5. "), lowercase, split into
      sentences on '. ';
    - per sentence: remove '"', '/', '\\', "'" and the characters of R2Gen's regex class
      `[.,?;*!%^&_+():-\\[\\]{}]` (the `:-\\[` part is a character *range*, so ';<=>?@' go too;
      hyphens and digits are kept, e.g. "x-xxxx", "t12");
    - sentences are joined with " . " and the text ends with " .", so "." is itself a BLEU token.
  Whitespace is then normalized to single spaces, which is what R2Gen's id-encode/decode round trip does.
  Not replicated from R2Gen: its reference ids are truncated to 60 tokens and out-of-vocabulary words
  (train frequency < 3) become "<unk>"; here references are scored in full, word for word (stricter,
  slightly lower BLEU than R2Gen's pipeline on long reports). pycocoevalcap's PTBTokenizer (Java) is not used.

  `XXXX` (the collection's de-identification mask) becomes the token "xxxx". Default (`drop_deid=False`):
  kept in references and hypotheses alike, as R2Gen does, so figures are comparable with the literature.
  `drop_deid=True` removes every token containing "xxxx" from both sides, never from one side only.

Reference section
  R2Gen's IU X-ray references are the FINDINGS section. `section="findings"` (default) scores the
  findings of reference and hypothesis, falling back to the impression when a text has no findings;
  `section="full"` scores findings followed by impression. Texts without section headers count as findings.

Clinical efficacy conventions
  Label vectors follow `model_core.chexpert` (1 positive, 0 negative/unmentioned, -1 uncertain).
  A label is "positive" when its value is 1 or -1: uncertain mentions count as positive (U-Ones) on both
  sides, because an uncertain finding in a report still calls for a clinician's attention.
  Precision with no predicted positive, and recall with no true positive, are 0 (sklearn's
  zero_division=0). Macro averages run over the labels with at least one true positive in the
  evaluated set; zero-support labels are listed in `excluded_from_macro` (inside a bootstrap resample,
  a label without positives in that resample is likewise left out of that resample's macro average).
"""

from __future__ import annotations

import math
import re
from typing import Sequence

import numpy as np
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.bleu.bleu_scorer import cook_refs, cook_test
from pycocoevalcap.rouge.rouge import Rouge

from model_core.chexpert import CHEXPERT_LABELS, CRITICAL_FINDINGS, LABEL_INDEX, NUM_LABELS
from model_core.data.reports import split_sections
from model_core.labels.labeler import label_reports
from model_core.stats import percentile_ci, precision_recall_f1, resample_weights, wilson_interval

BLEU_ORDER = 4
BLEU_NAMES = tuple(f"BLEU-{k}" for k in range(1, BLEU_ORDER + 1))
SECTIONS = ("findings", "full")
DEID_TOKEN = "xxxx"
# pycocoevalcap's smoothing constants: they keep BLEU at 0 (not NaN) when no n-gram matches.
_BLEU_TINY, _BLEU_SMALL = 1e-15, 1e-9

TOKENIZATION_NOTE = (
    "R2Gen clean_report_iu_xray (lowercase; punctuation removed per R2Gen's regex; sentences joined with ' . '; "
    "whitespace normalized); no <unk> mapping or 60-token truncation; whitespace split; no PTBTokenizer"
)

# --------------------------------------------------------------------------- tokenization

# R2Gen's sentence-level character filter, verbatim (raw string: identical regex, no escape warning).
_R2GEN_SENT_RE = re.compile(r"[.,?;*!%^&_+():-\[\]{}]")


def clean_report_iu_xray(report: str) -> str:
    """R2Gen's `clean_report_iu_xray`, ported faithfully, then whitespace-normalized.

    "The heart is normal. 2. No effusion.." -> "the heart is normal . no effusion ."
    """
    text = (
        report.replace("..", ".").replace("..", ".").replace("..", ".").replace("1. ", "")
        .replace(". 2. ", ". ").replace(". 3. ", ". ").replace(". 4. ", ". ").replace(". 5. ", ". ")
        .replace(" 2. ", ". ").replace(" 3. ", ". ").replace(" 4. ", ". ").replace(" 5. ", ". ")
        .strip().lower()
    )

    def sent_cleaner(sentence: str) -> str:
        sentence = sentence.replace('"', "").replace("/", "").replace("\\", "").replace("'", "").strip().lower()
        return _R2GEN_SENT_RE.sub("", sentence)

    # R2Gen filters with `!= []`, which is always true for a string: empty sentences are kept, on purpose here too.
    sentences = [sent_cleaner(s) for s in text.split(". ")]
    cleaned = " . ".join(sentences) + " ."
    return " ".join(cleaned.split())


def select_section(report: str, section: str = "findings") -> str:
    """The part of a report that NLG metrics score (see the module docstring for the convention)."""
    if section not in SECTIONS:
        raise ValueError(f"section must be one of {SECTIONS}, got {section!r}")
    parts = split_sections(report)
    if section == "full":
        return " ".join(p for p in (parts["findings"], parts["impression"]) if p)
    return parts["findings"] or parts["impression"]


def tokenize_report(report: str, section: str = "findings", drop_deid: bool = False) -> str:
    """Report text -> the space-separated token string that BLEU / ROUGE-L see."""
    cleaned = clean_report_iu_xray(select_section(report, section))
    if drop_deid:
        cleaned = " ".join(tok for tok in cleaned.split() if DEID_TOKEN not in tok)
    return cleaned


def _check_texts(references: Sequence[str], hypotheses: Sequence[str]) -> None:
    if isinstance(references, str) or isinstance(hypotheses, str):
        raise ValueError("references and hypotheses must be sequences of strings, not a single string")
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses: lengths must match")
    if len(references) == 0:
        raise ValueError("no studies to evaluate: references and hypotheses are empty")
    for name, texts in (("reference", references), ("hypothesis", hypotheses)):
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise ValueError(f"{name} {i} is {type(t).__name__}, expected str")


def prepare_texts(
    references: Sequence[str], hypotheses: Sequence[str], section: str = "findings", drop_deid: bool = False
) -> tuple[list[str], list[str]]:
    """Tokenize both sides with the same convention; a reference with nothing to score is an error."""
    _check_texts(references, hypotheses)
    refs = [tokenize_report(t, section, drop_deid) for t in references]
    hyps = [tokenize_report(t, section, drop_deid) for t in hypotheses]
    for i, raw in enumerate(references):
        # An empty report cleans to "." alone; scoring against it would be meaningless.
        if not select_section(raw, section).strip():
            raise ValueError(f"reference {i} has no {section} text (nor impression) to score against")
    return refs, hyps


# --------------------------------------------------------------------------- BLEU / ROUGE-L

def bleu_stats(references: Sequence[str], hypotheses: Sequence[str], n: int = BLEU_ORDER) -> np.ndarray:
    """Per-study BLEU sufficient statistics of already tokenized texts, exactly as pycocoevalcap cooks them.

    Returns float64 (N, 2 + 2n): [hypothesis length, reference length, guess_1..n, correct_1..n], where
    guess_k = number of hypothesis k-grams and correct_k = reference-clipped k-gram matches.
    Corpus BLEU is a function of the column sums only, so a bootstrap resample is a weighted sum.
    """
    _check_texts(references, hypotheses)
    rows = []
    for ref, hyp in zip(references, hypotheses):
        cooked = cook_test(hyp, cook_refs([ref], n=n), n=n)  # eff=None keeps the list of reference lengths
        # The reference length closest to the hypothesis length ("closest", as Bleu does).
        reflen = min((abs(length - cooked["testlen"]), length) for length in cooked["reflen"])[1]
        rows.append([cooked["testlen"], reflen, *cooked["guess"], *cooked["correct"]])
    return np.asarray(rows, dtype=np.float64)


def corpus_bleu_from_stats(totals: np.ndarray, n: int = BLEU_ORDER) -> np.ndarray:
    """Corpus BLEU-1..n from summed statistics (..., 2 + 2n) -> (..., n); vectorized over leading axes.

    Same arithmetic, in the same order, as pycocoevalcap's `BleuScorer.compute_score`.
    """
    totals = np.asarray(totals, dtype=np.float64)
    testlen, reflen = totals[..., 0], totals[..., 1]
    guess, correct = totals[..., 2 : 2 + n], totals[..., 2 + n : 2 + 2 * n]
    cumulative = np.cumprod((correct + _BLEU_TINY) / (guess + _BLEU_SMALL), axis=-1)
    bleus = cumulative ** (1.0 / np.arange(1, n + 1))
    ratio = (testlen + _BLEU_TINY) / (reflen + _BLEU_SMALL)
    with np.errstate(divide="ignore", over="ignore"):
        brevity = np.where(ratio < 1, np.exp(1 - 1 / ratio), 1.0)
    return bleus * brevity[..., None]


def corpus_bleu(references: Sequence[str], hypotheses: Sequence[str], n: int = BLEU_ORDER) -> list[float]:
    """Corpus BLEU-1..n of tokenized texts (fast path; equals `pycoco_bleu`)."""
    return corpus_bleu_from_stats(bleu_stats(references, hypotheses, n).sum(axis=0), n).tolist()


def pycoco_bleu(references: Sequence[str], hypotheses: Sequence[str], n: int = BLEU_ORDER) -> list[float]:
    """Corpus BLEU-1..n straight from pycocoevalcap's `Bleu` (the reference implementation, slow)."""
    _check_texts(references, hypotheses)
    gts = {i: [r] for i, r in enumerate(references)}
    res = {i: [h] for i, h in enumerate(hypotheses)}
    score, _ = Bleu(n).compute_score(gts, res, verbose=0)
    return [float(s) for s in score]


def rouge_l_per_study(references: Sequence[str], hypotheses: Sequence[str]) -> np.ndarray:
    """ROUGE-L F (beta 1.2) per study of tokenized texts, float64 (N,); the corpus figure is the mean."""
    _check_texts(references, hypotheses)
    rouge = Rouge()
    return np.asarray([rouge.calc_score([h], [r]) for r, h in zip(references, hypotheses)], dtype=np.float64)


# --------------------------------------------------------------------------- clinical efficacy

def check_labels(labels, name: str = "labels", n: int | None = None) -> np.ndarray:
    """Validate a (N, 14) label array in {1, 0, -1}; returns it as float64."""
    arr = np.asarray(labels, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != NUM_LABELS:
        raise ValueError(f"{name} must have shape (N, {NUM_LABELS}), got {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty: no studies to evaluate")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} rows but there are {n} studies: lengths must match")
    bad = ~np.isin(arr, (1.0, 0.0, -1.0))
    if bad.any():
        i, k = np.argwhere(bad)[0]
        raise ValueError(f"{name}[{i}, {k}] = {arr[i, k]!r}: label values must be 1, 0 or -1")
    return arr


def _ce_counts(true: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-study, per-label true-positive / false-positive / false-negative indicators, float64 (N, 14) each."""
    t, p = true != 0, pred != 0  # U-Ones: -1 counts as positive
    return (t & p).astype(np.float64), (~t & p).astype(np.float64), (t & ~p).astype(np.float64)


def _ce_from_totals(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> dict[str, np.ndarray]:
    """CE summary from per-label totals (..., 14): micro and macro P/R/F1, each of shape (...)."""
    # 0 where undefined (sklearn's zero_division=0), as the module docstring says.
    micro = precision_recall_f1(tp.sum(-1), fp.sum(-1), fn.sum(-1))
    per_label = precision_recall_f1(tp, fp, fn)
    supported = (tp + fn) > 0
    out = {}
    for name, micro_v, label_v in zip(("precision", "recall", "f1"), micro, per_label):
        out[f"micro_{name}"] = micro_v
        with np.errstate(invalid="ignore"):
            out[f"macro_{name}"] = np.where(supported, label_v, 0.0).sum(-1) / supported.sum(-1)
        out[f"label_{name}"] = label_v
    return out


def clinical_efficacy(true_labels, pred_labels) -> dict:
    """Clinical-efficacy P/R/F1 of predicted vs true label arrays (N, 14) in {1, 0, -1}.

    Returns {"micro": {precision, recall, f1}, "macro": {...}, "per_label": {name: {precision, recall, f1,
    support}}, "excluded_from_macro": [names with zero support], "n_studies": N}. Support = number of
    studies where the true label is positive (1 or -1).
    """
    true = check_labels(true_labels, "true_labels")
    pred = check_labels(pred_labels, "pred_labels", n=true.shape[0])
    tp, fp, fn = (c.sum(axis=0) for c in _ce_counts(true, pred))
    s = _ce_from_totals(tp, fp, fn)
    support = tp + fn
    return {
        "n_studies": int(true.shape[0]),
        "micro": {k: float(s[f"micro_{k}"]) for k in ("precision", "recall", "f1")},
        "macro": {k: _finite_or_none(s[f"macro_{k}"]) for k in ("precision", "recall", "f1")},
        "per_label": {
            name: {
                "precision": float(s["label_precision"][j]),
                "recall": float(s["label_recall"][j]),
                "f1": float(s["label_f1"][j]),
                "support": int(support[j]),
            }
            for j, name in enumerate(CHEXPERT_LABELS)
        },
        "excluded_from_macro": [name for j, name in enumerate(CHEXPERT_LABELS) if support[j] == 0],
    }


def _finite_or_none(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


# --------------------------------------------------------------------------- report generation metrics

def report_generation_metrics(
    references: Sequence[str],
    hypotheses: Sequence[str],
    true_labels,
    pred_labels=None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    section: str = "findings",
    drop_deid: bool = False,
) -> dict:
    """BLEU-1..4, ROUGE-L and clinical efficacy of N generated reports, each with a bootstrap CI.

    Args:
        references, hypotheses: N raw report texts ("FINDINGS: ... IMPRESSION: ..." or plain findings).
        true_labels: (N, 14) labels of the references in {1, 0, -1}.
        pred_labels: (N, 14) labels of the hypotheses; default: `model_core.labels.label_reports(hypotheses)`
            on the full hypothesis texts.
        n_boot, seed, alpha: bootstrap resamples (study level, shared by every metric), RNG seed, 1 - CI level.
        section, drop_deid: the NLG tokenization convention (module docstring).

    Returns a JSON-serializable dict: n_studies, section, tokenization, bootstrap settings,
    "nlg" {BLEU-1..4, ROUGE-L: {value, ci_low, ci_high, n_boot}}, "clinical_efficacy" (see
    `clinical_efficacy`) with a CI dict for every micro/macro figure and for each label's F1.
    """
    refs, hyps = prepare_texts(references, hypotheses, section, drop_deid)
    n = len(refs)
    true = check_labels(true_labels, "true_labels", n=n)
    if pred_labels is None:
        pred_labels = label_reports(list(hypotheses))
    pred = check_labels(pred_labels, "pred_labels", n=n)
    weights = resample_weights(n, n_boot, seed)

    # NLG: per-study statistics once, then every resample is a weighted sum (no re-tokenizing).
    stats = bleu_stats(refs, hyps)
    bleu_point = corpus_bleu_from_stats(stats.sum(axis=0))
    bleu_boot = corpus_bleu_from_stats(weights @ stats)  # (n_boot, 4)
    rouge = rouge_l_per_study(refs, hyps)
    rouge_boot = weights @ rouge / n
    nlg = {name: percentile_ci(bleu_point[k], bleu_boot[:, k], alpha) for k, name in enumerate(BLEU_NAMES)}
    nlg["ROUGE-L"] = percentile_ci(rouge.mean(), rouge_boot, alpha)

    # CE: per-study TP/FP/FN indicators, resampled the same way.
    counts = _ce_counts(true, pred)
    boot = _ce_from_totals(*(weights @ c for c in counts))
    ce = clinical_efficacy(true, pred)
    for avg in ("micro", "macro"):
        for k in ("precision", "recall", "f1"):
            point = ce[avg][k] if ce[avg][k] is not None else float("nan")
            ce[avg][k] = percentile_ci(point, boot[f"{avg}_{k}"], alpha)
    for j, name in enumerate(CHEXPERT_LABELS):
        label_ci = percentile_ci(ce["per_label"][name]["f1"], boot["label_f1"][:, j], alpha)
        ce["per_label"][name]["f1_ci_low"] = label_ci["ci_low"]
        ce["per_label"][name]["f1_ci_high"] = label_ci["ci_high"]
    ce["uncertain_policy"] = "U-Ones: -1 counts as positive on both sides"

    return {
        "n_studies": n,
        "section": section,
        "drop_deid": drop_deid,
        "tokenization": TOKENIZATION_NOTE,
        "bootstrap": {"n_boot": n_boot, "seed": seed, "alpha": alpha,
                      "method": "percentile; studies resampled with replacement; same resamples for all metrics"},
        "nlg": nlg,
        "clinical_efficacy": ce,
    }


def paired_comparison(references: Sequence[str], hypotheses_a: Sequence[str], hypotheses_b: Sequence[str],
                      true_labels, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05,
                      section: str = "findings") -> dict:
    """Two systems' drafts of the same studies (an ablation): each one's BLEU-4, ROUGE-L and CE micro/macro F1,
    and the difference a - b with a paired bootstrap CI (the same study resamples for both sides).

    Returns {"a": {metric: CI dict}, "b": {...}, "a_minus_b": {metric: CI dict}, "n_studies"}.
    """
    refs, hyps_a = prepare_texts(references, hypotheses_a, section)
    _, hyps_b = prepare_texts(references, hypotheses_b, section)
    n = len(refs)
    true = check_labels(true_labels, "true_labels", n=n)
    weights = resample_weights(n, n_boot, seed)
    points, boots = {}, {}
    for side, hyps, raw in (("a", hyps_a, hypotheses_a), ("b", hyps_b, hypotheses_b)):
        stats = bleu_stats(refs, hyps)
        rouge = rouge_l_per_study(refs, hyps)
        counts = _ce_counts(true, label_reports(list(raw)))
        ce_point = _ce_from_totals(*(c.sum(axis=0) for c in counts))
        ce_boot = _ce_from_totals(*(weights @ c for c in counts))
        points[side] = {"BLEU-4": corpus_bleu_from_stats(stats.sum(axis=0))[3], "ROUGE-L": rouge.mean(),
                        "CE micro F1": ce_point["micro_f1"], "CE macro F1": ce_point["macro_f1"]}
        boots[side] = {"BLEU-4": corpus_bleu_from_stats(weights @ stats)[:, 3], "ROUGE-L": weights @ rouge / n,
                       "CE micro F1": ce_boot["micro_f1"], "CE macro F1": ce_boot["macro_f1"]}
    out = {side: {k: percentile_ci(points[side][k], boots[side][k], alpha) for k in points[side]} for side in "ab"}
    out["a_minus_b"] = {k: percentile_ci(points["a"][k] - points["b"][k], boots["a"][k] - boots["b"][k], alpha)
                        for k in points["a"]}
    out["n_studies"] = n
    return out


# --------------------------------------------------------------------------- detection head and drafts

MACRO_AUROC_MIN_POSITIVES = 10   # a label's AUROC on fewer test positives is too noisy to average
# The macro AUROC averages findings; "No Finding" (the complement of all of them) is reported beside them.
MACRO_AUROC_LABELS = tuple(name for name in CHEXPERT_LABELS if name != "No Finding")


def weighted_auroc(scores: np.ndarray, y_true: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC of `scores` (n,) for 0/1 `y_true` (n,) under study weights (B, n) -> (B,); ties count one half.

    With unit weights it is the usual (Mann-Whitney) AUROC, sklearn's `roc_auc_score`; with bootstrap
    resample weights (`model_core.stats.resample_weights`) it is each resample's AUROC, without re-sorting.
    NaN where a weighting leaves no positive or no negative.
    """
    scores, y = np.asarray(scores, dtype=np.float64), np.asarray(y_true, dtype=np.float64)
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if scores.shape != y.shape or scores.ndim != 1 or weights.shape[-1] != scores.size:
        raise ValueError(f"scores {scores.shape}, labels {y.shape} and weights {weights.shape} do not match")
    groups, which = np.unique(scores, return_inverse=True)          # equal scores form one group
    onehot = np.zeros((scores.size, groups.size))
    onehot[np.arange(scores.size), which] = 1.0
    neg_per_group = (weights * (1.0 - y)) @ onehot                   # (B, G)
    neg_below = np.cumsum(neg_per_group, axis=1) - neg_per_group      # negatives strictly below each group
    credit = (neg_below + 0.5 * neg_per_group)[:, which]              # (B, n): each study's share of wins
    pos_w, neg_w = weights * y, weights * (1.0 - y)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos_w * credit).sum(axis=1) / (pos_w.sum(axis=1) * neg_w.sum(axis=1))


def detection_auroc(probs, truth, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05,
                    min_positives: int = MACRO_AUROC_MIN_POSITIVES) -> dict:
    """Per-label AUROC of detection-head probabilities (N, 14) against 0/1 truth (N, 14), with bootstrap CIs.

    Returns {"per_label": {name: {value, ci_low, ci_high, n_boot, positives, negatives}} (value None when the
    test set lacks a class), "macro": CI dict of the mean AUROC over the findings (`MACRO_AUROC_LABELS`: not
    "No Finding") with >= `min_positives` positives and at least one negative, "macro_labels": those labels,
    "min_positives"}. The study resamples
    are `model_core.stats.resample_weights(N, n_boot, seed)`, the ones every other figure here uses.
    """
    probs = np.asarray(probs, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    if probs.shape != truth.shape or probs.ndim != 2 or probs.shape[1] != NUM_LABELS:
        raise ValueError(f"probabilities {probs.shape} and truth {truth.shape} must both be (N, {NUM_LABELS})")
    if not np.isin(truth, (0.0, 1.0)).all():
        raise ValueError("truth must hold only 0 and 1 (binarize uncertain labels first)")
    n = probs.shape[0]
    weights = resample_weights(n, n_boot, seed)
    ones = np.ones((1, n))
    per_label, macro_labels, boots, points = {}, [], [], []
    for k, name in enumerate(CHEXPERT_LABELS):
        pos = int(truth[:, k].sum())
        entry = {"value": None, "ci_low": None, "ci_high": None, "n_boot": 0, "positives": pos, "negatives": n - pos}
        if 0 < pos < n:
            point = float(weighted_auroc(probs[:, k], truth[:, k], ones)[0])
            boot = weighted_auroc(probs[:, k], truth[:, k], weights)
            entry.update(percentile_ci(point, boot, alpha))
            if pos >= min_positives and name in MACRO_AUROC_LABELS:
                macro_labels.append(name)
                boots.append(boot)
                points.append(point)
        per_label[name] = entry
    if macro_labels:
        with np.errstate(invalid="ignore"):
            macro = percentile_ci(float(np.mean(points)), np.mean(np.stack(boots), axis=0), alpha)
    else:
        macro = {"value": None, "ci_low": None, "ci_high": None, "n_boot": 0}
    return {"per_label": per_label, "macro": macro, "macro_labels": macro_labels, "min_positives": min_positives}


def finding_naming(text_labels, truth, findings=CRITICAL_FINDINGS, alpha: float = 0.05) -> dict:
    """Per finding: of the studies whose truth (N, 14, 0/1) is positive, how many drafts name it.

    A draft names a finding when the labeler on the draft (`text_labels`, (N, 14) in {1, 0, -1}) marks it
    positive or uncertain (U-Ones, as clinical efficacy counts). Returns {finding: {positives, named, share,
    share_ci (Wilson)}}; share is None without positives.
    """
    text_labels = check_labels(text_labels, "text_labels")
    truth = np.asarray(truth, dtype=np.float64)
    if truth.shape != text_labels.shape:
        raise ValueError(f"truth {truth.shape} and text labels {text_labels.shape} must have the same shape")
    out = {}
    for name in findings:
        k = LABEL_INDEX[name]
        positive = truth[:, k] == 1
        named = int((text_labels[positive, k] != 0).sum())
        total = int(positive.sum())
        out[name] = {"positives": total, "named": named, "share": named / total if total else None,
                     "share_ci": [None if b is None else round(b, 6) for b in wilson_interval(named, total, alpha)],
                     "ci_method": "Wilson score"}
    return out


def distinct_drafts(texts: Sequence[str]) -> dict:
    """How varied the drafts are: distinct texts (exact, after whitespace normalisation), their share of the
    studies, and the share of studies given the single most common draft."""
    if isinstance(texts, str) or not len(texts):
        raise ValueError("distinct_drafts needs a non-empty sequence of draft texts")
    normalized = [" ".join(str(t).split()) for t in texts]
    counts: dict[str, int] = {}
    for t in normalized:
        counts[t] = counts.get(t, 0) + 1
    return {"distinct": len(counts), "studies": len(normalized), "distinct_share": len(counts) / len(normalized),
            "most_common_share": max(counts.values()) / len(normalized)}
