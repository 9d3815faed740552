"""Shared fixtures: tiny IU-format datasets built from the embedded data; the session's signing key."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from signing_keys import session_keys  # noqa: F401 — one signing key for the session (autouse)
from tiny_models import tiny_model_config

from model_core.data.manifest import EMBEDDED_ROOT


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


@pytest.fixture(scope="session")
def tiny_data():
    from model_core.data.iu_xray import load_iu_xray

    return load_iu_xray(split="train", limit_studies=12), load_iu_xray(split="val", limit_studies=6)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_data):
    from model_core.modeling.tokenizer import clean_text, train_report_tokenizer

    return train_report_tokenizer([clean_text(r) for r in tiny_data[0]["reports"]], vocab_size=400)


@pytest.fixture()
def tiny_model(tiny_tokenizer):
    import torch

    from model_core.modeling.model import RadiologyMultimodalModel

    torch.manual_seed(0)
    return RadiologyMultimodalModel(tiny_model_config(), tiny_tokenizer)
