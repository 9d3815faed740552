"""Evaluation feeds a two-view model the same view slots as training (`view_slots`): frontal then lateral, a
missing view marked (NaN) rather than an image given twice or dropped; the feature cache gives the same drafts."""

import numpy as np
import torch
from tiny_models import tiny_dinov2_config

from model_core.config import GenerationConfig
from model_core.data.iu_xray import group_studies, load_iu_xray, view_slots
from model_core.evaluation.evaluate import measure_latency, predict_studies
from model_core.modeling.generation import generate_texts
from model_core.modeling.model import RadiologyMultimodalModel

GEN = GenerationConfig(num_beams=2, max_new_tokens=6)


def _two_view_model(tokenizer):
    torch.manual_seed(0)
    return RadiologyMultimodalModel(tiny_dinov2_config(), tokenizer).eval()


def _dataset_with_a_missing_lateral():
    data = load_iu_xray(split="test", views=("Frontal", "Lateral"), image_size=32, limit_studies=5)
    studies = group_studies(data)
    assert all(s["frontal_rows"] and s["lateral_rows"] for s in studies[:1]), "fixture: study 0 has both views"
    drop = set(studies[0]["lateral_rows"])        # study 0 loses its lateral image
    keep = [i for i in range(len(data["images"])) if i not in drop]
    return {key: [value[i] for i in keep] if isinstance(value, list) else value for key, value in data.items()}


def test_two_view_slots_with_a_missing_lateral(tiny_tokenizer):
    model = _two_view_model(tiny_tokenizer)
    data = _dataset_with_a_missing_lateral()
    pred = predict_studies(model, data, GEN)
    pixels = pred["study_pixels"]
    assert pixels.shape[1] == 2 == model.num_views
    assert torch.isnan(pixels[0, 1]).all() and not torch.isnan(pixels[0, 0]).any()   # lateral slot marked missing
    for i, study in enumerate(pred["studies"]):
        assert [r is None for r in view_slots(study, 2)] == [bool(torch.isnan(pixels[i, v]).all()) for v in (0, 1)]
    # Each draft is what the model writes for that study's slots alone (batching changes nothing).
    alone, _ = generate_texts(model, pixels[1:2], [pred["studies"][1]["metadata"]], GEN)
    assert pred["texts"][1] == alone[0]


def test_the_feature_cache_gives_the_same_drafts_and_probabilities(tiny_tokenizer, tmp_path):
    model = _two_view_model(tiny_tokenizer)
    data = _dataset_with_a_missing_lateral()
    direct = predict_studies(model, data, GEN)
    cached = predict_studies(model, data, GEN, feature_cache=str(tmp_path / "features"))
    again = predict_studies(model, data, GEN, feature_cache=str(tmp_path / "features"))   # now from the cache
    assert any((tmp_path / "features").rglob("*")), "the cache was written"
    assert cached["texts"] == direct["texts"] == again["texts"]
    np.testing.assert_allclose(cached["logits"], direct["logits"], atol=1e-3)   # the cache keeps float16 features


def test_latency_is_measured_on_study_slots(tiny_tokenizer):
    model = _two_view_model(tiny_tokenizer)
    pred = predict_studies(model, _dataset_with_a_missing_lateral(), GEN)
    latency = measure_latency(model, pred["study_pixels"], GEN, n_single=2, n_batches=1)
    assert latency["views"] == 2 and latency["batch_1"]["p50_ms"] > 0
