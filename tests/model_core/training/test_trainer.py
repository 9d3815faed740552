"""model_core.training.trainer: stages, their trainable parts, checkpoints and resume, LoRA."""

import json

import pytest
import torch
from tiny_models import SMOKE, tiny_model_config, tiny_train_config

from model_core.artifacts import CHECKPOINTS_DIR, HISTORY, LAST_CHECKPOINT, MODEL_CARD, REFERENCE_SUMMARY
from model_core.chexpert import CHEXPERT_LABELS
from model_core.config import LoraConfig, StageConfig, load_config
from model_core.modeling.model import RadiologyMultimodalModel
from model_core.modeling.model_dir import load_model_dir
from model_core.modeling.tokenizer import build_prompt, encode_example
from model_core.provenance import collect_provenance, version_string
from model_core.sbom import read_sbom
from model_core.training.trainer import StopTraining, plan_stages, train_report_model, train_two_stage


def _trainable_parts(model):
    return {name for name, module in model.named_children() if any(p.requires_grad for p in module.parameters())}


@pytest.mark.parametrize("stage, parts", [
    ("stage0_encoder", {"encoder", "detection_head"}),
    ("stage0_lm", {"language_model"}),
    ("stage1", {"projector", "detection_head"}),
    ("stage2", {"projector", "detection_head", "language_model"}),
])
def test_each_stage_trains_only_its_parts(tiny_model, stage, parts):
    tiny_model.set_trainable(stage)
    assert _trainable_parts(tiny_model) == parts


def test_stage1_gradients_reach_projector_not_lm_or_encoder(tiny_model, tiny_data):
    tiny_model.set_trainable("stage1")
    ids, labels = encode_example(tiny_model.tokenizer, build_prompt(None), "FINDINGS: Clear lungs.",
                                 tiny_model.num_image_tokens)
    out = tiny_model(images=torch.rand(1, 1, 32, 32), input_ids=torch.tensor([ids]), labels=torch.tensor([labels]),
                     finding_labels=torch.zeros(1, 14))
    out.loss.backward()
    # (the projector's missing_view vector gets gradients only from studies that lack a view)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for name, p in tiny_model.projector.named_parameters()
               if name != "missing_view")
    assert all(p.grad is None for p in tiny_model.language_model.parameters())
    assert all(p.grad is None for p in tiny_model.encoder.parameters())


def test_stage0_is_skipped_for_pretrained_parts(tiny_model):
    cfg = tiny_train_config()
    assert plan_stages(tiny_model, cfg) == ["stage0_encoder", "stage0_lm", "stage1", "stage2"]
    tiny_model.config.vision.pretrained = "/some/checkpoint"
    assert plan_stages(tiny_model, cfg) == ["stage0_lm", "stage1", "stage2"]


def test_two_stage_history_and_encoder_frozen_after_stage0(tiny_model, tiny_data, tmp_path):
    train, val = tiny_data
    history = train_two_stage(tiny_model, train, val, tiny_train_config(), checkpoint_dir=tmp_path)
    assert list(history) == ["stage0_encoder", "stage0_lm", "stage1", "stage2"]
    assert len(history["stage2"]) == 2
    for term in ("loss", "loss_report", "loss_detect", "loss_proj"):
        assert term in history["stage2"][0]["train"] and term in history["stage2"][0]["val"]
    assert (tmp_path / "last.pt").is_file()


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("deepspeed", [None, "configs/deepspeed/zero2.json"])
def test_resume_equals_uninterrupted_run(tiny_tokenizer, tiny_data, tmp_path, deepspeed):
    train, val = tiny_data
    cfg = tiny_train_config(deepspeed)
    torch.manual_seed(0)
    full = RadiologyMultimodalModel(tiny_model_config(), tiny_tokenizer)
    train_two_stage(full, train, val, cfg, checkpoint_dir=tmp_path / "a")

    torch.manual_seed(0)
    interrupted = RadiologyMultimodalModel(tiny_model_config(), tiny_tokenizer)
    with pytest.raises(StopTraining):
        # stage0_encoder, stage0_lm, stage1, then stop after the first of stage2's two epochs
        train_two_stage(interrupted, train, val, cfg, checkpoint_dir=tmp_path / "b", stop_after_epochs=4)
    torch.manual_seed(123)  # a fresh process: different init, everything must come from the checkpoint
    resumed = RadiologyMultimodalModel(tiny_model_config(), tiny_tokenizer)
    history = train_two_stage(resumed, train, val, cfg, checkpoint_dir=tmp_path / "b", resume=True)
    assert len(history["stage2"]) == 2
    a, b = _weights(full), _weights(resumed)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
    if deepspeed:
        assert history["stage2"][-1]["backend"] == "deepspeed"


def test_resume_without_checkpoint_is_an_error(tiny_model, tiny_data, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train_two_stage(tiny_model, *tiny_data, tiny_train_config(), checkpoint_dir=tmp_path, resume=True)


def test_empty_dataset_is_an_error(tiny_model, tiny_data):
    empty = {"images": [], "reports": [], "labels": torch.zeros(0, 14), "metadata": []}
    with pytest.raises(ValueError, match="train dataset is empty"):
        train_two_stage(tiny_model, empty, tiny_data[1], tiny_train_config())


def test_lora_trains_adapters_only_and_merges_into_a_plain_lm(tiny_model, tiny_data):
    cfg = tiny_train_config()
    cfg.lora = LoraConfig(enabled=True, r=4, alpha=8, dropout=0.0, target_modules=["c_attn"])
    cfg.stage0_encoder = cfg.stage0_lm = StageConfig(0, 1e-3)
    base_before = tiny_model.language_model.transformer.h[0].mlp.c_fc.weight.clone()
    attn_before = tiny_model.language_model.transformer.h[0].attn.c_attn.weight.clone()
    tiny_model.apply_lora(cfg.lora)
    tiny_model.set_trainable("stage2")
    trainable = [n for n, p in tiny_model.language_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    train_two_stage(tiny_model, *tiny_data, cfg)
    assert not tiny_model.has_lora  # merged
    lm = tiny_model.language_model
    assert torch.equal(lm.transformer.h[0].mlp.c_fc.weight, base_before)      # untouched by LoRA
    assert not torch.equal(lm.transformer.h[0].attn.c_attn.weight, attn_before)  # adapters merged in


def test_train_report_model_writes_a_complete_directory_with_provenance(tmp_path):
    cfg = load_config(SMOKE, ["data.limit_studies=8", "train.deepspeed=null"])
    model_dir = train_report_model(cfg, tmp_path / "model")
    card = json.loads((model_dir / MODEL_CARD).read_text())
    assert set(card["provenance"]) == set(collect_provenance())   # recorded once, at training time
    assert card["version"] == version_string(card["provenance"])
    assert card["encoder"]["architecture"] == "dinov2" and card["encoder"]["frozen"] and card["encoder"]["views"] == 2
    model, detection, saved = load_model_dir(model_dir)
    assert set(detection["thresholds"]) == set(CHEXPERT_LABELS) and saved["name"] == "smoke"
    assert (model_dir / HISTORY).is_file() and (model_dir / CHECKPOINTS_DIR / LAST_CHECKPOINT).is_file()
    # written at training, before the card: the monitors' reference (held-out test studies) and the SBOM
    reference = json.loads((model_dir / REFERENCE_SUMMARY).read_text())
    assert reference["source"] == "test split" and reference["n_reference"] == 8 and reference["n_fit"] == 8
    assert read_sbom(model_dir)["components"]
