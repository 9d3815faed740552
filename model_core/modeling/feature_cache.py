"""On-disk cache of a frozen image encoder's features, one small .npy file per (weights, image, input size, pooling).

    cache = model_feature_cache(model, "runs/features")          # keyed by the model's encoder, pooling, pixels
    feats = encode_image_files(model, paths, cache)               # (n, 1 + N, d_v), computing only the misses
    study_feats = study_features(feats, slots)                    # (S, V, 1 + N, d_v), NaN rows = missing views

What is stored per image: an array (1 + P·P, D) in the layout `RadiologyMultimodalModel.encode_images` returns for
one view: row 0 is the CLS token, rows 1.. the patch grid average-pooled to P×P (row-major), all taken from the
encoder's last hidden state (after its final LayerNorm), in the encoder's own units (no further normalisation).
For DINOv2 ViT-S/14 at 224 px with P = 4: (17, 384), the 16×16 patch grid pooled in 4×4 blocks.
Stored as float16 (half the disk; ~1e-3 relative rounding), returned as float32.

The key is sha256 over (format, weights id, sha256 of the image FILE BYTES, input size, pooling, preprocessing), so
different weights, a changed image file, another size or pooling never hit a stale entry: the key changes and the
old file is simply not read again. Files live under root/<weights id[:16]>/<key[:2]>/<key>.npy and are written
atomically (model_core.files), so concurrent writers at worst compute the same entry twice.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model_core.data.images import load_images
from model_core.data.manifest import DataError
from model_core.files import atomic_write_bytes, sha256_file

log = logging.getLogger(__name__)

FORMAT = "cls+pooled-patches/v1"   # bump when the stored layout changes: every key changes with it


def pooling_spec(side: int) -> str:
    """The pooling name that goes into the key: CLS + the patch grid average-pooled to side×side."""
    return f"cls+avg{side}x{side}"


def cls_and_pooled_patches(last_hidden_state: torch.Tensor, side: int) -> torch.Tensor:
    """(B, 1 + G·G, D) → (B, 1 + side·side, D): CLS, then the G×G patch grid adaptive-average-pooled to side×side.

    Same arithmetic as `RadiologyMultimodalModel.encode_images` with `pool_tokens = side²`."""
    cls, patches = last_hidden_state[:, :1], last_hidden_state[:, 1:]
    grid = int(round(patches.shape[1] ** 0.5))
    if grid * grid != patches.shape[1]:
        raise ValueError(f"patch tokens ({patches.shape[1]}) do not form a square grid")
    maps = patches.transpose(1, 2).reshape(patches.shape[0], -1, grid, grid)
    pooled = F.adaptive_avg_pool2d(maps, side).flatten(2).transpose(1, 2)
    return torch.cat([cls, pooled], dim=1)


def weights_fingerprint(module: nn.Module) -> str:
    """sha256 over a module's state dict (names, dtypes, shapes, bytes): the weights id of an encoder."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class FeatureCache:
    """`get_or_compute(paths, size, compute_fn)` → float32 array (N, 1 + P·P, D), computing only the misses.

    `weights_id` names the encoder weights (e.g. `weights_fingerprint(encoder)` or the safetensors sha256);
    `pooling` and `preprocessing` are free-form names of how features were made (pooling_spec(4),
    "grey→RGB imagenet"); all of them are part of the key. `hits` / `misses` count images."""

    def __init__(self, root: str | os.PathLike, weights_id: str, pooling: str = pooling_spec(4),
                 preprocessing: str = "", dtype: np.dtype | type = np.float16):
        if not weights_id or not isinstance(weights_id, str):
            raise ValueError("weights_id must be a non-empty string")
        self.root = Path(root)
        self.weights_id = weights_id
        self.pooling = pooling
        self.preprocessing = preprocessing
        self.dtype = np.dtype(dtype)
        self.hits = 0
        self.misses = 0

    def key(self, image_sha256: str, size: int) -> str:
        spec = {"format": FORMAT, "weights": self.weights_id, "image": image_sha256, "size": int(size),
                "pooling": self.pooling, "preprocessing": self.preprocessing, "dtype": self.dtype.name}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()

    def path_for(self, key: str) -> Path:
        return self.root / self.weights_id[:16] / key[:2] / f"{key}.npy"

    def stats(self) -> dict:
        return {"hits": self.hits, "misses": self.misses}

    def _read(self, path: Path) -> np.ndarray | None:
        try:
            arr = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError):  # truncated or foreign file: recompute and overwrite it
            log.warning("unreadable feature-cache entry %s; recomputing it", path.name)
            return None
        return arr if arr.ndim == 2 else None

    def get_or_compute(self, paths: Sequence[str | os.PathLike], size: int,
                       compute_fn: Callable[[list[Path]], np.ndarray | torch.Tensor],
                       batch_size: int = 32) -> np.ndarray:
        """Features (len(paths), 1 + P·P, D) float32 of the image files, in order.

        `compute_fn(paths)` gets at most `batch_size` image paths that missed and returns their features
        (len, 1 + P·P, D); each batch is written before the next is computed, so an interrupted run keeps its work."""
        if not paths:
            raise DataError("no images to encode")
        keys = []
        for p in paths:
            try:
                keys.append(self.key(sha256_file(p), size))
            except FileNotFoundError:
                raise DataError(f"image file not found: {p}") from None
        out: list[np.ndarray | None] = [self._read(self.path_for(k)) for k in keys]
        missing = [i for i, arr in enumerate(out) if arr is None]
        self.hits += len(paths) - len(missing)
        self.misses += len(missing)
        for start in range(0, len(missing), batch_size):
            chunk = missing[start:start + batch_size]
            feats = compute_fn([Path(paths[i]) for i in chunk])
            feats = feats.detach().cpu().float().numpy() if isinstance(feats, torch.Tensor) else np.asarray(feats)
            if feats.ndim != 3 or feats.shape[0] != len(chunk):
                raise ValueError(f"compute_fn returned shape {feats.shape}; expected ({len(chunk)}, tokens, dim)")
            if not np.isfinite(feats).all():
                raise ValueError("compute_fn returned non-finite features")
            for i, arr in zip(chunk, feats):
                stored = arr.astype(self.dtype)
                buf = io.BytesIO()
                np.save(buf, stored, allow_pickle=False)
                atomic_write_bytes(self.path_for(keys[i]), buf.getvalue())
                out[i] = stored
        shapes = {a.shape for a in out}
        if len(shapes) != 1:
            raise ValueError(f"cached features disagree in shape {sorted(shapes)}: mixed pooling under one key space")
        return np.stack(out).astype(np.float32)


