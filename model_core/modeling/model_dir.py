"""The model directory: the one writer (`save_model_dir`) and the one reader (`load_model_dir`).

A model directory holds the model (`RadiologyMultimodalModel.save_pretrained`: weights, model config,
tokenizer, encoder and LM configs) plus detection calibration, training history, the run's full config and
the model card; file names are `model_core.artifacts`'. The card is moved in last, so a directory with a
model card is complete: readers check for it, and an interrupted write never looks like a model.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from model_core.artifacts import DETECTION, HISTORY, MODEL_CARD, RUN_CONFIG
from model_core.chexpert import CHEXPERT_LABELS
from model_core.modeling.model import RadiologyMultimodalModel

STAGING_DIR = ".model.partial"


def save_model_dir(model: RadiologyMultimodalModel, out_dir: str | os.PathLike, *, card: dict, run_config: dict,
                   detection: dict, history: dict | None = None) -> Path:
    """Write a complete model directory to out_dir (created if needed; other entries in it are kept).

    Everything is written to `out_dir/.model.partial` first, then moved in with the model card last.
    card: the model card (name, version, provenance, ...); run_config: the full config as a dict
    (`Config.to_dict()`); detection: temperature and per-label thresholds; history: per-stage training
    records (not written when None). Returns out_dir as a Path.
    """
    out = Path(out_dir)
    staging = out / STAGING_DIR
    if staging.exists():
        shutil.rmtree(staging)
    model.save_pretrained(staging)
    documents = [(DETECTION, detection), (HISTORY, history), (RUN_CONFIG, run_config), (MODEL_CARD, card)]
    for name, obj in documents:
        if obj is not None:
            (staging / name).write_text(json.dumps(obj, indent=2, default=str))
    for entry in sorted(staging.iterdir(), key=lambda p: p.name == MODEL_CARD):
        target = out / entry.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(entry, target)
    staging.rmdir()
    return out


def find_model_dir(root: str | os.PathLike) -> Path | None:
    """The model directory inside a downloaded registry version (an MLflow pyfunc keeps it under
    `artifacts/<its base name>`): `artifacts/model_dir` when it holds a model card, else the shallowest directory
    that holds one; None when none does."""
    root = Path(root)
    preferred = root / "artifacts" / "model_dir"
    if (preferred / MODEL_CARD).is_file():
        return preferred
    cards = sorted(root.rglob(MODEL_CARD), key=lambda p: len(p.parts))
    return cards[0].parent if cards else None


def load_detection(model_dir: str | os.PathLike) -> dict:
    """Temperature and thresholds saved beside the model (defaults: T=1, 0.5)."""
    path = Path(model_dir) / DETECTION
    if not path.is_file():
        return {"temperature": 1.0, "thresholds": {label: 0.5 for label in CHEXPERT_LABELS}}
    return json.loads(path.read_text())


def load_model_dir(model_dir: str | os.PathLike) -> tuple[RadiologyMultimodalModel, dict, dict]:
    """(model, detection calibration/thresholds, saved full config dict) from a `rrg train` directory."""
    model_dir = Path(model_dir)
    if not (model_dir / MODEL_CARD).is_file():
        raise FileNotFoundError(f"{model_dir} is not a complete model directory (no {MODEL_CARD}); "
                                "train one with `rrg train --out DIR`")
    model = RadiologyMultimodalModel.from_pretrained(model_dir)
    saved = json.loads((model_dir / RUN_CONFIG).read_text()) if (model_dir / RUN_CONFIG).is_file() else {}
    return model, load_detection(model_dir), saved
