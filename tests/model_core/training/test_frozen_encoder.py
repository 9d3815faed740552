"""Training with a frozen encoder over two view slots (the demo's shape, tiny DINOv2 from config): examples are
studies, stage 0 trains the detection head alone, features come once from the on-disk cache and a second run
reads them without encoding; the weighted and focal detection losses."""

import pytest
import torch
import torch.nn.functional as F
from tiny_models import tiny_dinov2_config, tiny_train_config

from model_core.data.iu_xray import group_studies, load_iu_xray
from model_core.modeling.model import RadiologyMultimodalModel, detection_loss
from model_core.training.examples import build_examples
from model_core.training.trainer import plan_stages, train_two_stage


@pytest.fixture(scope="module")
def two_view_data():
    views = ("Frontal", "Lateral")
    return (load_iu_xray(split="train", views=views, limit_studies=10),
            load_iu_xray(split="val", views=views, limit_studies=5))


def _model(tokenizer):
    torch.manual_seed(0)
    return RadiologyMultimodalModel(tiny_dinov2_config(), tokenizer)


def test_examples_are_studies_with_frontal_and_lateral_slots(tiny_tokenizer, two_view_data):
    train, _ = two_view_data
    model = _model(tiny_tokenizer)
    examples = build_examples(model, train, tiny_train_config())
    studies = group_studies(train)
    assert len(examples) == len(studies) == 10
    for study, slots in zip(studies, examples.slots):
        assert slots == [(study["frontal_rows"] or [None])[0], (study["lateral_rows"] or [None])[0]]
    pixels = examples.pixels(model)
    assert pixels.shape == (10, 2, 1, 32, 32)
    missing = [i for i, s in enumerate(examples.slots) if None in s]
    assert all(torch.isnan(pixels[i]).flatten(1).all(1).any() for i in missing)


def test_frozen_encoder_head_only_stage0_and_a_warm_cache_on_the_second_run(tiny_tokenizer, two_view_data, tmp_path):
    train, val = two_view_data
    cfg = tiny_train_config()
    cfg.feature_cache = str(tmp_path / "features")
    model = _model(tiny_tokenizer)
    assert plan_stages(model, cfg) == ["stage0_encoder", "stage0_lm", "stage1", "stage2"]
    encoder_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    head_before = model.detection_head.weight.clone()
    history = train_two_stage(model, train, val, cfg)
    assert set(history["stage0_encoder"][0]["train"]) == {"loss", "loss_detect", "loss_proj"}   # the head alone
    assert all(torch.equal(v, model.encoder.state_dict()[k]) for k, v in encoder_before.items())
    assert not torch.equal(head_before, model.detection_head.weight)
    entries = list((tmp_path / "features").rglob("*.npy"))
    assert len(entries) == len({p for ds in (train, val) for p in ds["images"]})

    second = _model(tiny_tokenizer)

    def no_encoding(*args, **kwargs):
        raise AssertionError("a warm cache must not run the encoder")

    second.encoder.forward = no_encoding
    history2 = train_two_stage(second, train, val, cfg)
    assert history2["stage2"][-1]["train"]["loss"] == pytest.approx(history["stage2"][-1]["train"]["loss"], rel=1e-4)


def test_positive_weights_come_from_the_training_labels(tiny_tokenizer):
    model = _model(tiny_tokenizer)
    targets = torch.zeros(10, 14)
    targets[:5, 0] = 1          # 5 / 5   → weight 1
    targets[:1, 1] = 1          # 1 / 9   → 9
    weights = model.set_label_frequencies(targets)   # no positives → the cap (10)
    assert weights[0] == 1 and weights[1] == 9 and weights[2] == model.config.pos_weight_max


def test_weighted_and_focal_detection_losses():
    torch.manual_seed(0)
    logits, targets = torch.randn(6, 14), (torch.rand(6, 14) > 0.7).float()
    weights = torch.full((14,), 3.0)
    assert torch.allclose(detection_loss(logits, targets, "bce", weights, 2.0),
                          F.binary_cross_entropy_with_logits(logits, targets))
    weighted = detection_loss(logits, targets, "weighted_bce", weights, 2.0)
    assert torch.allclose(weighted, F.binary_cross_entropy_with_logits(logits, targets, pos_weight=weights))
    assert torch.allclose(detection_loss(logits, targets, "focal", weights, 0.0), weighted)   # γ = 0: no focusing
    assert detection_loss(logits, targets, "focal", weights, 2.0) < weighted


def test_an_unknown_detection_loss_is_named(tiny_tokenizer):
    cfg = tiny_dinov2_config()
    cfg.detect_loss = "hinge"
    with pytest.raises(ValueError, match="model.detect_loss must be one of bce, weighted_bce, focal"):
        RadiologyMultimodalModel(cfg, tiny_tokenizer)
