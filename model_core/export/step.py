"""The pipeline's export step: a trained model directory → an ONNX export directory, with its report.

    export_onnx(model_dir, out_dir, data_cfg=cfg.data) → the report; out_dir/ holds (`model_core.artifacts`):
        vision.onnx, decoder.onnx       the graphs (`graphs.py`), FP32
        decoder.int8.onnx               the decoder in INT8 (`quantize.py`): static, calibrated on train-split
                                        studies of data_cfg; dynamic (recorded, warned) without them
        embed_tokens.npy                the LM's token-embedding matrix (V, d_l) FP32, to embed prompt and tokens
        tokenizer/, detection.json      copied from the model directory
        export_config.json              shapes, token ids, generation defaults, exporter used (read by the runtime)
        export_report.json              files, sizes, exporter, quantization, TensorRT status, versions, and the
                                        parity and latency figures of `parity.py` on test-split studies of
                                        data_cfg (a labelled synthetic probe without it)

Everything is written into a temporary sibling of out_dir that is renamed into place at the end, so a failed
export leaves no partial directory and an existing out_dir is replaced only after success. The report's
"versions" are the exporting packages (torch traced the graphs; onnx, onnxruntime, onnxscript wrote and
checked them) plus the model card's "provenance" (the software that trained the model, recorded at training).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import asdict
from pathlib import Path

import numpy as np

from model_core.artifacts import (
    DECODER_INT8_ONNX,
    DECODER_ONNX,
    DETECTION,
    EMBED_TOKENS,
    EXPORT_CONFIG,
    EXPORT_REPORT,
    MODEL_CARD,
    TOKENIZER_DIR,
    VISION_ONNX,
)
from model_core.config import DataConfig, GenerationConfig, build_section
from model_core.export.graphs import DEFAULT_OPSET, decoder_layout, export_decoder, export_vision
from model_core.export.parity import parity_and_latency
from model_core.export.quantize import export_calibration, quantize_decoder
from model_core.export.sources import check_model_dir, parity_studies
from model_core.export.tensorrt import build_export_engines
from model_core.files import atomic_write_text
from model_core.modeling.model_dir import load_model_dir
from model_core.provenance import package_version
from model_core.runtime.session import ExportError

log = logging.getLogger(__name__)

EXPORT_FORMAT_VERSION = 1
# The packages that wrote the graphs: their versions at export time (the model card has the training ones).
EXPORTING_PACKAGES = ("torch", "transformers", "numpy", "onnx", "onnxruntime", "onnxscript")
_REPORTED_SIZES = (".onnx", ".npy", ".data", ".plan")


def _staging_dir(out_dir: Path) -> Path:
    """A fresh temporary directory beside out_dir (same file system, so the final rename is atomic)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"output directory {out_dir} exists and is not a directory")
    parent = out_dir.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=parent))
    except OSError as exc:
        raise ExportError(f"output directory {out_dir} is not writable: {exc}") from None
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(staging, 0o777 & ~mask)   # mkdtemp makes 0700; the published directory gets ordinary permissions
    return staging


