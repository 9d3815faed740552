"""model_core.data.reports: punctuation and split-word normalisation, the comparison field → prior study."""

import pytest

from model_core.data.reports import SPLIT_WORDS, normalize_punctuation, prior_study_from_comparison

# Verbatim from the embedded IU X-ray reports (de-identified, public): what the demo model learned to write.
IU_DOUBLED = ("The lungs are clear bilaterally. Specifically, no evidence of focal consolidation, pneumothorax, or "
              "pleural effusion.. Cardio mediastinal silhouette is unremarkable. Visualized osseous structures of "
              "the thorax are without acute abnormality.")
IU_NUMBERED = ("1. Interval improvement in consolidative left base opacity. 2. Stable enlarged cardiomediastinal "
               "silhouette. Stable pulmonary vascular congestion. .")


@pytest.mark.parametrize(("raw", "clean"), [
    (IU_DOUBLED, "The lungs are clear bilaterally. Specifically, no evidence of focal consolidation, pneumothorax, "
                 "or pleural effusion. Cardiomediastinal silhouette is unremarkable. Visualized osseous structures "
                 "of the thorax are without acute abnormality."),
    (IU_NUMBERED, "Interval improvement in consolidative left base opacity. Stable enlarged cardiomediastinal "
                  "silhouette. Stable pulmonary vascular congestion."),
    ("No acute cardiopulmonary abnormality..", "No acute cardiopulmonary abnormality."),
    ("No acute abnormality. .", "No acute abnormality."),
    ("Comparison dated , . No cardio pulmonary disease ...", "Comparison dated. No cardiopulmonary disease."),
    ("A 1.5 cm nodule at T12. Mild dextro curvature ; stable", "A 1.5 cm nodule at T12. Mild dextrocurvature; stable"),
])
def test_normalize_punctuation_fixes_what_the_collection_dictated(raw, clean):
    assert normalize_punctuation(raw) == clean
    assert normalize_punctuation(clean) == clean          # idempotent


def test_split_words_are_joined_in_either_case():
    for split, joined in SPLIT_WORDS.items():
        assert normalize_punctuation(f"{split.capitalize()} normal.") == f"{joined.capitalize()} normal."
        assert normalize_punctuation(f"the {split} silhouette") == f"the {joined} silhouette"


@pytest.mark.parametrize(("comparison", "has_prior"), [
    ("", None), (None, None), ("nan", None),
    ("None.", False), ("None available", False), ("none", False), ("None. Clinical", False),
    ("No comparison chest x-XXXX.", False), ("No prior studies.", False),
    ("XXXX", True), ("XXXX, XXXX.", True), ("Chest radiographs XXXX", True), ("CT chest XXXX", True),
    ("Two-view chest radiograph dated XXXX, XXXX..", True), ("Chest radiograph from ___", True),
])
def test_comparison_field_gives_whether_a_prior_study_exists(comparison, has_prior):
    parsed = prior_study_from_comparison(comparison)
    assert parsed["has_prior"] is has_prior and parsed["prior_dates"] == []


def test_written_out_dates_are_parsed_and_impossible_ones_dropped():
    parsed = prior_study_from_comparison("PA and lateral 3/4/2010 and CT 2011-02-28; also 13/45/2010")
    assert parsed == {"has_prior": True, "prior_dates": ["2011-02-28", "2010-03-04"]}
