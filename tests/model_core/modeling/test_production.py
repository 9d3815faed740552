"""model_core.modeling.production: the production configuration, built without memory."""

from model_core.config import REPO_ROOT, load_config
from model_core.modeling.production import build_on_meta


def test_production_config_builds_on_meta_device():
    """RAD-DINO-sized DINOv2-B/14 (768) → 2048 → 4096 LLaMA-class LM: built without memory on the meta device."""
    cfg = load_config(REPO_ROOT / "configs" / "production.yaml")
    summary = build_on_meta(cfg.model)
    assert summary["d_v"] == 768 and summary["d_h"] == 2048 and summary["d_l"] == 4096
    assert summary["language_model_params"] > 6e9
    # W1, b1, W2, b2, and the 4096-d vector that stands for a missing view
    assert summary["projector_params"] == 768 * 2048 + 2048 + 2048 * 4096 + 4096 + 4096
    assert summary["image_tokens_per_view"] == 256 and summary["encoder_params"] > 8e7
