"""model_core.modeling.vision: one builder per encoder kind, DINOv2 positions fitted once, pixel statistics."""

import pytest
import torch
from transformers import Dinov2Config, Dinov2Model

from model_core.config import VisionConfig
from model_core.modeling import vision
from model_core.modeling.pretrained_dinov2 import CACHE_NAME
from model_core.modeling.vision import (
    VisionConfigError,
    build_vision_encoder,
    encoder_card,
    fit_positions,
    pixel_statistics,
)


def _tiny_dinov2(image_size=64):
    torch.manual_seed(0)
    return Dinov2Model(Dinov2Config(image_size=image_size, patch_size=8, hidden_size=32, num_hidden_layers=1,
                                    num_attention_heads=2, mlp_ratio=2)).eval()


def test_fitted_positions_equal_dinov2s_own_interpolation():
    encoder = _tiny_dinov2(64)                 # an 8×8 position grid, as a checkpoint ships it
    x = torch.rand(2, 3, 32, 32)               # a 4×4 patch grid: DINOv2 interpolates on every call
    with torch.no_grad():
        expected = encoder(pixel_values=x).last_hidden_state
        fit_positions(encoder, 32)
        got = encoder(pixel_values=x).last_hidden_state
    assert encoder.config.image_size == 32 and encoder.embeddings.position_embeddings.shape[1] == 1 + 16
    assert torch.allclose(got, expected, atol=1e-5)


def test_image_size_must_be_a_multiple_of_the_patch():
    with pytest.raises(VisionConfigError, match="multiple of the patch size 8"):
        fit_positions(_tiny_dinov2(), 36)


def test_the_symbolic_name_resolves_to_the_converted_weights(tmp_path, monkeypatch):
    _tiny_dinov2(64).save_pretrained(tmp_path / "model")
    monkeypatch.setattr(vision, "ensure_dinov2", lambda: tmp_path / "model")
    encoder = build_vision_encoder(VisionConfig(pretrained=CACHE_NAME, image_size=32, freeze=True))
    assert type(encoder).__name__ == "Dinov2Model" and encoder.config.image_size == 32
    card = encoder_card(VisionConfig(pretrained="/site/rad-dino", freeze=True, views=2), encoder)
    assert card["weights"] == "/site/rad-dino" and card["frozen"] and card["views"] == 2


def test_unknown_architecture_is_named():
    with pytest.raises(VisionConfigError, match="model.vision.architecture must be one of vit, dinov2"):
        build_vision_encoder(VisionConfig(architecture="resnet"))


def test_pixel_statistics_by_family_and_from_config():
    dinov2 = _tiny_dinov2()
    assert pixel_statistics(VisionConfig(), dinov2) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    vit = build_vision_encoder(VisionConfig(image_size=32, patch_size=8, hidden_size=16, num_layers=1, num_heads=2,
                                            intermediate_size=32))
    assert pixel_statistics(VisionConfig(), vit) == ((0.5,), (0.5,))
    assert pixel_statistics(VisionConfig(pixel_mean=[0.53], pixel_std=[0.26]), dinov2) == ((0.53,), (0.26,))
    with pytest.raises(VisionConfigError, match="given together"):
        pixel_statistics(VisionConfig(pixel_mean=[0.5]), dinov2)
    with pytest.raises(VisionConfigError, match="need 1 value each for a 1-channel encoder"):
        pixel_statistics(VisionConfig(pixel_mean=[0.5, 0.5, 0.5], pixel_std=[1.0, 1.0, 1.0]), vit)
