"""Speed-up from caching frozen-encoder features in stages 1-2 (prints figures; asserts nothing).

    .venv/bin/python benchmarks/feature_cache.py [--studies 300] [--config configs/demo.yaml]

Runs stage 1 (default 4 epochs) twice in the same process on the same data, once encoding images every
batch (cache_features=false) and once from the cache (the cost of building the cache included).
"""

from __future__ import annotations

import argparse
import logging
import time

import torch

from model_core.config import REPO_ROOT, StageConfig, load_config
from model_core.data.iu_xray import load_split
from model_core.modeling.model import RadiologyMultimodalModel
from model_core.modeling.tokenizer import clean_text, train_report_tokenizer
from model_core.training.trainer import train_two_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO_ROOT / "configs" / "demo.yaml"))
    parser.add_argument("--studies", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=4, help="stage-1 epochs (the demo runs 2 + 8 in stages 1-2)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cfg = load_config(args.config, [f"data.limit_studies={args.studies}", "train.deepspeed=null"])
    train, val = load_split(cfg.data, "train"), load_split(cfg.data, "val")
    tok = train_report_tokenizer([clean_text(r) for r in train["reports"]], cfg.model.text.vocab_size)
    cfg.train.stage0_encoder = cfg.train.stage0_lm = cfg.train.stage2 = StageConfig(0, 1e-3)
    cfg.train.stage1 = StageConfig(args.epochs, 1e-3)
    seconds = {}
    for cached in (False, True):
        cfg.train.cache_features = cached
        torch.manual_seed(0)
        model = RadiologyMultimodalModel(cfg.model, tok)
        t0 = time.perf_counter()
        train_two_stage(model, train, val, cfg.train)
        seconds[cached] = time.perf_counter() - t0
    print(f"{args.epochs} stage-1 epochs on {len(train['images'])} train + {len(val['images'])} val images, "
          f"{torch.get_num_threads()} threads")
    print(f"  encoder every batch : {seconds[False]:7.1f} s")
    print(f"  cached features     : {seconds[True]:7.1f} s (cache built once, included)")
    print(f"  speed-up            : {seconds[False] / seconds[True]:.2f}x (more epochs amortise the cache further)")


if __name__ == "__main__":
    main()