# --------------------------------------------------------------------------- a model's features, cached

def model_feature_cache(model, root: str | os.PathLike) -> FeatureCache:
    """The cache of `model.encode_views` outputs: keyed by the encoder's weights fingerprint, the pooling of the
    patch grid and the pixel normalisation (the input size is part of every key)."""
    pooling = pooling_spec(model.pool_side) if model.pool_side else "cls+all-patches"
    if model.detect_layers > 1:
        pooling += f"+cls-of-last-{model.detect_layers}-layers"
    preprocessing = (f"model_core.data.images.load_image (grey, bilinear); {model.in_channels} channel(s); "
                     f"mean {[round(v, 6) for v in model.pixel_mean.flatten().tolist()]} "
                     f"std {[round(v, 6) for v in model.pixel_std.flatten().tolist()]}")
    return FeatureCache(root, weights_fingerprint(model.encoder), pooling, preprocessing)


@torch.no_grad()
def encode_image_files(model, paths: Sequence[str | os.PathLike], cache: FeatureCache | None = None,
                       batch_size: int = 32) -> torch.Tensor:
    """`model.encode_views` of image files (decoded by the one preprocessing path) → float32 (n, 1 + N, d_v);
    through `cache` when given (only misses are encoded), else all computed here. The encoder must be frozen
    for a cache to make sense: its features are keyed by its current weights."""
    if not paths:
        raise DataError("no images to encode")
    was_training = model.training
    model.eval()
    try:
        def compute(batch: Sequence[str | os.PathLike]) -> torch.Tensor:
            return model.encode_views(load_images([str(p) for p in batch], model.image_size, "encoder features"))

        if cache is None:
            return torch.cat([compute(paths[i:i + batch_size]) for i in range(0, len(paths), batch_size)]).float()
        return torch.from_numpy(cache.get_or_compute(list(paths), model.image_size, compute, batch_size))
    finally:
        model.train(was_training)


def study_features(image_features: torch.Tensor, slots: Sequence[Sequence[int | None]]) -> torch.Tensor:
    """Per-image features (n, 1 + N, d) → per-study view slots (S, V, 1 + N, d): slots[s][v] is a row of
    image_features, or None for a missing view (its rows are NaN, the model's missing-view marker)."""
    views = {len(s) for s in slots}
    if len(views) != 1:
        raise ValueError(f"studies have different numbers of view slots: {sorted(views)}")
    out = image_features.new_full((len(slots), views.pop(), *image_features.shape[1:]), float("nan"))
    for i, study in enumerate(slots):
        for v, row in enumerate(study):
            if row is not None:
                out[i, v] = image_features[row]
    return out
