"""Triton Inference Server, server side: serve a report model on PyTriton's bundled Triton server.

    serve_with_pytriton(backend, http_port=8000, grpc_port=8001, metrics_port=8002)      # blocks until stopped
    python -m serving.triton_server --model DIR --http-port 8000 --grpc-port 8001 --metrics-port 8002

Any backend with `.generate` and `.image_size` (e.g. `serving.backends.load_model(DIR).backend`) is bound as the
model `rrg_report` with the interface of `serving.backends.triton` (the client side). PyTriton runs the inference
function in this process (Triton's Python backend stub forwards the requests to it); its Python must be the one
the stub was built against, see scripts/install_triton.sh and docs/triton.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import time

import numpy as np
import torch

from model_core.chexpert import NUM_LABELS
from serving.backends import load_model
from serving.backends.triton import MODEL_NAME

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH_SIZE = 8


def make_infer_func(backend):
    """The PyTriton inference callable (with @batch) around `backend.generate`."""
    # pytriton, here and below, is imported where it is used: it is installed only in the Triton server
    # environment (.venv-triton, scripts/install_triton.sh), and this module imports without it.
    from pytriton.decorators import batch

    @batch
    def infer(images: np.ndarray, context: np.ndarray) -> dict[str, np.ndarray]:
        tensors = [torch.from_numpy(np.ascontiguousarray(images[i:i + 1], dtype=np.float32))
                   for i in range(len(images))]
        contexts: list[dict | None] = []
        for raw in context.reshape(len(images), -1)[:, 0]:
            raw = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
            contexts.append(json.loads(raw) if raw.strip() else None)
        results = backend.generate(tensors, contexts)
        text = np.array([[t.encode("utf-8")] for t, _ in results], dtype=np.object_)
        probs = np.stack([np.asarray(p, np.float32).reshape(NUM_LABELS) for _, p in results])
        return {"text": text, "probs": probs}

    return infer


def bind_model(triton, backend, model_name: str = MODEL_NAME, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
               max_queue_delay_ms: float = 100.0) -> None:
    """Bind `backend` (anything with `.generate` and `.image_size`) to a pytriton `Triton` as `model_name`."""
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

    size = int(backend.image_size)
    triton.bind(
        model_name=model_name,
        infer_func=make_infer_func(backend),
        inputs=[Tensor(name="images", dtype=np.float32, shape=(1, size, size)),
                Tensor(name="context", dtype=bytes, shape=(1,))],
        outputs=[Tensor(name="text", dtype=bytes, shape=(1,)),
                 Tensor(name="probs", dtype=np.float32, shape=(NUM_LABELS,))],
        config=ModelConfig(max_batch_size=max_batch_size,
                           batcher=DynamicBatcher(max_queue_delay_microseconds=int(max_queue_delay_ms * 1000))),
        strict=True,
    )


def serve_with_pytriton(backend, model_name: str = MODEL_NAME, http_port: int = 8000, grpc_port: int = 8001,
                        metrics_port: int = 8002, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
                        max_queue_delay_ms: float = 100.0, log_verbose: int = 0) -> None:
    """Serve `backend` on PyTriton's bundled Triton server until SIGINT/SIGTERM (blocks).

    Needs `nvidia-pytriton` in an interpreter whose libpython matches Triton's Python-backend stub (on Debian:
    a venv of /usr/bin/python3.11, scripts/install_triton.sh).
    """
    from pytriton.triton import Triton, TritonConfig

    config = TritonConfig(http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
                          log_verbose=log_verbose)
    with Triton(config=config) as triton:
        bind_model(triton, backend, model_name, max_batch_size, max_queue_delay_ms)
        previous = signal.getsignal(signal.SIGTERM)

        def on_sigterm(signum, frame):  # serve() stops cleanly on KeyboardInterrupt
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, on_sigterm)
        try:
            log.info("serving %s (%s backend, image size %d) on Triton: http %d, grpc %d, metrics %d",
                     model_name, getattr(backend, "name", type(backend).__name__), backend.image_size, http_port,
                     grpc_port, metrics_port)
            triton.serve()
        finally:
            signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.triton_server",
                                     description="Serve a report model on PyTriton's Triton Inference Server.")
    parser.add_argument("--model", required=True, help="model directory or models:/NAME@ALIAS")
    parser.add_argument("--backend", default="auto", choices=("auto", "onnxruntime", "torch"))
    parser.add_argument("--precision", default="fp32", choices=("fp32", "int8"),
                        help="ONNX Runtime decoder (default fp32: token-identical to the evaluated torch model)")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    parser.add_argument("--model-name", default=MODEL_NAME)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--max-batch-size", type=int, default=DEFAULT_MAX_BATCH_SIZE)
    parser.add_argument("--max-queue-delay-ms", type=float, default=100.0)
    parser.add_argument("--log-verbose", type=int, default=0, help="tritonserver --log-verbose level")
    parser.add_argument("--allow-export-at-startup", action="store_true",
                        help="development only: export the model to ONNX when it has no export (the pipeline's "
                             "export step makes it in production)")
    parser.add_argument("--gate-record", default=None,
                        help="directory of the model's signed gate decision (default: <model>/gate/)")
    parser.add_argument("--allow-ungated-model", action="store_true",
                        help="development only: serve a model without a passing signed gate decision (logged)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    loaded = load_model(args.model, backend=args.backend, precision=args.precision, threads=args.threads,
                        allow_export_at_startup=args.allow_export_at_startup, gate_record=args.gate_record,
                        allow_ungated_model=args.allow_ungated_model)
    log.info("loaded %s (version %s, %s backend) in %.1f s", loaded.source, loaded.version, loaded.backend.name,
             time.perf_counter() - started)
    serve_with_pytriton(loaded.backend, args.model_name, args.http_port, args.grpc_port, args.metrics_port,
                        args.max_batch_size, args.max_queue_delay_ms, args.log_verbose)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
