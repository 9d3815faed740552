"""The grounding ablation in every evaluation: the LM's own drafts scored beside the served (grounded) texts."""

from types import SimpleNamespace

import numpy as np

from model_core.chexpert import LABEL_INDEX
from model_core.config import EvalConfig
from model_core.evaluation.evaluate import grounding_ablation
from model_core.evaluation.metrics import report_generation_metrics
from model_core.labels.labeler import label_reports

NORMAL = "FINDINGS: The heart is normal in size. The lungs are clear. IMPRESSION: No acute disease."
EFFUSION = "FINDINGS: The heart is normal in size. There is a pleural effusion. IMPRESSION: Pleural effusion."


def _model(grounded: bool):
    return SimpleNamespace(config=SimpleNamespace(grounded_findings=grounded, grounding_critical_false_share=0.015))


def test_the_drafts_are_scored_like_the_served_texts_and_their_naming_counted():
    references = [EFFUSION, NORMAL, EFFUSION, NORMAL]
    drafts = [NORMAL, NORMAL, EFFUSION, NORMAL]                    # the LM names one of two effusions
    truth = np.zeros((4, 14), int)
    truth[[0, 2], LABEL_INDEX["Pleural Effusion"]] = 1
    truth[[1, 3], LABEL_INDEX["No Finding"]] = 1
    cfg = EvalConfig(n_bootstrap=20, seed=0)
    detection = {"grounding": {"thresholds": {"Pleural Effusion": 0.4}, "rule": {"Pleural Effusion": "max F1"}}}
    out = grounding_ablation(_model(True), detection, references, drafts, truth, cfg)
    want = report_generation_metrics(references, drafts, truth, label_reports(drafts), n_boot=20, seed=0,
                                     section=cfg.section)
    assert out["enabled"] is True and out["thresholds"] == {"Pleural Effusion": 0.4}
    assert out["lm_drafts"]["BLEU-4"] == want["nlg"]["BLEU-4"]
    assert out["lm_drafts"]["CE macro F1"] == want["clinical_efficacy"]["macro"]["f1"]
    assert out["lm_drafts"]["naming"]["Pleural Effusion"] == {"named": 1, "positives": 2}
    assert out["lm_drafts"]["distinct"] == 2
    assert out["lm_drafts"]["hallucination_rate"]["value"] == 0.0
    assert grounding_ablation(_model(False), detection, references, drafts, truth, cfg) == {"enabled": False}
