"""Pretrained parts carry the checkpoint's weights, and a saved model directory reloads to the same weights (issue
12, item 5: a mutant building the ViT/LM from its config, untrained, survived tests that checked only shapes)."""

from __future__ import annotations

import torch
from tiny_models import tiny_model_config
from transformers import GPT2Config, GPT2LMHeadModel, ViTConfig, ViTModel

from model_core.modeling.model import RadiologyMultimodalModel


def _assert_same_weights(module: torch.nn.Module, reference: dict[str, torch.Tensor]) -> None:
    state = module.state_dict()
    assert state, "no weights to compare"
    for name, tensor in state.items():
        assert name in reference, f"{name} is not in the checkpoint"
        assert torch.equal(tensor, reference[name]), f"{name} differs from the checkpoint"


def test_pretrained_vit_and_lm_hold_the_checkpoint_weights_and_survive_a_round_trip(tmp_path, tiny_tokenizer):
    torch.manual_seed(11)
    vit = ViTModel(ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=1,
                             num_attention_heads=2, intermediate_size=64))
    lm = GPT2LMHeadModel(GPT2Config(vocab_size=len(tiny_tokenizer), n_positions=256, n_embd=32, n_layer=1, n_head=2))
    vit.save_pretrained(tmp_path / "vit")
    lm.save_pretrained(tmp_path / "gpt2")
    cfg = tiny_model_config()
    cfg.vision.pretrained, cfg.text.pretrained = str(tmp_path / "vit"), str(tmp_path / "gpt2")
    cfg.vision.detect_layers = 1       # the checkpoint has one layer
    torch.manual_seed(12)                     # a config-built part would draw fresh weights from this seed
    model = RadiologyMultimodalModel(cfg, tiny_tokenizer)
    _assert_same_weights(model.encoder, vit.state_dict())
    _assert_same_weights(model.language_model, lm.state_dict())

    model.save_pretrained(tmp_path / "saved")
    torch.manual_seed(13)
    loaded = RadiologyMultimodalModel.from_pretrained(tmp_path / "saved")
    _assert_same_weights(loaded, model.state_dict())
    assert set(loaded.state_dict()) == set(model.state_dict())
    _assert_same_weights(loaded.encoder, vit.state_dict())
