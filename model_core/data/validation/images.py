"""The image columns of the data-validation manifest frame: path in root, file exists, decodes, mode, size, pixels.

Decoding uses a thread pool, under the same decompression-bomb guard as `model_core.data.load_image`,
and pixel statistics are taken after the project's one preprocessing path (`pil_to_tensor`).
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from model_core.data.images import MAX_IMAGE_PIXELS, pil_to_tensor


def image_columns(df, root: Path, min_size: int, sample_images, seed: int, workers):
    """Add per-row image columns; decode all rows or a seeded sample. Returns (stats, content frame)."""
    root_abs = Path(os.path.abspath(root))
    n = len(df)
    in_root = np.zeros(n, dtype=object)
    paths: list[Path | None] = []
    for i, rel in enumerate(df["image"]):
        if rel is None:
            in_root[i] = None
            paths.append(None)
            continue
        # Lexical check ("../", absolute paths), so symlinked image stores inside the root still pass.
        path = Path(os.path.normpath(root_abs / rel))
        ok = root_abs in path.parents
        in_root[i] = bool(ok)
        paths.append(path if ok else None)
    exists = np.array([None if p is None else p.is_file() for p in paths], dtype=object)
    df["image_in_root"] = in_root
    df["image_exists"] = exists

    candidates = [i for i in range(n) if exists[i]]
    if sample_images is not None and sample_images < len(candidates):
        rng = np.random.default_rng(seed)
        chosen = sorted(rng.choice(len(candidates), size=sample_images, replace=False).tolist())
        to_decode = [candidates[k] for k in chosen]
        mode = "sample"
    else:
        to_decode = candidates
        mode = "all"
    n_workers = workers or min(8, os.cpu_count() or 1)
    t0 = time.perf_counter()
    unique_paths = sorted({paths[i] for i in to_decode})
    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        decoded = dict(zip(unique_paths, pool.map(lambda p: _inspect_image(p, min_size), unique_paths)))
    decode_s = time.perf_counter() - t0

    keys = ("image_decodable", "image_mode", "image_bit_depth", "image_width", "image_height",
            "image_channel_spread", "pixel_min", "pixel_max", "pixel_std", "pixel_saturated", "image_sha256")
    columns = {k: [None] * n for k in keys}
    for i in to_decode:
        for k, v in decoded[paths[i]].items():
            columns[k][i] = v
    for k in keys:
        df[k] = pd.Series(columns[k], index=df.index, dtype=object)
    for k in ("image_width", "image_height", "image_bit_depth"):
        df[k] = pd.to_numeric(df[k]).astype("Int64") if df[k].notna().any() else df[k]
    for k in ("image_channel_spread", "pixel_min", "pixel_max", "pixel_std", "pixel_saturated"):
        df[k] = pd.to_numeric(df[k]).astype(float) if df[k].notna().any() else df[k]

    ok = df["image_decodable"] == True  # noqa: E712 (object column)
    stats = {
        "mode": mode, "rows": int(n), "existing": int(sum(bool(e) for e in exists)),
        "decoded": int(len(to_decode)), "unique_files_decoded": len(unique_paths),
        "decodable": int(ok.sum()), "decode_seconds": round(decode_s, 3), "workers": n_workers,
        "preprocess_size": min_size,
    }
    if mode == "sample":
        stats.update({"sample_size": sample_images, "sample_seed": seed,
                      "sampled_rows": [int(df.at[i, "row"]) for i in to_decode]})
    if ok.any():
        good = df[ok]
        stats.update({
            "pil_modes": {str(k): int(v) for k, v in good["image_mode"].value_counts().items()},
            "width": [int(good["image_width"].min()), int(good["image_width"].max())],
            "height": [int(good["image_height"].min()), int(good["image_height"].max())],
            "pixel_std": {"min": round(float(good["pixel_std"].min()), 4),
                          "median": round(float(good["pixel_std"].median()), 4)},
            "pixel_saturated_max": round(float(good["pixel_saturated"].max()), 4),
        })
    content = None
    if "effective_split" in df and ok.any():
        content = df.loc[ok & df["effective_split"].notna(), ["row", "uid", "image_sha256", "effective_split"]]
        content = content.drop_duplicates(["image_sha256", "effective_split"]).reset_index(drop=True)
    return stats, content


def _inspect_image(path: Path, size: int) -> dict:
    """Decode one file: mode, bit depth, size, and pixel statistics after the model's preprocessing."""
    out: dict[str, Any] = {"image_decodable": False}
    try:
        data = path.read_bytes()
        out["image_sha256"] = hashlib.sha256(data).hexdigest()
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_IMAGE_PIXELS:  # load_image refuses these: not decodable
                out.update(image_width=int(im.width), image_height=int(im.height))
                return out
            im.load()
            arr = np.asarray(im)
            out.update(image_mode=im.mode, image_width=int(im.width), image_height=int(im.height))
            if im.mode in ("I", "I;16", "I;16L", "I;16B"):
                out["image_bit_depth"] = 16 if arr.size == 0 or int(arr.max()) <= 65535 and int(arr.min()) >= 0 else 32
            elif im.mode == "1":
                out["image_bit_depth"] = 1
            elif im.mode == "F":
                out["image_bit_depth"] = 32
            else:
                out["image_bit_depth"] = 8
            if arr.ndim == 3 and arr.shape[2] >= 3:
                r, g, b = (arr[..., k] for k in range(3))
                if np.array_equal(r, g) and np.array_equal(r, b):  # the usual case; axis reductions are slow
                    out["image_channel_spread"] = 0.0
                else:
                    r, g, b = (c.astype(np.int32) for c in (r, g, b))
                    spread = np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)
                    out["image_channel_spread"] = float(spread.mean() / (65535.0 if arr.dtype == np.uint16 else 255.0))
            else:
                out["image_channel_spread"] = 0.0
            gray = im if im.mode == "L" else im.convert("L")  # the conversion load_image applies
            g = np.asarray(gray)
            saturated = float(np.mean((g == 0) | (g == 255)))  # at native size, where 16-bit clipping shows
            x = pil_to_tensor(gray, size).numpy()  # the project's preprocessing (numpy stats: torch's are slow here)
        out.update(
            image_decodable=True, pixel_saturated=saturated,
            pixel_min=float(x.min()), pixel_max=float(x.max()), pixel_std=float(x.std()),
        )
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        out["image_decodable"] = False
    return out
