"""LLaVA-style report generator: image encoder → MLP projector → causal LM, plus a CheXpert detection head.

    images (B, K, 1, H, W) in [0, 1], K ≤ V view slots (frontal, lateral); a slot without an image is all-NaN
    (`model_core.data.images.missing_view`) and slots past K count as missing
        ──encoder──►  Z_v (B, V, 1 + N + k−1, d_v)   (NaN rows for missing views; they are never encoded)
        CLS   Z_v[:, :, 0] (+ the CLS of the k−1 layers before, Z_v[:, :, 1+N:], with vision.detect_layers = k)
                            ──detection head──► label_logits (B, 14)   mean over the views present of w_k·h_cls + b_k
        patches Z_v[:, :, 1:1+N] ──projector──► H_v (B, V·N, d_l)       H_v = W2·GELU(W1·Z_v + b1) + b2;
                                                                         a missing view's N tokens = a learned vector;
                                                                         + W_f·σ(label_logits) with findings_to_lm
    input_ids (B, T) hold V·N `<image>` placeholders; their embeddings are replaced by H_v, and the causal LM runs
    on `inputs_embeds`.   loss = 1.0·NLL(report) + 0.5·L_detect(labels) + 1e-4·‖θ_proj‖²
    L_detect: BCE, class-weighted BCE or focal BCE (`model.detect_loss`).

Pixels are normalised inside the model (grey repeated to the encoder's channels, then the encoder family's
mean/std), so training, evaluation, the exported graph and serving share one preprocessing path. Parts are built
from config or loaded with `from_pretrained` (`model_core.modeling.vision`: a DINOv2 encoder, frozen, is the demo
default); a frozen encoder stays in eval mode and is never trained.
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
    AutoModelForCausalLM,
    GPT2Config,
    LlamaConfig,
    PreTrainedTokenizerFast,
)

from model_core.artifacts import ENCODER_CONFIG_DIR, LM_CONFIG_DIR, MODEL_CONFIG, MODEL_WEIGHTS, TOKENIZER_DIR
from model_core.chexpert import NUM_LABELS
from model_core.config import ModelConfig, TextConfig
from model_core.modeling.vision import build_vision_encoder, encoder_from_config, pixel_statistics

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
DETECT_LOSSES = ("bce", "weighted_bce", "focal")


class ModelInputError(ValueError):
    """Inputs of the wrong shape, channels or size; the message says what was expected."""


# --------------------------------------------------------------------------- builders (one per part)

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
    """H_v = W2·GELU(W1·Z_v + b1) + b2:  (…, d_v) → (…, d_l); `missing_view` (d_l) stands for a view not there;
    `findings` (optional, 14 → d_l, zero at start) carries the detection head's probabilities into the tokens."""

    def __init__(self, d_v: int, d_h: int, d_l: int, findings: bool = False):
        super().__init__()
        self.linear_1 = nn.Linear(d_v, d_h)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(d_h, d_l)
        # Learned like a [MASK] embedding: the LM reads "no such view" instead of the encoding of a blank image.
        self.missing_view = nn.Parameter(torch.zeros(d_l))
        self.findings = nn.Linear(NUM_LABELS, d_l) if findings else None
        if self.findings is not None:
            nn.init.zeros_(self.findings.weight)   # starts as the plain projector
            nn.init.zeros_(self.findings.bias)

    def forward(self, z_v: torch.Tensor | None = None, present: torch.Tensor | None = None, *,
                squared_norm: bool = False) -> torch.Tensor:
        """Visual tokens of z_v (…, d_v) → (…, d_l), `missing_view` where `present` (broadcastable, bool) is False;
        with squared_norm=True, ‖θ_proj‖² instead. Both are computed inside forward: DeepSpeed ZeRO-3 gathers a
        module's sharded weights only around its own forward and backward (the trainer registers the layers'
        weights with this module for that)."""
        if squared_norm:
            return sum(p.pow(2).sum() for p in self.parameters())
        tokens = self.linear_2(self.act(self.linear_1(z_v)))
        return tokens if present is None else torch.where(present, tokens, self.missing_view)

    def l2(self) -> torch.Tensor:
        return self(squared_norm=True)


def views_present(x: torch.Tensor) -> torch.Tensor:
    """(B, V, …) images or vision features → (B, V) bool: the slot holds a view (not all-NaN)."""
    return ~torch.isnan(x).flatten(2).all(dim=-1)


