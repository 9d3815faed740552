"""Throughput and latency of the service's dynamic batcher: 1 client vs 8 concurrent clients.

    .venv/bin/python benchmarks/serving_batching.py [--model-dir DIR] [--backend auto|torch|onnxruntime]
                                                   [--workers N] [--threads N] [--requests-1 16] [--requests-8 64]
                                                   [--json OUT]

Runs `serving.batching.MicroBatcher` (max batch 8, max wait 100 ms and the workers/threads of the service:
`serving.app.parallelism`) in this process around the service's backend (`serving.backends.load_model`: ONNX
Runtime with the FP32 decoder on CPU by default, exported on startup when needed) on embedded IU X-ray test
images, beam search as configured. Scenarios:

    baseline            1 client, no batching (max batch 1, no wait, 1 worker): plain sequential inference
    1 client            1 client, the service's batcher (each request waits up to 100 ms for company, finds none)
    8 clients, 1 worker 8 concurrent clients, batches of up to 8 run one at a time (batching alone)
    8 clients           8 concurrent clients, the service's batcher (batching + one batch per worker)

and prints throughput (reports/s), p50/p95/p99 latency per request, the mean batch size, and the throughput
ratios 8 clients : 1 client (the issue's measure, goal ≥ 3×) and 8 clients : unbatched baseline (the strict one:
the baseline does not wait). Without --model-dir the newest trained demo model (`make run` →
runs/demo/kfp/<run>/train/model) is used, else a model of the demo config's size (configs/demo.yaml: ViT d_v 128 →
LM d_l 192, 3 layers) with untrained weights is built in a temporary directory: an untrained LM rarely emits
end-of-report, so every report runs to max_new_tokens (96), the slowest case. Each scenario is bounded by its
request count; one untimed warm-up batch precedes each.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-dir", type=Path, default=None,
                   help="trained model directory (default: the latest make run's model if present, else an untrained "
                        "demo-size model in a temporary directory)")
    p.add_argument("--size", default="demo", choices=("demo", "tiny"),
                   help="architecture of the untrained model built when no model directory is used: demo "
                        "(configs/demo.yaml) or tiny (configs/smoke.yaml's hidden-32 model, as in the tests)")
    p.add_argument("--backend", default="auto", choices=("auto", "torch", "onnxruntime"))
    p.add_argument("--num-beams", type=int, default=None, help="override the model's beam width (1 = greedy)")
    p.add_argument("--requests-1", type=int, default=16, help="timed requests of the 1-client scenarios (16)")
    p.add_argument("--requests-8", type=int, default=64, help="timed requests of the 8-client scenario (64)")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--max-wait-ms", type=float, default=100.0)
    p.add_argument("--workers", type=int, default=None,
                   help="batches run at once (default: the service's, one per core up to 4)")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads per batch (default: the service's, cores / workers)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    return p.parse_args(argv)


def build_demo_model_dir(out: Path, config: Path = REPO_ROOT / "configs" / "demo.yaml", size: str = "demo") -> Path:
    """A complete model directory with the demo config's (or the tiny) architecture and untrained weights (seeded);
    generation settings are the demo config's (beam 4, 96 new tokens)."""
    import torch

    from model_core.config import load_config
    from model_core.data.iu_xray import load_iu_xray
    from model_core.modeling.model import RadiologyMultimodalModel
    from model_core.modeling.model_dir import save_model_dir
    from model_core.modeling.tokenizer import clean_target, train_report_tokenizer

    cfg = load_config(config)
    if size == "tiny":          # the tests' tiny architecture (tests/tiny_models.py reads the same file)
        cfg.model = load_config(REPO_ROOT / "configs" / "smoke.yaml", ["model.text.max_positions=512"]).model
    reports = load_iu_xray(split="train", limit_studies=600)["reports"]
    tokenizer = train_report_tokenizer([clean_target(r) for r in reports], cfg.model.text.vocab_size)
    torch.manual_seed(0)
    model = RadiologyMultimodalModel(cfg.model, tokenizer).eval()
    return save_model_dir(model, out, card={"name": f"{size}-untrained", "version": f"{size}-untrained"},
                          run_config=cfg.to_dict(), detection={"temperature": 1.0, "thresholds": {}})


def resolve_model_dir(arg: Path | None, tmp: Path, size: str = "demo") -> tuple[Path, str]:
    if arg is not None:
        return arg, "given"
    from pipelines.local import latest_model_dir

    trained = latest_model_dir(REPO_ROOT / "runs" / "demo")
    if size == "demo" and trained is not None:
        return trained, "trained by make run"
    return build_demo_model_dir(tmp / "model", size=size), f"untrained, {size}-size"


def percentiles(samples_s: list[float]) -> dict:
    """p50/p95/p99 in ms of latencies in seconds (`model_core.stats.latency_summary`, without its count)."""
    from model_core.stats import latency_summary

    summary = latency_summary([1000 * s for s in samples_s], percentiles=(50, 95, 99))
    return {key: value for key, value in summary.items() if key != "n"}


