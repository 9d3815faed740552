"""The one image preprocessing path (training, evaluation and serving): decode, greyscale, resize, [0, 1]."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from model_core.data.manifest import DataError

# Decompression-bomb guard: refuse images larger than this before decoding pixels.
MAX_IMAGE_PIXELS = 8192 * 8192
# A study's view slot without an image (e.g. no lateral radiograph) is all-NaN pixels: one tensor then carries the
# images and which of them are missing through torch, the exported graph, Triton and serving alike; the model masks
# such a slot (it is never encoded as an image). Real pixels are always finite (`pil_to_tensor` clips to [0, 1]).
MISSING_VIEW = float("nan")


def load_image(path: str | os.PathLike, size: int = 512) -> torch.Tensor:
    """Decode an image file into a (1, size, size) float32 tensor in [0, 1] (grayscale, bilinear resize).

    This is the single preprocessing path for training, evaluation and serving.
    """
    path = Path(path)
    if size <= 0:
        raise DataError(f"image size must be positive, got {size}")
    if not path.is_file():
        raise DataError(f"image file not found: {path}")
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_IMAGE_PIXELS:
                raise DataError(f"image {path} is {im.width}×{im.height} pixels, above the {MAX_IMAGE_PIXELS} limit")
            return pil_to_tensor(im, size)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"cannot decode image {path}: {exc}") from None


def pil_to_tensor(im: Image.Image, size: int) -> torch.Tensor:
    """PIL image → (1, size, size) float32 in [0, 1]; 16-bit and float images are rescaled, not clipped."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float32)
        if im.mode.startswith("I;16"):
            arr = arr / 65535.0
        else:  # 32-bit integer or float pixels: no fixed range, so use the image's own
            lo, hi = float(arr.min()), float(arr.max())
            arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
        gray = Image.fromarray(arr, mode="F")
    else:
        gray = im.convert("L") if im.mode != "L" else im
    if gray.size != (size, size):
        gray = gray.resize((size, size), Image.BILINEAR)
    arr = np.asarray(gray, dtype=np.float32)
    if gray.mode == "L":
        arr = arr / 255.0
    return torch.from_numpy(np.clip(arr, 0.0, 1.0)).unsqueeze(0)


def load_images(paths: list[str], size: int, desc: str = "images") -> torch.Tensor:
    """Decode images once through `load_image` → (N, 1, size, size) float32 in [0, 1] (progress bar on a TTY)."""
    if not paths:
        raise DataError("no images to load")
    return torch.stack([load_image(p, size) for p in tqdm(paths, desc=f"decode {desc}", leave=False, unit="img",
                                                          disable=None)])


def missing_view(size: int) -> torch.Tensor:
    """The (1, size, size) placeholder of a view slot that has no image (all `MISSING_VIEW`)."""
    return torch.full((1, size, size), MISSING_VIEW, dtype=torch.float32)


def stack_views(slots: list[torch.Tensor | None], size: int) -> torch.Tensor:
    """A study's view slots (image (1, size, size) or None when the study has no such view) → (K, 1, size, size),
    missing slots filled with `missing_view`. Slot order is the model's: frontal, then lateral."""
    if not any(s is not None for s in slots):
        raise DataError("a study needs at least one image")
    return torch.stack([s if s is not None else missing_view(size) for s in slots])
