"""Shared fixtures: tiny IU-format datasets built from the embedded data."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from model_core.data import EMBEDDED_ROOT


@pytest.fixture(scope="session")
def embedded_manifest() -> pd.DataFrame:
    return pd.read_csv(EMBEDDED_ROOT / "manifest.csv", dtype=str, keep_default_na=False)


@pytest.fixture()
def tiny_iu(tmp_path: Path, embedded_manifest: pd.DataFrame) -> Path:
    """An IU-format dataset of 8 studies (frontal + lateral images copied) in tmp_path, with no splits.csv."""
    uids = embedded_manifest["uid"].drop_duplicates().iloc[:8]
    rows = embedded_manifest[embedded_manifest["uid"].isin(uids)].copy()
    (tmp_path / "images").mkdir()
    for rel in rows["image"]:
        shutil.copy(EMBEDDED_ROOT / rel, tmp_path / rel)
    rows.to_csv(tmp_path / "manifest.csv", index=False)
    return tmp_path
