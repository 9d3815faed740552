"""Labeler stage 1, mention extraction: normalize a report, split it into clauses, find the mention phrases.

Phrases come from the files under `phrases/` (see `model_core.labels.phrase_files`). A mention
phrase of a label is dropped where one of the label's unmention phrases overlaps it; a mention
is "hedged" where one of the label's uncertain-mention phrases overlaps it, and an
uncertain-mention phrase that no mention phrase covers is a (hedged) mention by itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from model_core.labels.phrase_files import (
    PATTERNS_DIR,
    PHRASES_DIR,
    alternation,
    read_label_phrases,
    read_patterns,
)
from model_core.labels.targets import OTHER

MENTION_PHRASES = read_label_phrases(PHRASES_DIR / "mention")
UNCERTAIN_MENTIONS = read_label_phrases(PHRASES_DIR / "uncertain_mention")
EXCLUDED_MENTIONS = read_label_phrases(PHRASES_DIR / "unmention")
OTHER_ABNORMALITY_PHRASES = read_patterns(PHRASES_DIR / "other_abnormality.txt")
PSEUDO_NEGATION = read_patterns(PATTERNS_DIR / "pseudo_negation.txt")
CLAUSE_BOUNDARY = read_patterns(PATTERNS_DIR / "clause_boundary.txt")


def _compile_mentions(table: dict[str, tuple[str, ...]]) -> dict[str, re.Pattern]:
    return {label: re.compile(rf"(?<![\w-])(?:{alternation(ps)})(?!\w)") for label, ps in table.items()}


_MENTION_RE = _compile_mentions(MENTION_PHRASES)
_UNCERTAIN_MENTION_RE = _compile_mentions(UNCERTAIN_MENTIONS)
_EXCLUDED_RE = _compile_mentions(EXCLUDED_MENTIONS)
_OTHER_RE = re.compile(rf"(?<![\w-])(?:{alternation(OTHER_ABNORMALITY_PHRASES)})(?!\w)")
_PSEUDO_RE = re.compile(rf"\b(?:{alternation(PSEUDO_NEGATION)})\b")
_BOUNDARY_RE = re.compile(alternation(CLAUSE_BOUNDARY))
# Sentence ends: a period not inside a number ("1.5 cm") or an abbreviation; newlines.
_SENTENCE_RE = re.compile(r"(?<!\d)\.(?!\d)|\n|(?<=\?)\s")
# De-identification tokens of the IU collection.
_XRAY_RE = re.compile(r"\bx-?\s*xxxx\b", re.IGNORECASE)
_XXXX_RE = re.compile(r"\bx{4,}\b", re.IGNORECASE)
_WS = re.compile(r"\s+")


@dataclass(frozen=True)
class MentionSpan:
    """Where a mention is, in normalized-text coordinates: its clause and its own span."""

    label: str          # a CheXpert label, or OTHER
    clause_start: int
    clause_end: int
    start: int
    end: int
    hedged: bool        # an uncertain-mention phrase overlaps it


def normalize_report(text: str) -> str:
    """Lower-case, strip the `XXXX` de-identification tokens, collapse whitespace.

    "x-XXXX" (chest x-ray) becomes "x-ray"; any other XXXX becomes "xxxx", a word that no phrase
    matches, so "no XXXX of a pleural effusion" still negates the effusion and "XXXX opacity"
    still asserts the opacity.
    """
    text = _XRAY_RE.sub("x-ray", text)
    text = _XXXX_RE.sub("xxxx", text)
    return _WS.sub(" ", text.lower()).strip()


def mask_pseudo_negations(text: str) -> str:
    """Blank out pseudo-negations ("no change in"), same length so offsets stay valid."""
    return _PSEUDO_RE.sub(lambda m: "_" * len(m.group(0)), text)


def _clauses(sentence: str, offset: int) -> list[tuple[int, int]]:
    """(start, end) spans of the clauses of one sentence, in normalized-text coordinates."""
    spans, start = [], 0
    for m in _BOUNDARY_RE.finditer(sentence):
        spans.append((offset + start, offset + m.start()))
        start = m.start()  # the boundary word opens the next clause ("but there is ...")
        if m.group(0) in (";", ":"):
            start = m.end()
    spans.append((offset + start, offset + len(sentence)))
    return [(a, b) for a, b in spans if b > a]


def clause_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) spans of the clauses of a text: sentences split at clause boundaries."""
    spans, start = [], 0
    for m in _SENTENCE_RE.finditer(text):
        spans.extend(_clauses(text[start:m.start()], start))
        start = m.end()
    spans.extend(_clauses(text[start:], start))
    return spans


def extract_mentions(masked: str) -> list[MentionSpan]:
    """The mentions (labels and OTHER abnormalities) of a normalized, pseudo-negation-masked text.

    Order: clause by clause; within a clause, label by label (CheXpert order, OTHER last), then the
    hedged-only mentions. Overlapping hedged-only matches of a label already mentioned are skipped.
    """
    spans: list[MentionSpan] = []
    for c0, c1 in clause_spans(masked):
        clause = masked[c0:c1]
        for label, pattern in [*_MENTION_RE.items(), (OTHER, _OTHER_RE)]:
            excluded = [m.span() for m in _EXCLUDED_RE[label].finditer(clause)] if label in _EXCLUDED_RE else []
            hedged_spans = ([m.span() for m in _UNCERTAIN_MENTION_RE[label].finditer(clause)]
                            if label in _UNCERTAIN_MENTION_RE else [])
            for m in pattern.finditer(clause):
                s, e = m.span()
                if any(s < xe and xs < e for xs, xe in excluded):
                    continue
                hedged = any(s < he and hs < e for hs, he in hedged_spans)
                spans.append(MentionSpan(label, c0, c1, c0 + s, c0 + e, hedged))
        # hedged-only mentions ("heart size at the upper limits of normal") that no mention phrase covers
        for label, pattern in _UNCERTAIN_MENTION_RE.items():
            for m in pattern.finditer(clause):
                s, e = m.span()
                if not any(x.label == label and x.start < c0 + e and c0 + s < x.end for x in spans):
                    spans.append(MentionSpan(label, c0, c1, c0 + s, c0 + e, True))
    return spans
