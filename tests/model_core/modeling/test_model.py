"""model_core.modeling.model: forward shapes and loss terms, input errors, save/load, pretrained parts."""

import pytest
import torch
from tiny_models import tiny_dinov2_config, tiny_model_config
from transformers import GPT2Config, GPT2LMHeadModel, ViTConfig, ViTModel

from model_core.artifacts import MODEL_CONFIG
from model_core.modeling.model import ModelInputError, RadiologyMultimodalModel
from model_core.modeling.tokenizer import build_prompt, encode_example, pad_batch


@pytest.fixture()
def two_view_model(tiny_tokenizer):
    torch.manual_seed(0)
    return RadiologyMultimodalModel(tiny_dinov2_config(), tiny_tokenizer).eval()


def _batch(model, n=2):
    ids, labels = zip(*[encode_example(model.tokenizer, build_prompt({"age": 60, "sex": "F"}),
                                       "FINDINGS: The lungs are clear.", model.num_image_tokens) for _ in range(n)])
    ids, mask = pad_batch(list(ids), model.tokenizer.pad_token_id)
    labels, _ = pad_batch(list(labels), -100)
    return ids, mask, labels


def test_forward_shapes_and_loss_terms(tiny_model):
    ids, mask, labels = _batch(tiny_model)
    images = torch.rand(2, 1, 32, 32)
    out = tiny_model(images=images, input_ids=ids, attention_mask=mask, labels=labels,
                     finding_labels=torch.zeros(2, 14))
    assert out.logits.shape == (2, ids.shape[1], len(tiny_model.tokenizer))
    assert out.label_logits.shape == (2, 14)
    expected = 1.0 * out.loss_report + 0.5 * out.loss_detect + 1e-4 * out.loss_proj
    assert torch.allclose(out.loss, expected)
    proj_l2 = sum(p.pow(2).sum() for p in tiny_model.projector.parameters())
    assert torch.allclose(out.loss_proj, proj_l2)


def test_projector_is_linear_gelu_linear(tiny_model):
    p = tiny_model.projector
    assert (p.linear_1.in_features, p.linear_1.out_features, p.linear_2.out_features) == (32, 64, 32)
    z = torch.randn(3, 32)
    assert torch.allclose(p(z), p.linear_2(torch.nn.functional.gelu(p.linear_1(z))))


def test_loss_ignores_prompt_and_image_tokens(tiny_model):
    ids, mask, labels = _batch(tiny_model, 1)
    image_positions = ids == tiny_model.image_token_id
    assert image_positions.sum() == tiny_model.num_image_tokens
    assert (labels[image_positions] == -100).all()
    assert (labels[0, :5] == -100).all() and (labels != -100).sum() > 3


def test_two_views_double_the_image_tokens(two_view_model):
    tok = two_view_model.tokenizer
    assert two_view_model.image_tokens_per_study == 2 * two_view_model.num_image_tokens
    ids, _ = encode_example(tok, "x", "FINDINGS: ok.", two_view_model.image_tokens_per_study)
    out = two_view_model(images=torch.rand(1, 2, 1, 32, 32), input_ids=torch.tensor([ids]))
    assert out.logits.shape[1] == len(ids)


def test_one_view_model_refuses_a_second_view(tiny_model):
    with pytest.raises(ModelInputError, match="at most 1 view"):
        tiny_model(images=torch.rand(1, 2, 1, 32, 32))


@pytest.mark.parametrize("images, message", [
    (torch.rand(2, 3, 32, 32), "single-channel grayscale"),
    (torch.rand(2, 1, 64, 64), "must be 32×32"),
    (torch.rand(0, 1, 32, 32), "empty batch"),
    (torch.rand(32, 32), "must be \\(B, 1, H, W\\)"),
])
def test_bad_images_get_clear_errors(tiny_model, images, message):
    with pytest.raises(ModelInputError, match=message):
        tiny_model(images=images)


def test_image_token_count_mismatch_is_explained(tiny_model):
    ids, _ = encode_example(tiny_model.tokenizer, "x", "FINDINGS: ok.", tiny_model.num_image_tokens - 1)
    with pytest.raises(ModelInputError, match="image-token count mismatch"):
        tiny_model(images=torch.rand(1, 1, 32, 32), input_ids=torch.tensor([ids]))


def test_projector_output_must_match_lm(tiny_tokenizer):
    cfg = tiny_model_config()
    cfg.projector_out = 48
    with pytest.raises(ModelInputError, match="does not match the language model's hidden size 32"):
        RadiologyMultimodalModel(cfg, tiny_tokenizer)


def test_save_and_load_round_trip(tiny_model, tmp_path):
    tiny_model.eval()
    tiny_model.save_pretrained(tmp_path / "m")
    loaded = RadiologyMultimodalModel.from_pretrained(tmp_path / "m")
    ids, mask, _ = _batch(tiny_model)
    images = torch.rand(2, 1, 32, 32)
    a = tiny_model(images=images, input_ids=ids, attention_mask=mask)
    b = loaded(images=images, input_ids=ids, attention_mask=mask)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.label_logits, b.label_logits)


def test_from_pretrained_names_missing_parts(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"not a model directory: {MODEL_CONFIG} is missing"):
        RadiologyMultimodalModel.from_pretrained(tmp_path)


def test_pretrained_parts_load_from_local_checkpoints(tmp_path, tiny_tokenizer):
    """A user-pointed HF checkpoint (here a tiny ViT and GPT-2 saved locally) is loaded with from_pretrained."""
    ViTModel(ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=64)).save_pretrained(tmp_path / "vit")
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tiny_tokenizer), n_positions=256, n_embd=32, n_layer=1,
                               n_head=2)).save_pretrained(tmp_path / "gpt2")
    cfg = tiny_model_config()
    cfg.vision.pretrained, cfg.text.pretrained = str(tmp_path / "vit"), str(tmp_path / "gpt2")
    cfg.vision.detect_layers = 1       # the checkpoint has one layer
    model = RadiologyMultimodalModel(cfg, tiny_tokenizer)
    assert model.in_channels == 3 and model.num_image_tokens == 4
    out = model(images=torch.rand(1, 1, 32, 32))
    assert out.label_logits.shape == (1, 14)
