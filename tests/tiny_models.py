"""Tiny configurations (hidden 32, 2 layers, 32-px images) shared by the tests.

The architecture is the smoke config's (configs/smoke.yaml, also used by the benchmarks' `--size tiny`), with
room for 512 positions so that multi-view prompts fit.
"""

from pathlib import Path

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


def tiny_model_config():
    """Hidden 32, 2 layers, 32-px images, a from-scratch ViT over one view: runs on a CPU in milliseconds."""
    from model_core.config import load_config

    return load_config(SMOKE, ["model.text.max_positions=512", "model.vision.architecture=vit",
                               "model.vision.freeze=false", "model.vision.views=1"]).model


def tiny_dinov2_config():
    """The smoke config's model as is: a frozen tiny DINOv2 (built from config, no download) over two view slots
    (frontal, lateral), the demo's shape in miniature."""
    from model_core.config import load_config

    return load_config(SMOKE, ["model.text.max_positions=512"]).model


def tiny_train_config(deepspeed: str | None = None):
    from model_core.config import StageConfig, TrainConfig

    return TrainConfig(batch_size=4, deepspeed=deepspeed, max_report_tokens=48,
                       stage0_encoder=StageConfig(1, 1e-3), stage0_lm=StageConfig(1, 1e-3),
                       stage1=StageConfig(1, 1e-3), stage2=StageConfig(2, 1e-3))
