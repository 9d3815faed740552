"""What an export reads: the trained model directory, and the studies it calibrates and checks on.

The studies come from the pipeline's data (a `model_core.config.DataConfig`): calibration from the train split,
parity and latency from the test split. Without a data config the export never falls back to some default
dataset on its own: the INT8 decoder is quantized dynamically (step.py records and warns) and parity runs on a
synthetic probe — seeded uniform-noise images with a few fixed clinical contexts, labelled as such in the
report. Noise is no chest X-ray, but torch and ONNX Runtime must still agree on it number for number.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import torch

from model_core.artifacts import MODEL_DIR_FILES
from model_core.config import DataConfig
from model_core.data.images import load_image, stack_views
from model_core.data.iu_xray import group_studies, load_split, view_slots
from model_core.data.manifest import DataError
from model_core.runtime.session import ExportError

SYNTHETIC_SOURCE = "synthetic probe (no data config given): seeded uniform-noise images, fixed clinical contexts"
# Prompts of different lengths, so the probe exercises left padding as real contexts do.
SYNTHETIC_CONTEXTS = ({"age": 70, "sex": "M", "indication": "cough"}, None, {"indication": "fever and dyspnea"},
                      {"age": 30})


def check_model_dir(model_dir: str | os.PathLike) -> Path:
    """model_dir as a Path when it holds a trained model (`rrg train --out DIR`); ExportError naming the problem."""
    model_dir = Path(model_dir)
    if not model_dir.exists():
        raise ExportError(f"model directory not found: {model_dir}")
    if not model_dir.is_dir():
        raise ExportError(f"{model_dir} is not a model directory (it is a file)")
    missing = [name for name in MODEL_DIR_FILES if not (model_dir / name).exists()]
    if missing:
        raise ExportError(f"{model_dir} is not a model directory: {', '.join(missing)} missing; "
                          "train one with `rrg train --out DIR`")
    return model_dir


def load_studies(data_cfg: DataConfig, split: str, n: int, image_size: int, views: int = 1
                 ) -> tuple[torch.Tensor, list[dict]]:
    """The first n studies of a split of the data config: images (n, V, 1, H, W) in the model's view slots
    (`view_slots`: V = 1, the study's first frontal image (lateral without one); V = 2, frontal and lateral, NaN
    for a missing one) and their clinical contexts. DataError (or OSError) when they cannot be loaded."""
    limit = n if data_cfg.limit_studies is None else min(n, data_cfg.limit_studies)
    projections = ["Frontal", "Lateral"] if views > 1 else data_cfg.views
    dataset = load_split(replace(data_cfg, limit_studies=limit, views=projections), split)
    studies = group_studies(dataset)[:n]
    if not studies:
        raise DataError(f"the {split} split of the data config holds no studies")
    images = torch.stack([
        stack_views([load_image(dataset["images"][row], image_size) if row is not None else None
                     for row in view_slots(s, views)], image_size) for s in studies])
    return images, [s["metadata"] for s in studies]


def synthetic_studies(n: int, image_size: int, seed: int = 0, views: int = 1
                      ) -> tuple[torch.Tensor, list[dict | None]]:
    """n probe studies: seeded uniform-noise images (n, V, 1, H, W) and `SYNTHETIC_CONTEXTS` in turn; with two
    slots, every second study's lateral view is missing (NaN), as in real data."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(n, views, 1, image_size, image_size, generator=generator)
    if views > 1:
        images[1::2, -1] = float("nan")
    return images, [SYNTHETIC_CONTEXTS[i % len(SYNTHETIC_CONTEXTS)] for i in range(n)]


def parity_studies(data_cfg: DataConfig | None, n: int, image_size: int, views: int = 1
                   ) -> tuple[torch.Tensor, list[dict | None], str]:
    """(images, contexts, source) for the parity and latency checks: n test-split studies of the data config, or
    the synthetic probe without one; `source` says which, for the report. views: the model's view slots."""
    if data_cfg is None:
        return (*synthetic_studies(n, image_size, views=views), SYNTHETIC_SOURCE)
    images, contexts = load_studies(data_cfg, "test", n, image_size, views)
    return images, contexts, "test split of the data config"