def _publish(staging: Path, out_dir: Path) -> None:
    """Rename the finished staging directory to out_dir, replacing a previous export only once all is written."""
    if not out_dir.exists():
        os.replace(staging, out_dir)
        return
    old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
    os.replace(out_dir, old)
    try:
        os.replace(staging, out_dir)
    except BaseException:
        os.replace(old, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _file_sizes(directory: Path) -> dict[str, int]:
    return {str(p.relative_to(directory)): p.stat().st_size for p in sorted(directory.rglob("*")) if p.is_file()}


def export_versions(model_dir: Path) -> dict:
    """{package: version} of the exporting packages, and "provenance": the model card's training provenance
    (None when the card has none: a model trained before provenance was recorded)."""
    try:
        card = json.loads((model_dir / MODEL_CARD).read_text())
    except (OSError, ValueError):
        card = {}
    provenance = card.get("provenance") if isinstance(card, dict) else None
    return {**{name: package_version(name) for name in EXPORTING_PACKAGES}, "provenance": provenance}


def _export_config(model, gen: GenerationConfig, exporters: dict, opset: int, quantize: bool) -> dict:
    tok = model.tokenizer
    return {
        "format_version": EXPORT_FORMAT_VERSION,
        "image_size": model.image_size, "image_channels": 1, "num_image_tokens": model.num_image_tokens,
        "views": model.num_views,
        # the findings hint (model_core.modeling.hints): raw-logit thresholds, or null when the prompt states none
        "hint_logit_thresholds": model.config.hint_logit_thresholds if model.config.findings_hint else None,
        # grounded drafting (model_core.modeling.grounding): raw-logit statement thresholds, or null when off
        "grounding_logit_thresholds": (model.config.grounding_logit_thresholds if model.config.grounded_findings
                                       else None),
        "image_token_id": model.image_token_id, "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id,
        "max_positions": int(model.max_positions), **decoder_layout(model.language_model),
        "generation": asdict(gen), "exporter": exporters, "opset": opset,
        "files": {"vision": VISION_ONNX, "decoder": DECODER_ONNX,
                  "decoder_int8": DECODER_INT8_ONNX if quantize else None, "embed_tokens": EMBED_TOKENS},
    }


def export_onnx(model_dir: str | os.PathLike, out_dir: str | os.PathLike, quantize: bool = True,
                opset: int = DEFAULT_OPSET, exporter: str = "auto", check: bool = True, n_check: int = 4,
                gen: GenerationConfig | None = None, latency: bool = True, n_calibration: int = 16,
                data_cfg: DataConfig | None = None) -> dict:
    """Export a trained model directory to out_dir (see the module docstring); returns the export report.

    data_cfg: the pipeline's data (`Config.data`): calibration studies from its train split, parity studies
    from its test split. Without it the INT8 decoder is quantized dynamically (recorded in the report's
    "quantization" with the reason, and warned) and parity runs on the synthetic probe (`sources.py`).
    quantize: also write decoder.int8.onnx, calibrated on n_calibration studies. exporter: auto (dynamo,
    TorchScript fallback) | dynamo | torchscript. check: compare torch and ONNX Runtime on n_check studies before
    publishing (with latency figures unless latency=False); gen overrides the saved generation config for that.
    """
    model_dir = check_model_dir(model_dir)
    out_dir = Path(out_dir)
    staging = _staging_dir(out_dir)
    try:
        started = time.perf_counter()
        model, detection, saved = load_model_dir(model_dir)
        model = model.float().eval()
        gen_saved = build_section(GenerationConfig, saved.get("generation", {}), "generation.")
        exporters = {"vision": export_vision(model, staging / VISION_ONNX, opset, exporter),
                     "decoder": export_decoder(model.language_model, staging / DECODER_ONNX, opset, exporter)}
        embed = model.language_model.get_input_embeddings().weight.detach().float().numpy()
        np.save(staging / EMBED_TOKENS, embed)
        model.tokenizer.save_pretrained(staging / TOKENIZER_DIR)
        atomic_write_text(staging / DETECTION, json.dumps(detection, indent=2))
        meta = _export_config(model, gen_saved, exporters, opset, quantize)
        atomic_write_text(staging / EXPORT_CONFIG, json.dumps(meta, indent=2))
        quantization = None
        if quantize:
            feeds, why_dynamic = export_calibration(staging, data_cfg, model.image_size, n_calibration)
            quantization = quantize_decoder(staging / DECODER_ONNX, staging / DECODER_INT8_ONNX, feeds)
            if why_dynamic:
                quantization["dynamic_because"] = why_dynamic
        # TensorRT engines only where tensorrt imports (GPU hosts); otherwise the report says it was skipped.
        tensorrt = build_export_engines(staging, meta["max_positions"])
        report = {
            "model_dir": str(model_dir.resolve()), "export_dir": str(out_dir.resolve()),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "exporter": exporters, "opset": opset,
            "quantization": quantization, "tensorrt": tensorrt,
            "versions": export_versions(model_dir), "export_seconds": round(time.perf_counter() - started, 1),
        }
        if check:
            images, contexts, source = parity_studies(data_cfg, n_check, model.image_size, model.num_views)
            report.update(parity_and_latency(model, staging, gen or gen_saved, images, contexts, source, latency))
        report["files"] = _file_sizes(staging)   # bytes per file (export_report.json itself not listed)
        report["sizes_mb"] = {name: round(size / 2**20, 3) for name, size in report["files"].items()
                              if name.endswith(_REPORTED_SIZES)}
        atomic_write_text(staging / EXPORT_REPORT, json.dumps(report, indent=2, default=float))
        _publish(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("export written to %s (%s)", out_dir, ", ".join(f"{k}: {v}" for k, v in exporters.items()))
    return report
