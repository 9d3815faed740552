"""Labeler stage 2, classification: each mention is positive, negated or uncertain, from the triggers in its clause.

NegEx/ConText-style: pre- and post-mention negation and uncertainty triggers (`patterns/*.txt`),
a scope that ends at the clause (`model_core.labels.extract.clause_spans`), and CheXpert's order
of precedence: uncertainty that contains a negation ("cannot exclude") > negation > other
uncertainty > positive.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from model_core.chexpert import NEGATIVE, POSITIVE, UNCERTAIN
from model_core.labels.extract import MentionSpan
from model_core.labels.phrase_files import PATTERNS_DIR, alternation, read_patterns

UNCERTAIN_OVER_NEGATION = read_patterns(PATTERNS_DIR / "uncertain_over_negation.txt")
NEGATION_PRE = read_patterns(PATTERNS_DIR / "negation_pre.txt")
NEGATION_POST = read_patterns(PATTERNS_DIR / "negation_post.txt")
UNCERTAINTY_PRE = read_patterns(PATTERNS_DIR / "uncertainty_pre.txt")
UNCERTAINTY_POST = read_patterns(PATTERNS_DIR / "uncertainty_post.txt")
NEGATION_TERMINATORS = read_patterns(PATTERNS_DIR / "negation_terminators.txt")

# Window (in words) a pre-mention uncertainty trigger reaches; negation reaches the clause start,
# and so do the triggers that open a list of alternatives ("differential diagnosis includes A, B, C").
UNCERTAINTY_WINDOW = 6

_UNC_OVER_NEG_RE = re.compile(rf"\b(?:{alternation(UNCERTAIN_OVER_NEGATION)})")
# "pneumonia cannot be excluded": the negated exclusion right after the mention
_UNC_OVER_NEG_POST_RE = re.compile(
    r"^\W*(?:\w+\W+){0,3}?(?:cannot|can ?not|can't|could not|is not|are not|not) (?:be )?(?:entirely |completely )?"
    r"(?:excluded|ruled out)")
# Pre-mention triggers must end a word: "no" must not match "nodule".
_NEG_PRE_RE = re.compile(rf"(?<![\w-])(?:{alternation(NEGATION_PRE)})(?![\w])")
_NEG_POST_RE = re.compile(rf"^\W*(?:\w+\W+){{0,8}}?(?:{alternation(NEGATION_POST)})\b")
_UNC_PRE_RE = re.compile(rf"(?<![\w-])(?:{alternation(UNCERTAINTY_PRE)})(?![\w])")
_UNC_POST_RE = re.compile(rf"^\W*(?:\w+\W+){{0,3}}?(?:{alternation(UNCERTAINTY_POST)})")
_OR_BEFORE_RE = re.compile(r"(?<![\w-])(?:or|versus|vs\.?|and/or)\s+(?:\w+\W+){0,2}$")
_OR_AFTER_RE = re.compile(r"^\W*(?:\w+\W+){0,1}?(?:or|versus|vs\.?|and/or)\s+\w")
_NEG_TERMINATOR_RE = re.compile(alternation(NEGATION_TERMINATORS))
_LIST_UNCERTAINTY_RE = re.compile(r"\b(?:differential|considerations? (?:include|are)|(?:may|could|might) (?:be )?"
                                  r"(?:represent|reflect|due to|related to|secondary to|include|indicate))")


@dataclass(frozen=True)
class Mention:
    """One mention of an observation in a report: where it is (in the normalized text) and its state."""

    label: str       # a CheXpert label, or OTHER
    start: int
    end: int
    state: float     # POSITIVE, UNCERTAIN or NEGATIVE
    phrase: str      # the matched text (report text: do not log it)


def mention_state(clause: str, start: int, end: int, hedged: bool) -> float:
    """State of the mention clause[start:end] from the triggers in its clause (precedence: module docstring)."""
    before, inside, after = clause[:start], clause[start:end], clause[end:]
    window = " ".join(before.split()[-UNCERTAINTY_WINDOW:])
    if _UNC_OVER_NEG_RE.search(before + inside) or _UNC_OVER_NEG_POST_RE.search(after):
        return UNCERTAIN
    terminators = list(_NEG_TERMINATOR_RE.finditer(before))
    negation_scope = before[terminators[-1].end():] if terminators else before
    if _NEG_PRE_RE.search(negation_scope) or _NEG_PRE_RE.search(inside) or _NEG_POST_RE.search(after):
        return NEGATIVE
    if (hedged or _UNC_PRE_RE.search(window) or _UNC_POST_RE.search(after) or _LIST_UNCERTAINTY_RE.search(before)
            or _OR_BEFORE_RE.search(before) or _OR_AFTER_RE.search(after)):
        return UNCERTAIN
    return POSITIVE


def classify_mentions(normalized: str, masked: str, spans: list[MentionSpan]) -> list[Mention]:
    """Mentions with their state; triggers are read in `masked`, phrases are taken from `normalized`."""
    mentions = []
    for span in spans:
        clause = masked[span.clause_start:span.clause_end]
        state = mention_state(clause, span.start - span.clause_start, span.end - span.clause_start, span.hedged)
        mentions.append(Mention(span.label, span.start, span.end, state, normalized[span.start:span.end]))
    return mentions
