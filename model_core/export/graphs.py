"""The exported graphs: exportable wrappers of the torch model and the exporters that write them.

    export_vision(model, path)            vision.onnx   images (B, V, 1, H, W) in [0, 1], NaN = missing view
                                          → visual_tokens (B, V·N, d_l), label_logits (B, 14)
                                          (pixel normalisation + encoder (ViT or DINOv2) + token pooling +
                                          projector + view masking + detection head; FP32)
    export_decoder(language_model, path)  decoder.onnx  one causal-LM step with a KV cache (FP32):
                                            inputs_embeds (B, T, d_l), attention_mask (B, P+T) int64,
                                            position_ids (B, T) int64, past_key_i / past_value_i (B, H_kv, P, D_h)
                                            for every layer i (P may be 0)
                                          → logits (B, T, V), present_key_i / present_value_i (B, H_kv, P+T, D_h)
    decoder_layout(language_model)        layers, KV heads, head size, hidden size and vocabulary of the decoder

The dynamo exporter (`torch.onnx.export(..., dynamo=True)`) is tried first; the TorchScript exporter is the
fallback. Both trace the same wrapper modules below, which build the 4-D attention mask themselves: the
transformers mask builder (vmap over a padding-mask index) cannot be traced by the TorchScript exporter.
The KV-cache tensor names come from `model_core.artifacts.past_names`, which the runtime reads them with.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn
from torch.export import Dim
from transformers import DynamicCache

from model_core.artifacts import PRESENT_PREFIX, past_names
from model_core.runtime.session import ExportError

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18
EXPORTERS = ("auto", "dynamo", "torchscript")
# Above this many weight bytes a graph is written with external data (protobuf files are capped at 2 GiB).
EXTERNAL_DATA_BYTES = 1_500_000_000


# --------------------------------------------------------------------------- exportable wrappers

class VisionExport(nn.Module):
    """images (B, V, 1, H, W) in [0, 1] (all-NaN: a missing view) → (visual_tokens (B, V·N, d_l), label_logits (B, 14)).

    The computation of `encode_images`, `project_visual_tokens` and `detect` of the torch model — pixel
    normalisation, encoder, token pooling, projector, missing-view masking and the detection head — so the runtime
    only has to scatter the visual tokens into the prompt embeddings. Written without data-dependent shapes: every
    slot goes through the encoder (a missing one as zeros) and is then masked exactly as the torch model masks the
    slots it never encodes, so a missing view's filler cannot reach either output. `check_parity` compares the two.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        model = self.model
        images = model.check_images(images)
        b, v = images.shape[:2]
        missing_pixels = torch.isnan(images)
        present = ~missing_pixels.flatten(2).all(dim=-1)                                    # (B, V)
        feats = model.encode_views(torch.where(missing_pixels, 0.0, images).flatten(0, 1))  # (B·V, 1 + N, d_v)
        feats = feats.reshape(b, v, *feats.shape[1:])
        feats = torch.where(present[..., None, None], feats, float("nan"))
        return model.project_visual_tokens(feats), model.detect(feats)


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


# --------------------------------------------------------------------------- exporters

@contextlib.contextmanager
def quiet_exporter_logs():
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
    with quiet_exporter_logs(), warnings.catch_warnings():
        # Harmless notes: axis names merged with equal constraints (e.g. `batch` shared by all inputs), and a
        # deprecation inside torch's own pytree code.
        warnings.filterwarnings("ignore", message=".*axis name.*will not be used", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
        torch.onnx.export(module, args, str(path), input_names=input_names, output_names=output_names,
                          dynamic_shapes=dynamic_shapes, opset_version=opset, dynamo=True,
                          external_data=external_data, verbose=False)


def _export_torchscript(module, args, path: Path, input_names, output_names, dynamic_axes, opset):
    with warnings.catch_warnings():
        # The legacy exporter warns about itself and about every Python branch it traces through.
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes, opset_version=opset, dynamo=False)


def _export_graph(name: str, module, args, path: Path, input_names, output_names, dynamic_shapes, dynamic_axes,
                  opset: int, exporter: str, external_data: bool) -> str:
    """Export with the dynamo exporter, falling back to TorchScript; returns the exporter that was used."""
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be auto, dynamo or torchscript, got {exporter!r}")
    used = None
    if exporter in ("auto", "dynamo"):
        try:
            _export_dynamo(module, args, path, input_names, output_names, dynamic_shapes, opset, external_data)
            used = "dynamo"
        except Exception as exc:
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
    """Write vision.onnx; dynamic batch B, the model's V view slots. Returns the exporter used."""
    size = model.image_size
    # Example batch 2 (not 0/1, which torch.export would specialise); the last slot of the second study is missing.
    example = torch.rand(2, model.num_views, 1, size, size)
    if model.num_views > 1:
        example[1, -1] = float("nan")
    batch = Dim("batch")
    return _export_graph(
        "vision", VisionExport(model).eval(), (example,), path, ["images"], ["visual_tokens", "label_logits"],
        dynamic_shapes={"images": {0: batch}},
        dynamic_axes={"images": {0: "batch"}, "visual_tokens": {0: "batch"}, "label_logits": {0: "batch"}},
        opset=opset, exporter=exporter, external_data=weight_bytes(model.encoder) > EXTERNAL_DATA_BYTES)


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
    layout = decoder_layout(language_model)
    n_layers = layout["num_layers"]
    b, t, p = 2, 5, 3   # distinct example sizes > 1 so that no dimension is specialised or merged
    args = (torch.randn(b, t, layout["hidden_size"]), torch.ones(b, p + t, dtype=torch.long),
            torch.arange(p, p + t).expand(b, t).clone(),
            *[torch.randn(b, layout["kv_heads"], p, layout["head_dim"]) for _ in range(2 * n_layers)])
    inputs = ["inputs_embeds", "attention_mask", "position_ids", *past_names(n_layers)]
    outputs = ["logits", *past_names(n_layers, PRESENT_PREFIX)]
    batch, seq, past_len, total = Dim("batch"), Dim("seq"), Dim("past_len"), Dim("total_len")
    dynamic_shapes = {"inputs_embeds": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: total},
                      "position_ids": {0: batch, 1: seq}, "past": tuple({0: batch, 2: past_len} for _ in args[3:])}
    dynamic_axes = {"inputs_embeds": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "total_len"},
                    "position_ids": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}}
    dynamic_axes.update({name: {0: "batch", 2: "past_len"} for name in past_names(n_layers)})
    dynamic_axes.update({name: {0: "batch", 2: "total_len"} for name in past_names(n_layers, PRESENT_PREFIX)})
    return _export_graph("decoder", DecoderStep(language_model).eval(), args, path, inputs, outputs, dynamic_shapes,
                         dynamic_axes, opset, exporter, weight_bytes(language_model) > EXTERNAL_DATA_BYTES)


def weight_bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def graph_bytes(path: Path) -> int:
    """Size of an ONNX file together with its external-data file(s) (decoder.onnx, decoder.onnx.data)."""
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())
