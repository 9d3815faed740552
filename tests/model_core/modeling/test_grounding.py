"""Grounded drafting: the head's stated findings written into the demo model's real drafts, read by the labeler."""

import math

import numpy as np
import pytest
import torch
from tiny_models import tiny_dinov2_config

from model_core.chexpert import CHEXPERT_LABELS, LABEL_INDEX, NEGATIVE, POSITIVE
from model_core.config import GenerationConfig
from model_core.data.reports import split_sections
from model_core.labels.aggregate import mentioned_labels
from model_core.labels.labeler import find_mentions, label_reports
from model_core.modeling.generation import generate_texts
from model_core.modeling.grounding import STATEMENTS, ground_report, logit_thresholds, stated_findings
from model_core.modeling.model import RadiologyMultimodalModel
from model_core.training.calibration import grounding_thresholds

# Drafts the demo model wrote for test studies (2026-11-29 pipeline run), verbatim.
DRAFT_A = ("FINDINGS: The lungs are clear bilaterally. Specifically, no evidence of focal consolidation, pneumothorax, "
           "or pleural effusion. Cardiomediastinal silhouette is unremarkable. Visualized osseous structures of the "
           "thorax are without acute abnormality. IMPRESSION: No acute cardiopulmonary abnormality.")
DRAFT_B = ("FINDINGS: The heart is normal in size. The mediastinum is unremarkable. The lungs are clear. "
           "IMPRESSION: No acute disease.")
DRAFT_C = ("FINDINGS: Heart size and pulmonary vascularity appear within normal limits. The lungs are free of focal "
           "airspace disease. No pleural effusion or pneumothorax is seen. IMPRESSION: No evidence of active disease.")


def _states(text: str) -> dict[str, float]:
    return mentioned_labels(find_mentions(text))


@pytest.mark.parametrize("label", list(STATEMENTS))
def test_every_statement_is_read_back_as_its_own_label_and_its_negation_as_negative(label):
    statement = STATEMENTS[label]
    assert _states(statement.finding) == {label: POSITIVE}
    assert label in _states(statement.impression) and _states(statement.impression)[label] == POSITIVE
    assert _states(f"There is no {statement.negation}.") == {label: NEGATIVE}


@pytest.mark.parametrize("draft", [DRAFT_A, DRAFT_B, DRAFT_C])
@pytest.mark.parametrize("label", list(STATEMENTS))
def test_a_stated_label_is_asserted_and_nothing_left_rules_it_out(draft, label):
    grounded = ground_report(draft, [label])
    vector = label_reports([grounded])[0]
    assert vector[LABEL_INDEX[label]] == 1
    findings = split_sections(grounded)["findings"]
    assert STATEMENTS[label].finding in findings
    negated = [s for s in findings.split(". ") if _states(s).get(label) == NEGATIVE]
    assert negated == []
    if label != "Support Devices":   # a normal impression gives way to the finding's
        assert split_sections(grounded)["impression"].startswith(STATEMENTS[label].impression)


def test_a_replaced_sentence_keeps_its_other_negations_and_the_draft_its_order():
    grounded = ground_report(DRAFT_A, ["Pleural Effusion"])
    assert grounded == ("FINDINGS: The lungs are clear bilaterally. There is a pleural effusion. There is no focal "
                        "consolidation or pneumothorax. Cardiomediastinal silhouette is unremarkable. Visualized "
                        "osseous structures of the thorax are without acute abnormality. IMPRESSION: Pleural effusion.")
    vector = label_reports([grounded])[0]
    assert vector[LABEL_INDEX["Pneumothorax"]] == 0 and vector[LABEL_INDEX["Pleural Effusion"]] == 1


def test_normal_anatomy_of_the_labels_region_gives_way():
    grounded = ground_report(DRAFT_B, ["Cardiomegaly", "Atelectasis"])
    assert grounded == ("FINDINGS: The heart is enlarged. The mediastinum is unremarkable. There is atelectasis. "
                        "IMPRESSION: Cardiomegaly. Atelectasis.")
    # "Cardiomediastinal silhouette is unremarkable." says the heart is normal too.
    assert "unremarkable" not in split_sections(ground_report(DRAFT_A, ["Cardiomegaly"]))["findings"]


def test_without_a_contradicting_sentence_the_statement_goes_in_reading_order():
    grounded = ground_report("FINDINGS: The lungs are clear. No pneumothorax. IMPRESSION: Normal chest.",
                             ["Cardiomegaly", "Support Devices"])
    assert grounded == ("FINDINGS: The heart is enlarged. The lungs are clear. No pneumothorax. Support devices are "
                        "present. IMPRESSION: Cardiomegaly.")


def test_a_draft_that_already_names_the_finding_and_an_empty_statement_list_are_left_alone():
    draft = "FINDINGS: Small right pleural effusion. The heart is normal. IMPRESSION: Small effusion."
    assert ground_report(draft, ["Pleural Effusion"]) == draft
    assert ground_report(DRAFT_A, []) == DRAFT_A
    impression_other = "FINDINGS: The lungs are clear. IMPRESSION: Calcified granuloma. No acute disease."
    assert ground_report(impression_other, ["Edema"]).endswith("IMPRESSION: Pulmonary edema. Calcified granuloma.")


