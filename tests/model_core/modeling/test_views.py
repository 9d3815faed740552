"""Two view slots (frontal, lateral): batching, the missing-view mask, and the frozen encoder of the demo's shape
(a tiny DINOv2 built from config: no download)."""

import pytest
import torch
from tiny_models import tiny_dinov2_config

from model_core.data.images import missing_view, stack_views
from model_core.data.manifest import DataError
from model_core.modeling.model import ModelInputError, RadiologyMultimodalModel
from model_core.modeling.tokenizer import build_prompt, encode_example, pad_batch

NAN = float("nan")


@pytest.fixture()
def model(tiny_tokenizer):
    torch.manual_seed(0)
    return RadiologyMultimodalModel(tiny_dinov2_config(), tiny_tokenizer).eval()


def _head_input(model, view_features):
    """One view's features (…, 1 + N + k−1, d) → what the detection head reads: the CLS of the last k layers."""
    n = model.num_image_tokens
    return torch.cat([view_features[..., 0, :], view_features[..., 1 + n:, :].flatten(-2)], dim=-1)


def _prompts(model, n):
    ids = [encode_example(model.tokenizer, build_prompt({"age": 50}), None, model.image_tokens_per_study)[0]
           for _ in range(n)]
    return pad_batch(ids, model.tokenizer.pad_token_id, left=True)


def test_a_batch_mixing_complete_and_incomplete_studies(model):
    torch.manual_seed(1)
    frontal, lateral = torch.rand(3, 1, 32, 32), torch.rand(3, 1, 32, 32)
    images = torch.stack([stack_views([frontal[0], lateral[0]], 32), stack_views([frontal[1], None], 32),
                          stack_views([None, lateral[2]], 32)])
    ids, mask = _prompts(model, 3)
    with torch.no_grad():
        out = model(images=images, input_ids=ids, attention_mask=mask)
        alone = [model(images=images[i:i + 1], input_ids=ids[i:i + 1], attention_mask=mask[i:i + 1])
                 for i in range(3)]
    assert not torch.isnan(out.logits).any() and not torch.isnan(out.label_logits).any()
    for i in range(3):   # each study's outputs do not depend on the other studies of its batch
        assert torch.allclose(out.label_logits[i], alone[i].label_logits[0], atol=1e-5)
        real = mask[i].bool()
        assert torch.allclose(out.logits[i][real], alone[i].logits[0][real], atol=1e-4)


def test_a_missing_view_is_masked_not_encoded(model):
    torch.manual_seed(2)
    frontal = torch.rand(1, 1, 1, 32, 32)
    both = torch.cat([frontal, missing_view(32)[None, None]], dim=1)
    calls = []
    model.encoder.register_forward_hook(lambda mod, args, kwargs, out: calls.append(len(kwargs["pixel_values"])),
                                        with_kwargs=True)
    with torch.no_grad():
        feats = model.encode_images(both)
        short = model.encode_images(frontal)          # K < V: the lateral slot is missing
    assert calls == [1, 1]                              # only the frontal image went through the encoder
    assert torch.isnan(feats[0, 1]).all() and not torch.isnan(feats[0, 0]).any()
    assert torch.equal(feats.isnan(), short.isnan()) and torch.equal(feats[0, 0], short[0, 0])
    with torch.no_grad():
        tokens = model.project_visual_tokens(feats)
        frontal_logits = model.detection_head(_head_input(model, feats[0, 0]))
    n = model.num_image_tokens
    assert torch.equal(tokens[0, n:], model.projector.missing_view.expand(n, -1))
    assert torch.allclose(model.detect(feats)[0], frontal_logits)   # only the present view counts


def test_detection_averages_the_views_present(model):
    torch.manual_seed(3)
    images = torch.rand(1, 2, 1, 32, 32)
    with torch.no_grad():
        feats = model.encode_images(images)
        per_view = model.detection_head(_head_input(model, feats[0]))
        assert torch.allclose(model.detect(feats)[0], per_view.mean(0), atol=1e-6)


@pytest.mark.parametrize("images, message", [
    (torch.rand(1, 3, 1, 32, 32), "at most 2 view"),
    (torch.full((1, 2, 1, 32, 32), NAN), "has no image"),
])
def test_bad_view_slots_are_clear_errors(model, images, message):
    with pytest.raises(ModelInputError, match=message):
        model.encode_images(images)


