"""From-scratch ViT vs pretrained DINOv2 (frozen), side by side: detection-head AUROC (prints figures; asserts nothing).

    .venv/bin/python benchmarks/encoder_comparison.py [--split val|test] [--config configs/demo_dinov2.yaml]
                                                      [--scratch-epochs 8] [--head-epochs 40] [--threads 2]

Every encoder gets the same split, seed, studies and detection-head training (stage 0 of the trainer: the encoder
and head for the from-scratch ViT, the head alone on cached features for a frozen one), then the detection head's
AUROC per label on the chosen split's studies, for every label with at least --min-positives positives there, and
their macro mean. Encoders:
    scratch-vit        the from-scratch ViT (the former demo encoder: 128 px, patch 16, d_v 128, 4 layers), one view
    dinov2-frontal     the config's pretrained DINOv2, frozen, one view (frontal; lateral when there is none)
    dinov2-2views-last-cls  the same over frontal + lateral slots, the head on the last layer's CLS only
    dinov2-2views      the same over frontal + lateral slots, the head on the last 4 layers' CLS (the demo default):
                       what the second view and the earlier layers buy
DINOv2 features come from the on-disk feature cache (`train.feature_cache`), so a warm cache makes them free.
Choose settings on --split val; report --split test only once, after the choices are made.
"""

from __future__ import annotations

import argparse
import copy
import logging
import time

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from model_core.chexpert import CHEXPERT_LABELS
from model_core.config import REPO_ROOT, StageConfig, load_config
from model_core.data.iu_xray import load_split
from model_core.modeling.model import RadiologyMultimodalModel
from model_core.modeling.tokenizer import clean_text, train_report_tokenizer
from model_core.training.trainer import seed_everything, study_probabilities, train_two_stage

SCRATCH_VIT = {"pretrained": None, "architecture": "vit", "freeze": False, "views": 1, "image_size": 128,
               "patch_size": 16, "hidden_size": 128, "num_layers": 4, "num_heads": 4, "intermediate_size": 256,
               "num_channels": 1, "pool_tokens": 16, "pixel_mean": None, "pixel_std": None,
               "detect_layers": 1}


def encoder_configs(cfg) -> dict:
    """name → (model config, head-training epochs key)."""
    scratch = copy.deepcopy(cfg.model)
    for key, value in SCRATCH_VIT.items():
        setattr(scratch.vision, key, value)
    one_view = copy.deepcopy(cfg.model)
    one_view.vision.views = 1
    two_views = copy.deepcopy(cfg.model)
    two_views.vision.views = 2
    last_cls = copy.deepcopy(two_views)
    last_cls.vision.detect_layers = 1
    return {"scratch-vit": (scratch, "scratch"), "dinov2-frontal": (one_view, "head"),
            "dinov2-2views-last-cls": (last_cls, "head"), "dinov2-2views": (two_views, "head")}


def auroc_table(logits: np.ndarray, targets: np.ndarray, min_positives: int) -> dict[str, float]:
    out = {}
    for k, label in enumerate(CHEXPERT_LABELS):
        positives = int(targets[:, k].sum())
        if positives >= min_positives and positives < len(targets):
            out[label] = float(roc_auc_score(targets[:, k], logits[:, k]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO_ROOT / "configs" / "demo_dinov2.yaml"))
    parser.add_argument("--split", choices=("val", "test"), default="val")
    parser.add_argument("--scratch-epochs", type=int, default=8, help="stage 0 epochs of the from-scratch ViT")
    parser.add_argument("--head-epochs", type=int, default=None,
                        help="stage 0 (head-only) epochs on frozen features (default: the config's stage0_encoder)")
    parser.add_argument("--min-positives", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", nargs="*", default=None, help="encoder names to run (default: all)")
    parser.add_argument("--studies", type=int, default=None, help="limit studies per split (quick looks)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    overrides = ["train.deepspeed=null"] + ([f"data.limit_studies={args.studies}"] if args.studies else [])
    cfg = load_config(args.config, overrides)
    cfg.data.views = ["Frontal", "Lateral"]     # every encoder sees the same studies; slots pick their views
    train, val = load_split(cfg.data, "train"), load_split(cfg.data, "val")
    scored = val if args.split == "val" else load_split(cfg.data, args.split)
    tokenizer = train_report_tokenizer([clean_text(r) for r in train["reports"]], cfg.model.text.vocab_size)
    head_epochs = args.head_epochs or cfg.train.stage0_encoder.epochs
    rows, seconds, targets = {}, {}, None
    for name, (model_cfg, kind) in encoder_configs(cfg).items():
        if args.only and name not in args.only:
            continue
        train_cfg = copy.deepcopy(cfg.train)
        epochs = args.scratch_epochs if kind == "scratch" else head_epochs
        lr = 1e-3 if kind == "scratch" else cfg.train.stage0_encoder.lr
        train_cfg.stage0_encoder = StageConfig(epochs, lr)
        train_cfg.stage0_lm = train_cfg.stage1 = train_cfg.stage2 = StageConfig(0, 1e-3)
        seed_everything(train_cfg.seed)
        started = time.perf_counter()
        model = RadiologyMultimodalModel(model_cfg, tokenizer)
        train_two_stage(model, train, val, train_cfg)
        _, logits, targets = study_probabilities(model, scored, train_cfg.batch_size, train_cfg.feature_cache)
        seconds[name] = time.perf_counter() - started
        rows[name] = auroc_table(logits, targets, args.min_positives)
        print(f"{name}: {seconds[name]:.0f} s (stage 0: {epochs} epochs, features and scoring included)", flush=True)

    labels = [label for label in CHEXPERT_LABELS if any(label in r for r in rows.values())]
    names = list(rows)
    print(f"\nDetection-head AUROC on the {args.split} split ({len(targets)} studies; labels with ≥ "
          f"{args.min_positives} positives), seed {cfg.train.seed}, {args.threads} threads")
    print(f"{'label':<28}{'positives':>10}" + "".join(f"{n:>24}" for n in names))
    for k, label in enumerate(CHEXPERT_LABELS):
        if label in labels:
            positives = int(targets[:, k].sum())
            print(f"{label:<28}{positives:>10}" + "".join(f"{rows[n].get(label, float('nan')):>24.3f}" for n in names))
    print(f"{'macro':<28}{'':>10}" + "".join(f"{np.mean(list(rows[n].values())):>24.3f}" for n in names))
    print(f"{'seconds':<28}{'':>10}" + "".join(f"{seconds[n]:>24.0f}" for n in names))


if __name__ == "__main__":
    main()
