"""An export directory opened for ONNX Runtime: its export config, and sessions on an execution provider.

    read_export_config(export_dir)     → the export_config.json dict (ExportError when the directory is not one)
    resolve_providers(provider)        → the provider list for ONNX Runtime ("cpu", "cuda", "auto" or a full name)
    open_session(path, providers, threads) → an InferenceSession
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import onnxruntime as ort

from model_core.artifacts import EXPORT_CONFIG

PRECISIONS = ("fp32", "int8")
CPU_PROVIDER = "CPUExecutionProvider"
_PROVIDER_ALIASES = {"cpu": CPU_PROVIDER, "cuda": "CUDAExecutionProvider"}


class ExportError(RuntimeError):
    """An export input or output location is unusable; the message names the path and what is wrong."""


def read_export_config(export_dir: str | os.PathLike) -> dict:
    """export_dir/export_config.json (written by `model_core.export.step.export_onnx`)."""
    path = Path(export_dir) / EXPORT_CONFIG
    if not path.is_file():
        raise ExportError(f"{export_dir} is not an export directory ({EXPORT_CONFIG} missing); "
                          "create one with model_core.export.step.export_onnx")
    return json.loads(path.read_text())


def decoder_file(meta: dict, precision: str) -> str | None:
    """The decoder graph's file name for a precision (None when the export has no INT8 decoder)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be fp32 or int8, got {precision!r}")
    return meta["files"]["decoder" if precision == "fp32" else "decoder_int8"]


def resolve_providers(provider: str | None) -> list[str]:
    """ONNX Runtime providers for a name: "cpu", "cuda", "auto" (CUDA when available) or a full provider name."""
    available = ort.get_available_providers()
    provider = _PROVIDER_ALIASES.get(provider, provider) if provider else CPU_PROVIDER
    if provider == "auto":
        provider = "CUDAExecutionProvider" if "CUDAExecutionProvider" in available else CPU_PROVIDER
    if provider not in available:
        raise ValueError(f"ONNX Runtime provider {provider!r} is not available here; available: {available}")
    # CPU stays last so nodes the accelerator lacks (e.g. some INT8 kernels) still run.
    return [provider] if provider == CPU_PROVIDER else [provider, CPU_PROVIDER]


def open_session(path: str | os.PathLike, providers: list[str], threads: int | None = None) -> ort.InferenceSession:
    """A session for one graph; threads: intra-op threads (default: ONNX Runtime's choice)."""
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=providers)
