"""LLaVA-style report generator: ViT encoder → MLP projector → causal LM, plus a CheXpert detection head.

    images (B, 1, H, W) or (B, K, 1, H, W)  ──ViT──►  Z_v (B·K, 1 + N, d_v)
        CLS  Z_v[:, 0]   ──detection head──► label_logits (B, 14)        ŷ_k = σ(w_k·h_cls + b_k)
        patches Z_v[:, 1:] ──projector──►    H_v (B, K·N, d_l)           H_v = W2·GELU(W1·Z_v + b1) + b2
    input_ids (B, T) hold K·N `<image>` placeholders; their embeddings are replaced by H_v, and the
    causal LM runs on `inputs_embeds`.   loss = 1.0·NLL(report) + 0.5·BCE(labels) + 1e-4·‖θ_proj‖²

Parts are built from config (the embedded default trains small models here) or loaded with
`from_pretrained(path)` when a config names a checkpoint directory (e.g. a CheXpert ViT-B/16, BioGPT).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    GPT2Config,
    LlamaConfig,
    PreTrainedTokenizerFast,
    ViTConfig,
    ViTModel,
)

from model_core.artifacts import ENCODER_CONFIG_DIR, LM_CONFIG_DIR, MODEL_CONFIG, MODEL_WEIGHTS, TOKENIZER_DIR
from model_core.chexpert import NUM_LABELS
from model_core.config import ModelConfig, TextConfig, VisionConfig

log = logging.getLogger(__name__)

IGNORE_INDEX = -100


class ModelInputError(ValueError):
    """Inputs of the wrong shape, channels or size; the message says what was expected."""


# --------------------------------------------------------------------------- builders (one per part)

def build_vision_encoder(cfg: VisionConfig) -> nn.Module:
    if cfg.pretrained:
        hf_cfg = AutoConfig.from_pretrained(cfg.pretrained)
        return AutoModel.from_pretrained(cfg.pretrained, **_encoder_kwargs(hf_cfg))
    vit_cfg = ViTConfig(
        image_size=cfg.image_size, patch_size=cfg.patch_size, num_channels=cfg.num_channels,
        hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    return ViTModel(vit_cfg, add_pooling_layer=False)


def encoder_from_config(hf_cfg) -> nn.Module:
    """An (untrained) encoder of a saved Hugging Face config; weights are loaded afterwards."""
    return AutoModel.from_config(hf_cfg, **_encoder_kwargs(hf_cfg))


def _encoder_kwargs(hf_cfg) -> dict:
    # The detection head reads the CLS token itself; ViT's extra pooler would be unused weights.
    return {"add_pooling_layer": False} if hf_cfg.model_type == "vit" else {}


def build_language_model(cfg: TextConfig, vocab_size: int, bos_id: int, eos_id: int, pad_id: int) -> nn.Module:
    if cfg.pretrained:
        return AutoModelForCausalLM.from_pretrained(cfg.pretrained)
    return AutoModelForCausalLM.from_config(language_model_config(cfg, vocab_size, bos_id, eos_id, pad_id))


def language_model_config(cfg: TextConfig, vocab_size: int, bos_id: int, eos_id: int, pad_id: int):
    """The Hugging Face config of a from-scratch LM of the configured family."""
    if cfg.architecture == "gpt2":
        return GPT2Config(
            vocab_size=vocab_size, n_positions=cfg.max_positions, n_embd=cfg.hidden_size, n_layer=cfg.num_layers,
            n_head=cfg.num_heads, n_inner=cfg.intermediate_size, resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout,
            attn_pdrop=cfg.dropout, bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=pad_id)
    if cfg.architecture == "llama":
        if cfg.intermediate_size is None:
            raise ModelInputError("model.text.intermediate_size is required for architecture llama")
        return LlamaConfig(
            vocab_size=vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
            num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
            max_position_embeddings=cfg.max_positions, bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=pad_id)
    raise ModelInputError(f"model.text.architecture must be gpt2 or llama, got {cfg.architecture!r}")


class MultimodalProjector(nn.Module):
    """H_v = W2·GELU(W1·Z_v + b1) + b2:  (…, d_v) → (…, d_l)."""

    def __init__(self, d_v: int, d_h: int, d_l: int):
        super().__init__()
        self.linear_1 = nn.Linear(d_v, d_h)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(d_h, d_l)

    def forward(self, z_v: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(z_v)))

    def l2(self) -> torch.Tensor:
        return sum(p.pow(2).sum() for p in self.parameters())


# --------------------------------------------------------------------------- the model

@dataclass
class ModelOutput:
    logits: torch.Tensor | None        # (B, T, V)
    label_logits: torch.Tensor         # (B, 14)
    loss: torch.Tensor | None = None
    loss_report: torch.Tensor | None = None
    loss_detect: torch.Tensor | None = None
    loss_proj: torch.Tensor | None = None


class RadiologyMultimodalModel(nn.Module):
    def __init__(self, config: ModelConfig, tokenizer, encoder: nn.Module | None = None,
                 language_model: nn.Module | None = None):
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.image_token_id = tokenizer.convert_tokens_to_ids("<image>")
        if self.image_token_id is None or self.image_token_id == tokenizer.unk_token_id:
            raise ModelInputError("the tokenizer has no <image> token; build it with model_core.modeling.tokenizer")
        self.encoder = encoder if encoder is not None else build_vision_encoder(config.vision)
        self.language_model = language_model if language_model is not None else build_language_model(
            config.text, len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
        if self.language_model.get_input_embeddings().num_embeddings < len(tokenizer):
            self.language_model.resize_token_embeddings(len(tokenizer))
        enc_cfg = self.encoder.config
        d_v = enc_cfg.hidden_size
        d_l = self.language_model.get_input_embeddings().embedding_dim
        if config.projector_out is not None and config.projector_out != d_l:
            raise ModelInputError(
                f"projector_out (d_l={config.projector_out}) does not match the language model's hidden size {d_l}")
        self.projector = MultimodalProjector(d_v, config.projector_hidden, d_l)
        self.detection_head = nn.Linear(d_v, NUM_LABELS)
        self.image_size = enc_cfg.image_size
        self.in_channels = enc_cfg.num_channels
        grid = enc_cfg.image_size // enc_cfg.patch_size
        pooled = config.vision.pool_tokens
        if pooled is not None and (int(pooled ** 0.5) ** 2 != pooled or grid % int(pooled ** 0.5)):
            raise ModelInputError(f"pool_tokens={pooled} must be a square that divides the {grid}×{grid} patch grid")
        self.num_image_tokens = pooled or grid * grid
        lm_cfg = self.language_model.config
        self.max_positions = getattr(lm_cfg, "n_positions", None) or getattr(lm_cfg, "max_position_embeddings", 1 << 30)
        # Inputs in [0, 1] are mapped to [-1, 1] (the convention of ViT checkpoints such as google/vit-*).
        self.pixel_mean, self.pixel_std = 0.5, 0.5

    # ---- vision

    def check_images(self, images: torch.Tensor) -> torch.Tensor:
        """Accept (B, 1, H, W) or (B, K, 1, H, W) in [0, 1]; returns (B, K, 1, H, W)."""
        if not isinstance(images, torch.Tensor):
            raise ModelInputError(f"images must be a tensor, got {type(images).__name__}")
        if images.dim() == 4:
            images = images.unsqueeze(1)
        if images.dim() != 5:
            raise ModelInputError(f"images must be (B, 1, H, W) or (B, K, 1, H, W), got shape {tuple(images.shape)}")
        b, k, c, h, w = images.shape
        if b == 0 or k == 0:
            raise ModelInputError("empty batch: no images")
        if c != 1:
            raise ModelInputError(f"images must be single-channel grayscale (1, H, W), got {c} channels")
        if (h, w) != (self.image_size, self.image_size):
            raise ModelInputError(f"images must be {self.image_size}×{self.image_size}, got {h}×{w}; "
                                  "preprocess with model_core.data.images.load_image(path, size)")
        return images

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, K, 1, H, W) in [0, 1] → vision features (B, K, 1 + N, d_v): CLS then (pooled) patch tokens."""
        images = self.check_images(images)
        b, k = images.shape[:2]
        x = images.flatten(0, 1)
        x = (x - self.pixel_mean) / self.pixel_std
        if self.in_channels != 1:
            x = x.expand(-1, self.in_channels, -1, -1)
        hidden = self.encoder(pixel_values=x).last_hidden_state  # (B·K, 1 + N, d_v)
        cls, patches = hidden[:, :1], hidden[:, 1:]
        if self.config.vision.pool_tokens:
            side = int(patches.shape[1] ** 0.5)
            grid = patches.transpose(1, 2).reshape(patches.shape[0], -1, side, side)
            out = int(self.config.vision.pool_tokens ** 0.5)
            patches = F.adaptive_avg_pool2d(grid, out).flatten(2).transpose(1, 2)
        feats = torch.cat([cls, patches], dim=1)
        return feats.reshape(b, k, *feats.shape[1:])

    def detect(self, vision_features: torch.Tensor) -> torch.Tensor:
        """(B, K, 1 + N, d_v) → label logits (B, 14) from the CLS token, averaged over the K views."""
        return self.detection_head(vision_features[:, :, 0]).mean(dim=1)

    # ---- forward

    def forward(
        self,
        images: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        finding_labels: torch.Tensor | None = None,
        vision_features: torch.Tensor | None = None,
    ) -> ModelOutput:
        """Logits (B, T, V) and label_logits (B, 14); with `labels` (B, T) and/or `finding_labels` (B, 14),
        the combined loss and each of its terms. `vision_features` (from `encode_images`, e.g. a cache)
        replaces `images`."""
        if vision_features is None:
            if images is None:
                raise ModelInputError("forward needs images or vision_features")
            vision_features = self.encode_images(images)
        label_logits = self.detect(vision_features)
        logits = None
        out = ModelOutput(logits=None, label_logits=label_logits)
        terms = []
        if input_ids is not None:
            if input_ids.shape[1] > self.max_positions:
                raise ModelInputError(f"sequence of {input_ids.shape[1]} tokens exceeds the language model's "
                                      f"{self.max_positions} positions "
                                      "(shorten the prompt/report or pool image tokens)")
            embeds = self.merge_image_embeddings(vision_features, input_ids)
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
            logits = self.language_model(inputs_embeds=embeds, attention_mask=attention_mask,
                                         position_ids=position_ids).logits
            out.logits = logits
            if labels is not None:
                out.loss_report = F.cross_entropy(
                    logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX)
                terms.append(self.config.report_weight * out.loss_report)
        if finding_labels is not None:
            out.loss_detect = F.binary_cross_entropy_with_logits(label_logits.float(), finding_labels.float())
            terms.append(self.config.detect_weight * out.loss_detect)
        if terms:
            out.loss_proj = self.projector.l2()
            out.loss = sum(terms) + self.config.projector_l2 * out.loss_proj
        return out

    def merge_image_embeddings(self, vision_features: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings (B, T, d_l) with the `<image>` placeholders replaced by projected patch tokens."""
        embeds = self.language_model.get_input_embeddings()(input_ids)
        patches = vision_features[:, :, 1:].flatten(1, 2)  # (B, K·N, d_v)
        image_mask = input_ids == self.image_token_id
        counts = image_mask.sum(dim=1)
        if not bool((counts == patches.shape[1]).all()):
            raise ModelInputError(
                f"image-token count mismatch: the text holds {counts.tolist()} <image> tokens per sample, "
                f"the images give {patches.shape[1]} ({vision_features.shape[1]} view(s) × {self.num_image_tokens})")
        projected = self.projector(patches).to(embeds.dtype)
        return embeds.masked_scatter(image_mask.unsqueeze(-1), projected)

    # ---- persistence

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Self-contained directory: weights, tokenizer and config (no reference to any other path)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(directory / TOKENIZER_DIR)
        cfg = self.config.to_dict()
        # Pretrained parts are saved in full below, so the directory never points back at the original paths.
        cfg["vision"]["pretrained"], cfg["text"]["pretrained"] = None, None
        self.encoder.config.save_pretrained(directory / ENCODER_CONFIG_DIR)
        self.language_model.config.save_pretrained(directory / LM_CONFIG_DIR)
        (directory / MODEL_CONFIG).write_text(json.dumps(cfg, indent=2))
        torch.save(self.state_dict(), directory / MODEL_WEIGHTS)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, map_location: str = "cpu") -> "RadiologyMultimodalModel":
        directory = Path(directory)
        for needed in (MODEL_CONFIG, MODEL_WEIGHTS, TOKENIZER_DIR, ENCODER_CONFIG_DIR, LM_CONFIG_DIR):
            if not (directory / needed).exists():
                raise FileNotFoundError(f"{directory} is not a model directory: {needed} is missing")
        config = ModelConfig.from_dict(json.loads((directory / MODEL_CONFIG).read_text()))
        tokenizer = PreTrainedTokenizerFast.from_pretrained(directory / TOKENIZER_DIR)
        # Build the parts from their saved HF configs (the architecture may be a pretrained family, not ours).
        enc = encoder_from_config(AutoConfig.from_pretrained(directory / ENCODER_CONFIG_DIR))
        lm = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(directory / LM_CONFIG_DIR))
        model = cls(config, tokenizer, encoder=enc, language_model=lm)
        state = torch.load(directory / MODEL_WEIGHTS, map_location=map_location, weights_only=True)
        model.load_state_dict(state)
        model.eval()
        return model

    # ---- parameter groups for the training stages

    def set_trainable(self, stage: str) -> list[str]:
        """Freeze/unfreeze parts for a stage; returns the names of the trainable parts.

        stage0_encoder: encoder + detection head (only when the encoder is not pretrained)
        stage0_lm:      language model alone on report text (only when the LM is not pretrained)
        stage1:         projector + detection head (LM and encoder frozen)
        stage2:         projector + detection head + language model (encoder frozen)
        """
        parts = {
            "stage0_encoder": ("encoder", "detection_head"),
            "stage0_lm": ("language_model",),
            "stage1": ("projector", "detection_head"),
            "stage2": ("projector", "detection_head", "language_model"),
        }
        if stage not in parts:
            raise ValueError(f"unknown stage {stage!r}; expected one of {sorted(parts)}")
        for name, module in self.named_children():
            module.requires_grad_(name in parts[stage])
        if self.has_lora and "language_model" in parts[stage]:
            # With LoRA only the adapters of the LM train; its base weights stay frozen.
            for pname, param in self.language_model.named_parameters():
                param.requires_grad_("lora_" in pname)
        return list(parts[stage])

    # ---- LoRA (7B-class LMs)

    @property
    def has_lora(self) -> bool:
        # A PeftModel wraps the LM; after merge_and_unload the plain LM is back (it may keep a stale peft_config).
        return type(self.language_model).__module__.startswith("peft.")

    def apply_lora(self, lora_cfg) -> None:
        """Wrap the LM with LoRA adapters (peft). Adapters start at zero, so outputs are unchanged."""
        # peft is imported here, not at the top: only LoRA runs (7B-class LMs) need it, and it is heavy.
        from peft import LoraConfig as PeftLoraConfig
        from peft import get_peft_model

        if self.has_lora:
            return
        peft_cfg = PeftLoraConfig(r=lora_cfg.r, lora_alpha=lora_cfg.alpha, lora_dropout=lora_cfg.dropout,
                                  target_modules=list(lora_cfg.target_modules), task_type="CAUSAL_LM",
                                  fan_in_fan_out=self.language_model.config.model_type == "gpt2")
        self.language_model = get_peft_model(self.language_model, peft_cfg)

    def merge_lora(self) -> None:
        """Fold the adapters into the LM weights, so the saved model is a plain Hugging Face LM."""
        if self.has_lora:
            self.language_model = self.language_model.merge_and_unload()
