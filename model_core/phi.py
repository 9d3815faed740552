"""The one PHI text screen: patterns for identifiers in free text, and for report text where none may appear.

Two uses, one table each:
  * `PHI_PATTERNS`: identifiers in (de-identified) report text — data validation runs them over every
    report section; anything that must never carry a patient identifier (packets, logs) runs them too.
  * `REPORT_TEXT_PATTERNS`: signs that a string *is* report text (section headers, the collection's
    `XXXX` de-identification mask). Documents that may hold summary figures but no report text
    (the regulatory packet) refuse these as well.
`find_phi(text)` / `find_report_text(text)` return the names of the patterns found, never the matched text,
so a caller can say what is wrong without echoing it back.
"""

from __future__ import annotations

import re

# name → (regular expression, what it catches). Python `re` syntax, searched anywhere in the text.
# A name after a title must start with a capital and must not be the collection's XXXX mask.
_NAME = r"(?!X{2,}\b)[A-Z][A-Za-z'\-]+"
PHI_PATTERNS: dict[str, tuple[str, str]] = {
    "titled_name": (
        r"\b(?:(?:Dr|Mr|Mrs|Ms|Mx|Miss|Prof|Doctor)\.?|(?:DR|MR|MRS|MS)\.)\s*" + _NAME,
        "a person's name after a title (Dr. Smith, Mr Jones, DR. JONES)",
    ),
    "mrn": (
        r"(?i)\b(?:MRN|MR\s*#|MR\s*No\.?|medical\s+record\s*(?:number|no\.?|#)?|record\s*(?:number|no\.?|#)"
        r"|accession\s*(?:number|no\.?|#)?|acc\s*(?:no\.?|#)|patient\s*(?:id|number|no\.?|#)|pt\s*id)"
        r"\s*[:#=]?\s*\d",
        "a record, accession or patient number (MRN: 1234, accession # 99)",
    ),
    "long_number": (r"(?<![\d.])\d{6,}(?![\d])", "a run of 6 or more digits (MRN-like)"),
    "dob": (
        r"(?i)\b(?:DOB|D\.O\.B\.?|date\s+of\s+birth|birth\s*date|born(?:\s+on)?)\s*[:#=]?\s*\d",
        "a date of birth (DOB 01/02/1950, born 1950)",
    ),
    "date": (
        r"(?<![\w.])(?:" + "|".join(  # the same separator twice; no capturing groups (pandas warns on them)
            rf"\d{{1,2}}{s}\d{{1,2}}{s}(?:\d{{4}}|\d{{2}})|(?:19|20)\d{{2}}{s}\d{{1,2}}{s}\d{{1,2}}"
            for s in ("/", r"\.", "-")
        ) + r")(?![\d]|\.\d)"
        r"|(?i:\b(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?\s+\d{1,2}(?:st|nd|rd|th)?,?"
        r"\s+(?:19|20)\d{2}\b)",
        "a full calendar date (01/02/1950, 1-2-50, 1950-02-01, March 3, 1950)",
    ),
    "phone": (
        r"(?<![\d])(?:\+?1[\s.\-]?)?(?:\(\d{3}\)\s*|\d{3}[\s.\-])\d{3}[\s.\-]\d{4}(?![\d])",
        "a phone number ((317) 555-0100, 317-555-0100)",
    ),
    "ssn": (r"(?<![\d])\d{3}-\d{2}-\d{4}(?![\d])", "a social-security-number-shaped number"),
    "email": (r"[\w.+\-]+@[\w\-]+\.[\w.\-]+", "an e-mail address"),
}

REPORT_TEXT_PATTERNS: dict[str, tuple[str, str]] = {
    "section_header": (
        r"(?i)\b(?:findings|impression|indication|comparison|history|technique|examination)\s*:",
        "a radiology report section header",
    ),
    "deid_mask": (r"\bX{4}\b", "the IU X-ray de-identification mask 'XXXX' (report text)"),
    "identifier_label": (
        r"(?i)\b(?:MRN|DOB|date of birth|accession number|patient name)\b",
        "a patient-identifier label",
    ),
}

_COMPILED = {name: re.compile(regex) for name, (regex, _) in {**PHI_PATTERNS, **REPORT_TEXT_PATTERNS}.items()}


def describe(name: str) -> str:
    """What the pattern `name` catches, in words (for error messages)."""
    return {**PHI_PATTERNS, **REPORT_TEXT_PATTERNS}[name][1]


def find_phi(text: str) -> list[str]:
    """Names of the `PHI_PATTERNS` found in `text` (empty: none found)."""
    return [name for name in PHI_PATTERNS if _COMPILED[name].search(text)]


def find_report_text(text: str) -> list[str]:
    """Names of the `REPORT_TEXT_PATTERNS` found in `text` (empty: it does not look like report text)."""
    return [name for name in REPORT_TEXT_PATTERNS if _COMPILED[name].search(text)]