async def run_scenario(backend, images, contexts, clients: int, requests: int, max_batch: int,
                       max_wait_ms: float, workers: int) -> dict:
    from serving.batching import MicroBatcher

    batcher = MicroBatcher(lambda items: backend.generate([i for i, _ in items], [c for _, c in items]),
                           max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max(256, requests),
                           workers=workers)
    await batcher.start()
    n = len(images)
    # warm-up (untimed): one full batch, so the runtime has seen the batch shape
    await asyncio.gather(*(batcher.submit((images[i % n], contexts[i % n])) for i in range(max_batch)))
    batcher.batch_sizes.clear()
    latencies: list[float] = []
    counter = itertools.count()

    async def client():
        while (i := next(counter)) < requests:
            t0 = time.perf_counter()
            await batcher.submit((images[i % n], contexts[i % n]))
            latencies.append(time.perf_counter() - t0)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - started
    sizes = list(batcher.batch_sizes)
    await batcher.close()
    return {"clients": clients, "requests": requests, "max_batch": max_batch, "max_wait_ms": max_wait_ms,
            "workers": workers,
            "wall_s": round(wall, 2), "throughput_rps": round(requests / wall, 2), **percentiles(latencies),
            "mean_batch_size": round(sum(sizes) / len(sizes), 2)}


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import torch

    from model_core.config import DataConfig, ServingConfig
    from model_core.export.sources import load_studies
    from serving.app import parallelism
    from serving.backends import load_model

    serving = ServingConfig(workers=args.workers, threads=args.threads)
    workers, threads = parallelism(serving, args.backend if args.backend == "torch" else None)
    with tempfile.TemporaryDirectory(prefix="rrg-bench-") as tmp:
        model_dir, kind = resolve_model_dir(args.model_dir, Path(tmp), args.size)
        gen = None
        if args.num_beams is not None:
            from dataclasses import replace

            from model_core.artifacts import RUN_CONFIG
            from model_core.config import GenerationConfig, build_section

            saved = json.loads((model_dir / RUN_CONFIG).read_text()) if (model_dir / RUN_CONFIG).is_file() else {}
            gen = replace(build_section(GenerationConfig, saved.get("generation", {}), "generation."),
                          num_beams=args.num_beams)
        t0 = time.perf_counter()
        loaded = load_model(model_dir, backend=args.backend, threads=threads, gen=gen, allow_export_at_startup=True,
                            allow_ungated_model=True)   # a benchmark of the demo model, not serving patients
        workers, threads = parallelism(serving, loaded.backend.name)      # as the service does once loaded
        torch.set_num_threads(threads)
        load_s = time.perf_counter() - t0
        images, contexts = load_studies(DataConfig(), "test", 8, loaded.backend.image_size)  # embedded data
        studies = [images[i] for i in range(len(images))]            # each (1, 1, H, W): one frontal view
        print(f"model {model_dir} ({kind}), backend {loaded.backend.name}, beams {loaded.gen.num_beams}, "
              f"max {loaded.gen.max_new_tokens} new tokens, loaded in {load_s:.1f} s; "
              f"{os.cpu_count()} CPUs, {workers} worker(s) × {threads} thread(s)")
        b, w = args.max_batch, args.max_wait_ms
        scenarios = {                                      # the service's settings last
            "baseline (1 client, no batching)": (1, args.requests_1, 1, 0.0, 1),
            f"1 client, batcher ({b}, {w:.0f} ms, {workers}w)": (1, args.requests_1, b, w, workers),
            f"8 clients, batcher ({b}, {w:.0f} ms, 1 worker)": (8, args.requests_8, b, w, 1),
            f"8 clients, batcher ({b}, {w:.0f} ms, {workers}w)": (8, args.requests_8, b, w, workers),
        }
        results = {}
        for name, (clients, requests, max_batch, wait, n_workers) in scenarios.items():
            results[name] = asyncio.run(run_scenario(loaded.backend, studies, contexts, clients, requests,
                                                     max_batch, wait, n_workers))
    head = f"{'scenario':<40} {'req':>4} {'rps':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'batch':>6}"
    print(head + "\n" + "-" * len(head))
    for name, r in results.items():
        print(f"{name:<40} {r['requests']:>4} {r['throughput_rps']:>7.2f} {r['p50_ms']:>8.0f} {r['p95_ms']:>8.0f} "
              f"{r['p99_ms']:>8.0f} {r['mean_batch_size']:>6.2f}")
    base, one, eight_1w, eight = (results[k]["throughput_rps"] for k in results)
    ratio = eight / one
    print(f"\nthroughput 8 clients : 1 client (both through the service's batcher) = {ratio:.2f}× (goal ≥ 3×: "
          f"{'met' if ratio >= 3 else 'NOT met'})\n8 clients : unbatched baseline = {eight / base:.2f}× "
          f"({eight_1w / base:.2f}× from batching alone with 1 worker)")
    if args.json:
        args.json.write_text(json.dumps({
            "model": str(model_dir), "model_kind": kind, "backend": loaded.backend.name,
            "num_beams": loaded.gen.num_beams, "max_new_tokens": loaded.gen.max_new_tokens,
            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "workers": workers, "threads": threads,
            "scenarios": results, "ratio_8_vs_1": round(ratio, 2), "ratio_8_vs_baseline": round(eight / base, 2),
            "ratio_8_1worker_vs_baseline": round(eight_1w / base, 2),
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
