"""Radiologist feedback on a draft: how far the signed report is from the draft, and what it says.

    word_edit_distance("FINDINGS: Small effusion.", "Findings: small left effusion")   # -> 1 (one word inserted)
    signed_off(record, request) -> (FeedbackRecord, words in the draft)

The edit distance is Levenshtein over words (insertion, deletion, substitution: 1 each): words are runs of
letters and digits, lower-cased, so punctuation, case and spacing changes cost nothing and a changed finding
costs one per word. The signed text itself goes nowhere from here: the feedback record keeps its SHA-256 and the
report labeler's 14 labels of it (`model_core.labels.labeler.label_report`).
"""

from __future__ import annotations

import hashlib
import re

from model_core.data.reports import format_report
from model_core.labels.labeler import label_report
from model_core.prediction_log import FeedbackRecord, utc_now

_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def word_edit_distance(a: str | list[str], b: str | list[str]) -> int:
    """Levenshtein distance between two texts (or word lists) over words; O(|a|·|b|) time, O(min) memory."""
    a = words(a) if isinstance(a, str) else a
    b = words(b) if isinstance(b, str) else b
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, word_a in enumerate(a, 1):
        current = [i]
        for j, word_b in enumerate(b, 1):
            current.append(min(previous[j] + 1,                      # delete word_a
                               current[j - 1] + 1,                   # insert word_b
                               previous[j - 1] + (word_a != word_b)))  # substitute (free when equal)
        previous = current
    return previous[-1]


def draft_text(record: dict) -> str:
    """The draft as the model wrote it ('FINDINGS: … IMPRESSION: …') from a report-store record."""
    return format_report(record.get("findings_text") or "", record["response"]["impression"] or "")


def signed_off(report_id: str, record: dict, final_text: str, rating: int, outcome: str
               ) -> tuple[FeedbackRecord, int]:
    """The PHI-free feedback record of a sign-off, and the number of words in the draft."""
    draft = words(draft_text(record))
    labels = label_report(final_text)
    feedback = FeedbackRecord(
        report_id=report_id, created_at=utc_now(), rating=rating, outcome=outcome,
        edit_distance=word_edit_distance(draft, words(final_text)), final_labels=[int(v) for v in labels],
        final_text_sha256=hashlib.sha256(final_text.encode("utf-8")).hexdigest())
    return feedback, len(draft)
