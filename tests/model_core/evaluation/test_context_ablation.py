"""model_core.evaluation.context_ablation: the same model prompted with and without the clinical context."""

import torch

from model_core.config import GenerationConfig
from model_core.data.iu_xray import load_iu_xray
from model_core.evaluation import evaluate
from model_core.evaluation.context_ablation import context_ablation


def test_ablation_prompts_one_side_without_context_and_scores_the_pair(tiny_model, monkeypatch):
    val = load_iu_xray(split="val", views=("Frontal", "Lateral"), image_size=32, limit_studies=4)
    seen = []

    def drafts_that_use_the_context(model, images, contexts, gen, ground=None):
        seen.append(list(contexts))
        texts = ["FINDINGS: Small right pleural effusion. IMPRESSION: Effusion." if c else
                 "FINDINGS: The lungs are clear. IMPRESSION: No acute disease." for c in contexts]
        return texts, torch.zeros(len(contexts), 14)

    monkeypatch.setattr(evaluate, "generate_texts", drafts_that_use_the_context)
    out = context_ablation(tiny_model, val, GenerationConfig(num_beams=1, max_new_tokens=4), n_boot=20)
    with_ctx, without = seen
    assert all(c is not None and "comparison" in c for c in with_ctx) and without == [None] * 4
    assert out["n_studies"] == 4 and out["changed_drafts"] == 1.0
    assert out["drafts"]["with_context"]["distinct"] == out["drafts"]["without_context"]["distinct"] == 1
    diff = out["with_minus_without"]["ROUGE-L"]
    assert diff["value"] == out["with_context"]["ROUGE-L"]["value"] - out["without_context"]["ROUGE-L"]["value"]
    assert set(out["naming"]["with_context"]) == set(out["naming"]["without_context"])
    assert 0 <= out["studies_with_prior_stated"] <= 4
