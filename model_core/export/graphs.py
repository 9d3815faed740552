"""Export of a trained report generator to ONNX, INT8 quantization and an ONNX Runtime generator (seed §3.8).

    export_onnx(model_dir, out_dir)      → out_dir/ (written into a temporary sibling, then renamed)
        vision.onnx        images (B, K, 1, H, W) in [0, 1] → visual_tokens (B, K·N, d_l), label_logits (B, 14)
                           (ViT encoder + token pooling + projector + detection head; FP32)
        decoder.onnx       one causal-LM step with a KV cache (FP32):
                             inputs_embeds (B, T, d_l), attention_mask (B, P+T) int64, position_ids (B, T) int64,
                             past_key_i / past_value_i (B, H_kv, P, D_h) for every layer i (P may be 0)
                           → logits (B, T, V), present_key_i / present_value_i (B, H_kv, P+T, D_h)
        decoder.int8.onnx  the same graph, weight MatMul/Gemm in INT8 (static, calibrated on training studies)
        embed_tokens.npy   the LM's token-embedding matrix (V, d_l) FP32, to embed prompt and generated tokens
        tokenizer/, detection.json, export_config.json (shapes, token ids, generation defaults, exporter used),
        export_report.json (files, sizes, exporter, parity and latency figures, TensorRT status)

    OrtReportGenerator(out_dir).generate(images, contexts) → (texts, label_logits): the prompt building,
        XX-token ban, greedy decoding and beam search of `model_core.generation.generate_texts`, in numpy
        over the KV-cache decoder.

    check_parity(model_dir, out_dir) → torch vs ONNX Runtime figures (vision outputs, first-step logits,
        identical greedy texts), written into export_report.json.

The dynamo exporter (`torch.onnx.export(..., dynamo=True)`) is tried first; the TorchScript exporter is the
fallback. Both trace the same wrapper modules below, which build the 4-D attention mask themselves: the
transformers mask builder (vmap over a padding-mask index) cannot be traced by the TorchScript exporter.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from model_core.config import GenerationConfig, build_section
from model_core.files import atomic_write_bytes, atomic_write_text
from model_core.modeling.model import CONFIG_FILE, WEIGHTS_FILE, ModelInputError

log = logging.getLogger(__name__)

VISION_FILE = "vision.onnx"
DECODER_FILE = "decoder.onnx"
DECODER_INT8_FILE = "decoder.int8.onnx"
EMBED_FILE = "embed_tokens.npy"
EXPORT_CONFIG_FILE = "export_config.json"
REPORT_FILE = "export_report.json"
DEFAULT_OPSET = 18
TENSORRT_SKIPPED = "skipped: tensorrt is not installed (CPU-only machine)"
# Above this many weight bytes a graph is written with external data (protobuf files are capped at 2 GiB).
_EXTERNAL_DATA_BYTES = 1_500_000_000
_MODEL_DIR_FILES = ("model_card.json", CONFIG_FILE, WEIGHTS_FILE, "tokenizer", "encoder_config", "lm_config")


class ExportError(RuntimeError):
    """An export input or output location is unusable; the message names the path and what is wrong."""


# --------------------------------------------------------------------------- exportable wrappers

class VisionExport(nn.Module):
    """images (B, K, 1, H, W) in [0, 1] → (visual_tokens (B, K·N, d_l), label_logits (B, 14)).

    The computation of `encode_images`, the projection in `merge_image_embeddings` and `detect` of the torch
    model, so the runtime only has to scatter the visual tokens into the prompt embeddings. The token pooling
    is written with the patch grid as a Python constant and `avg_pool2d` (equal to the model's
    `adaptive_avg_pool2d`, since the pooled side divides the grid): `encode_images` derives the grid side from
    a traced shape, which the TorchScript exporter cannot pool. `check_parity` compares the two.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model
        enc_cfg = model.encoder.config
        self.grid = enc_cfg.image_size // enc_cfg.patch_size
        pooled = model.config.vision.pool_tokens
        self.pool_kernel = self.grid // int(pooled ** 0.5) if pooled else None

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        model = self.model
        images = model.check_images(images)
        b, k = images.shape[:2]
        x = (images.flatten(0, 1) - model.pixel_mean) / model.pixel_std
        if model.in_channels != 1:
            x = x.expand(-1, model.in_channels, -1, -1)
        hidden = model.encoder(pixel_values=x).last_hidden_state                 # (B·K, 1 + G², d_v)
        cls, patches = hidden[:, :1], hidden[:, 1:]
        if self.pool_kernel:
            grid = patches.transpose(1, 2).reshape(-1, patches.shape[2], self.grid, self.grid)
            patches = nn.functional.avg_pool2d(grid, self.pool_kernel).flatten(2).transpose(1, 2)
        feats = torch.cat([cls, patches], dim=1)
        feats = feats.reshape(b, k, *feats.shape[1:])                            # (B, K, 1 + N, d_v)
        visual_tokens = model.projector(feats[:, :, 1:].flatten(1, 2))          # (B, K·N, d_l)
        return visual_tokens, model.detect(feats)


