"""The report labeler's phrase and pattern files, read once when the labeler stages are imported.

    phrases/mention/<label>.txt            mention phrases of a CheXpert label
    phrases/uncertain_mention/<label>.txt  mentions that are hedged by themselves ("pulmonary congestion":
                                           uncertain Edema)
    phrases/unmention/<label>.txt          spans that look like a mention of the label but are not one
                                           ("pericardial effusion" for Pleural Effusion)
    phrases/other_abnormality.txt          abnormalities outside the 14 labels (they rule out No Finding)
    phrases/macros.txt                     `NAME = regex` pieces shared by phrases
    patterns/<trigger>.txt                 negation / uncertainty triggers, pseudo-negations, clause boundaries

<label> is the CheXpert label in lower case, spaces as underscores ("lung_opacity.txt"). Each file
holds one regular expression per line, matched against lower-cased report text; blank lines and
lines starting with "#" are skipped. Line order is kept: it is the order of the alternatives, and
the earlier of two alternatives matching at one position wins. `{NAME}` in a phrase is replaced
by the macro NAME (regex repetition counts such as `{0,5}` are left alone).

The files ship as package data (pyproject.toml, [tool.setuptools.package-data]).
"""

from __future__ import annotations

import re
from importlib import resources
from importlib.resources.abc import Traversable

from model_core.chexpert import CHEXPERT_LABELS

LABELS_DATA = resources.files(__package__)
PHRASES_DIR = LABELS_DATA / "phrases"
PATTERNS_DIR = LABELS_DATA / "patterns"

_MACRO_RE = re.compile(r"\{([A-Z][A-Z_]*)\}")


def label_file_name(label: str) -> str:
    """"Lung Opacity" -> "lung_opacity.txt"."""
    return label.lower().replace(" ", "_") + ".txt"


def _lines(path: Traversable) -> list[tuple[int, str]]:
    """(line number, text) of the non-blank, non-comment lines of a phrase file."""
    if not path.is_file():
        raise FileNotFoundError(f"labeler phrase file missing: {path} (package data not installed?)")
    lines = enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
    return [(n, line) for n, line in lines if line.strip() and not line.startswith("#")]


def read_macros(path: Traversable = PHRASES_DIR / "macros.txt") -> dict[str, str]:
    macros = {}
    for n, line in _lines(path):
        name, sep, regex = line.partition(" = ")
        if not sep or not re.fullmatch(r"[A-Z][A-Z_]*", name):
            raise ValueError(f"{path} line {n}: expected 'NAME = regex'")
        macros[name] = regex
    return macros


_MACROS = read_macros()


def _expand(regex: str, path: Traversable, n: int) -> str:
    def substitute(m: re.Match) -> str:
        if m.group(1) not in _MACROS:
            raise ValueError(f"{path} line {n}: unknown macro {{{m.group(1)}}}")
        return _MACROS[m.group(1)]

    return _MACRO_RE.sub(substitute, regex)


def read_patterns(path: Traversable) -> tuple[str, ...]:
    """The regular expressions of one file, in file order, macros expanded."""
    patterns = tuple(_expand(line, path, n) for n, line in _lines(path))
    if not patterns:
        raise ValueError(f"{path} holds no pattern")
    return patterns


def read_label_phrases(folder: Traversable) -> dict[str, tuple[str, ...]]:
    """{label: phrases} of a folder of <label>.txt files, in CheXpert label order.

    Raises ValueError naming a file that is not named after a CheXpert label (a typo would
    otherwise drop its phrases silently).
    """
    names = {label_file_name(label): label for label in CHEXPERT_LABELS}
    stray = sorted(p.name for p in folder.iterdir() if p.name not in names)
    if stray:
        raise ValueError(f"{folder}: file(s) not named after a CheXpert label: {', '.join(stray)}")
    return {label: read_patterns(folder / name) for name, label in names.items() if (folder / name).is_file()}


def alternation(patterns: tuple[str, ...] | list[str]) -> str:
    """'(?:a)|(?:b)|...': one regex matching any of the patterns, earlier ones first."""
    return "|".join(f"(?:{p})" for p in patterns)
