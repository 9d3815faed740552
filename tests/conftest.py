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


def tiny_model_config():
    """Hidden 32, 2 layers, 32-px images: the whole model runs on a CPU in milliseconds."""
    from model_core.config import ModelConfig, TextConfig, VisionConfig

    return ModelConfig(
        vision=VisionConfig(image_size=32, patch_size=8, hidden_size=32, num_layers=2, num_heads=2,
                            intermediate_size=64, pool_tokens=4),
        text=TextConfig(hidden_size=32, num_layers=2, num_heads=2, max_positions=512, vocab_size=400, dropout=0.0),
        projector_hidden=64,
    )


def tiny_train_config(deepspeed: str | None = None):
    from model_core.config import StageConfig, TrainConfig

    return TrainConfig(batch_size=4, deepspeed=deepspeed, max_report_tokens=48,
                       stage0_encoder=StageConfig(1, 1e-3), stage0_lm=StageConfig(1, 1e-3),
                       stage1=StageConfig(1, 1e-3), stage2=StageConfig(2, 1e-3))


@pytest.fixture(scope="session")
def tiny_data():
    from model_core.data import load_iu_xray

    return load_iu_xray(split="train", limit_studies=12), load_iu_xray(split="val", limit_studies=6)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_data):
    from model_core.tokenizer import clean_text, train_report_tokenizer

    return train_report_tokenizer([clean_text(r) for r in tiny_data[0]["reports"]], vocab_size=400)


@pytest.fixture()
def tiny_model(tiny_tokenizer):
    import torch

    from model_core.model import RadiologyMultimodalModel

    torch.manual_seed(0)
    return RadiologyMultimodalModel(tiny_model_config(), tiny_tokenizer)