class DecoderStep(nn.Module):
    """One incremental step of a Hugging Face causal LM with explicit past tensors.

    forward(inputs_embeds (B, T, d_l), attention_mask (B, P+T), position_ids (B, T),
            past_key_0, past_value_0, …, past_key_{L-1}, past_value_{L-1}  each (B, H_kv, P, D_h))
        → (logits (B, T, V), present_key_0, present_value_0, …)  presents (B, H_kv, P+T, D_h)

    The 2-D padding mask is turned into the additive 4-D causal mask here (query t sits at absolute position
    P + t and sees keys j ≤ P + t that are not padding); a 4-D mask is passed through by transformers as is.
    Fully masked rows (left-padding queries) get a uniform softmax instead of NaN; their outputs are never used.
    """

    def __init__(self, language_model: nn.Module):
        super().__init__()
        self.lm = language_model

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from transformers import DynamicCache

        q_len, total = inputs_embeds.shape[1], attention_mask.shape[1]
        kv_pos = torch.arange(total, device=inputs_embeds.device)
        q_pos = torch.arange(q_len, device=inputs_embeds.device) + (total - q_len)
        allowed = (kv_pos[None, :] <= q_pos[:, None])[None, None] & attention_mask[:, None, None, :].bool()
        mask = torch.zeros(allowed.shape, dtype=inputs_embeds.dtype, device=inputs_embeds.device)
        mask = mask.masked_fill(~allowed, torch.finfo(inputs_embeds.dtype).min)   # (B, 1, T, P+T)

        # transformers 4.57 takes a Cache object, not tuples: build one from the flat past tensors.
        cache = DynamicCache(config=self.lm.config)
        for layer in range(len(past) // 2):
            cache.update(past[2 * layer], past[2 * layer + 1], layer)
        out = self.lm(inputs_embeds=inputs_embeds, attention_mask=mask, position_ids=position_ids,
                      past_key_values=cache, use_cache=True, return_dict=True)
        presents = []
        for layer in out.past_key_values.layers:
            presents += [layer.keys, layer.values]
        return (out.logits, *presents)


def past_names(num_layers: int, prefix: str = "past") -> list[str]:
    return [f"{prefix}_{kind}_{i}" for i in range(num_layers) for kind in ("key", "value")]


# --------------------------------------------------------------------------- exporters

@contextlib.contextmanager
def _quiet_exporter_logs():
    """Silence the exporters' and the quantizer's per-node INFO chatter while they run (`rrg` logs at INFO).

    onnxscript/onnx_ir log every rewrite, torch's registry warns that torchvision ops are unavailable, and
    onnxruntime.quantization logs on the root logger (one line per unquantized tensor).
    """
    named = {"onnxscript": logging.WARNING, "onnx_ir": logging.WARNING,
             "torch.onnx._internal.exporter._registration": logging.ERROR}
    saved = {name: logging.getLogger(name).level for name in named}
    for name, level in named.items():
        logging.getLogger(name).setLevel(level)

    def drop_quantizer_notes(record: logging.LogRecord) -> bool:
        return not ("onnxruntime" in record.pathname and "quantization" in record.pathname
                    and record.levelno < logging.ERROR)

    root = logging.getLogger()
    root.addFilter(drop_quantizer_notes)
    try:
        yield
    finally:
        root.removeFilter(drop_quantizer_notes)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def _export_dynamo(module, args, path: Path, input_names, output_names, dynamic_shapes, opset, external_data):
    import warnings

    with _quiet_exporter_logs(), warnings.catch_warnings():
        # Harmless notes: axis names merged with equal constraints (e.g. `batch` shared by all inputs), and a
        # deprecation inside torch's own pytree code.
        warnings.filterwarnings("ignore", message=".*axis name.*will not be used", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
        torch.onnx.export(module, args, str(path), input_names=input_names, output_names=output_names,
                          dynamic_shapes=dynamic_shapes, opset_version=opset, dynamo=True,
                          external_data=external_data, verbose=False)


def _export_torchscript(module, args, path: Path, input_names, output_names, dynamic_axes, opset):
    import warnings

    with warnings.catch_warnings():
        # The legacy exporter warns about itself and about every Python branch it traces through.
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes, opset_version=opset, dynamo=False)


def _export_graph(name: str, module, args, path: Path, input_names, output_names, dynamic_shapes, dynamic_axes,
                  opset: int, exporter: str, external_data: bool) -> str:
    """Export with the dynamo exporter, falling back to TorchScript; returns the exporter that was used."""
    import onnx

    if exporter not in ("auto", "dynamo", "torchscript"):
        raise ValueError(f"exporter must be auto, dynamo or torchscript, got {exporter!r}")
    used = None
    if exporter in ("auto", "dynamo"):
        try:
            _export_dynamo(module, args, path, input_names, output_names, dynamic_shapes, opset, external_data)
            used = "dynamo"
        except Exception as exc:  # noqa: BLE001 — any exporter failure means: try the other exporter
            if exporter == "dynamo":
                raise ExportError(f"the dynamo exporter failed on {name}: {type(exc).__name__}: {exc}") from exc
            log.warning("dynamo exporter failed on %s (%s: %s); falling back to the TorchScript exporter",
                        name, type(exc).__name__, str(exc).splitlines()[0][:300] if str(exc) else "")
            for leftover in path.parent.glob(path.name + "*"):
                leftover.unlink()
    if used is None:
        _export_torchscript(module, args, path, input_names, output_names, dynamic_axes, opset)
        used = "torchscript"
    onnx.checker.check_model(str(path))
    log.info("exported %s with the %s exporter (opset %d)", name, used, opset)
    return used


def export_vision(model, path: Path, opset: int = DEFAULT_OPSET, exporter: str = "auto") -> str:
    """Write vision.onnx; dynamic batch B and views K. Returns the exporter used."""
    from torch.export import Dim

    size = model.image_size
    # Example sizes 2 and 3 (not 0/1, which torch.export would specialise, and distinct, so the dims stay apart).
    example = torch.rand(2, 3, 1, size, size)
    batch, views = Dim("batch"), Dim("views")
    return _export_graph(
        "vision", VisionExport(model).eval(), (example,), path, ["images"], ["visual_tokens", "label_logits"],
        dynamic_shapes={"images": {0: batch, 1: views}},
        dynamic_axes={"images": {0: "batch", 1: "views"}, "visual_tokens": {0: "batch", 1: "visual_tokens"},
                      "label_logits": {0: "batch"}},
        opset=opset, exporter=exporter, external_data=_weight_bytes(model.encoder) > _EXTERNAL_DATA_BYTES)


def decoder_layout(language_model) -> dict:
    """Number of layers and the per-layer KV shape (H_kv, D_h), read from one tiny torch step."""
    step = DecoderStep(language_model).eval()
    d_l = language_model.get_input_embeddings().embedding_dim
    with torch.no_grad():
        out = step(torch.zeros(1, 1, d_l), torch.ones(1, 1, dtype=torch.long), torch.zeros(1, 1, dtype=torch.long))
    presents = out[1:]
    return {"num_layers": len(presents) // 2, "kv_heads": int(presents[0].shape[1]),
            "head_dim": int(presents[0].shape[3]), "hidden_size": d_l, "vocab_size": int(out[0].shape[-1])}


def export_decoder(language_model, path: Path, opset: int = DEFAULT_OPSET, exporter: str = "auto") -> str:
    """Write decoder.onnx (see `DecoderStep`); dynamic batch, new-token count and past length."""
    from torch.export import Dim

    layout = decoder_layout(language_model)
    n_layers = layout["num_layers"]
    b, t, p = 2, 5, 3   # distinct example sizes > 1 so that no dimension is specialised or merged
    args = (torch.randn(b, t, layout["hidden_size"]), torch.ones(b, p + t, dtype=torch.long),
            torch.arange(p, p + t).expand(b, t).clone(),
            *[torch.randn(b, layout["kv_heads"], p, layout["head_dim"]) for _ in range(2 * n_layers)])
    inputs = ["inputs_embeds", "attention_mask", "position_ids", *past_names(n_layers)]
    outputs = ["logits", *past_names(n_layers, "present")]
    batch, seq, past_len, total = Dim("batch"), Dim("seq"), Dim("past_len"), Dim("total_len")
    dynamic_shapes = {"inputs_embeds": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: total},
                      "position_ids": {0: batch, 1: seq}, "past": tuple({0: batch, 2: past_len} for _ in args[3:])}
    dynamic_axes = {"inputs_embeds": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "total_len"},
                    "position_ids": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}}
    dynamic_axes.update({name: {0: "batch", 2: "past_len"} for name in past_names(n_layers)})
    dynamic_axes.update({name: {0: "batch", 2: "total_len"} for name in past_names(n_layers, "present")})
    return _export_graph("decoder", DecoderStep(language_model).eval(), args, path, inputs, outputs, dynamic_shapes,
                         dynamic_axes, opset, exporter, _weight_bytes(language_model) > _EXTERNAL_DATA_BYTES)


