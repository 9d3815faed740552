"""The findings hint: what the prompt states, the thresholds chosen on validation, and generation using them."""

import math

import numpy as np
import pytest
import torch
from tiny_models import tiny_dinov2_config

from model_core.chexpert import CHEXPERT_LABELS, LABEL_INDEX
from model_core.config import GenerationConfig
from model_core.modeling.generation import generate_texts
from model_core.modeling.hints import hinted_findings, logit_threshold, names_of
from model_core.modeling.model import RadiologyMultimodalModel
from model_core.modeling.tokenizer import build_prompt
from model_core.training.calibration import hint_thresholds


def _vector(*labels):
    v = np.zeros(len(CHEXPERT_LABELS), int)
    for label in labels:
        v[LABEL_INDEX[label]] = 1
    return v


def test_the_prompt_states_findings_in_chexpert_order_and_never_no_finding():
    assert names_of(_vector("Pleural Effusion", "Cardiomegaly", "No Finding")) == ["cardiomegaly", "pleural effusion"]
    assert names_of(_vector("Pleural Other")) == ["other pleural abnormality"]
    prompt = build_prompt({"sex": "F", "indication": "chest pain"}, findings=["cardiomegaly"])
    assert prompt.endswith("Sex: F. Detected: cardiomegaly. Indication: chest pain.")
    assert "Detected: none." in build_prompt(None, findings=[])
    assert "Detected" not in build_prompt(None)                      # the hint off: the prompt as before


def test_hinted_findings_compare_raw_logits_with_the_thresholds():
    thresholds = [math.inf] * 14
    thresholds[LABEL_INDEX["Edema"]] = logit_threshold(0.7, temperature=2.0)    # p = σ(logit / 2) ≥ 0.7
    logits = np.zeros((2, 14))
    logits[0, LABEL_INDEX["Edema"]] = 2 * math.log(0.71 / 0.29)
    logits[1, LABEL_INDEX["Edema"]] = 2 * math.log(0.69 / 0.31)
    assert hinted_findings(logits, thresholds) == [["edema"], []]
    with pytest.raises(ValueError, match="no hint thresholds"):
        hinted_findings(logits, None)
    assert logit_threshold(1.0, 1.0) == math.inf


def test_hint_thresholds_keep_critical_false_statements_within_budget():
    n = 400
    targets = np.zeros((n, 14), int)
    targets[:40, LABEL_INDEX["Pleural Effusion"]] = 1           # critical
    targets[:40, LABEL_INDEX["Cardiomegaly"]] = 1               # not critical
    column = np.concatenate([np.linspace(0.5, 0.9, 40),         # positives
                             np.linspace(0.7, 0.8, 10),         # ten hard negatives among them
                             np.linspace(0.0, 0.45, n - 50)])   # easy negatives
    probs = np.tile(column[:, None], (1, 14))
    chosen = hint_thresholds(probs, targets, critical_false_share=0.01)
    effusion, cardio = (chosen["thresholds"][k] for k in ("Pleural Effusion", "Cardiomegaly"))
    e, c = LABEL_INDEX["Pleural Effusion"], LABEL_INDEX["Cardiomegaly"]
    false_effusion = ((probs[:, e] >= effusion) & (targets[:, e] == 0)).sum()
    assert false_effusion <= 0.01 * n                           # the hallucination budget holds on validation
    false_cardio = ((probs[:, c] >= cardio) & (targets[:, c] == 0)).sum()
    assert false_cardio > false_effusion                        # the unconstrained label trades precision for F1
    assert chosen["thresholds"]["No Finding"] == 1.0 and chosen["thresholds"]["Fracture"] == 1.0   # never stated
    assert "no validation positives" in chosen["rule"]["Fracture"]


def test_generation_states_the_heads_findings_and_refuses_without_thresholds(tiny_tokenizer):
    torch.manual_seed(0)
    config = tiny_dinov2_config()
    config.findings_hint = True
    model = RadiologyMultimodalModel(config, tiny_tokenizer).eval()
    images = torch.rand(2, 2, 1, model.image_size, model.image_size)
    gen = GenerationConfig(num_beams=2, max_new_tokens=6)
    with pytest.raises(ValueError, match="no hint thresholds"):
        generate_texts(model, images, None, gen)
    model.config.hint_logit_thresholds = [-math.inf] * 14          # every finding stated …
    everything, _ = generate_texts(model, images, None, gen)
    model.config.hint_logit_thresholds = [math.inf] * 14           # … or none: the prompt, so the draft, differs
    nothing, _ = generate_texts(model, images, None, gen)
    assert everything != nothing
