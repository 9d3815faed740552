"""Per-finding heatmaps of the detection head: gradient saliency of the encoder's patch tokens (a Grad-CAM variant).

    finding_heatmap(model, pixels (n, 1, H, W), "Pleural Effusion") → FindingHeatmap
        .probability (n,)   the detection head's probability for the finding, one per view image
        .grid (n, G, G)     saliency on the G×G patch grid, each map min-max scaled to [0, 1] (a flat map: 0)
        .upsampled(size)    (n, size, size) bilinear, for overlays
    overlay_rgb(image (H, W), heat (H, W)) → uint8 (H, W, 3);  overlay_png(...) → PNG bytes

Where: the normalised input of the encoder's LAST block (ViT `layernorm_before`, DINOv2 `norm1`), Grad-CAM's
target layer for ViTs (pytorch-grad-cam's recipe: `blocks[-1].norm1`). The detection head reads only the CLS
token, the last block's patch outputs never reach it, and in that block CLS reads the patch tokens only through this
map (its keys and values): the ViT counterpart of a CNN's last convolutional map. With `vision.detect_layers` > 1
the head also reads earlier layers' CLS tokens; those do not pass through this map, so the heatmap shows the
evidence of the last layer's share of the logit (the probability is the whole head's).
What: per patch token t, ‖∂logit/∂A_t‖₂, the gradient's magnitude over the channels, min-max scaled per image.
Why not Grad-CAM's ReLU(Σ_c α_c A_c) (α_c = mean over patches of ∂logit/∂A_c, Selvaraju et al. 2017): through
LayerNorm the sign of that linearisation is unreliable. Measured on the smoke model of tests/model_core/modeling/
test_explain.py (a bright blob means the finding), the top patch of classic Grad-CAM was the blob's in 0 % and 70 %
of images (ViT after 40 and 120 training steps) and 100 % and 80 % (DINOv2); the gradient magnitude's in 100 % in
all four, and occluding it removed the finding (probability 0.97-0.99 → ~0).
It works for every encoder `model_core.modeling.vision` builds (the from-scratch ViT and DINOv2, frozen or not):
both keep their blocks in `encoder.encoder.layer` and put the patch grid after CLS (and any register tokens).
Gradients are taken with respect to that map only, so a frozen encoder stays frozen and no parameter collects a
gradient. Each view image is explained on its own (the study's logit is the mean over its views).

Not a localiser: the map says where the detection head's evidence lies, at the patch grid's resolution
(e.g. 16×16 for a 224-px DINOv2 ViT-S/14); it is shown to clinicians beside the probability, never as a contour.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from PIL import Image

from model_core.chexpert import CHEXPERT_LABELS, LABEL_INDEX
from model_core.modeling.model import ModelInputError, RadiologyMultimodalModel

OVERLAY_ALPHA = 0.45      # the heat colour's weight where the map is 1 (it fades out where the map is 0)
COLORMAP = "jet"


class ExplainError(ValueError):
    """A heatmap that cannot be computed for these inputs; the message says what is wrong."""


@dataclass
class FindingHeatmap:
    finding: str
    probability: np.ndarray   # (n,) float, the detection head's probability per view image
    grid: np.ndarray          # (n, G, G) float32 in [0, 1]

    def upsampled(self, size: int) -> np.ndarray:
        """(n, size, size) float32 in [0, 1]: the grid resized bilinearly (for overlays on the model input)."""
        grid = torch.from_numpy(self.grid)[:, None]
        return F.interpolate(grid, size=(size, size), mode="bilinear", align_corners=False)[:, 0].numpy()

    def peak_patch(self) -> np.ndarray:
        """(n, 2) int: (row, column) of each map's highest patch."""
        flat = self.grid.reshape(len(self.grid), -1).argmax(axis=1)
        return np.stack(np.unravel_index(flat, self.grid.shape[1:]), axis=1)


def _target_layer(model: RadiologyMultimodalModel) -> torch.nn.Module:
    """The first LayerNorm of the encoder's last transformer block (ViT: layernorm_before; DINOv2: norm1)."""
    layers = getattr(getattr(model.encoder, "encoder", None), "layer", None)
    block = layers[-1] if isinstance(layers, torch.nn.ModuleList) and len(layers) else None
    norm = getattr(block, "layernorm_before", None) or getattr(block, "norm1", None)
    if not isinstance(norm, torch.nn.LayerNorm):
        raise ExplainError(f"the {type(model.encoder).__name__} encoder has no pre-attention LayerNorm in its last "
                           "block (encoder.layer[-1]); Grad-CAM needs a ViT-family encoder")
    return norm


