"""model_core.modeling.tokenizer: training targets, the byte-level BPE round trip, the prompt's clinical context."""

import pytest

from model_core.data.reports import format_report, split_sections
from model_core.modeling.tokenizer import (
    DEFAULT_INSTRUCTION,
    build_prompt,
    clean_target,
    clean_text,
    prompt_context,
    train_report_tokenizer,
)

# Verbatim IU X-ray reports (findings, impression) of the kind the demo model learned its ".." and
# "Cardio mediastinal" from.
IU_REPORTS = [
    ("The lungs are clear bilaterally. Specifically, no evidence of focal consolidation, pneumothorax, or pleural "
     "effusion.. Cardio mediastinal silhouette is unremarkable. Visualized osseous structures of the thorax are "
     "without acute abnormality.", "No acute cardiopulmonary abnormality.."),
    ("Low lung volumes bilaterally with central bronchovascular crowding without focal consolidation, pleural "
     "effusion, or pneumothoraces.. Cardiomediastinal silhouette is within normal limits. Degenerative changes of "
     "the thoracic spine..", "1. Low lung volumes. 2. Stable XXXX opacity. 3. No acute abnormality. ."),
]


def test_training_targets_have_one_period_per_sentence_joined_words_and_no_masks():
    targets = [clean_target(format_report(f, i)) for f, i in IU_REPORTS]
    assert targets[0] == (
        "FINDINGS: The lungs are clear bilaterally. Specifically, no evidence of focal consolidation, pneumothorax, "
        "or pleural effusion. Cardiomediastinal silhouette is unremarkable. Visualized osseous structures of the "
        "thorax are without acute abnormality. IMPRESSION: No acute cardiopulmonary abnormality.")
    # the numbered sentence with a mask goes whole, and its number with it
    assert split_sections(targets[1])["impression"] == "Low lung volumes. No acute abnormality."
    for target in targets:
        assert ".." not in target and ". ." not in target and "XX" not in target and " ." not in target


def test_byte_level_bpe_decodes_every_target_exactly(embedded_manifest):
    """The detokenizer is lossless: whatever odd spacing a draft shows came from the targets, not the BPE."""
    rows = embedded_manifest.drop_duplicates("uid").iloc[:300]
    targets = [clean_target(format_report(f, i)) for f, i in zip(rows["findings"], rows["impression"])]
    tok = train_report_tokenizer(targets, vocab_size=600)
    for target in targets:
        ids = tok.encode(" " + target, add_special_tokens=False)       # as `encode_example` encodes a target
        assert clean_text(tok.decode(ids, skip_special_tokens=True)) == target


# Verbatim drafts of the demo model (from-scratch encoder, trained on the raw targets; `make run` at commit 916db66,
# test split): 104 of its 382 drafts had "..", 101 "Cardio mediastinal", 62 a list number, 21 an unended section.
DEMO_DRAFTS = {
    "FINDINGS: The lungs are clear bilaterally. Specifically, no evidence of focal consolidation, pneumothorax, or "
    "pleural effusion.. Cardio mediastinal silhouette is unremarkable. Visualized osseous structures of the thorax are "
    "without acute abnormality. IMPRESSION: No acute cardiopulmonary abnormality..":
    "FINDINGS: The lungs are clear bilaterally. Specifically, no evidence of focal consolidation, pneumothorax, or "
    "pleural effusion. Cardiomediastinal silhouette is unremarkable. Visualized osseous structures of the thorax are "
    "without acute abnormality. IMPRESSION: No acute cardiopulmonary abnormality.",
    "FINDINGS: Heart size and pulmonary vascularity appear within normal limits. The lungs are free of focal airspace "
    "disease. No pleural effusion or pneumothorax is seen. IMPRESSION: 1. No evidence of active disease.":
    "FINDINGS: Heart size and pulmonary vascularity appear within normal limits. The lungs are free of focal airspace "
    "disease. No pleural effusion or pneumothorax is seen. IMPRESSION: No evidence of active disease.",
    "FINDINGS: Heart size within normal limits. No focal alveolar consolidation, no definite pleural effusion seen. No "
    "typical findings of pulmonary edema. No pneumothorax. IMPRESSION: No acute cardiopulmonary findings":
    "FINDINGS: Heart size within normal limits. No focal alveolar consolidation, no definite pleural effusion seen. No "
    "typical findings of pulmonary edema. No pneumothorax. IMPRESSION: No acute cardiopulmonary findings.",
    "FINDINGS: The cardiomediastinal silhouette is within normal limits for size and contour. The lungs are normally "
    "inflated and clear. Osseous structures are within normal limits for patient age.. IMPRESSION: 1. No acute "
    "radiographic cardiopulmonary process.":
    "FINDINGS: The cardiomediastinal silhouette is within normal limits for size and contour. The lungs are normally "
    "inflated and clear. Osseous structures are within normal limits for patient age. IMPRESSION: No acute "
    "radiographic cardiopulmonary process.",
}


@pytest.mark.parametrize("draft", list(DEMO_DRAFTS))
def test_clean_text_repairs_real_drafts_of_the_model_trained_before_the_fix(draft):
    assert clean_text(draft) == DEMO_DRAFTS[draft]
    assert clean_text(DEMO_DRAFTS[draft]) == DEMO_DRAFTS[draft]


def test_clean_text_leaves_text_without_sections_unended():
    assert clean_text("cough, XXXX-year-old male") == "cough, male"
    assert clean_text("Is there an effusion?") == "Is there an effusion?"


def test_prompt_states_sex_age_prior_study_and_indication_without_masks():
    meta = {"age": None, "sex": "F", "indication": "XXXX-year-old female with chest pain.", "comparison": "XXXX, XXXX."}
    assert build_prompt(meta) == (f"{DEFAULT_INSTRUCTION} Sex: F. Prior study: yes. "
                                  "Indication: female with chest pain.")
    assert build_prompt({"age": 61, "indication": "", "comparison": "None."}) == (
        f"{DEFAULT_INSTRUCTION} Age: 61. Prior study: none.")
    assert build_prompt(None) == build_prompt({"comparison": ""}) == DEFAULT_INSTRUCTION


def test_serving_context_prior_studies_list_and_unknown_sex():
    # the serving API's dict: a list of prior studies (dates are not stated: PHI, and never seen in training)
    ctx = prompt_context({"age": 40, "sex": "O", "indication": "cough", "prior_studies": ["2020-01-02"]})
    assert ctx == {"age": 40, "sex": None, "indication": "cough", "has_prior": True}
    assert "2020" not in build_prompt({"prior_studies": ["2020-01-02"]})
    assert prompt_context({"prior_studies": []})["has_prior"] is None      # not stated is not "none"