def test_the_head_reads_the_last_layers_cls_and_the_projector_only_the_patches(model, tiny_tokenizer):
    torch.manual_seed(4)
    feats = model.encode_images(torch.rand(2, 2, 1, 32, 32))
    n = model.num_image_tokens
    assert feats.shape[2] == 1 + n + 1 and model.detection_head.in_features == 2 * 32
    earlier = feats.clone()
    earlier[:, :, 1 + n:] += 1.0                               # only the first layer's CLS changes
    with torch.no_grad():
        assert not torch.allclose(model.detect(earlier), model.detect(feats))
        assert torch.equal(model.project_visual_tokens(earlier), model.project_visual_tokens(feats))
    ids, mask = _prompts(model, 2)
    with pytest.raises(ModelInputError, match="tokens per view"):     # features of another layout
        model(vision_features=feats[:, :, :-1], input_ids=ids, attention_mask=mask)
    cfg = tiny_dinov2_config()
    cfg.vision.detect_layers = 3                                # the encoder has 2 layers
    with pytest.raises(ModelInputError, match="detect_layers must be between 1 and the encoder's 2 layers"):
        RadiologyMultimodalModel(cfg, tiny_tokenizer)


def test_a_partly_nan_image_is_an_error_not_a_missing_view(model):
    images = torch.rand(1, 2, 1, 32, 32)
    images[0, 0, 0, 0, 0] = NAN
    with pytest.raises(ModelInputError, match="non-finite pixels"):
        model.encode_images(images)


def test_stack_views_needs_one_image():
    with pytest.raises(DataError, match="at least one image"):
        stack_views([None, None], 32)
    assert torch.isnan(stack_views([None, torch.zeros(1, 32, 32)], 32)[0]).all()


def test_the_frozen_encoder_never_trains(model):
    model.train()
    assert not model.encoder.training and model.projector.training
    assert not any(p.requires_grad for p in model.encoder.parameters())
    for stage in ("stage0_encoder", "stage1", "stage2"):
        parts = model.set_trainable(stage)
        assert "encoder" not in parts and not any(p.requires_grad for p in model.encoder.parameters())
    assert model.set_trainable("stage0_encoder") == ["detection_head"]


def test_pixels_are_normalised_inside_the_model_with_imagenet_statistics(model):
    assert model.in_channels == 3
    assert torch.allclose(model.pixel_mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    assert torch.allclose(model.pixel_std.flatten(), torch.tensor([0.229, 0.224, 0.225]))
    grey = torch.rand(2, 1, 32, 32)
    rgb = (grey.expand(-1, 3, -1, -1) - model.pixel_mean) / model.pixel_std
    with torch.no_grad():
        out = model.encoder(pixel_values=rgb, output_hidden_states=True)
        # CLS + pooled patches of the last layer, then the first layer's CLS through the same final LayerNorm
        expected = torch.cat([model.pool_hidden(out.last_hidden_state),
                              model.encoder.layernorm(out.hidden_states[1][:, :1])], dim=1)
        assert model.detect_layers == 2 and torch.allclose(model.encode_views(grey), expected)


def test_save_and_load_keep_the_views_the_encoder_and_its_statistics(model, tmp_path):
    model.save_pretrained(tmp_path / "m")
    loaded = RadiologyMultimodalModel.from_pretrained(tmp_path / "m")
    assert loaded.num_views == 2 and type(loaded.encoder).__name__ == "Dinov2Model"
    assert loaded.config.vision.pretrained is None and loaded.config.vision.freeze
    assert torch.equal(loaded.pixel_mean, model.pixel_mean)
    images = torch.rand(2, 2, 1, 32, 32)
    images[1, 1] = NAN
    with torch.no_grad():
        assert torch.equal(model.detect(model.encode_images(images)), loaded.detect(loaded.encode_images(images)))


def test_findings_reach_the_lm_without_training_the_head_through_it(tiny_tokenizer):
    cfg = tiny_dinov2_config()
    cfg.findings_to_lm = True
    torch.manual_seed(0)
    model = RadiologyMultimodalModel(cfg, tiny_tokenizer).eval()
    images = torch.rand(2, 2, 1, 32, 32)
    feats = model.encode_images(images)
    plain = model.projector(feats[:, :, 1:1 + model.num_image_tokens]).flatten(1, 2)
    assert torch.equal(model.project_visual_tokens(feats), plain)          # zero-initialised: the plain projector
    with torch.no_grad():
        model.projector.findings.weight.normal_()
    probs = torch.sigmoid(model.detect(feats))
    expected = plain + model.projector.findings(probs)[:, None, :]
    assert torch.allclose(model.project_visual_tokens(feats), expected, atol=1e-6)
    ids, mask = _prompts(model, 2)
    model(vision_features=feats, input_ids=ids, attention_mask=mask).logits.sum().backward()
    assert model.detection_head.weight.grad is None and model.projector.findings.weight.grad is not None
