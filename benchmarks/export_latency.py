"""Latency per report of the exported model: torch eager vs ONNX Runtime FP32 vs ONNX Runtime INT8.

    .venv/bin/python benchmarks/export_latency.py [--model-dir DIR] [--export-dir DIR]
                                                 [--runs 20] [--num-beams 4] [--greedy] [--json OUT]

Batch 1, one embedded IU X-ray test study per call (cycled), one untimed warm-up call per engine; all engines
run in this process with the same intra-op thread count and take turns study by study, so the ratios
compare like with like. On a shared, busy machine pass --threads 1: spinning intra-op threads that lose their
cores to other processes inflate multi-threaded timings (torch's far more than ONNX Runtime's). Without
--export-dir the model is exported into a temporary directory first (not timed), and removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from model_core.artifacts import DECODER_INT8_ONNX, EXPORT_CONFIG, EXPORT_REPORT, MODEL_CARD

REPO_ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-dir", type=Path, default=None,
                   help="trained model directory (default: the latest make run's, runs/demo/summary.json)")
    p.add_argument("--export-dir", type=Path, default=None,
                   help="existing export (or where to write one); default: a temporary directory")
    p.add_argument("--runs", type=int, default=20, help="timed reports per engine and mode (default 20)")
    p.add_argument("--studies", type=int, default=8, help="embedded test studies to cycle through (default 8)")
    p.add_argument("--num-beams", type=int, default=4, help="beam width (default 4)")
    p.add_argument("--greedy", action="store_true", help="also time greedy decoding")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads for torch and ORT (default: torch's)")
    p.add_argument("--provider", default="CPUExecutionProvider", help="ONNX Runtime provider (default CPU)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    return p.parse_args(argv)


def print_table(result: dict) -> None:
    head = f"{'engine':<12} {'beams':>5} {'p50 ms':>9} {'p95 ms':>9} {'p50 vs eager':>13} {'n':>4}"
    print(head)
    print("-" * len(head))
    for mode in ("beam", "greedy"):
        if mode not in result:
            continue
        row = result[mode]
        eager = row["torch_eager"]["p50_ms"]
        for engine in ("torch_eager", "ort_fp32", "ort_int8"):
            if engine not in row:
                continue
            fig = row[engine]
            ratio = "1.00× (ref)" if engine == "torch_eager" else f"{eager / fig['p50_ms']:.2f}× faster"
            print(f"{engine:<12} {row['num_beams']:>5} {fig['p50_ms']:>9.1f} {fig['p95_ms']:>9.1f} {ratio:>13} "
                  f"{fig['n']:>4}")


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from pipelines.local import latest_model_dir

    model_dir = args.model_dir or latest_model_dir(REPO_ROOT / "runs" / "demo")
    if model_dir is None or not (model_dir / MODEL_CARD).is_file():
        print(f"no trained model directory at {model_dir or 'runs/demo'}.\n"
              "Get one with `make run` (runs/demo/kfp/<run>/train/model, about 15 minutes on 2 CPU cores) or\n"
              "`.venv/bin/rrg train --config configs/demo.yaml --out DIR`, then pass --model-dir DIR/model.\n"
              "This benchmark trains nothing itself.", file=sys.stderr)
        return 2

    import torch

    from model_core.config import DataConfig, GenerationConfig, build_section
    from model_core.export.parity import compare_engine_latency
    from model_core.export.sources import load_studies
    from model_core.export.step import export_onnx, export_versions
    from model_core.modeling.model_dir import load_model_dir
    from model_core.runtime.ort_generator import OrtReportGenerator

    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    model, _, saved = load_model_dir(model_dir)
    gen = replace(build_section(GenerationConfig, saved.get("generation", {}), "generation."),
                  num_beams=args.num_beams)

    with tempfile.TemporaryDirectory(prefix="rrg-export-") as tmp:
        export_dir = args.export_dir or Path(tmp) / "export"
        export_seconds = None
        if not (export_dir / EXPORT_CONFIG).is_file():
            t0 = time.perf_counter()
            export_onnx(model_dir, export_dir, check=False)
            export_seconds = round(time.perf_counter() - t0, 1)
        report_path = export_dir / EXPORT_REPORT
        exporter = json.loads(report_path.read_text()).get("exporter") if report_path.is_file() else None
        engines = {name: OrtReportGenerator(export_dir, name, provider=args.provider, gen=gen, threads=threads)
                   for name in ("fp32", "int8") if (name == "fp32" or (export_dir / DECODER_INT8_ONNX).is_file())}
        images, contexts = load_studies(DataConfig(), "test", args.studies, model.image_size)  # embedded data
        modes = ("beam", "greedy") if args.greedy else ("beam",)
        result = compare_engine_latency(model, engines, images, contexts, gen, args.runs, modes)
        sizes = {p.name: round(p.stat().st_size / 2**20, 2) for p in export_dir.glob("*.onnx")}

    result.update({"model_dir": str(model_dir), "exporter": exporter, "export_seconds": export_seconds,
                   "max_new_tokens": gen.max_new_tokens, "onnx_sizes_mb": sizes, "versions": export_versions(model_dir),
                   "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count()})
    print(f"model {model_dir}  |  image {model.image_size}px, {model.num_image_tokens} visual tokens, "
          f"max {gen.max_new_tokens} new tokens  |  {threads} threads, {result['provider']}  |  "
          f"torch {result['versions']['torch']}, onnxruntime {result['versions']['onnxruntime']}")
    print(f"exporter {exporter}  |  ONNX sizes (MB) {sizes}")
    print("per report, batch 1:\n")
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
