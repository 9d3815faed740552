"""Report-quality and latency figures of the demo model next to the model issue's targets (prints; asserts nothing).

    .venv/bin/python benchmarks/report_quality.py [--run runs/demo] [--metrics PATH/metrics.json]

Reads the main job's outputs (`make run` writes them under runs/demo/kfp/<run>/): the evaluate step's
metrics.json and its baseline/eval/metrics.json (the trained template baseline and the all-normal template, scored
on the same test studies with the same resamples). Targets (issue 10): BLEU-4 >= 0.17 and ROUGE-L >= 0.38 and both
above the all-normal template; CE macro-F1 >= 0.20 and CE micro-F1 not below 0.385; detection-head macro AUROC
>= 0.75 over labels with >= 10 test positives; drafts name >= 50 % of the MeSH-positive pleural effusions and lung
lesions; hallucination rate < 3 %; CPU p50 <= 150 ms per report with beam 4.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from model_core.artifacts import BASELINE_EVAL_DIR, METRICS, MODEL_CARD
from model_core.config import REPO_ROOT

# Issue 10's targets: (comparison, value).
TARGETS = {"BLEU-4": (">=", 0.17), "ROUGE-L": (">=", 0.38), "CE macro F1": (">=", 0.20),
           "CE micro F1": (">=", 0.385), "detection macro AUROC": (">=", 0.75), "hallucination rate": ("<", 0.03)}
NAMING_TARGET = 0.5
NAMING_TARGET_FINDINGS = ("Pleural Effusion", "Lung Lesion")
LATENCY_TARGET_MS = 150


def fmt(entry) -> str:
    if not isinstance(entry, dict) or entry.get("value") is None:
        return "n/a"
    if entry.get("ci_low") is None:
        return f"{entry['value']:.4f}"
    return f"{entry['value']:.4f} [{entry['ci_low']:.4f}, {entry['ci_high']:.4f}]"


def verdict(key: str, entry) -> str:
    if key not in TARGETS or not isinstance(entry, dict) or entry.get("value") is None:
        return ""
    op, goal = TARGETS[key]
    met = entry["value"] >= goal if op == ">=" else entry["value"] < goal
    return f"target {op} {goal}: {'met' if met else 'NOT met'}"


def print_summary(model: dict, base: dict) -> None:
    normal = base.get("all_normal_template", {})
    print(f"test split: {model['n_studies']} studies (95% bootstrap CIs)")
    print(f"{'metric':22s} {'model':32s} {'template baseline':32s} {'all-normal template':32s} verdict")
    for key in ("BLEU-1", "BLEU-4", "ROUGE-L", "CE micro F1", "CE macro F1", "detection macro AUROC",
                "hallucination rate"):
        m = model["summary"].get(key)
        b, n = base.get("summary", {}).get(key), normal.get(key)
        notes = [verdict(key, m)]
        if key in ("BLEU-4", "ROUGE-L") and isinstance(n, dict) and m:
            notes.append("above the all-normal template" if m["value"] > n["value"] else "NOT above the all-normal "
                         "template")
        print(f"{key:22s} {fmt(m):32s} {fmt(b):32s} {fmt(n):32s} {'; '.join(x for x in notes if x)}")


def print_detection(model: dict) -> None:
    det = model.get("detection")
    if not det:
        print("detection head: no per-label AUROC in this metrics.json (older evaluation)")
        return
    print(f"\ndetection head AUROC per label (macro over labels with >= {det['min_positives']} positives: "
          f"{fmt(det['macro'])})")
    for name, entry in det["per_label"].items():
        mark = "*" if name in det["macro_labels"] else " "
        print(f"  {mark} {name:28s} {fmt(entry):32s} positives {entry['positives']}")
    cal = model.get("calibration", {})
    if cal:
        before = fmt(cal.get("test_ece_uncalibrated_ci", {"value": cal["test_ece_uncalibrated"]}))
        after = fmt(cal.get("test_ece_ci", {"value": cal["test_ece"]}))
        print(f"calibration ECE (14 labels): before temperature {before}; after (T={cal['temperature']:.3f}) {after}")


def print_naming(model: dict) -> None:
    naming, drafts = model.get("naming"), model.get("drafts")
    if naming:
        print("\ndrafts naming the critical findings of MeSH-positive studies (labeler on the draft; Wilson 95% CI)")
        for name, row in naming.items():
            share = "n/a" if row["share"] is None else f"{row['named']}/{row['positives']} = {row['share']:.1%}"
            ci = row["share_ci"]
            ci_text = "" if ci[0] is None else f" [{ci[0]:.1%}, {ci[1]:.1%}]"
            goal = ""
            if name in NAMING_TARGET_FINDINGS and row["share"] is not None:
                goal = f"  target >= {NAMING_TARGET:.0%}: {'met' if row['share'] >= NAMING_TARGET else 'NOT met'}"
            print(f"  {name:18s} {share}{ci_text}{goal}")
    if drafts:
        print(f"distinct drafts: {drafts['distinct']} for {drafts['studies']} studies; the most common draft is "
              f"given to {drafts['most_common_share']:.1%} of studies")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=REPO_ROOT / "runs" / "demo")
    parser.add_argument("--metrics", type=Path, default=None, help="an evaluate step's metrics.json (default: the "
                        "newest under --run)")
    args = parser.parse_args()
    if args.metrics is None:
        runs = sorted((args.run / "kfp").glob(f"*/evaluate/evaluation/{METRICS}"), key=lambda p: p.stat().st_mtime)
        if not runs:
            raise SystemExit(f"no pipeline run under {args.run / 'kfp'}: run `make run` first (or pass --run DIR)")
        args.metrics = runs[-1]
    base_path = args.metrics.parent / BASELINE_EVAL_DIR / METRICS
    for path in (args.metrics, base_path):
        if not path.is_file():
            raise SystemExit(f"{path} not found: run `make run` first (or pass --run DIR / --metrics FILE)")
    model, base = json.loads(args.metrics.read_text()), json.loads(base_path.read_text())
    print(f"metrics: {args.metrics}")
    print_summary(model, base)
    print_detection(model)
    print_naming(model)
    lat = model.get("latency")
    if lat:
        p50 = lat["batch_1"]["p50_ms"]
        print(f"\nlatency beam {lat['num_beams']} ({lat['threads']} threads, torch): batch 1 p50 {p50:.0f} ms "
              f"p95 {lat['batch_1']['p95_ms']:.0f} ms; batch 8 p50 {lat['batch_8_per_report']['p50_ms']:.0f} ms/report"
              f"; target p50 <= {LATENCY_TARGET_MS} ms: {'met' if p50 <= LATENCY_TARGET_MS else 'NOT met'}")
    card = args.metrics.parents[2] / "train" / "model" / MODEL_CARD
    if card.is_file():
        print(f"training time: {json.loads(card.read_text())['training_seconds']:.0f} s")


if __name__ == "__main__":
    main()
