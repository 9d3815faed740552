"""The service's settings: the checked `serving:` config section with overrides, and its parallelism."""

from __future__ import annotations

import dataclasses
import os

from model_core.config import ConfigError, ServingConfig


def serving_config(config: ServingConfig | None = None, **overrides) -> ServingConfig:
    """A checked copy of `config` (default: ServingConfig()) with `overrides` applied; None values are ignored.

    Raises ConfigError naming the key for an unknown option or a bad value."""
    config = config or ServingConfig()
    known = {f.name for f in dataclasses.fields(ServingConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"unknown serving option(s): {', '.join(unknown)} (see model_core.config.ServingConfig)")
    return dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})


def parallelism(config: ServingConfig, backend: str | None = None) -> tuple[int, int]:
    """(workers, intra-op threads per worker) for a backend name (default: the configured backend).

    ONNX Runtime and Triton: one worker per core (at most 4), one thread each. A decoder step of the report model
    is a few small matrix products: split across cores they gain little (32 ms/report with 2 threads vs 32 ms
    with 1 at batch 8), while whole batches on separate cores scale (session.run releases the GIL).
    torch: one worker with every core, since transformers' generate loop holds the GIL (two workers were slower
    than one). See benchmarks/serving_batching.py."""
    cores = os.cpu_count() or 1
    torch_backend = (backend or config.backend) == "torch"
    workers = config.workers or (1 if torch_backend else max(1, min(4, cores)))
    threads = config.threads or max(1, cores // workers)
    return workers, threads
