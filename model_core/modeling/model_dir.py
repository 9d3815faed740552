"""The model directory written by training: load the model, its detection calibration and config."""

from __future__ import annotations

import json
from pathlib import Path

from model_core.chexpert import CHEXPERT_LABELS
from model_core.modeling.model import RadiologyMultimodalModel


def load_detection(model_dir: str | Path) -> dict:
    """Temperature and thresholds saved beside the model (defaults: T=1, 0.5)."""
    path = Path(model_dir) / "detection.json"
    if not path.is_file():
        return {"temperature": 1.0, "thresholds": {label: 0.5 for label in CHEXPERT_LABELS}}
    return json.loads(path.read_text())



def load_model_dir(model_dir: str | Path) -> tuple[RadiologyMultimodalModel, dict, dict]:
    """(model, detection calibration/thresholds, saved full config dict) from a `rrg train` directory."""
    model_dir = Path(model_dir)
    if not (model_dir / "model_card.json").is_file():
        raise FileNotFoundError(f"{model_dir} is not a complete model directory (no model_card.json); "
                                "train one with `rrg train --out DIR`")
    model = RadiologyMultimodalModel.from_pretrained(model_dir)
    saved = json.loads((model_dir / "config.json").read_text()) if (model_dir / "config.json").is_file() else {}
    return model, load_detection(model_dir), saved