def _weight_bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def _graph_bytes(path: Path) -> int:
    """Size of an ONNX file together with its external-data file(s) (decoder.onnx, decoder.onnx.data)."""
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())


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
    from onnxruntime.quantization import QuantType, quantize_dynamic

    started = time.perf_counter()
    # No quant_pre_process (shape inference + ORT optimisation) on purpose: dynamic quantization of
    # MatMul/Gemm weights needs neither, and the session optimises the quantized graph when it loads.
    with _quiet_exporter_logs():
        quantize_dynamic(model_input=str(fp32_path), model_output=str(int8_path), weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Gemm"], per_channel=False, reduce_range=False,
                         use_external_data_format=_graph_bytes(fp32_path) > _EXTERNAL_DATA_BYTES)
    return {"method": "onnxruntime.quantization.quantize_dynamic", "weight_type": "QInt8",
            "op_types": ["MatMul", "Gemm"], "per_channel": False, "batch_invariant": False,
            "seconds": round(time.perf_counter() - started, 2)}


def _quantize_static(fp32_path: Path, int8_path: Path, calibration: list[dict]) -> dict:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

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

    with _quiet_exporter_logs():
        quantize_static(str(fp32_path), str(int8_path), Feeds(), quant_format=QuantFormat.QDQ,
                        nodes_to_quantize=nodes, per_channel=True, weight_type=QuantType.QInt8,
                        activation_type=QuantType.QUInt8,
                        use_external_data_format=_graph_bytes(fp32_path) > _EXTERNAL_DATA_BYTES)
    return {"method": "onnxruntime.quantization.quantize_static (QDQ, min/max calibration)",
            "weight_type": "QInt8 per channel", "activation_type": "QUInt8", "nodes": len(nodes),
            "calibration_feeds": len(calibration), "batch_invariant": True,
            "seconds": round(time.perf_counter() - started, 2)}


def calibration_feeds(export_dir: Path, images: np.ndarray, contexts: list, every: int = 2,
                      batch: int = 4) -> list[dict]:
    """Decoder inputs recorded while the FP32 export writes greedy reports for `images` (calibration studies:
    never the test split): every `every`-th step of each batch, prompt steps included."""
    feeds: list[dict] = []

    class Recorder(OrtReportGenerator):
        def step(self, embeds, mask, positions, past):
            self._calls = getattr(self, "_calls", 0) + 1
            if self._calls % every == 1 or every == 1:
                feeds.append({"inputs_embeds": embeds.astype(np.float32), "attention_mask": mask.astype(np.int64),
                              "position_ids": positions.astype(np.int64),
                              **{name: p.copy() for name, p in zip(self.past_inputs, past)}})
            return super().step(embeds, mask, positions, past)

    engine = Recorder(export_dir, precision="fp32")
    for start in range(0, len(images), batch):
        engine._calls = 0
        engine.generate(images[start:start + batch], contexts[start:start + batch], num_beams=1)
    return feeds


# --------------------------------------------------------------------------- TensorRT (optional)

def build_tensorrt_engine(onnx_path: str | os.PathLike, engine_path: str | os.PathLike | None = None,
                          dim_ranges: dict[str, tuple[int, int, int]] | None = None, fp16: bool = True) -> dict:
    """Build a serialized TensorRT engine from an ONNX file when `tensorrt` is importable; never raises.

    dim_ranges: (min, opt, max) per symbolic dimension name of the ONNX inputs (batch, views, seq, past_len,
    total_len); unnamed dynamic dims get (1, 1, 8). Returns {"tensorrt": "built", "engine": path, …},
    {"tensorrt": "skipped: …"} or {"tensorrt": "failed: …"}.
    """
    try:
        import tensorrt as trt
    except Exception:  # noqa: BLE001 — ImportError, or a broken install that fails while loading its libraries
        log.info("TensorRT %s", TENSORRT_SKIPPED)
        return {"tensorrt": TENSORRT_SKIPPED}
    onnx_path = Path(onnx_path)
    engine_path = Path(engine_path) if engine_path else onnx_path.with_suffix(".plan")
    ranges = {"batch": (1, 1, 8), "views": (1, 1, 2), "seq": (1, 1, 512), "past_len": (0, 128, 512),
              "total_len": (1, 128, 512), **(dim_ranges or {})}
    try:
        import onnx

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


# --------------------------------------------------------------------------- the export step

