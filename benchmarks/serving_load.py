"""Load test of the running service: N report requests at C concurrency against uvicorn on 127.0.0.1.

    .venv/bin/python benchmarks/serving_load.py [--requests 1000] [--concurrency 16] [--size demo|tiny]
                                               [--model-dir DIR] [--max-seconds 900] [--json OUT]

Starts the service (`serving.app.serve`, one uvicorn process, the default backend: ONNX Runtime INT8 on CPU,
batching 8 / 100 ms) as a subprocess on a free loopback port with a random token, waits for /readyz, then sends
`--requests` uploads (`POST /api/v1/studies/{id}/report:upload`, one embedded IU X-ray frontal JPEG each, cycled)
from `--concurrency` concurrent clients, and prints errors (anything but 200), throughput, p50/p95/p99 latency and
the server's mean batch size (from /metrics). Bounded: it stops sending after `--max-seconds` and stops the
server it started. Only 127.0.0.1 is ever contacted. Exit status 1 when any request failed.
The model is as in serving_batching.py: --model-dir, or an untrained model of the demo (or tiny) size.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
for path in (str(REPO_ROOT), str(Path(__file__).resolve().parent)):
    if path not in sys.path:
        sys.path.insert(0, path)

HOST = "127.0.0.1"          # loopback only


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--model-dir", type=Path, default=None)
    p.add_argument("--size", default="demo", choices=("demo", "tiny"))
    p.add_argument("--backend", default="auto", choices=("auto", "torch", "onnxruntime"))
    p.add_argument("--max-seconds", type=float, default=900.0, help="stop sending after this long (900)")
    p.add_argument("--startup-timeout", type=float, default=300.0)
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_server(model_dir: Path, port: int, token: str, workdir: Path, backend: str) -> subprocess.Popen:
    code = ("import sys; from serving.app import serve; "
            f"serve({str(model_dir)!r}, host={HOST!r}, port={port}, audit_log={str(workdir / 'audit.jsonl')!r}, "
            f"report_store={str(workdir / 'reports.sqlite3')!r}, "
            f"backend={backend!r}, allow_export_at_startup=True, allow_ungated_model=True, "
            "log_level='warning')")   # a benchmark of the demo model: the development flag
    env = {**os.environ, "RRG_API_TOKENS": f"{token}:report.write+report.read",
           "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("RRG_PACS_URL", None)
    log = open(workdir / "server.log", "wb")
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def stop_server(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


async def wait_ready(base: str, process: subprocess.Popen, timeout: float) -> dict:
    import httpx

    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=base, timeout=5) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with code {process.returncode} while starting")
            try:
                r = await client.get("/readyz")
                if r.status_code == 200:
                    return r.json()
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.5)
    raise RuntimeError(f"the server was not ready within {timeout:.0f} s")


async def load(base: str, token: str, images: list[bytes], requests: int, concurrency: int,
               max_seconds: float) -> dict:
    import httpx

    latencies, errors, statuses = [], [], {}
    next_index = iter(range(requests))
    stop_at = time.monotonic() + max_seconds
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def client(c: httpx.AsyncClient):
        for i in next_index:
            if time.monotonic() > stop_at:
                return
            files = [("files", (f"study{i}.jpg", images[i % len(images)], "image/jpeg"))]
            data = {"request": json.dumps({"clinical_context": {"age": 40 + i % 50}})}
            t0 = time.perf_counter()
            try:
                r = await c.post(f"/api/v1/studies/load.{i}/report:upload", files=files, data=data, headers=headers)
                status = r.status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            latencies.append(time.perf_counter() - t0)
            statuses[status] = statuses.get(status, 0) + 1
            if status != 200:
                errors.append(status)

    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=base, timeout=300, limits=limits) as c:
        await asyncio.gather(*(client(c) for _ in range(concurrency)))
        metrics = (await c.get("/metrics")).text
    wall = time.perf_counter() - started
    return {"sent": len(latencies), "wall_s": wall, "latencies": latencies, "errors": errors,
            "statuses": statuses, "metrics": metrics}


def batch_stats(metrics: str) -> tuple[float, float]:
    values = {}
    for line in metrics.splitlines():
        if line.startswith(("rrg_batch_size_sum", "rrg_batch_size_count")):
            name, value = line.split()
            values[name] = float(value)
    count = values.get("rrg_batch_size_count", 0.0)
    return count, (values.get("rrg_batch_size_sum", 0.0) / count if count else 0.0)


def main(argv=None) -> int:
    args = parse_args(argv)
    import numpy as np
    from serving_batching import resolve_model_dir

    from model_core.data.iu_xray import load_iu_xray
    from model_core.stats import latency_summary

    test = load_iu_xray(split="test", limit_studies=16)
    images = [Path(p).read_bytes() for p in test["images"]]
    token = secrets.token_urlsafe(24)
    port = free_port()
    base = f"http://{HOST}:{port}"
    with tempfile.TemporaryDirectory(prefix="rrg-load-") as tmp:
        tmp = Path(tmp)
        model_dir, kind = resolve_model_dir(args.model_dir, tmp, args.size)
        process = start_server(model_dir, port, token, tmp, args.backend)
        try:
            t0 = time.perf_counter()
            ready = asyncio.run(wait_ready(base, process, args.startup_timeout))
            startup = time.perf_counter() - t0
            print(f"server {base}: model {kind} ({ready['model_version']}), backend {ready['backend']}, "
                  f"ready in {startup:.1f} s; {args.requests} requests at concurrency {args.concurrency}")
            result = asyncio.run(load(base, token, images, args.requests, args.concurrency, args.max_seconds))
        except Exception:
            print((tmp / "server.log").read_text(errors="replace")[-3000:], file=sys.stderr)
            raise
        finally:
            stop_server(process)
    lat = np.asarray(result["latencies"]) * 1000
    batches, mean_batch = batch_stats(result["metrics"])
    summary = {
        "requests": args.requests, "sent": result["sent"], "concurrency": args.concurrency,
        "errors": len(result["errors"]), "statuses": {str(k): v for k, v in result["statuses"].items()},
        "wall_s": round(result["wall_s"], 1), "throughput_rps": round(result["sent"] / result["wall_s"], 2),
        **{k: v for k, v in latency_summary(lat, percentiles=(50, 95, 99)).items() if k != "n"},
        "server_batches": int(batches),
        "server_mean_batch_size": round(mean_batch, 2), "model": kind, "backend": ready["backend"],
        "cpu_count": os.cpu_count(),
    }
    print(f"sent {summary['sent']}/{args.requests} in {summary['wall_s']} s: {summary['throughput_rps']} req/s, "
          f"errors {summary['errors']} {summary['statuses']}")
    print(f"latency p50 {summary['p50_ms']:.0f} ms, p95 {summary['p95_ms']:.0f} ms, p99 {summary['p99_ms']:.0f} ms; "
          f"server batches {summary['server_batches']}, mean batch size {summary['server_mean_batch_size']}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 1 if summary["errors"] or summary["sent"] < args.requests else 0


if __name__ == "__main__":
    sys.exit(main())
