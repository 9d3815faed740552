"""Report-quality and latency targets of the demo model vs the template baseline (prints; asserts nothing).

    .venv/bin/python benchmarks/report_quality.py [--run runs/demo]

Reads the main job's outputs (`make run` writes them under runs/demo/kfp/<run>/): the evaluate step's
metrics.json and its baseline/eval/metrics.json, both on the embedded test split (the manifest's `val`
studies, 382), and prints each figure next to its target from the model issue: beat the baseline on BLEU-4
and CE micro-F1; goal BLEU-4 >= 0.17, ROUGE-L >= 0.38, CPU p50 <= 150 ms per report with beam 4.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from model_core.artifacts import BASELINE_EVAL_DIR, METRICS, MODEL_CARD
from model_core.config import REPO_ROOT

TARGETS = {"BLEU-4": 0.17, "ROUGE-L": 0.38}


def fmt(entry) -> str:
    if entry is None or entry.get("value") is None:
        return "n/a"
    return f"{entry['value']:.4f} [{entry['ci_low']:.4f}, {entry['ci_high']:.4f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=REPO_ROOT / "runs" / "demo")
    args = parser.parse_args()
    runs = sorted((args.run / "kfp").glob(f"*/evaluate/evaluation/{METRICS}"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise SystemExit(f"no pipeline run under {args.run / 'kfp'}: run `make run` first (or pass --run DIR)")
    model_path = runs[-1]
    base_path = model_path.parent / BASELINE_EVAL_DIR / METRICS
    for path in (model_path, base_path):
        if not path.is_file():
            raise SystemExit(f"{path} not found: run `make run` first (or pass --run DIR)")
    model, base = json.loads(model_path.read_text()), json.loads(base_path.read_text())
    print(f"test split: {model['n_studies']} studies (95% bootstrap CIs)")
    print(f"{'metric':14s} {'model':34s} {'baseline':34s} verdict")
    for key in ("BLEU-1", "BLEU-4", "ROUGE-L", "CE micro F1", "CE macro F1"):
        m, b = model["summary"][key], base["summary"][key]
        verdict = "beats baseline" if m["value"] > b["value"] else "below baseline"
        if key in TARGETS:
            verdict += f"; goal {TARGETS[key]}: {'met' if m['value'] >= TARGETS[key] else 'not met'}"
        print(f"{key:14s} {fmt(m):34s} {fmt(b):34s} {verdict}")
    lat = model.get("latency")
    if lat:
        p50 = lat["batch_1"]["p50_ms"]
        print(f"latency beam {lat['num_beams']} ({lat['threads']} threads): batch 1 p50 {p50:.0f} ms "
              f"p95 {lat['batch_1']['p95_ms']:.0f} ms; batch 8 p50 {lat['batch_8_per_report']['p50_ms']:.0f} ms/report"
              f" — goal p50 <= 150 ms: {'met' if p50 <= 150 else 'not met'}")
    card = model_path.parents[2] / "train" / "model" / MODEL_CARD
    if card.is_file():
        print(f"training time: {json.loads(card.read_text())['training_seconds']:.0f} s")


if __name__ == "__main__":
    main()
