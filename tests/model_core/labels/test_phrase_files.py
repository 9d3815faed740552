"""The report labeler's phrase and pattern files (model_core.labels.phrase_files) and their packaging."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

import model_core.labels as labels_package
from model_core.chexpert import CHEXPERT_LABELS
from model_core.labels import agreement, classify, extract, labeler, mesh
from model_core.labels.phrase_files import (
    LABELS_DATA,
    PATTERNS_DIR,
    PHRASES_DIR,
    label_file_name,
    read_label_phrases,
    read_patterns,
)

REPO = Path(__file__).resolve().parents[3]


def _all_patterns() -> list[str]:
    tables = [extract.MENTION_PHRASES, extract.UNCERTAIN_MENTIONS, extract.EXCLUDED_MENTIONS]
    lists = [extract.OTHER_ABNORMALITY_PHRASES, extract.PSEUDO_NEGATION, extract.CLAUSE_BOUNDARY,
             classify.UNCERTAIN_OVER_NEGATION, classify.NEGATION_PRE, classify.NEGATION_POST,
             classify.UNCERTAINTY_PRE, classify.UNCERTAINTY_POST, classify.NEGATION_TERMINATORS]
    return [p for table in tables for ps in table.values() for p in ps] + [p for ps in lists for p in ps]


def test_every_file_loads_and_every_pattern_compiles_with_macros_expanded():
    patterns = _all_patterns()
    assert len(patterns) > 300
    for p in patterns:
        re.compile(p)
        assert not re.search(r"\{[A-Z][A-Z_]*\}", p), "unexpanded macro"
    assert "cardiomegaly" in extract.MENTION_PHRASES["Cardiomegaly"]
    assert list(extract.MENTION_PHRASES) == [x for x in CHEXPERT_LABELS if x != "No Finding"]  # label order


def test_label_files_are_named_after_labels():
    names = {label_file_name(x) for x in CHEXPERT_LABELS}
    for folder in ("mention", "uncertain_mention", "unmention"):
        assert {p.name for p in (PHRASES_DIR / folder).iterdir()} <= names


def test_read_patterns_keeps_order_skips_comments_expands_macros(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("# a comment\n\nzeta\nalpha{0,2}\n{HEART} x\n")
    zeta, alpha, heart = read_patterns(path)
    assert (zeta, alpha) == ("zeta", "alpha{0,2}")  # a repetition count is not a macro
    assert heart.startswith("(?:heart|cardiac") and heart.endswith(") x")


def test_bad_phrase_files_raise_naming_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_patterns(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("# only a comment\n")
    with pytest.raises(ValueError, match="empty.txt holds no pattern"):
        read_patterns(tmp_path / "empty.txt")
    (tmp_path / "macro.txt").write_text("a\n{NO_SUCH_MACRO} b\n")
    with pytest.raises(ValueError, match=r"macro.txt line 2: unknown macro \{NO_SUCH_MACRO\}"):
        read_patterns(tmp_path / "macro.txt")
    (tmp_path / "mention").mkdir()
    (tmp_path / "mention" / "cardiomegaly.txt").write_text("cardiomegaly\n")
    assert read_label_phrases(tmp_path / "mention") == {"Cardiomegaly": ("cardiomegaly",)}
    (tmp_path / "mention" / "cardiomegally.txt").write_text("typo\n")
    with pytest.raises(ValueError, match="not named after a CheXpert label: cardiomegally.txt"):
        read_label_phrases(tmp_path / "mention")


def test_package_data_globs_ship_every_phrase_file():
    """The globs in pyproject's [tool.setuptools.package-data] cover every data file of the labeler."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["model_core.labels"]
    root = Path(str(LABELS_DATA))
    shipped = {p for g in globs for p in root.glob(g)}
    data_files = {p for d in (PHRASES_DIR, PATTERNS_DIR) for p in Path(str(d)).rglob("*") if p.is_file()}
    data_files = {p for p in data_files if p.suffix == ".txt"}
    assert data_files and data_files <= shipped


def test_package_exports_the_public_api():
    assert labels_package.label_report is labeler.label_report
    assert labels_package.label_reports is labeler.label_reports
    assert labels_package.text_mentions is labeler.text_mentions
    assert labels_package.labeler_agreement is agreement.labeler_agreement
    assert labels_package.write_label_table is agreement.write_label_table
    assert labels_package.mesh_to_chexpert is mesh.mesh_to_chexpert
    assert labels_package.MESH_TO_CHEXPERT is mesh.MESH_TO_CHEXPERT