def _check_model_dir(model_dir: str | os.PathLike) -> Path:
    model_dir = Path(model_dir)
    if not model_dir.exists():
        raise ExportError(f"model directory not found: {model_dir}")
    if not model_dir.is_dir():
        raise ExportError(f"{model_dir} is not a model directory (it is a file)")
    missing = [name for name in _MODEL_DIR_FILES if not (model_dir / name).exists()]
    if missing:
        raise ExportError(f"{model_dir} is not a model directory: {', '.join(missing)} missing; "
                          "train one with `rrg train --out DIR`")
    return model_dir


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


def _versions() -> dict:
    import onnx
    import onnxruntime
    import transformers

    out = {"torch": torch.__version__, "transformers": transformers.__version__, "onnx": onnx.__version__,
           "onnxruntime": onnxruntime.__version__, "numpy": np.__version__}
    try:
        import onnxscript
        out["onnxscript"] = onnxscript.__version__
    except ImportError:
        out["onnxscript"] = None
    return out


def export_onnx(model_dir: str | os.PathLike, out_dir: str | os.PathLike, quantize: bool = True,
                opset: int = DEFAULT_OPSET, exporter: str = "auto", check: bool = True, n_check: int = 4,
                gen: GenerationConfig | None = None, latency: bool = True, n_calibration: int = 16) -> dict:
    """Export a trained model directory to out_dir (see the module docstring); returns the export report.

    quantize: also write decoder.int8.onnx, statically quantized with activation scales calibrated on
    n_calibration embedded *training* studies (dynamic quantization, with a warning, when those cannot be
    loaded). exporter: auto (dynamo, TorchScript fallback) | dynamo | torchscript.
    check: run `check_parity` on n_check embedded test studies before publishing (with latency figures
    unless latency=False); gen overrides the saved generation config for that check.
    Everything is written into a temporary sibling of out_dir that is renamed into place at the end, so a
    failed export leaves no partial directory; an existing out_dir is replaced only after success.
    """
    from model_core.modeling.model_dir import load_model_dir

    model_dir = _check_model_dir(model_dir)
    out_dir = Path(out_dir)
    staging = _staging_dir(out_dir)
    try:
        started = time.perf_counter()
        model, detection, saved = load_model_dir(model_dir)
        model = model.float().eval()
        gen_saved = build_section(GenerationConfig, saved.get("generation", {}), "generation.")
        exporters = {"vision": export_vision(model, staging / VISION_FILE, opset, exporter),
                     "decoder": export_decoder(model.language_model, staging / DECODER_FILE, opset, exporter)}
        embed = model.language_model.get_input_embeddings().weight.detach().float().numpy()
        np.save(staging / EMBED_FILE, embed)
        model.tokenizer.save_pretrained(staging / "tokenizer")
        atomic_write_text(staging / "detection.json", json.dumps(detection, indent=2))
        tok = model.tokenizer
        meta = {
            "format_version": 1,
            "image_size": model.image_size, "image_channels": 1, "num_image_tokens": model.num_image_tokens,
            "image_token_id": model.image_token_id, "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id,
            "max_positions": int(model.max_positions), **decoder_layout(model.language_model),
            "generation": asdict(gen_saved), "exporter": exporters, "opset": opset,
            "files": {"vision": VISION_FILE, "decoder": DECODER_FILE,
                      "decoder_int8": DECODER_INT8_FILE if quantize else None, "embed_tokens": EMBED_FILE},
        }
        atomic_write_text(staging / EXPORT_CONFIG_FILE, json.dumps(meta, indent=2))
        quantization = None
        if quantize:
            quantization = quantize_decoder(staging / DECODER_FILE, staging / DECODER_INT8_FILE,
                                            _calibration(staging, model.image_size, n_calibration))
        # TensorRT engines only where tensorrt imports (GPU hosts); otherwise the report says it was skipped.
        trt_vision = build_tensorrt_engine(staging / VISION_FILE)
        tensorrt: str | dict = trt_vision["tensorrt"]
        if tensorrt == "built":
            positions = meta["max_positions"]
            tensorrt = {"vision": trt_vision, "decoder": build_tensorrt_engine(
                staging / DECODER_FILE, dim_ranges={"seq": (1, 1, positions), "past_len": (0, 128, positions),
                                                   "total_len": (1, 128, positions)})}
        report = {
            "model_dir": str(model_dir.resolve()), "export_dir": str(out_dir.resolve()),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "exporter": exporters, "opset": opset,
            "quantization": quantization, "tensorrt": tensorrt,
            "versions": _versions(), "export_seconds": round(time.perf_counter() - started, 1),
        }
        if check:
            report.update(_parity_and_latency(model, staging, gen or gen_saved, n_check, latency))
        report["files"] = _file_sizes(staging)   # bytes per file (export_report.json itself not listed)
        report["sizes_mb"] = {name: round(size / 2**20, 3) for name, size in report["files"].items()
                              if name.endswith((".onnx", ".npy", ".data", ".plan"))}
        atomic_write_text(staging / REPORT_FILE, json.dumps(report, indent=2, default=float))
        _publish(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("export written to %s (%s)", out_dir, ", ".join(f"{k}: {v}" for k, v in exporters.items()))
    return report


# --------------------------------------------------------------------------- ONNX Runtime generator

def _providers(provider: str | None) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    aliases = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
    provider = aliases.get(provider, provider) if provider else "CPUExecutionProvider"
    if provider == "auto":
        provider = "CUDAExecutionProvider" if "CUDAExecutionProvider" in available else "CPUExecutionProvider"
    if provider not in available:
        raise ValueError(f"ONNX Runtime provider {provider!r} is not available here; available: {available}")
    # CPU stays last so nodes the accelerator lacks (e.g. some INT8 kernels) still run.
    return [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]


def _log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _positions(mask: np.ndarray) -> np.ndarray:
    """Position ids of a left-padded prompt, as transformers' generate makes them (padding gets 1, unused)."""
    pos = mask.cumsum(-1) - 1
    pos[mask == 0] = 1
    return pos.astype(np.int64)


def _no_repeat_ngram_bans(tokens: list[int], n: int) -> list[int]:
    """Tokens that would repeat an n-gram already in `tokens` (transformers' NoRepeatNGramLogitsProcessor)."""
    if n <= 0 or len(tokens) + 1 < n:
        return []
    prefix = tuple(tokens[len(tokens) - n + 1:])
    return [tokens[i + n - 1] for i in range(len(tokens) - n + 1) if tuple(tokens[i:i + n - 1]) == prefix]


class OrtReportGenerator:
    """Report generation from an export directory with ONNX Runtime: no torch model needed.

    precision: "fp32" (decoder.onnx) or "int8" (decoder.int8.onnx); the vision graph is always FP32.
    provider: an ONNX Runtime provider name, "cpu", "cuda" or "auto" (CUDA when available); default CPU.
    gen: generation settings (default: the training run's saved generation config).
    threads: intra-op threads per session (default: ONNX Runtime's choice).
    """

    compact_done = True      # beam search: studies that are done leave the batch (see _beam_search)

    def __init__(self, export_dir: str | os.PathLike, precision: str = "fp32",
                 provider: str | None = "CPUExecutionProvider", gen: GenerationConfig | None = None,
                 threads: int | None = None):
        import onnxruntime as ort
        from transformers import PreTrainedTokenizerFast

        from model_core.modeling.generation import _bad_words_ids

        export_dir = Path(export_dir)
        config_path = export_dir / EXPORT_CONFIG_FILE
        if not config_path.is_file():
            raise ExportError(f"{export_dir} is not an export directory ({EXPORT_CONFIG_FILE} missing); "
                              "create one with model_core.export.export_onnx")
        self.meta = json.loads(config_path.read_text())
        if precision not in ("fp32", "int8"):
            raise ValueError(f"precision must be fp32 or int8, got {precision!r}")
        decoder_file = self.meta["files"]["decoder" if precision == "fp32" else "decoder_int8"]
        if not decoder_file or not (export_dir / decoder_file).is_file():
            raise ExportError(f"{export_dir} has no {precision} decoder; export with quantize=True")
        self.precision = precision
        self.gen = gen or build_section(GenerationConfig, self.meta["generation"], "generation.")
        self.tokenizer = PreTrainedTokenizerFast.from_pretrained(export_dir / "tokenizer")
        self.embed = np.load(export_dir / self.meta["files"]["embed_tokens"])      # (V, d_l)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        providers = _providers(provider)
        self.vision = ort.InferenceSession(str(export_dir / self.meta["files"]["vision"]), options, providers=providers)
        self.decoder = ort.InferenceSession(str(export_dir / decoder_file), options, providers=providers)
        self.provider = self.decoder.get_providers()[0]
        self.num_layers = self.meta["num_layers"]
        self.past_inputs = past_names(self.num_layers)
        self.outputs = ["logits", *past_names(self.num_layers, "present")]
        self.eos, self.pad = self.meta["eos_token_id"], self.meta["pad_token_id"]
        # The same single-token XX ban as generate_texts (transformers drops a ban on EOS itself).
        self.banned = np.array(sorted({ids[0] for ids in _bad_words_ids(self.tokenizer)
                                       if len(ids) == 1 and ids[0] != self.eos and ids[0] < self.embed.shape[0]}),
                               dtype=np.int64)

    # ---- model parts

    def check_images(self, images) -> np.ndarray:
        """(B, 1, H, W) or (B, K, 1, H, W) in [0, 1] → float32 (B, K, 1, H, W); clear errors otherwise."""
        if isinstance(images, torch.Tensor):
            images = images.detach().cpu().numpy()
        if not isinstance(images, np.ndarray):
            raise ModelInputError(f"images must be a numpy array, got {type(images).__name__}")
        if images.ndim == 4:
            images = images[:, None]
        size = self.meta["image_size"]
        if images.ndim != 5:
            raise ModelInputError(f"images must be (B, 1, H, W) or (B, K, 1, H, W), got shape {images.shape}")
        if images.shape[0] == 0 or images.shape[1] == 0:
            raise ModelInputError("empty batch: no images")
        if images.shape[2] != 1:
            raise ModelInputError(f"images must be single-channel grayscale (1, H, W), got {images.shape[2]} channels")
        if images.shape[3:] != (size, size):
            raise ModelInputError(f"images must be {size}×{size}, got {images.shape[3]}×{images.shape[4]}; "
                                  "preprocess with model_core.data.images.load_image(path, size)")
        return np.ascontiguousarray(images, dtype=np.float32)

    def encode_images(self, images) -> tuple[np.ndarray, np.ndarray]:
        """images → (visual_tokens (B, K·N, d_l), label_logits (B, 14))."""
        visual_tokens, label_logits = self.vision.run(None, {"images": self.check_images(images)})
        return visual_tokens, label_logits

    def empty_past(self, batch: int) -> list[np.ndarray]:
        shape = (batch, self.meta["kv_heads"], 0, self.meta["head_dim"])
        return [np.zeros(shape, np.float32) for _ in self.past_inputs]

    def step(self, embeds: np.ndarray, mask: np.ndarray, positions: np.ndarray, past: list[np.ndarray]
             ) -> tuple[np.ndarray, list[np.ndarray]]:
        """One decoder call: embeds (B, T, d_l), mask (B, P+T), positions (B, T), past → logits (B, T, V), present."""
        feed = {"inputs_embeds": embeds.astype(np.float32, copy=False), "attention_mask": mask.astype(np.int64),
                "position_ids": positions.astype(np.int64), **dict(zip(self.past_inputs, past))}
        logits, *present = self.decoder.run(self.outputs, feed)
        return logits, present

    def prompt(self, visual_tokens: np.ndarray, views: int, clinical_contexts, question: str | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Left-padded prompt embeddings (B, T, d_l) with the visual tokens in the <image> slots, and mask (B, T)."""
        from model_core.modeling.tokenizer import build_prompt, encode_example, pad_batch

        tok = self.tokenizer
        prefixes = [encode_example(tok, build_prompt(c, question), None, views * self.meta["num_image_tokens"])[0]
                    for c in clinical_contexts]
        ids, mask = (t.numpy() for t in pad_batch(prefixes, tok.pad_token_id, left=True))
        embeds = self.embed[ids]
        slots = ids == self.meta["image_token_id"]
        if not (slots.sum(1) == visual_tokens.shape[1]).all():
            raise ModelInputError(f"image-token count mismatch: {slots.sum(1).tolist()} <image> tokens per sample, "
                                  f"the images give {visual_tokens.shape[1]}")
        # Boolean assignment fills the slots row by row, in order: the same placement as torch's masked_scatter.
        embeds[slots] = visual_tokens.reshape(-1, visual_tokens.shape[-1])
        return embeds, mask

    # ---- generation

    def generate(self, images, clinical_contexts: list[dict | None] | None = None, num_beams: int | None = None,
                 max_new_tokens: int | None = None, question: str | None = None) -> tuple[list[str], np.ndarray]:
        """Report texts and label logits (B, 14) for images (B, K, 1, H, W) in [0, 1] (numpy float32).

        num_beams=1 is greedy decoding; otherwise beam search with the configured length penalty,
        no-repeat n-gram size and repetition penalty, stopping as transformers does with early_stopping=True.
        """
        images = self.check_images(images)
        batch, views = images.shape[:2]
        contexts = clinical_contexts or [None] * batch
        if len(contexts) != batch:
            raise ValueError(f"{len(contexts)} clinical contexts for a batch of {batch} studies")
        num_beams = self.gen.num_beams if num_beams is None else num_beams
        if num_beams < 1:
            raise ValueError(f"num_beams must be ≥ 1, got {num_beams}")
        visual_tokens, label_logits = self.encode_images(images)
        embeds, mask = self.prompt(visual_tokens, views, contexts, question)
        max_new = min(self.gen.max_new_tokens if max_new_tokens is None else max_new_tokens,
                      self.meta["max_positions"] - embeds.shape[1])
        if max_new <= 0:
            raise ValueError(f"the prompt ({embeds.shape[1]} tokens) leaves no room in the LM's "
                             f"{self.meta['max_positions']} positions")
        if num_beams == 1:
            tokens = self._greedy(embeds, mask, max_new)
        else:
            tokens = self._beam_search(embeds, mask, max_new, num_beams)
        from model_core.modeling.tokenizer import clean_text

        texts = [clean_text(t) for t in self.tokenizer.batch_decode(tokens, skip_special_tokens=True)]
        return texts, label_logits

    def _process(self, tokens: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """transformers' logits processors, in its order: repetition penalty, no-repeat n-gram, bad words.

        tokens: (R, t) generated so far (the prompt is embeddings only, so it takes no part); scores (R, V).
        """
        scores = scores.copy()
        penalty = self.gen.repetition_penalty
        if penalty != 1.0 and tokens.shape[1]:
            picked = np.take_along_axis(scores, tokens, axis=1)
            np.put_along_axis(scores, tokens, np.where(picked < 0, picked * penalty, picked / penalty), axis=1)
        n = self.gen.no_repeat_ngram_size
        if n > 0 and tokens.shape[1] + 1 >= n:
            for row, seq in enumerate(tokens.tolist()):
                scores[row, _no_repeat_ngram_bans(seq, n)] = -np.inf
        if self.banned.size:
            scores[:, self.banned] = -np.inf
        return scores

    def _greedy(self, embeds: np.ndarray, mask: np.ndarray, max_new: int) -> list[list[int]]:
        batch = embeds.shape[0]
        logits, past = self.step(embeds, mask, _positions(mask), self.empty_past(batch))
        tokens = np.zeros((batch, 0), np.int64)
        unfinished = np.ones(batch, bool)
        for step in range(max_new):
            scores = self._process(tokens, logits[:, -1].astype(np.float32))
            nxt = np.where(unfinished, scores.argmax(-1), self.pad)   # finished rows only pad
            tokens = np.concatenate([tokens, nxt[:, None]], axis=1)
            unfinished &= nxt != self.eos
            if not unfinished.any() or step + 1 == max_new:
                break
            mask = np.concatenate([mask, np.ones((batch, 1), mask.dtype)], axis=1)
            logits, past = self.step(self.embed[nxt][:, None], mask, mask.sum(1, keepdims=True) - 1, past)
        return tokens.tolist()

    def _top_candidates(self, totals: np.ndarray, width: int) -> np.ndarray:
        """Indices of the `width` best scores per row, best first, ties by lower index."""
        return np.argsort(-totals, axis=1, kind="stable")[:, :width]

    def _reorder_cache(self, past: list[np.ndarray], rows: np.ndarray) -> list[np.ndarray]:
        """The KV cache gathered to the surviving beams (row i of the result is row rows[i] of the input)."""
        return [p[rows] for p in past]

    def _beam_search(self, embeds: np.ndarray, mask: np.ndarray, max_new: int, num_beams: int) -> list[list[int]]:
        """Beam search over the KV cache, with the candidate rules of transformers 4.57 (`_beam_search`).

        Per step: log-softmax, processors, add the beams' running scores, keep the top 2·num_beams
        continuations of each study. Of these, the ones ending in EOS (or every one at the last step) that rank
        among the top num_beams become finished hypotheses scored sum_logprob / length**length_penalty; the best
        num_beams that do not end continue. A study is done once it holds num_beams finished hypotheses
        (early_stopping=True); the search stops when all are done or max_new tokens were generated.

        Unlike transformers, a study that is done leaves the batch: its rows are dropped from the KV cache and
        no longer run through the decoder (a done study's result can no longer change, so the texts are the
        same; in a batch of reports of different lengths this saves the steps the short ones would idle).
        `compact_done = False` keeps them, as transformers does (tests, benchmarks).
        """
        batch, nb = embeds.shape[0], num_beams
        width = 2 * nb   # enough candidates that num_beams of them continue even if num_beams end in EOS
        length_penalty = self.gen.length_penalty
        # The beams of a study share its prompt: run the prompt once and copy its cache (rows b·nb … b·nb+nb-1).
        logits, past = self.step(embeds, mask, _positions(mask), self.empty_past(batch))
        logits = np.repeat(logits[:, -1], nb, axis=0)                           # (B·nb, V)
        past = [np.repeat(p, nb, axis=0) for p in past]
        mask = np.repeat(mask, nb, axis=0)
        seqs = np.zeros((batch, nb, 0), np.int64)
        scores = np.full((batch, nb), -1e9, np.float32)
        scores[:, 0] = 0.0    # only the first copy is live at step 0, so the beams do not start identical
        finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(batch)]
        study = np.arange(batch)          # active row-group j holds the study study[j]
        last_seqs: list[list[int] | None] = [None] * batch
        for step in range(max_new):
            active = study.size
            log_probs = self._process(seqs.reshape(active * nb, step), _log_softmax(logits.astype(np.float32)))
            vocab = log_probs.shape[-1]
            totals = (log_probs.reshape(active, nb, vocab) + scores[:, :, None]).reshape(active, nb * vocab)
            top = self._top_candidates(totals, width)                                # (A, 2·nb), best first
            top_scores = np.take_along_axis(totals, top, axis=1)
            src_beam, token = top // vocab, top % vocab
            last = step + 1 == max_new
            keep_src = np.zeros((active, nb), np.int64)
            keep_tok = np.full((active, nb), self.pad, np.int64)
            keep_scores = np.full((active, nb), -1e9, np.float32)
            for j, b in enumerate(study.tolist()):
                full = len(finished[b]) >= nb      # decided before this step's candidates, as in transformers
                kept = 0
                for rank in range(width):
                    beam, tok, score = int(src_beam[j, rank]), int(token[j, rank]), float(top_scores[j, rank])
                    if tok == self.eos or last:
                        if rank < nb and not full:
                            hyp = seqs[j, beam].tolist() + [tok]
                            finished[b].append((score / len(hyp) ** length_penalty, hyp))
                    elif kept < nb:
                        keep_src[j, kept], keep_tok[j, kept], keep_scores[j, kept] = beam, tok, score
                        kept += 1
                finished[b] = sorted(finished[b], key=lambda h: -h[0])[:nb]
                last_seqs[b] = seqs[j, 0].tolist()
            alive = np.array([len(finished[b]) < nb for b in study.tolist()])
            if last or not alive.any():
                break
            if not self.compact_done:
                alive[:] = True
            # Drop the studies that are done, reorder the cache to the surviving beams and feed their new tokens.
            keep_src, keep_tok, keep_scores = keep_src[alive], keep_tok[alive], keep_scores[alive]
            groups = np.flatnonzero(alive)
            rows = (groups[:, None] * nb + keep_src).reshape(-1)
            past = self._reorder_cache(past, rows)
            seqs = np.concatenate([np.take_along_axis(seqs[alive], keep_src[:, :, None], axis=1),
                                   keep_tok[:, :, None]], 2)
            scores, study = keep_scores, study[alive]
            mask = np.concatenate([mask[rows], np.ones((rows.size, 1), mask.dtype)], axis=1)
            flat_tokens = keep_tok.reshape(-1)
            logits, past = self.step(self.embed[flat_tokens][:, None], mask, mask.sum(1, keepdims=True) - 1, past)
            logits = logits[:, -1]
        return [f[0][1] if f else last_seqs[b] for b, f in enumerate(finished)]


# --------------------------------------------------------------------------- parity and latency

def _calibration(export_dir: Path, image_size: int, n: int) -> list[dict] | None:
    """Calibration feeds from n embedded training studies, or None (→ dynamic INT8) when they cannot be had."""
    from model_core.data.manifest import DataError

    if n <= 0:
        return None
    try:
        images, contexts = _test_studies(n, image_size, split="train")
    except (DataError, OSError, ValueError) as exc:
        log.warning("no calibration studies (%s: %s): the INT8 decoder is quantized dynamically, so its reports "
                    "can depend on the other studies of a batch", type(exc).__name__, exc)
        return None
    return calibration_feeds(export_dir, images.numpy(), contexts)


def _test_studies(n: int, image_size: int, split: str = "test") -> tuple[torch.Tensor, list[dict]]:
    """n embedded studies of a split (default test): images (n, 1, 1, H, W) (first frontal image) and their
    clinical contexts."""
    from model_core.data.images import load_image
    from model_core.data.iu_xray import group_studies, load_iu_xray

    dataset = load_iu_xray(split=split, limit_studies=n)
    studies = group_studies(dataset)[:n]
    images = torch.stack([load_image(dataset["images"][s["rows"][0]], image_size) for s in studies])
    return images.unsqueeze(1), [s["metadata"] for s in studies]


def _max_abs(a, b, where: np.ndarray | None = None) -> float:
    diff = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    if where is not None:
        diff = diff[where]
    return float(diff.max()) if diff.size else 0.0


def _percentiles(samples_ms: list[float]) -> dict:
    arr = np.asarray(samples_ms)
    return {"p50_ms": round(float(np.percentile(arr, 50)), 2), "p95_ms": round(float(np.percentile(arr, 95)), 2),
            "n": int(arr.size)}


def time_per_report(engines: dict, images: torch.Tensor, contexts: list, runs: int) -> dict[str, dict]:
    """p50/p95 wall time of each engine fn(images[i:i+1], [context]) per report at batch 1.

    Each engine gets one untimed warm-up call; then the engines take turns on the same study in every run,
    so a slow spell of a shared machine hits all of them alike and the ratios stay fair.
    """
    samples: dict[str, list[float]] = {name: [] for name in engines}
    for fn in engines.values():
        fn(images[:1], contexts[:1])
    for r in range(runs):
        i = r % len(images)
        for name, fn in engines.items():
            t0 = time.perf_counter()
            fn(images[i:i + 1], contexts[i:i + 1])
            samples[name].append(1000 * (time.perf_counter() - t0))
    return {name: _percentiles(ms) for name, ms in samples.items()}


@torch.no_grad()
def _parity_and_latency(model, export_dir: Path, gen: GenerationConfig, n: int, latency: bool,
                        latency_runs: int | None = None) -> dict:
    """The figures of `check_parity` for a loaded torch model and an export directory (see there)."""
    from model_core.modeling.generation import generate_texts
    from model_core.modeling.tokenizer import build_prompt, encode_example, pad_batch

    images, contexts = _test_studies(n, model.image_size)
    threads = torch.get_num_threads()
    has_int8 = (export_dir / DECODER_INT8_FILE).is_file()
    engines = {"fp32": OrtReportGenerator(export_dir, "fp32", gen=gen, threads=threads)}
    if has_int8:
        engines["int8"] = OrtReportGenerator(export_dir, "int8", gen=gen, threads=threads)

    # Vision outputs and the prompt's LM logits, torch vs ORT on the same inputs.
    feats = model.encode_images(images)
    visual_tokens = model.projector(feats[:, :, 1:].flatten(1, 2)).numpy()
    label_logits = model.detect(feats).numpy()
    views = images.shape[1]
    prefixes = [encode_example(model.tokenizer, build_prompt(c), None, views * model.num_image_tokens)[0]
                for c in contexts]
    ids, mask = pad_batch(prefixes, model.tokenizer.pad_token_id, left=True)
    embeds = model.merge_image_embeddings(feats, ids)
    positions = torch.from_numpy(_positions(mask.numpy()))
    torch_logits = model.language_model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).logits
    torch_logits = torch_logits.float().numpy()
    real = mask.numpy().astype(bool)   # left-padding positions produce unused logits; compare real tokens only

    greedy = replace(gen, num_beams=1)
    torch_greedy, _ = generate_texts(model, images, contexts, greedy)
    torch_beam, _ = generate_texts(model, images, contexts, gen)
    ort_vision = engines["fp32"].encode_images(images.numpy())
    parity: dict = {
        "n_studies": len(images), "num_beams": gen.num_beams, "max_new_tokens": gen.max_new_tokens,
        # Report lengths (not the texts) put the per-report latencies in context.
        "torch_mean_words": {"greedy": float(np.mean([len(t.split()) for t in torch_greedy])),
                             "beam": float(np.mean([len(t.split()) for t in torch_beam]))},
        "vision_visual_tokens_max_abs_diff": _max_abs(ort_vision[0], visual_tokens),
        "vision_label_logits_max_abs_diff": _max_abs(ort_vision[1], label_logits),
    }
    for name, engine in engines.items():
        logits, _ = engine.step(embeds.numpy(), mask.numpy(), positions.numpy(), engine.empty_past(len(images)))
        texts_greedy, _ = engine.generate(images.numpy(), contexts, num_beams=1)
        texts_beam, _ = engine.generate(images.numpy(), contexts)
        same_greedy = [a == b for a, b in zip(texts_greedy, torch_greedy)]
        same_beam = [a == b for a, b in zip(texts_beam, torch_beam)]
        parity[name] = {
            "prompt_logits_max_abs_diff": _max_abs(logits, torch_logits, real),
            "first_step_logits_max_abs_diff": _max_abs(logits[:, -1], torch_logits[:, -1]),
            "greedy_texts_identical": all(same_greedy), "greedy_identical_share": float(np.mean(same_greedy)),
            "beam_texts_identical": all(same_beam), "beam_identical_share": float(np.mean(same_beam)),
        }
    parity["fp32_ok"] = bool(parity["vision_visual_tokens_max_abs_diff"] < 1e-3
                             and parity["fp32"]["first_step_logits_max_abs_diff"] < 1e-3
                             and parity["fp32"]["greedy_texts_identical"])
    if not parity["fp32_ok"]:
        log.warning("ONNX FP32 parity check failed: %s", {k: v for k, v in parity.items() if k != "int8"})
    log.info("parity: vision %.2e, first-step logits fp32 %.2e%s, greedy texts identical (fp32) %s",
             parity["vision_visual_tokens_max_abs_diff"], parity["fp32"]["first_step_logits_max_abs_diff"],
             f", int8 {parity['int8']['first_step_logits_max_abs_diff']:.2e}" if has_int8 else "",
             parity["fp32"]["greedy_texts_identical"])
    out = {"parity": parity}
    if latency:
        out["latency"] = measure_latency(model, engines, images, contexts, gen, latency_runs or max(len(images), 4))
    return out


def measure_latency(model, engines: dict, images: torch.Tensor, contexts: list, gen: GenerationConfig,
                    runs: int, modes: tuple[str, ...] = ("beam", "greedy")) -> dict:
    """p50/p95 ms per report at batch 1: torch eager vs each ORT engine, beam (gen.num_beams) and greedy."""
    from model_core.modeling.generation import generate_texts

    out = {"batch_size": 1, "threads": torch.get_num_threads(), "runs": runs,
           "provider": next(iter(engines.values())).provider}
    for mode in modes:
        beams = gen.num_beams if mode == "beam" else 1
        torch_gen = replace(gen, num_beams=beams)
        fns = {"torch_eager": lambda x, c: generate_texts(model, x, c, torch_gen)}
        for name, engine in engines.items():
            fns[f"ort_{name}"] = lambda x, c, e=engine: e.generate(x.numpy(), c, num_beams=beams)
        row = {"num_beams": beams, **time_per_report(fns, images, contexts, runs)}
        eager = row["torch_eager"]["p50_ms"]
        row["speedup_vs_eager_p50"] = {name: round(eager / row[name]["p50_ms"], 2) for name in fns
                                       if name != "torch_eager" and row[name]["p50_ms"] > 0}
        out[mode] = row
    return out


def check_parity(model_dir: str | os.PathLike, export_dir: str | os.PathLike, n: int = 4,
                 gen: GenerationConfig | None = None, latency: bool = True, latency_runs: int | None = None,
                 write_report: bool = True) -> dict:
    """Torch vs ONNX Runtime on n embedded test studies; merged into export_dir/export_report.json.

    Returns {"parity": {vision diffs, "fp32"/"int8": {prompt/first-step logits max abs diff, greedy and beam
    texts identical (+ share)}, "fp32_ok"}, "latency": {...}} (latency unless latency=False).
    """
    from model_core.modeling.model_dir import load_model_dir

    model_dir, export_dir = _check_model_dir(model_dir), Path(export_dir)
    if not (export_dir / EXPORT_CONFIG_FILE).is_file():
        raise ExportError(f"{export_dir} is not an export directory ({EXPORT_CONFIG_FILE} missing)")
    model, _, saved = load_model_dir(model_dir)
    gen = gen or build_section(GenerationConfig, saved.get("generation", {}), "generation.")
    result = _parity_and_latency(model.float().eval(), export_dir, gen, n, latency, latency_runs)
    if write_report:
        path = export_dir / REPORT_FILE
        report = json.loads(path.read_text()) if path.is_file() else {}
        report.update(result)
        atomic_write_text(path, json.dumps(report, indent=2, default=float))
    return result
