"""Drift detector calibration and power on real embeddings (prints tables; asserts nothing).

    .venv/bin/python benchmarks/drift_power.py [--model runs/demo/.../model] [--windows 50] [--power-windows 20]

Studies: the embedded IU X-ray frontal images, shuffled (seed) into a PCA-fit set, a reference set and a held-out
pool; nothing in the pool is in the reference. Embeddings: with --model, the model's own (frozen encoder → its
projector → `study_embedding`, exactly what serving logs); without, the CLS token of the demo's frozen DINOv2
ViT-S/14 (`make weights`). Encoder features go through the on-disk FeatureCache (runs/features), so a rerun
encodes nothing. Each study is embedded from its frontal image alone (the lateral slot empty) on every side, so
reference and windows are alike except for the shift under test.

  * false alarms: the share of in-distribution windows (drawn from the held-out pool) that the MMD test flags, at
    the configured alpha and at 0.05, for window sizes 50/100/200/500, with this split's reference fixed (what an
    operator lives with: one reference ships with the model), and across random reference/pool splits (the
    spread of that figure from one reference sample to the next; its mean is the test's nominal level);
  * power: the share of windows of shifted images flagged, per shift and window size; shifts are applied to the
    pool's images and saved as PNG (gamma, noise, blur, a "new scanner" mix of the three, inverted photometry,
    resolution loss) or take the study's lateral image instead of its frontal one;
  * speed: one check of 1,000 current vs 2,000 reference studies with 1,000 permutations, the batched permutation
    test against alibi-detect's stock loop on the same data (same process).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter

from model_core.config import REPO_ROOT, load_config
from model_core.data.iu_xray import group_studies, load_iu_xray
from model_core.modeling.feature_cache import encode_image_files, model_feature_cache, study_features
from model_core.modeling.model import RadiologyMultimodalModel
from model_core.modeling.model_dir import load_model_dir
from model_core.modeling.reference import fit_pca
from model_core.modeling.tokenizer import clean_text, train_report_tokenizer
from model_core.prediction_log import study_embedding
from monitoring.detectors.mmd import MMDDetector

SIZES = (50, 100, 200, 500)


def shift_pixels(x: np.ndarray, name: str, rng: np.random.Generator) -> np.ndarray:
    """A [0, 1] grey image under a simulated acquisition shift."""
    if name == "gamma":
        return x ** 1.5
    if name == "noise":
        return x + rng.normal(0, 0.04, x.shape)
    if name == "blur":
        return gaussian_filter(x, 1.5)
    if name == "new_scanner":      # a different detector and processing: milder gamma + blur + noise together
        return gaussian_filter(x ** 1.25, 1.0) + rng.normal(0, 0.02, x.shape)
    if name == "inverted":         # MONOCHROME1 read as MONOCHROME2
        return 1.0 - x
    if name == "resolution":       # a low-resolution source upsampled to the same size
        small = Image.fromarray((x * 255).astype(np.uint8)).resize((96, 96), Image.BILINEAR)
        return np.asarray(small.resize(x.shape[::-1], Image.BILINEAR), dtype=np.float64) / 255
    raise ValueError(name)


def write_shifted(paths: list[str], name: str, out: Path, seed: int) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, p in enumerate(paths):
        target = out / f"{Path(p).stem}.png"
        if not target.is_file():
            x = np.asarray(Image.open(p).convert("L"), dtype=np.float64) / 255
            y = np.clip(shift_pixels(x, name, np.random.default_rng(seed + i)), 0, 1)
            Image.fromarray((y * 255).round().astype(np.uint8)).save(target)
        written.append(str(target))
    return written


def build_embedder(model_dir: str | None):
    """(model, embed(paths) → (n, D), description)."""
    if model_dir:
        model, _, _ = load_model_dir(model_dir)
        what = f"{model_dir}: frozen encoder → projector → mean of visual tokens"
    else:
        cfg = load_config(REPO_ROOT / "configs" / "demo.yaml")
        texts = [clean_text(t) for t in load_iu_xray(split="val", limit_studies=40)["reports"]]
        torch.manual_seed(0)
        model = RadiologyMultimodalModel(cfg.model, train_report_tokenizer(texts, 300))
        what = "demo DINOv2 ViT-S/14 (frozen), CLS token"
    model.eval()
    cache = model_feature_cache(model, REPO_ROOT / "runs" / "features")

    @torch.no_grad()
    def embed(paths: list[str]) -> np.ndarray:
        feats = encode_image_files(model, paths, cache, batch_size=16)
        slots = [[i] + [None] * (model.num_views - 1) for i in range(len(paths))]
        per_study = study_features(feats, slots)
        if model_dir:
            return study_embedding(model.project_visual_tokens(per_study).numpy()).astype(np.float32)
        return per_study[:, 0, 0].numpy().astype(np.float32)

    return embed, what, cache


def rate(detector: MMDDetector, pool: np.ndarray, size: int, windows: int, rng: np.random.Generator,
         alphas: tuple[float, ...]) -> dict:
    if len(pool) < size:
        return {a: None for a in alphas}
    p_values = [detector.predict(pool[rng.choice(len(pool), size, replace=False)]).p_value for _ in range(windows)]
    return {a: float(np.mean(np.array(p_values) < a)) for a in alphas}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a trained model directory (default: the demo's DINOv2)")
    parser.add_argument("--n-fit", type=int, default=300)
    parser.add_argument("--n-reference", type=int, default=1000)
    parser.add_argument("--n-pool", type=int, default=700)
    parser.add_argument("--shift-pool", type=int, default=500)
    parser.add_argument("--windows", type=int, default=50, help="in-distribution windows per size (≥ 50)")
    parser.add_argument("--power-windows", type=int, default=20)
    parser.add_argument("--splits", type=int, default=10, help="random reference/pool splits for the spread")
    parser.add_argument("--split-windows", type=int, default=20, help="windows per split and size")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-stock", action="store_true", help="skip timing alibi-detect's stock loop (~100 s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    cfg = load_config(REPO_ROOT / "configs" / "demo.yaml").monitoring
    rng = np.random.default_rng(args.seed)

    dataset = load_iu_xray(split="all", views=("Frontal", "Lateral"), image_size=224)
    studies, images = group_studies(dataset), dataset["images"]
    frontal = [s for s in studies if s["frontal_rows"]]
    order = rng.permutation(len(frontal))
    need = args.n_fit + args.n_reference + args.n_pool
    chosen = [frontal[i] for i in order[:need]]
    paths = [images[s["frontal_rows"][0]] for s in chosen]
    embed, what, cache = build_embedder(args.model)
    t0 = time.perf_counter()
    base = embed(paths)
    fit, ref, pool = np.split(base, [args.n_fit, args.n_fit + args.n_reference])
    shift_studies = chosen[args.n_fit + args.n_reference:][:args.shift_pool]
    shift_paths = [images[s["frontal_rows"][0]] for s in shift_studies]
    shifted = {}
    out = REPO_ROOT / "runs" / "bench" / "drift_shifts"
    for name in ("gamma", "noise", "blur", "new_scanner", "inverted", "resolution"):
        shifted[name] = embed(write_shifted(shift_paths, name, out / name, args.seed))
    laterals = [images[s["lateral_rows"][0]] for s in chosen[args.n_fit + args.n_reference:] if s["lateral_rows"]]
    shifted["lateral_as_frontal"] = embed(laterals[:args.shift_pool])
    encode_s = time.perf_counter() - t0

    mean, components, explained = fit_pca(fit, cfg.pca_components)
    reduce = lambda x: (x - mean) @ components.T  # noqa: E731 — the saved-reference projection, inline
    detector = MMDDetector(cfg.alpha, cfg.permutations, min_samples=2, seed=args.seed).prepare(reduce(ref))
    print(f"embeddings: {what}; {base.shape[1]}-d → PCA {components.shape[0]} (explained {explained:.1%}, fitted on "
          f"{len(fit)} other studies); reference {len(ref)}, held-out pool {len(pool)}, shift pool "
          f"{len(shift_paths)}; encoding {encode_s:.0f} s (cache hits {cache.hits}, misses {cache.misses})")
    print(f"MMD² permutation test, {cfg.permutations} permutations, alpha {cfg.alpha}, "
          f"{torch.get_num_threads()} thread(s)\n")

    t0 = time.perf_counter()
    alphas = (cfg.alpha, 0.05)
    pool_p = detector.predict(reduce(pool)).p_value
    print(f"false-alarm rate, this split's reference fixed: {args.windows} windows per size from the held-out pool "
          f"(the whole pool vs the reference: p = {pool_p:.3f})")
    print(f"  {'window':>8} " + " ".join(f"{f'α={a:g}':>9}" for a in alphas))
    for size in SIZES:
        r = rate(detector, reduce(pool), size, args.windows, rng, alphas)
        print(f"  {size:>8} " + " ".join(f"{'n/a' if r[a] is None else f'{r[a]:.3f}':>9}" for a in alphas))
    held_out = np.concatenate([ref, pool])
    print(f"\nfalse-alarm rate over {args.splits} random reference/pool splits of the same {len(held_out)} studies "
          f"({args.split_windows} windows each per size, α={cfg.alpha}): mean, and the range of the per-split rates")
    per_split = {size: [] for size in SIZES}
    for k in range(args.splits):
        order_k = np.random.default_rng(1000 + k).permutation(len(held_out))
        ref_k, pool_k = reduce(held_out[order_k[:len(ref)]]), reduce(held_out[order_k[len(ref):]])
        det_k = MMDDetector(cfg.alpha, cfg.permutations, min_samples=2, seed=k).prepare(ref_k)
        for size in SIZES:
            r = rate(det_k, pool_k, size, args.split_windows, rng, (cfg.alpha,))[cfg.alpha]
            if r is not None:
                per_split[size].append(r)
    for size, rates in per_split.items():
        if rates:
            print(f"  {size:>8}  mean {np.mean(rates):.3f}  range [{min(rates):.2f}, {max(rates):.2f}]")
    print(f"\npower (share of {args.power_windows} shifted windows flagged at α={cfg.alpha})")
    print(f"  {'shift':<20}" + "".join(f"{s:>8}" for s in SIZES))
    for name, emb in shifted.items():
        cells = [rate(detector, reduce(emb), s, args.power_windows, rng, (cfg.alpha,))[cfg.alpha] for s in SIZES]
        print(f"  {name:<20}" + "".join(f"{'n/a' if c is None else f'{c:.2f}':>8}" for c in cells))
    tests = len(SIZES) * (args.windows + args.power_windows * len(shifted))
    print(f"  ({tests} tests in {time.perf_counter() - t0:.0f} s)")

    everything = reduce(np.concatenate([base] + list(shifted.values())))
    ref2000 = everything[rng.choice(len(everything), 2000, replace=len(everything) < 2000)]
    cur1000 = reduce(pool)[rng.choice(len(pool), 1000, replace=True)]
    timed = MMDDetector(cfg.alpha, 1000, min_samples=2, seed=args.seed).prepare(ref2000)
    t0 = time.perf_counter()
    timed.predict(cur1000)
    batched = time.perf_counter() - t0
    print(f"\none drift check, 1,000 current vs 2,000 reference, 1,000 permutations: {batched:.1f} s (batched)")
    if not args.skip_stock:
        from alibi_detect.cd import MMDDrift  # the baseline: alibi-detect's own permutation loop

        stock = MMDDrift(ref2000, backend="pytorch", p_val=cfg.alpha, n_permutations=1000, device="cpu")
        t0 = time.perf_counter()
        stock.predict(cur1000)
        stock_s = time.perf_counter() - t0
        print(f"  alibi-detect stock loop on the same data: {stock_s:.1f} s ({stock_s / batched:.0f}× slower)")


if __name__ == "__main__":
    main()
