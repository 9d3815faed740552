"""The INT8 decoder: static quantization calibrated on training studies, or dynamic quantization without them.

    quantize_decoder(fp32_path, int8_path, calibration)   static when decoder feeds are given, else dynamic
    calibration_feeds(export_dir, images, contexts)       decoder feeds recorded while the FP32 export generates
    export_calibration(export_dir, data_cfg, size, n)     the feeds of n train-split studies of the data config,
                                                          or (None, why) → dynamic INT8
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static

from model_core.config import DataConfig
from model_core.data.manifest import DataError
from model_core.export.graphs import EXTERNAL_DATA_BYTES, graph_bytes, quiet_exporter_logs
from model_core.export.sources import load_studies
from model_core.runtime.ort_generator import OrtReportGenerator
from model_core.runtime.session import read_export_config

log = logging.getLogger(__name__)

NOT_BATCH_INVARIANT = ("the INT8 decoder is quantized dynamically, so its reports can depend on the other studies "
                       "of a batch")


def quantize_decoder(fp32_path: Path, int8_path: Path, calibration: list[dict] | None = None) -> dict:
    """INT8 decoder: static (calibrated) when `calibration` decoder feeds are given, else dynamic.

    Static: the weight matrix products (MatMul/Gemm with a constant weight) get per-channel INT8 weights and
    UINT8 activations whose scales are fixed from the calibration feeds (min/max), in QDQ format; the attention
    products and everything else stay FP32. Fixed scales make a row's result independent of the other rows of
    its batch. Dynamic: activation scales are computed at run time over the whole batch tensor, so a study's
    report can change with the studies batched with it (the fallback when no calibration data is at hand).
    """
    if calibration:
        return _quantize_static(fp32_path, int8_path, calibration)
    started = time.perf_counter()
    # No quant_pre_process (shape inference + ORT optimisation) on purpose: dynamic quantization of
    # MatMul/Gemm weights needs neither, and the session optimises the quantized graph when it loads.
    with quiet_exporter_logs():
        quantize_dynamic(model_input=str(fp32_path), model_output=str(int8_path), weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Gemm"], per_channel=False, reduce_range=False,
                         use_external_data_format=graph_bytes(fp32_path) > EXTERNAL_DATA_BYTES)
    return {"method": "onnxruntime.quantization.quantize_dynamic", "weight_type": "QInt8",
            "op_types": ["MatMul", "Gemm"], "per_channel": False, "batch_invariant": False,
            "seconds": round(time.perf_counter() - started, 2)}


def _quantize_static(fp32_path: Path, int8_path: Path, calibration: list[dict]) -> dict:
    started = time.perf_counter()
    graph = onnx.load(str(fp32_path), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    nodes = [n.name for n in graph.node if n.op_type in ("MatMul", "Gemm") and len(n.input) > 1
             and n.input[1] in weights]

    class Feeds(CalibrationDataReader):
        def __init__(self):
            self._it = iter(calibration)

        def get_next(self):
            return next(self._it, None)

    with quiet_exporter_logs():
        quantize_static(str(fp32_path), str(int8_path), Feeds(), quant_format=QuantFormat.QDQ,
                        nodes_to_quantize=nodes, per_channel=True, weight_type=QuantType.QInt8,
                        activation_type=QuantType.QUInt8,
                        use_external_data_format=graph_bytes(fp32_path) > EXTERNAL_DATA_BYTES)
    return {"method": "onnxruntime.quantization.quantize_static (QDQ, min/max calibration)",
            "weight_type": "QInt8 per channel", "activation_type": "QUInt8", "nodes": len(nodes),
            "calibration_feeds": len(calibration), "batch_invariant": True,
            "seconds": round(time.perf_counter() - started, 2)}


def calibration_feeds(export_dir: str | os.PathLike, images: np.ndarray, contexts: list, every: int = 2,
                      batch: int = 4) -> list[dict]:
    """Decoder inputs recorded while the FP32 export writes greedy reports for `images` (calibration studies:
    never the test split): every `every`-th step of each batch, prompt steps included."""
    feeds: list[dict] = []

    class Recorder(OrtReportGenerator):
        def step(self, embeds, mask, positions, past):
            self.calls += 1
            if self.calls % every == 1 or every == 1:
                feeds.append({"inputs_embeds": embeds.astype(np.float32), "attention_mask": mask.astype(np.int64),
                              "position_ids": positions.astype(np.int64),
                              **{name: p.copy() for name, p in zip(self.past_inputs, past)}})
            return super().step(embeds, mask, positions, past)

    engine = Recorder(export_dir, precision="fp32")
    for start in range(0, len(images), batch):
        engine.calls = 0
        engine.generate(images[start:start + batch], contexts[start:start + batch], num_beams=1)
    return feeds


def export_calibration(export_dir: Path, data_cfg: DataConfig | None, image_size: int, n: int
                       ) -> tuple[list[dict] | None, str | None]:
    """(feeds, None) from n train-split studies of the data config, or (None, why not) → dynamic INT8 (warned)."""
    if n <= 0:
        return None, "n_calibration is 0"
    if data_cfg is None:
        why = "no data config given"
    else:
        try:
            views = int(read_export_config(export_dir).get("views", 1))
            images, contexts = load_studies(data_cfg, "train", n, image_size, views)
        except (DataError, OSError, ValueError) as exc:
            why = f"{type(exc).__name__} while loading the train split: {exc}"
        else:
            return calibration_feeds(export_dir, images.numpy(), contexts), None
    log.warning("no calibration studies (%s): %s", why, NOT_BATCH_INVARIANT)
    return None, why