def _check_pixels(model: RadiologyMultimodalModel, pixels: torch.Tensor) -> torch.Tensor:
    if not isinstance(pixels, torch.Tensor):
        raise ExplainError(f"pixels must be a tensor, got {type(pixels).__name__}")
    if pixels.dim() == 3:
        pixels = pixels.unsqueeze(0)
    side = model.image_size
    if pixels.dim() != 4 or pixels.shape[1] != 1 or pixels.shape[2:] != (side, side) or not len(pixels):
        raise ExplainError(f"pixels must be (n, 1, {side}, {side}) view images in [0, 1] (the model's input), "
                           f"got shape {tuple(pixels.shape)}")
    if not bool(torch.isfinite(pixels).all()):
        raise ExplainError("pixels must be finite: pass only the views a study has (no missing-view slots)")
    return pixels.float()


def finding_index(finding: str) -> int:
    if finding not in LABEL_INDEX or finding == "No Finding":
        raise ExplainError(f"unknown finding; expected one of {', '.join(CHEXPERT_LABELS[1:])}")
    return LABEL_INDEX[finding]


def finding_heatmap(model: RadiologyMultimodalModel, pixels: torch.Tensor, finding: str,
                    temperature: float = 1.0) -> FindingHeatmap:
    """Saliency of the detection head's `finding` logit for each view image (n, 1, H, W) in [0, 1].

    temperature: the calibration temperature of `detection.json` (the probability only; the map is unchanged)."""
    k = finding_index(finding)
    pixels = _check_pixels(model, pixels)
    captured: list[torch.Tensor] = []

    def capture(_module, _args, output):
        # The normalised tokens, cut from the encoder's graph: gradients stop here (a frozen encoder stays frozen).
        tokens = output.detach().requires_grad_(True)
        captured.append(tokens)
        return tokens

    was_training = model.training
    model.eval()
    handle = _target_layer(model).register_forward_hook(capture)
    try:
        with torch.enable_grad():
            features = model.encode_views(pixels)                      # (n, 1 + N, d_v)
            logits = model.detect(features[:, None])[:, k]             # (n,): one view per row
            (grads,) = torch.autograd.grad(logits.sum(), captured[0])
    except ModelInputError as exc:
        raise ExplainError(str(exc)) from None
    finally:
        handle.remove()
        model.train(was_training)
    side = model.grid
    cam = grads.detach()[:, -side * side:].norm(dim=-1)            # (n, G²): CLS (and registers) come first
    # Min-max per image (Grad-CAM's display convention): the map ranks patches within the image; a flat map is 0.
    low, span = cam.amin(dim=1, keepdim=True), cam.amax(dim=1, keepdim=True) - cam.amin(dim=1, keepdim=True)
    cam = torch.where(span > 0, (cam - low) / span.clamp(min=torch.finfo(cam.dtype).tiny), torch.zeros_like(cam))
    probability = torch.sigmoid(logits.detach() / float(temperature))
    return FindingHeatmap(finding=finding, probability=probability.numpy().astype(np.float64),
                          grid=cam.reshape(-1, side, side).numpy().astype(np.float32))


def overlay_rgb(image: np.ndarray, heat: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """Grey image (H, W) in [0, 1] and a heatmap (H, W) in [0, 1] → uint8 RGB (H, W, 3): the map's colour blended
    in proportionally to its value, so the image stays readable where the map is low."""
    image, heat = np.asarray(image, dtype=np.float32), np.asarray(heat, dtype=np.float32)
    if image.ndim != 2 or image.shape != heat.shape:
        raise ExplainError(f"image and heatmap must be 2-D of one shape, got {image.shape} and {heat.shape}")
    grey = np.repeat(np.clip(image, 0, 1)[..., None], 3, axis=2)
    colour = colormaps[COLORMAP](np.clip(heat, 0, 1))[..., :3].astype(np.float32)
    weight = alpha * np.clip(heat, 0, 1)[..., None]
    return np.round(255 * ((1 - weight) * grey + weight * colour)).astype(np.uint8)


def overlay_png(images: np.ndarray, heatmap: FindingHeatmap, size: int = 256) -> bytes:
    """PNG bytes: each view image (n, H, W) in [0, 1] with its map, side by side, resized to size×size each."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3 or len(images) != len(heatmap.grid):
        raise ExplainError(f"need one (H, W) image per heatmap ({len(heatmap.grid)}), got shape {images.shape}")
    resized = F.interpolate(torch.from_numpy(images)[:, None], size=(size, size), mode="bilinear",
                            align_corners=False)[:, 0].numpy()
    panels = [overlay_rgb(img, heat) for img, heat in zip(resized, heatmap.upsampled(size))]
    buffer = io.BytesIO()
    Image.fromarray(np.concatenate(panels, axis=1)).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
