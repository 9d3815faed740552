"""Clinical context in the prompt: a trained model's drafts of validation studies with and without it (prints).

    .venv/bin/python benchmarks/context_ablation.py --model runs/demo/kfp/<run>/train/model [--limit 100]

Prompts carry the indication, sex/age where stated, and whether a prior study exists (parsed from the report's
comparison field). Both sides are the same trained model; the difference (with - without) has a paired
bootstrap CI (the same study resamples on both sides). Validation split only: test is for the final figures.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from model_core.config import REPO_ROOT
from model_core.evaluation.context_ablation import context_ablation_on_validation
from model_core.files import atomic_write_text


def fmt(entry: dict, sign: str = "") -> str:
    if entry.get("value") is None:
        return "n/a"
    return f"{entry['value']:{sign}.4f} [{entry['ci_low']:{sign}.4f}, {entry['ci_high']:{sign}.4f}]"


def newest_model(run: Path) -> Path:
    models = sorted((run / "kfp").glob("*/train/model"), key=lambda p: p.stat().st_mtime)
    if not models:
        raise SystemExit(f"no trained model under {run / 'kfp'}: run `make run` first (or pass --model DIR)")
    return models[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="a trained model directory (default: the newest "
                        "under runs/demo/kfp)")
    parser.add_argument("--limit", type=int, default=None, help="the first N validation studies (default all 306)")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args()
    model_dir = args.model or newest_model(REPO_ROOT / "runs" / "demo")
    out = context_ablation_on_validation(model_dir, limit_studies=args.limit, n_boot=args.n_boot)
    print(f"model: {model_dir}\nvalidation studies: {out['n_studies']} ({out['studies_with_prior_stated']} with a "
          f"comparison field); drafts changed by the context: {out['changed_drafts']:.1%}; {out['seconds']:.0f} s")
    print(f"{'metric':14s} {'with context':30s} {'without':30s} with - without (paired 95% CI)")
    for key, diff in out["with_minus_without"].items():
        a, b = out["with_context"][key], out["without_context"][key]
        print(f"{key:14s} {fmt(a):30s} {fmt(b):30s} {fmt(diff, '+')}")
    for side in ("with_context", "without_context"):
        named = ", ".join(f"{k} {v['named']}/{v['positives']}" for k, v in out["naming"][side].items())
        print(f"{side:16s} distinct drafts {out['drafts'][side]['distinct']}; critical findings named: {named}")
    if args.out:
        atomic_write_text(args.out, json.dumps(out, indent=2, default=float))
        print(f"written: {args.out}")


if __name__ == "__main__":
    main()
