"""Report text: section split, formatting, clinical metadata parsed from the indication."""

from __future__ import annotations

import re

_SECTION_RE = re.compile(r"\b(FINDINGS|IMPRESSION)\s*:", re.IGNORECASE)
_AGE_RE = re.compile(r"\b(\d{1,3})[- ](?:year|yr)s?[- ]old\b", re.IGNORECASE)
_MALE_RE = re.compile(r"\b(male|man|gentleman|boy)\b", re.IGNORECASE)
_FEMALE_RE = re.compile(r"\b(female|woman|lady|girl)\b", re.IGNORECASE)


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


def clinical_metadata(indication: str) -> dict:
    """Age and sex when the (de-identified) indication states them; None otherwise."""
    age = _AGE_RE.search(indication)
    male, female = _MALE_RE.search(indication), _FEMALE_RE.search(indication)
    sex = "F" if female and not male else "M" if male and not female else None
    return {"age": int(age.group(1)) if age else None, "sex": sex}
