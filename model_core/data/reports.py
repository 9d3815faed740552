"""Report text: section split, formatting, punctuation and spelling normalisation, clinical context parsed from
the indication and comparison fields."""

from __future__ import annotations

import datetime as dt
import re

_SECTION_RE = re.compile(r"\b(FINDINGS|IMPRESSION)\s*:", re.IGNORECASE)
_AGE_RE = re.compile(r"\b(\d{1,3})[- ](?:year|yr)s?[- ]old\b", re.IGNORECASE)
_MALE_RE = re.compile(r"\b(male|man|gentleman|boy)\b", re.IGNORECASE)
_FEMALE_RE = re.compile(r"\b(female|woman|lady|girl)\b", re.IGNORECASE)

# Punctuation as radiologists' dictation leaves it in IU X-ray: 427 of 3,444 reports end a sentence with ".." or
# ". ." ("No acute cardiopulmonary abnormality.."), which a model trained on them reproduces.
_REPEATED_PERIODS = re.compile(r"\.(?:\s*\.)+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,;:!?])")
_ORPHAN_COMMA = re.compile(r",\s*(?=[.,;:!?]|$)")          # "dated , ." once a masked date is removed
_LIST_NUMBER = re.compile(r"(^|[.:!?]\s+)\d{1,2}\.\s+(?=[A-Za-z])")  # "1. Stable ... 2. No ..." (not "T12.")
# Words the collection splits in two, as corpus counts show (split / joined): "cardio mediastinal" 65 / 740,
# "cardio pulmonary" 2 / 1,466, "dextro curvature" 3 / 4. Joined here so training targets (and what a model
# learns from them) spell them one way. Accepted variants ("air space", "mid lung") are left alone.
SPLIT_WORDS = {"cardio mediastinal": "cardiomediastinal", "cardio pulmonary": "cardiopulmonary",
               "dextro curvature": "dextrocurvature"}
_SPLIT_WORD_RE = re.compile(r"\b(" + "|".join(re.escape(k) for k in SPLIT_WORDS) + r")\b", re.IGNORECASE)
_SPACES = re.compile(r"\s+")
_UNENDED_BEFORE_HEADER = re.compile(r"(?<=[\w)\]%])(?=\s+(?:FINDINGS|IMPRESSION)\s*:)", re.IGNORECASE)
_UNENDED_AT_END = re.compile(r"[\w)\]%]\s*$")

# Comparison field → prior study. IU masks dates as XXXX, MIMIC as ___; "None", "None available", "No comparison"
# say there is no prior; anything else names one.
_NO_PRIOR_RE = re.compile(r"^\W*(?:none\b|no\s+(?:prior|previous|comparison|comparisons|old)\b|not\s+available\b"
                          r"|n/?a\b|unavailable\b)", re.IGNORECASE)
_ISO_DATE_RE = re.compile(r"\b((?:19|20)\d{2})-(\d{1,2})-(\d{1,2})\b")
_US_DATE_RE = re.compile(r"\b(\d{1,2})/(\d{1,2})/((?:19|20)?\d{2})\b")


def format_report(findings: str, impression: str) -> str:
    """The structured report text used as the generation target: 'FINDINGS: … IMPRESSION: …'."""
    parts = []
    if findings.strip():
        parts.append(f"FINDINGS: {findings.strip()}")
    if impression.strip():
        parts.append(f"IMPRESSION: {impression.strip()}")
    return " ".join(parts)


def split_sections(report: str) -> dict[str, str]:
    """'FINDINGS: a IMPRESSION: b' → {'findings': 'a', 'impression': 'b'}; text without headers is findings."""
    sections = {"findings": "", "impression": ""}
    matches = list(_SECTION_RE.finditer(report))
    if not matches:
        sections["findings"] = report.strip()
        return sections
    for m, nxt in zip(matches, matches[1:] + [None]):
        end = nxt.start() if nxt else len(report)
        sections[m.group(1).lower()] = report[m.end():end].strip()
    return sections


def _join_split_word(match: re.Match) -> str:
    joined = SPLIT_WORDS[match.group(1).lower()]
    return joined.capitalize() if match.group(1)[0].isupper() else joined


def normalize_punctuation(text: str) -> str:
    """One period per sentence end, no space before punctuation, no orphan comma, no list numbering, split words
    joined (`SPLIT_WORDS`), single spaces. Decimals ("1.5 cm") and vertebral levels ("T12.") are kept.

    "Effusion.. Cardio mediastinal silhouette is normal. ." → "Effusion. Cardiomediastinal silhouette is normal."
    """
    text = _SPACES.sub(" ", text or "").strip()
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    text = _REPEATED_PERIODS.sub(".", text)
    text = _ORPHAN_COMMA.sub("", text)
    text = _REPEATED_PERIODS.sub(".", text)
    text = _LIST_NUMBER.sub(r"\1", text)
    text = _SPLIT_WORD_RE.sub(_join_split_word, text)
    return _SPACES.sub(" ", text).strip()


def end_sections(report: str) -> str:
    """In a text with section headers, end each section's last sentence ("IMPRESSION: Normal chest" gets its
    period, as the IU reports it was learned from often lack it). Text without headers is returned unchanged."""
    if not _SECTION_RE.search(report):
        return report
    report = _UNENDED_BEFORE_HEADER.sub(".", report)
    return report + "." if _UNENDED_AT_END.search(report) else report


def clinical_metadata(indication: str) -> dict:
    """Age and sex when the (de-identified) indication states them; None otherwise."""
    age = _AGE_RE.search(indication)
    male, female = _MALE_RE.search(indication), _FEMALE_RE.search(indication)
    sex = "F" if female and not male else "M" if male and not female else None
    return {"age": int(age.group(1)) if age else None, "sex": sex}


def _iso(year: int, month: int, day: int) -> str | None:
    try:
        return dt.date(year, month, day).isoformat()
    except ValueError:
        return None


def prior_study_from_comparison(comparison: str | None) -> dict:
    """A report's comparison field → {"has_prior": True | False | None, "prior_dates": [ISO dates]}.

    None (unknown) when the field is empty; False for "None", "None available", "No comparison …"; True for
    anything else — IU's "XXXX" and "XXXX, XXXX" are masked dates, so "Chest radiographs XXXX" names a prior.
    `prior_dates` holds only dates written out in full (never the masks). They are calendar dates (PHI under
    `model_core.phi`) and every IU date is masked, so prompts state only whether a prior exists.
    """
    text = _SPACES.sub(" ", str(comparison or "")).strip()
    if not text or text.lower() in ("nan", "null"):
        return {"has_prior": None, "prior_dates": []}
    if _NO_PRIOR_RE.match(text):
        return {"has_prior": False, "prior_dates": []}
    dates = [_iso(int(y), int(m), int(d)) for y, m, d in _ISO_DATE_RE.findall(text)]
    for m, d, y in _US_DATE_RE.findall(text):
        year = int(y) if len(y) == 4 else 2000 + int(y) if int(y) < 50 else 1900 + int(y)
        dates.append(_iso(year, int(m), int(d)))
    return {"has_prior": True, "prior_dates": [d for d in dates if d]}