def detection_loss(logits: torch.Tensor, targets: torch.Tensor, kind: str, pos_weight: torch.Tensor,
                   gamma: float) -> torch.Tensor:
    """Mean over studies and labels of BCE (kind "bce"), BCE with positives weighted by `pos_weight` (14,)
    ("weighted_bce"), or focal BCE ("focal": the weighted BCE times (1 − p_t)^gamma, so easy negatives of rare
    labels stop dominating the gradient)."""
    logits, targets = logits.float(), targets.float()
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, targets)
    ce = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight, reduction="none")
    if kind == "weighted_bce":
        return ce.mean()
    p = torch.sigmoid(logits)
    p_t = p * targets + (1 - p) * (1 - targets)
    return (ce * (1 - p_t).pow(gamma)).mean()


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
        if config.detect_loss not in DETECT_LOSSES:
            raise ModelInputError(f"model.detect_loss must be one of {', '.join(DETECT_LOSSES)}, "
                                  f"got {config.detect_loss!r}")
        if config.vision.views < 1:
            raise ModelInputError(f"model.vision.views must be ≥ 1, got {config.vision.views}")
        self.encoder = encoder if encoder is not None else build_vision_encoder(config.vision)
        if config.vision.freeze:
            self.encoder.requires_grad_(False).eval()
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
        self.projector = MultimodalProjector(d_v, config.projector_hidden, d_l, findings=config.findings_to_lm)
        self.detect_layers = config.vision.detect_layers
        depth = getattr(enc_cfg, "num_hidden_layers", 0)
        if not 1 <= self.detect_layers <= max(depth, 1):
            raise ModelInputError(f"model.vision.detect_layers must be between 1 and the encoder's {depth} layers, "
                                  f"got {self.detect_layers}")
        if self.detect_layers > 1 and not isinstance(getattr(self.encoder, "layernorm", None), nn.LayerNorm):
            raise ModelInputError(f"model.vision.detect_layers > 1 needs an encoder with a final LayerNorm "
                                  f"(ViT, DINOv2); {type(self.encoder).__name__} has none")
        self.detection_head = nn.Linear(d_v * self.detect_layers, NUM_LABELS)
        self.image_size = enc_cfg.image_size
        self.in_channels = enc_cfg.num_channels
        self.num_views = config.vision.views
        self.grid = enc_cfg.image_size // enc_cfg.patch_size       # a Python int: the exported graph pools with it
        pooled = config.vision.pool_tokens
        if pooled is not None and (int(pooled ** 0.5) ** 2 != pooled or self.grid % int(pooled ** 0.5)):
            raise ModelInputError(f"pool_tokens={pooled} must be a square that divides the "
                                  f"{self.grid}×{self.grid} patch grid")
        self.pool_side = int(pooled ** 0.5) if pooled else None
        self.num_image_tokens = pooled or self.grid * self.grid   # per view
        lm_cfg = self.language_model.config
        self.max_positions = getattr(lm_cfg, "n_positions", None) or getattr(lm_cfg, "max_position_embeddings", 1 << 30)
        mean, std = pixel_statistics(config.vision, self.encoder)
        self.register_buffer("pixel_mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        # Positive-class weights of the detection loss (set from the training labels by the trainer).
        self.register_buffer("label_pos_weight", torch.ones(NUM_LABELS), persistent=False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.config.vision.freeze:
            self.encoder.eval()   # frozen: no dropout noise, and its cached features stay valid
        return self

    @property
    def image_tokens_per_study(self) -> int:
        return self.num_views * self.num_image_tokens

    def set_label_frequencies(self, targets: torch.Tensor) -> torch.Tensor:
        """Positive weights of the weighted/focal detection loss from 0/1 training targets (N, 14):
        negatives/positives per label, clipped to [1, pos_weight_max] (a label without positives gets the cap)."""
        pos = targets.float().sum(0)
        neg = targets.shape[0] - pos
        weight = torch.where(pos > 0, neg / pos.clamp(min=1), torch.full_like(pos, self.config.pos_weight_max))
        self.label_pos_weight = weight.clamp(1.0, self.config.pos_weight_max).to(self.label_pos_weight)
        return self.label_pos_weight

    # ---- vision

    def check_images(self, images: torch.Tensor) -> torch.Tensor:
        """Accept (B, 1, H, W) or (B, K, 1, H, W) in [0, 1] with K ≤ the model's view slots; returns
        (B, V, 1, H, W), slots past K filled as missing views (NaN). Shapes only: safe to trace."""
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
        if k > self.num_views:
            raise ModelInputError(f"the model takes at most {self.num_views} view(s) per study (frontal"
                                  f"{', lateral' if self.num_views > 1 else ''}), got {k}")
        if k < self.num_views:
            pad = images.new_full((b, self.num_views - k, 1, h, w), float("nan"))
            images = torch.cat([images, pad], dim=1)
        return images

    def check_views(self, images: torch.Tensor) -> torch.Tensor:
        """(B, V, 1, H, W) → which views are present (B, V); a partly-NaN image or a study without any view is a
        ModelInputError (eager only: data-dependent)."""
        nan = torch.isnan(images).flatten(2)
        present = ~nan.all(dim=-1)
        if bool((nan.any(dim=-1) & present).any()):
            raise ModelInputError("an image has non-finite pixels (only a whole missing view may be NaN)")
        if not bool(present.any(dim=1).all()):
            raise ModelInputError("a study has no image: at least one view is needed")
        return present

    def encode_views(self, pixels: torch.Tensor) -> torch.Tensor:
        """(n, 1, H, W) finite pixels in [0, 1] → (n, 1 + N + k−1, d_v): CLS, then the patch grid (average-pooled
        to pool_tokens when configured), then the CLS of the k−1 layers before the last (vision.detect_layers = k;
        each through the encoder's final LayerNorm, as its last layer's). The one place pixels are normalised for
        the encoder."""
        x = (pixels.expand(-1, self.in_channels, -1, -1) - self.pixel_mean) / self.pixel_std
        k = self.detect_layers
        out = self.encoder(pixel_values=x, output_hidden_states=k > 1)
        features = self.pool_hidden(out.last_hidden_state)
        if k == 1:
            return features
        earlier = [self.encoder.layernorm(h[:, :1]) for h in reversed(out.hidden_states[-k:-1])]
        return torch.cat([features, *earlier], dim=1)

    def pool_hidden(self, hidden: torch.Tensor, side: int | None = None) -> torch.Tensor:
        """The encoder's last hidden state (n, 1 + G², d_v) → (n, 1 + side², d_v): CLS, then the G×G patch grid
        average-pooled to side×side (default: the configured pool_tokens; none configured: all patches)."""
        side = side or self.pool_side
        if not side:
            return hidden
        cls, patches = hidden[:, :1], hidden[:, 1:]
        grid = patches.transpose(1, 2).reshape(-1, patches.shape[2], self.grid, self.grid)
        patches = F.avg_pool2d(grid, self.grid // side).flatten(2).transpose(1, 2)
        return torch.cat([cls, patches], dim=1)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, K, 1, H, W) in [0, 1] → vision features (B, V, 1 + N + k−1, d_v); the rows of missing views are NaN
        (those slots are not encoded)."""
        images = self.check_images(images)
        present = self.check_views(images)
        b, v = present.shape
        encoded = self.encode_views(images[present])
        feats = encoded.new_full((b, v, *encoded.shape[1:]), float("nan"))
        feats[present] = encoded
        return feats

    def check_features(self, vision_features: torch.Tensor) -> None:
        """Features of another layout (another pooling or detect_layers, e.g. a stale cache) are a clear error."""
        per_view = self.num_image_tokens + self.detect_layers     # the last layer's CLS, the patches, earlier CLS
        if vision_features.dim() != 4 or vision_features.shape[2:] != (per_view, self.detection_head.in_features
                                                                       // self.detect_layers):
            raise ModelInputError(f"vision features must be (B, V, {per_view} tokens per view, d_v); got shape "
                                  f"{tuple(vision_features.shape)} (encode them with this model)")

    def detect(self, vision_features: torch.Tensor) -> torch.Tensor:
        """(B, V, 1 + N + k−1, d_v) → label logits (B, 14): the head on each present view's CLS token(s) (the last
        k layers', concatenated), averaged over the views present."""
        present = views_present(vision_features)                                      # (B, V)
        cls = vision_features[:, :, 0]
        if self.detect_layers > 1:
            cls = torch.cat([cls, vision_features[:, :, 1 + self.num_image_tokens:].flatten(2)], dim=-1)
        cls = torch.where(present[..., None], cls, 0.0)
        weights = present.to(cls.dtype)[..., None]
        return (self.detection_head(cls) * weights).sum(1) / weights.sum(1).clamp(min=1.0)

    def project_visual_tokens(self, vision_features: torch.Tensor) -> torch.Tensor:
        """(B, V, 1 + N + k−1, d_v) → the LM's visual tokens (B, V·N, d_l); a missing view's tokens are
        `missing_view`."""
        present = views_present(vision_features)[..., None, None]                     # (B, V, 1, 1)
        patches = torch.where(present, vision_features[:, :, 1:1 + self.num_image_tokens], 0.0)
        tokens = self.projector(patches, present)
        if self.projector.findings is not None:
            # Gradient stopped: the report loss must not pull the head away from its labels and calibration.
            probs = torch.sigmoid(self.detect(vision_features)).detach()
            tokens = tokens + self.projector.findings(probs)[:, None, None, :]
        return tokens.flatten(1, 2)

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
        self.check_features(vision_features)
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
            out.loss_detect = detection_loss(label_logits, finding_labels, self.config.detect_loss,
                                             self.label_pos_weight, self.config.focal_gamma)
            terms.append(self.config.detect_weight * out.loss_detect)
        if terms:
            out.loss_proj = self.projector.l2()
            out.loss = sum(terms) + self.config.projector_l2 * out.loss_proj
        return out

    def merge_image_embeddings(self, vision_features: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings (B, T, d_l) with the `<image>` placeholders replaced by the visual tokens."""
        embeds = self.language_model.get_input_embeddings()(input_ids)
        image_mask = input_ids == self.image_token_id
        counts = image_mask.sum(dim=1)
        self.check_features(vision_features)
        expected = vision_features.shape[1] * self.num_image_tokens
        if not bool((counts == expected).all()):
            raise ModelInputError(
                f"image-token count mismatch: the text holds {counts.tolist()} <image> tokens per sample, "
                f"the images give {expected} ({vision_features.shape[1]} view(s) × {self.num_image_tokens})")
        projected = self.project_visual_tokens(vision_features).to(embeds.dtype)
        return embeds.masked_scatter(image_mask.unsqueeze(-1), projected)

    # ---- persistence

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Self-contained directory: weights, tokenizer and config (no reference to any other path)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(directory / TOKENIZER_DIR)
        cfg = self.config.to_dict()
        # Pretrained parts are saved in full below, so the directory never points back at the original paths; the
        # vision fields that came from the checkpoint are written as resolved (family, input side, pixel statistics).
        cfg["vision"]["pretrained"], cfg["text"]["pretrained"] = None, None
        cfg["vision"].update(architecture=self.encoder.config.model_type, image_size=self.image_size,
                             patch_size=self.encoder.config.patch_size,
                             pixel_mean=self.pixel_mean.flatten().tolist(), pixel_std=self.pixel_std.flatten().tolist())
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
        # A model saved before view slots existed has one view and no `missing_view` vector (never used then).
        state.setdefault("projector.missing_view", model.projector.missing_view.detach().clone())
        model.load_state_dict(state)
        model.eval()
        return model

    # ---- parameter groups for the training stages

    def set_trainable(self, stage: str) -> list[str]:
        """Freeze/unfreeze parts for a stage; returns the names of the trainable parts.

        stage0_encoder: encoder + detection head (a from-scratch encoder); the detection head alone when the
                        encoder is frozen (`model.vision.freeze`)
        stage0_lm:      language model alone on report text (only when the LM is not pretrained)
        stage1:         projector + detection head (LM and encoder frozen)
        stage2:         projector + detection head + language model (encoder frozen)
        A frozen encoder is never trainable.
        """
        parts = {
            "stage0_encoder": ("encoder", "detection_head"),
            "stage0_lm": ("language_model",),
            "stage1": ("projector", "detection_head"),
            "stage2": ("projector", "detection_head", "language_model"),
        }
        if stage not in parts:
            raise ValueError(f"unknown stage {stage!r}; expected one of {sorted(parts)}")
        trainable = [p for p in parts[stage] if not (p == "encoder" and self.config.vision.freeze)]
        for name, module in self.named_children():
            module.requires_grad_(name in trainable)
        if self.has_lora and "language_model" in parts[stage]:
            # With LoRA only the adapters of the LM train; its base weights stay frozen.
            for pname, param in self.language_model.named_parameters():
                param.requires_grad_("lora_" in pname)
        return trainable

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
