"""What prediction logging costs the request path: serving p50 with and without it, in one process.

    .venv/bin/python benchmarks/prediction_log_overhead.py [--size tiny|demo] [--model-dir DIR] [--requests 60]
                                                            [--block 10] [--max-wait-ms 100] [--json OUT]

Two apps (`serving.app.create_app`) share one loaded model (the service's default backend, ONNX Runtime, exported
at startup when needed): one with the prediction log on (a SQLite file in a temporary directory, the validated-
study pool keeping each model input, as in production) and one with `serving.log_predictions=false`. One client
sends uploads (`POST …/report:upload`, an embedded IU X-ray frontal JPEG, cycled) to each app in turn, in
alternating blocks of `--block` requests (so drift of the machine hits both arms alike), `--requests` timed per arm
after one untimed block each. Prints p50/p95 per arm, the p50 ratio (target: logging adds ≤ 5 %), and the
writer thread's own cost per record (flushed, measured after the timed run). Batching: the service's settings
(max wait 100 ms), or `--max-wait-ms 0` for the strict case (no wait to hide behind).
The model is as in serving_batching.py: --model-dir, or an untrained model of the tiny (default) or demo size.
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
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
for path in (str(REPO_ROOT), str(Path(__file__).resolve().parent)):
    if path not in sys.path:
        sys.path.insert(0, path)

TOKEN = "benchmark-token-0123456789abcdef"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-dir", type=Path, default=None)
    p.add_argument("--size", default="tiny", choices=("tiny", "demo"))
    p.add_argument("--requests", type=int, default=60, help="timed requests per arm (60)")
    p.add_argument("--block", type=int, default=10, help="requests per alternating block (10)")
    p.add_argument("--max-wait-ms", type=float, default=100.0, help="batching wait (the service's 100 ms)")
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from fastapi.testclient import TestClient
    from serving_batching import percentiles, resolve_model_dir

    from model_core.data.manifest import EMBEDDED_ROOT, read_manifest
    from serving.app import create_app
    from serving.backends import load_model

    frontal = read_manifest(EMBEDDED_ROOT / "manifest.csv").query("projection == 'Frontal'")["image"].tolist()[:8]
    uploads = [(EMBEDDED_ROOT / rel).read_bytes() for rel in frontal]
    with tempfile.TemporaryDirectory(prefix="rrg-bench-") as tmp:
        tmp = Path(tmp)
        model_dir, kind = resolve_model_dir(args.model_dir, tmp, args.size)
        # a benchmark of a demo model (the gate rejects it), never serving patients: the development flag
        model = load_model(model_dir, allow_export_at_startup=True, allow_ungated_model=True)
        common = dict(model=model, tokens=TOKEN, audit_log=tmp / "audit.jsonl", max_wait_ms=args.max_wait_ms)
        apps = {
            "logging on": create_app(report_store=tmp / "on.sqlite3", prediction_log=str(tmp / "predictions.sqlite3"),
                                     validated_pool=str(tmp / "validated"), **common),
            "logging off": create_app(report_store=tmp / "off.sqlite3", prediction_log=str(tmp / "off-log.sqlite3"),
                                      log_predictions=False, validated_pool=None, **common),
        }
        headers = {"Authorization": f"Bearer {TOKEN}"}
        latencies: dict[str, list[float]] = {name: [] for name in apps}
        counter = 0
        with TestClient(apps["logging on"]) as on, TestClient(apps["logging off"]) as off:
            clients = {"logging on": on, "logging off": off}

            def block(name: str, record: bool) -> None:
                nonlocal counter
                for _ in range(args.block):
                    files = [("files", ("frontal.jpg", uploads[counter % len(uploads)], "image/jpeg"))]
                    counter += 1
                    t0 = time.perf_counter()
                    r = clients[name].post("/api/v1/studies/1.2.3.4/report:upload", files=files, headers=headers)
                    elapsed = time.perf_counter() - t0
                    if r.status_code != 200:
                        raise SystemExit(f"{name}: request failed with {r.status_code}: {r.text[:200]}")
                    if record:
                        latencies[name].append(elapsed)

            for name in apps:                                            # warm-up, untimed
                block(name, record=False)
            while min(len(v) for v in latencies.values()) < args.requests:
                for name in apps:
                    block(name, record=True)
            service = apps["logging on"].state.service
            service.writer.flush(60)
            written = service.writer.written
            writer_s = _writer_cost(service, 50)           # the writer thread alone, nothing else running
    stats = {name: percentiles(v) for name, v in latencies.items()}
    ratio = stats["logging on"]["p50_ms"] / stats["logging off"]["p50_ms"]
    print(f"model {model_dir} ({kind}), backend {model.backend.name}, beams {model.gen.num_beams}, "
          f"max {model.gen.max_new_tokens} new tokens; batching wait {args.max_wait_ms:.0f} ms; {os.cpu_count()} CPUs; "
          f"{args.requests} timed requests per arm in alternating blocks of {args.block}")
    head = f"{'arm':<14} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}"
    print(head + "\n" + "-" * len(head))
    for name, s in stats.items():
        print(f"{name:<14} {s['p50_ms']:>8.1f} {s['p95_ms']:>8.1f} {s['p99_ms']:>8.1f}")
    print(f"\np50 with logging : without = {ratio:.3f} (logging adds {100 * (ratio - 1):+.1f} %; target ≤ 5 %: "
          f"{'met' if ratio <= 1.05 else 'NOT met'}); {written} records written; the writer thread spends "
          f"{1000 * writer_s:.2f} ms per record (off the request path)")
    if args.json:
        args.json.write_text(json.dumps({"model": str(model_dir), "model_kind": kind, "backend": model.backend.name,
                                         "cpu": platform.processor() or platform.machine(),
                                         "cpu_count": os.cpu_count(), "max_wait_ms": args.max_wait_ms,
                                         "arms": stats, "p50_ratio": round(ratio, 4),
                                         "writer_ms_per_record": round(1000 * writer_s, 3)}, indent=2))
    return 0


def _writer_cost(service, n: int) -> float:
    """Seconds the writer thread takes per record: n copies of a served study queued at once, then flushed."""
    import numpy as np
    import torch

    from model_core.prediction_log import utc_now
    from serving.prediction_logging import ServedStudy

    size = service.model.backend.image_size
    image = torch.rand(1, size, size, generator=torch.Generator().manual_seed(0))
    studies = [ServedStudy(report_id=f"writer-cost-{i}", study_id="1.2.3.4", created_at=utc_now(),
                           probabilities=np.full(14, 0.1, np.float32), text_labels=[0] * 14,
                           embedding=np.ones(64, np.float32), review_required=False, review_codes=[],
                           latency_ms=1.0, acquisition={}, images=[(image, "Frontal")]) for i in range(n)]
    t0 = time.perf_counter()
    for study in studies:
        service.writer.submit(study)
    service.writer.flush(120)
    return (time.perf_counter() - t0) / n


if __name__ == "__main__":
    sys.exit(main())
