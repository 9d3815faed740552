"""Frozen-encoder features: cold (encoded) vs warm (read from the on-disk cache) (prints figures; asserts nothing).

    .venv/bin/python benchmarks/feature_cache.py [--studies 100] [--config configs/demo.yaml] [--threads 2]

The demo's path: the frozen pretrained encoder's features of the train split's first --studies studies (both view
slots) are obtained twice in the same process through `FeatureCache` in a fresh temporary directory: first cold
(every image decoded and encoded), then warm (every image read back).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time

import torch

from model_core.config import REPO_ROOT, load_config
from model_core.data.iu_xray import load_split
from model_core.modeling.model import RadiologyMultimodalModel
from model_core.modeling.tokenizer import clean_text, train_report_tokenizer
from model_core.training.examples import build_examples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO_ROOT / "configs" / "demo.yaml"))
    parser.add_argument("--studies", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, [f"data.limit_studies={args.studies}"])
    if not cfg.model.vision.freeze:
        raise SystemExit("error: the config's encoder is not frozen (model.vision.freeze): nothing is cached")
    train = load_split(cfg.data, "train")
    tok = train_report_tokenizer([clean_text(r) for r in train["reports"]], cfg.model.text.vocab_size)
    model = RadiologyMultimodalModel(cfg.model, tok).eval()
    examples = build_examples(model, train, cfg.train)
    images = len(examples.used_rows())
    seconds = {}
    with tempfile.TemporaryDirectory(prefix="feature-cache-") as root:
        for state in ("cold", "warm"):
            t0 = time.perf_counter()
            feats = examples.features(model, root, cfg.train.batch_size)
            seconds[state] = time.perf_counter() - t0
    print(f"{len(examples)} studies, {images} images ({cfg.model.vision.image_size} px, {model.num_views} view "
          f"slot(s), features {tuple(feats.shape[2:])}), {torch.get_num_threads()} threads")
    for state in ("cold", "warm"):
        print(f"  {state:<5}: {seconds[state]:7.2f} s  ({1000 * seconds[state] / images:6.1f} ms per image)")
    print(f"  warm is {seconds['cold'] / seconds['warm']:.0f}x faster; the whole embedded set (6,682 images) cold "
          f"≈ {seconds['cold'] / images * 6682 / 60:.0f} min at this rate")


if __name__ == "__main__":
    main()