def test_unknown_labels_are_refused_without_echoing_them():
    with pytest.raises(ValueError, match="1 stated label") as err:
        ground_report(DRAFT_A, ["DOE_JOHN"])
    assert "DOE" not in str(err.value)


def test_stated_findings_compare_raw_logits_with_calibrated_thresholds():
    thresholds = logit_thresholds({"Edema": 0.7, "No Finding": 0.1}, temperature=2.0)
    assert thresholds[LABEL_INDEX["No Finding"]] == pytest.approx(2 * math.log(0.1 / 0.9))
    assert thresholds[LABEL_INDEX["Cardiomegaly"]] == math.inf            # unnamed labels: never stated
    logits = np.full((2, 14), 10.0)
    logits[:, LABEL_INDEX["Edema"]] = [2 * math.log(0.71 / 0.29), 2 * math.log(0.69 / 0.31)]
    assert stated_findings(logits, thresholds) == [["Edema"], []]          # No Finding is never written in
    with pytest.raises(ValueError, match="no statement thresholds"):
        stated_findings(logits, None)
    with pytest.raises(ValueError, match="14 thresholds"):
        stated_findings(logits, thresholds[:3])


def test_generation_grounds_its_drafts_when_the_config_says_so(tiny_tokenizer):
    torch.manual_seed(0)
    config = tiny_dinov2_config()
    config.grounded_findings = True
    model = RadiologyMultimodalModel(config, tiny_tokenizer).eval()
    images = torch.rand(2, 2, 1, model.image_size, model.image_size)
    gen = GenerationConfig(num_beams=2, max_new_tokens=6)
    with pytest.raises(ValueError, match="no statement thresholds"):
        generate_texts(model, images, None, gen)
    model.config.grounding_logit_thresholds = [-math.inf] * 14            # every finding stated
    grounded, logits = generate_texts(model, images, None, gen)
    drafts, same_logits = generate_texts(model, images, None, gen, ground=False)
    assert torch.equal(logits, same_logits)
    stated = [label for label in CHEXPERT_LABELS if label in STATEMENTS]
    assert grounded == [ground_report(d, stated) for d in drafts] and grounded != drafts
    labels = label_reports(grounded)
    assert (labels[:, [LABEL_INDEX[x] for x in stated]] == 1).all()


def test_critical_findings_share_one_false_statement_budget_on_validation():
    n = 200
    targets = np.zeros((n, 14), int)
    probs = np.tile(np.linspace(0.0, 0.4, n)[:, None], (1, 14))
    e, x, c = LABEL_INDEX["Pleural Effusion"], LABEL_INDEX["Fracture"], LABEL_INDEX["Cardiomegaly"]
    # Effusion: positives at the top after 2 negatives; fracture: positives after 3 negatives (other studies).
    targets[:10, e] = 1
    probs[:12, e] = np.r_[np.linspace(0.95, 0.86, 10), 0.99, 0.98]
    targets[20:30, x] = 1
    probs[20:33, x] = np.r_[np.linspace(0.95, 0.86, 10), 0.99, 0.98, 0.97]
    targets[:50, c] = 1
    probs[:50, c] = 0.9
    probs[50:80, c] = 0.95                                # thirty false cardiomegaly statements: not critical
    chosen = grounding_thresholds(probs, targets, critical_false_share=0.02)    # 4 false studies at most
    t = chosen["thresholds"]
    false_e = (probs[:, e] >= t["Pleural Effusion"]) & (targets[:, e] == 0)
    false_x = (probs[:, x] >= t["Fracture"]) & (targets[:, x] == 0)
    assert (false_e | false_x).sum() == chosen["critical_false_studies"] <= chosen["critical_budget_studies"] == 4
    assert t["Pleural Effusion"] == 0.86 and t["Fracture"] == 1.0    # the cheaper one fits (2 + 3 > 4)
    assert "shared critical budget" in chosen["rule"]["Fracture"]
    assert t["Cardiomegaly"] == 0.9                                   # max F1 with its false statements
    assert t["Pneumothorax"] == 1.0 and "no validation positives" in chosen["rule"]["Pneumothorax"]
    assert t["Consolidation"] == 1.0 and "0 validation positives" not in chosen["rule"]["Consolidation"]
    few = targets.copy()
    few[:4, LABEL_INDEX["Edema"]] = 1                                  # 4 positives: a threshold would be noise
    few[:4, e] = 0
    few[10:14, e] = 1
    sparse = grounding_thresholds(probs, few, critical_false_share=0.02)
    assert sparse["thresholds"]["Edema"] == 1.0 and "4 validation positives (< 5)" in sparse["rule"]["Edema"]
    assert sparse["thresholds"]["Pleural Effusion"] < 1.0                  # 10 positives: still stated
    assert grounding_thresholds(probs, few, 0.02, min_positives=3)["thresholds"]["Edema"] < 1.0
    wider = grounding_thresholds(probs, targets, critical_false_share=0.025)["thresholds"]
    assert wider["Fracture"] == 0.86 and wider["Pleural Effusion"] == 0.86   # 2 + 3 false studies ≤ 5
