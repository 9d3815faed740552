"""model_core.modeling.production: the production configuration, built without memory."""

from model_core.config import REPO_ROOT, load_config
from model_core.modeling.production import build_on_meta


def test_production_config_builds_on_meta_device():
    """ViT-B/16 (768) → 2048 → 4096 LLaMA-class LM: built without memory on the meta device."""
    cfg = load_config(REPO_ROOT / "configs" / "production.yaml")
    summary = build_on_meta(cfg.model)
    assert summary["d_v"] == 768 and summary["d_h"] == 2048 and summary["d_l"] == 4096
    assert summary["language_model_params"] > 6e9
    assert summary["projector_params"] == 768 * 2048 + 2048 + 2048 * 4096 + 4096
