"""TensorRT engines from the exported ONNX graphs, where `tensorrt` imports (GPU hosts); skipped elsewhere.

    build_tensorrt_engine(onnx_path) → {"tensorrt": "built", "engine": path, …}, {"tensorrt": TENSORRT_SKIPPED}
                                       or {"tensorrt": "failed: …"}; never raises
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import onnx

from model_core.artifacts import DECODER_ONNX, VISION_ONNX
from model_core.files import atomic_write_bytes

log = logging.getLogger(__name__)

TENSORRT_SKIPPED = "skipped: tensorrt is not installed (CPU-only machine)"
# (min, opt, max) per symbolic input dimension of the exported graphs; unnamed dynamic dims get (1, 1, 8).
DEFAULT_DIM_RANGES = {"batch": (1, 1, 8), "views": (1, 1, 2), "seq": (1, 1, 512), "past_len": (0, 128, 512),
                      "total_len": (1, 128, 512)}


def build_tensorrt_engine(onnx_path: str | os.PathLike, engine_path: str | os.PathLike | None = None,
                          dim_ranges: dict[str, tuple[int, int, int]] | None = None, fp16: bool = True) -> dict:
    """Build a serialized TensorRT engine from an ONNX file when `tensorrt` is importable; never raises.

    dim_ranges: (min, opt, max) per symbolic dimension name of the ONNX inputs (batch, views, seq, past_len,
    total_len); unnamed dynamic dims get (1, 1, 8). Returns {"tensorrt": "built", "engine": path, …},
    {"tensorrt": "skipped: …"} or {"tensorrt": "failed: …"}.
    """
    try:
        import tensorrt as trt  # optional (GPU hosts only): imported here so that the export runs without it
    except Exception:  # noqa: BLE001 — ImportError, or a broken install that fails while loading its libraries
        log.info("TensorRT %s", TENSORRT_SKIPPED)
        return {"tensorrt": TENSORRT_SKIPPED}
    onnx_path = Path(onnx_path)
    engine_path = Path(engine_path) if engine_path else onnx_path.with_suffix(".plan")
    ranges = {**DEFAULT_DIM_RANGES, **(dim_ranges or {})}
    try:
        graph_inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
                        for i in onnx.load(str(onnx_path), load_external_data=False).graph.input}
        started = time.perf_counter()
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        flag = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)   # implicit in TensorRT ≥ 10
        network = builder.create_network(0 if flag is None else 1 << int(flag))
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            return {"tensorrt": f"failed: the ONNX parser rejected {onnx_path.name}: {errors}"}
        config = builder.create_builder_config()
        if fp16 and getattr(builder, "platform_has_fast_fp16", False):
            config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        for name, dims in graph_inputs.items():
            shapes = [ranges.get(d, (1, 1, 8)) if isinstance(d, str) or d == 0 else (d, d, d) for d in dims]
            profile.set_shape(name, *[tuple(s[i] for s in shapes) for i in range(3)])
        config.add_optimization_profile(profile)
        engine = builder.build_serialized_network(network, config)
        if engine is None:
            return {"tensorrt": f"failed: TensorRT could not build an engine for {onnx_path.name}"}
        atomic_write_bytes(engine_path, bytes(engine))
        return {"tensorrt": "built", "engine": str(engine_path), "fp16": fp16,
                "seconds": round(time.perf_counter() - started, 1)}
    except Exception as exc:  # noqa: BLE001 — TensorRT is optional: report, never fail the export
        log.warning("TensorRT engine build failed for %s: %s", onnx_path.name, exc)
        return {"tensorrt": f"failed: {type(exc).__name__}: {exc}"}


def build_export_engines(export_dir: Path, max_positions: int) -> str | dict:
    """Engines for an export directory's vision and FP32 decoder graphs: the skip/failure status string of the
    vision build when it was not built, else {"vision": …, "decoder": …}."""
    vision = build_tensorrt_engine(export_dir / VISION_ONNX)
    if vision["tensorrt"] != "built":
        return vision["tensorrt"]
    decoder = build_tensorrt_engine(export_dir / DECODER_ONNX, dim_ranges={
        "seq": (1, 1, max_positions), "past_len": (0, 128, max_positions), "total_len": (1, 128, max_positions)})
    return {"vision": vision, "decoder": decoder}
