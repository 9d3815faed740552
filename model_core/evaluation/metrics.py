"""Evaluation of generated radiology reports: the one metrics module of the project.

What is measured
  * NLG: corpus BLEU-1..4 (pycocoevalcap's `Bleu`, "closest" reference length) and ROUGE-L
    (pycocoevalcap's `Rouge`, beta 1.2, mean of per-study scores).
  * Clinical efficacy (CE): precision / recall / F1 of the 14 CheXpert labels of the generated report
    against the labels of the reference, micro and macro averaged, plus per label.
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

from model_core.chexpert import CHEXPERT_LABELS, NUM_LABELS
from model_core.data.reports import split_sections
from model_core.labels.labeler import label_reports
from model_core.stats import percentile_ci, precision_recall_f1, resample_weights

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
