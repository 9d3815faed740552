"""The frozen-encoder feature cache: hits, misses, and invalidation by weights id, image bytes, size and pooling."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from model_core.data.manifest import DataError
from model_core.modeling.feature_cache import (
    FeatureCache,
    cls_and_pooled_patches,
    pooling_spec,
    weights_fingerprint,
)

TOKENS, DIM = 17, 8


class _Encoder:
    """A stand-in compute_fn: features derived from the file bytes, with a record of what it was asked."""

    def __init__(self, scale: float = 1.0):
        self.calls: list[list[str]] = []
        self.scale = scale

    def __call__(self, paths: list[Path]) -> torch.Tensor:
        self.calls.append([p.name for p in paths])
        seeds = [sum(p.read_bytes()) for p in paths]
        return torch.stack([torch.arange(TOKENS * DIM).reshape(TOKENS, DIM) * 0.01 * self.scale + s for s in seeds])


@pytest.fixture()
def images(tmp_path: Path) -> list[Path]:
    paths = []
    for i in range(5):
        p = tmp_path / "img" / f"{i}.png"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(bytes([i + 1]) * 10)
        paths.append(p)
    return paths


def test_first_call_misses_second_hits(tmp_path, images):
    cache, enc = FeatureCache(tmp_path / "cache", "w1"), _Encoder()
    first = cache.get_or_compute(images, 224, enc)
    assert first.shape == (5, TOKENS, DIM) and first.dtype == np.float32
    assert cache.stats() == {"hits": 0, "misses": 5}
    second = cache.get_or_compute(images, 224, enc)
    assert cache.stats() == {"hits": 5, "misses": 5} and len(enc.calls) == 1
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first, enc(images).numpy(), rtol=1e-3)   # float16 on disk


def test_only_the_misses_are_computed_in_batches(tmp_path, images):
    cache, enc = FeatureCache(tmp_path / "cache", "w1"), _Encoder()
    cache.get_or_compute(images[:2], 224, enc)
    cache.get_or_compute(images, 224, enc, batch_size=2)
    assert enc.calls == [["0.png", "1.png"], ["2.png", "3.png"], ["4.png"]]
    assert cache.stats() == {"hits": 2, "misses": 5}


def test_other_weights_miss(tmp_path, images):
    FeatureCache(tmp_path / "cache", "w1").get_or_compute(images, 224, _Encoder())
    other, enc = FeatureCache(tmp_path / "cache", "w2"), _Encoder(scale=2.0)
    out = other.get_or_compute(images, 224, enc)
    assert other.stats() == {"hits": 0, "misses": 5}
    np.testing.assert_allclose(out, enc(images).numpy(), rtol=1e-3)


def test_changed_image_bytes_miss(tmp_path, images):
    cache, enc = FeatureCache(tmp_path / "cache", "w1"), _Encoder()
    before = cache.get_or_compute(images, 224, enc)
    images[3].write_bytes(b"\x09" * 10)
    after = cache.get_or_compute(images, 224, enc)
    assert enc.calls[-1] == ["3.png"] and cache.stats() == {"hits": 4, "misses": 6}
    assert not np.allclose(before[3], after[3]) and np.array_equal(before[:3], after[:3])


def test_other_size_pooling_or_preprocessing_miss(tmp_path, images):
    root = tmp_path / "cache"
    FeatureCache(root, "w1").get_or_compute(images, 224, _Encoder())
    for cache, size in [(FeatureCache(root, "w1"), 252), (FeatureCache(root, "w1", pooling=pooling_spec(3)), 224),
                        (FeatureCache(root, "w1", preprocessing="imagenet"), 224)]:
        cache.get_or_compute(images, size, _Encoder())
        assert cache.stats() == {"hits": 0, "misses": 5}


def test_an_unreadable_entry_is_recomputed(tmp_path, images):
    cache, enc = FeatureCache(tmp_path / "cache", "w1"), _Encoder()
    cache.get_or_compute(images, 224, enc)
    entry = next((tmp_path / "cache").rglob("*.npy"))
    entry.write_bytes(b"truncated")
    cache.get_or_compute(images, 224, enc)
    assert cache.stats()["misses"] == 6 and len(enc.calls[-1]) == 1


def test_bad_input_and_bad_compute_output_are_clear_errors(tmp_path, images):
    cache = FeatureCache(tmp_path / "cache", "w1")
    with pytest.raises(DataError, match="not found"):
        cache.get_or_compute([tmp_path / "absent.png"], 224, _Encoder())
    with pytest.raises(DataError, match="no images"):
        cache.get_or_compute([], 224, _Encoder())
    with pytest.raises(ValueError, match="expected \\(5, tokens, dim\\)"):
        cache.get_or_compute(images, 224, lambda paths: np.zeros((1, TOKENS, DIM)))
    with pytest.raises(ValueError, match="non-finite"):
        cache.get_or_compute(images, 224, lambda paths: np.full((len(paths), TOKENS, DIM), np.nan))
    with pytest.raises(ValueError, match="weights_id"):
        FeatureCache(tmp_path / "cache", "")


def test_cls_and_pooled_patches_layout():
    hidden = torch.randn(2, 1 + 16 * 16, DIM)
    out = cls_and_pooled_patches(hidden, 4)
    assert out.shape == (2, 17, DIM)
    torch.testing.assert_close(out[:, 0], hidden[:, 0])
    grid = hidden[:, 1:].reshape(2, 16, 16, DIM)
    torch.testing.assert_close(out[:, 1], grid[:, :4, :4].mean(dim=(1, 2)))      # top-left 4×4 block
    torch.testing.assert_close(out[:, 16], grid[:, 12:, 12:].mean(dim=(1, 2)))   # bottom-right block


def test_weights_fingerprint_changes_with_any_weight():
    torch.manual_seed(0)
    a = nn.Linear(3, 2)
    before = weights_fingerprint(a)
    assert weights_fingerprint(a) == before
    with torch.no_grad():
        a.bias[1] += 1e-6
    assert weights_fingerprint(a) != before


# --------------------------------------------------------------------------- a model's features through the cache

def test_a_models_features_are_cached_and_keyed_by_its_encoder(tmp_path, tiny_tokenizer, tiny_data):
    from tiny_models import tiny_dinov2_config

    from model_core.data.images import load_images
    from model_core.modeling.feature_cache import encode_image_files, model_feature_cache
    from model_core.modeling.model import RadiologyMultimodalModel

    torch.manual_seed(0)
    model = RadiologyMultimodalModel(tiny_dinov2_config(), tiny_tokenizer).eval()
    paths = tiny_data[0]["images"][:3]
    cache = model_feature_cache(model, tmp_path)
    feats = encode_image_files(model, paths, cache)
    with torch.no_grad():
        direct = model.encode_views(load_images(paths, 32))
    # CLS, 4 pooled patches, the first layer's CLS (detect_layers 2); float16 on disk
    assert feats.shape == (3, 1 + 4 + 1, 32) and torch.allclose(feats, direct, atol=2e-2, rtol=1e-2)
    again = model_feature_cache(model, tmp_path)
    assert torch.equal(encode_image_files(model, paths, again), feats) and again.stats() == {"hits": 3, "misses": 0}
    one_layer = dataclasses.replace(model.config, vision=dataclasses.replace(model.config.vision, detect_layers=1))
    other_layout = RadiologyMultimodalModel(one_layer, tiny_tokenizer, encoder=model.encoder).eval()
    fewer = model_feature_cache(other_layout, tmp_path)    # the same weights, another layout: another key
    assert encode_image_files(other_layout, paths, fewer).shape == (3, 1 + 4, 32)
    assert fewer.stats() == {"hits": 0, "misses": 3}
    with torch.no_grad():
        model.encoder.layernorm.bias.add_(0.1)       # other weights: other keys, never a stale entry
    changed = model_feature_cache(model, tmp_path)
    encode_image_files(model, paths, changed)
    assert changed.stats() == {"hits": 0, "misses": 3}


def test_study_features_fill_missing_views_with_nan():
    from model_core.modeling.feature_cache import study_features

    per_image = torch.arange(3 * 2 * 4, dtype=torch.float32).reshape(3, 2, 4)
    out = study_features(per_image, [[0, 1], [2, None], [None, 0]])
    assert out.shape == (3, 2, 2, 4)
    assert torch.equal(out[0, 1], per_image[1]) and torch.isnan(out[1, 1]).all() and torch.isnan(out[2, 0]).all()
    with pytest.raises(ValueError, match="different numbers of view slots"):
        study_features(per_image, [[0, 1], [2]])
