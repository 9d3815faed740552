"""Checks of the production configuration, which cannot be trained on this machine.

`build_on_meta` builds the production-size parts (ViT-B/16 encoder, 2048-wide projector, LLaMA-class
4096-d LM) on PyTorch's `meta` device: shapes and parameter counts without allocating memory, so a
typo in `configs/production.yaml` shows up in CI rather than on a GPU node.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from transformers import AutoModelForCausalLM

from model_core.chexpert import NUM_LABELS
from model_core.config import ModelConfig
from model_core.modeling.model import MultimodalProjector, language_model_config
from model_core.modeling.vision import build_vision_encoder


def build_on_meta(model_cfg: ModelConfig, vocab_size: int = 32000) -> dict:
    """Build encoder, projector, detection head and LM on the meta device; returns dims and parameter counts."""
    with torch.device("meta"):
        encoder = build_vision_encoder(replace(model_cfg.vision, pretrained=None))
        lm = AutoModelForCausalLM.from_config(language_model_config(model_cfg.text, vocab_size, 1, 2, 0))
        d_v, d_l = encoder.config.hidden_size, lm.config.hidden_size
        if model_cfg.projector_out is not None and model_cfg.projector_out != d_l:
            raise ValueError(f"projector_out {model_cfg.projector_out} != LM hidden size {d_l}")
        projector = MultimodalProjector(d_v, model_cfg.projector_hidden, d_l)
        head = torch.nn.Linear(d_v, NUM_LABELS)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    grid = model_cfg.vision.image_size // model_cfg.vision.patch_size
    return {
        "d_v": d_v, "d_h": model_cfg.projector_hidden, "d_l": d_l,
        "image_tokens_per_view": model_cfg.vision.pool_tokens or grid * grid,
        "encoder_params": count(encoder), "projector_params": count(projector),
        "detection_head_params": count(head), "language_model_params": count(lm),
        "device": str(next(lm.parameters()).device),
    }
