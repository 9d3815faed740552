"""Error analysis on constructed cases: each category, the aggregates, the image-quality correlation, the step."""

import json

import numpy as np
import pytest
from PIL import Image
from tiny_models import SMOKE

from model_core.artifacts import PREDICTIONS
from model_core.chexpert import CRITICAL_FINDINGS, LABEL_INDEX
from model_core.config import load_config
from model_core.data.iu_xray import group_studies, load_iu_xray
from model_core.evaluation.error_analysis import (
    CONFUSION_PLOT,
    ERROR_ANALYSIS,
    ERROR_SUMMARY,
    EXAMPLES_PLOT,
    HALLUCINATED,
    INCOMPLETE,
    LATERALITY,
    MISSED,
    PREVALENCE_PLOT,
    QUALITY_PLOT,
    SEVERITY,
    analyse_errors,
    describe_findings,
    run_error_analysis,
    study_errors,
)
from model_core.modeling.model_dir import save_model_dir


def truth(*findings) -> np.ndarray:
    vector = np.zeros(14, dtype=np.float32)
    for finding in findings:
        vector[LABEL_INDEX[finding]] = 1
    return vector


def categories(errors):
    return [(e["category"], e["finding"]) for e in errors]


def test_missed_and_hallucinated_findings():
    errors = study_errors("The lungs are clear. No pneumothorax. Mild cardiomegaly.", "Right apical pneumothorax.",
                          truth("Pneumothorax"))
    assert categories(errors) == [(HALLUCINATED, "Cardiomegaly"), (MISSED, "Pneumothorax")]
    # an uncertain assertion counts as asserted (U-Ones, as the clinical-efficacy metrics count it)
    assert categories(study_errors("Possible small pneumothorax.", "No pneumothorax.", truth())) == \
        [(HALLUCINATED, "Pneumothorax")]


@pytest.mark.parametrize("generated, reference", [
    ("Small right pleural effusion.", "Small left pleural effusion."),
    ("Pleural effusion on the left.", "There is a right-sided pleural effusion."),
    ("Left pleural effusion.", "Bilateral pleural effusions."),
])
def test_wrong_laterality(generated, reference):
    errors = study_errors(generated, reference, truth("Pleural Effusion"))
    assert categories(errors) == [(LATERALITY, "Pleural Effusion")]


@pytest.mark.parametrize("generated, reference", [
    ("Large left pleural effusion.", "Small left pleural effusion."),
    ("Trace right pneumothorax.", "Moderate right pneumothorax."),
])
def test_severity_mismatch(generated, reference):
    finding = "Pleural Effusion" if "effusion" in generated else "Pneumothorax"
    assert categories(study_errors(generated, reference, truth(finding))) == [(SEVERITY, finding)]


def test_same_grade_in_other_words_is_no_mismatch():
    assert study_errors("Tiny left pleural effusion.", "Small left pleural effusion.", truth("Pleural Effusion")) == []


@pytest.mark.parametrize("generated, reference, omitted", [
    ("There is a pleural effusion.", "Small left pleural effusion.", "omits location and size"),
    ("Left lung nodule.", "1.5 cm nodule in the left upper lobe.", "omits size"),
    ("Small atelectasis.", "Small left basilar atelectasis.", "omits location"),
])
def test_incomplete_description(generated, reference, omitted):
    finding = {"effusion": "Pleural Effusion", "nodule": "Lung Lesion", "atelectasis": "Atelectasis"}
    name = next(v for k, v in finding.items() if k in reference)
    errors = study_errors(generated, reference, truth(name))
    assert categories(errors) == [(INCOMPLETE, name)] and errors[0]["detail"] == omitted


def test_each_finding_of_a_sentence_keeps_its_own_side():
    described = describe_findings("Small left pleural effusion and right pneumothorax. No fracture.")
    assert described["Pleural Effusion"].sides == {"left"} and described["Pleural Effusion"].grades == {1}
    assert described["Pneumothorax"].sides == {"right"} and not described["Pneumothorax"].grades
    assert "Fracture" not in described   # negated: describes nothing


def test_aggregates_against_hand_counts():
    records = [
        {"study_id": "a", "generated": "Right pneumothorax.", "reference": "Left pneumothorax.",
         "truth": truth("Pneumothorax")},                                              # laterality
        {"study_id": "b", "generated": "No acute disease.", "reference": "Left pleural effusion.",
         "truth": truth("Pleural Effusion")},                                          # missed
        {"study_id": "c", "generated": "Rib fracture.", "reference": "Normal chest.", "truth": truth()},  # FP
        {"study_id": "d", "generated": "Normal chest.", "reference": "Normal chest.", "truth": truth()},
    ]
    quality = np.array([[0.2, 0.10], [0.3, 0.20], [0.6, 0.25], [0.7, 0.30]])
    result = analyse_errors(records, quality, n_boot=200, seed=0)
    summary = result["summary"]
    assert summary["studies"] == 4 and summary["studies_with_errors"] == 3
    assert summary["study_error_rate"]["value"] == 0.75
    assert summary["categories"][MISSED]["studies"] == 1 and summary["categories"][LATERALITY]["errors"] == 1
    assert summary["categories"][SEVERITY]["studies"] == 0
    assert summary["confusion_critical"]["Pneumothorax"] == {"tp": 1, "fn": 0, "fp": 0, "tn": 3}
    assert summary["confusion_critical"]["Pleural Effusion"] == {"tp": 0, "fn": 1, "fp": 0, "tn": 3}
    assert summary["confusion_critical"]["Fracture"] == {"tp": 0, "fn": 0, "fp": 1, "tn": 3}
    effusion = summary["by_finding"]["Pleural Effusion"]
    assert effusion["prevalence"] == 0.25 and effusion["miss_rate"] == 1.0 and effusion["false_alarm_rate"] == 0.0
    assert result["examples"][HALLUCINATED] == ["c"]
    # point-biserial correlation of "any error" (1, 1, 1, 0) with exposure, by hand
    exposure = quality[:, 0]
    has_error = np.array([1, 1, 1, 0.0])
    expected = ((has_error - has_error.mean()) * (exposure - exposure.mean())).sum() / (
        np.sqrt(((has_error - has_error.mean()) ** 2).sum() * ((exposure - exposure.mean()) ** 2).sum()))
    got = summary["image_quality"]["any_error"]["exposure"]
    assert got["correlation"]["value"] == pytest.approx(expected)
    assert got["mean_with_error"] == pytest.approx(exposure[:3].mean()) and got["mean_without_error"] == 0.7
    assert "study_id" not in json.dumps(summary) and "pneumothorax." not in json.dumps(summary).lower()


def test_bad_records_are_clear_errors():
    with pytest.raises(ValueError, match="at least one study"):
        analyse_errors([])
    with pytest.raises(ValueError, match="label vector of 14"):
        study_errors("a", "b", [1, 0])
    with pytest.raises(ValueError, match=r"quality must be \(studies, 2\)"):
        analyse_errors([{"study_id": "a", "generated": "x", "reference": "y", "truth": truth()}], np.zeros((2, 2)))


def test_the_pipeline_step_writes_summary_details_and_figures(tiny_model, tmp_path):
    cfg = load_config(SMOKE, ["data.limit_studies=6", "eval.n_bootstrap=20"])
    model_dir = save_model_dir(tiny_model, tmp_path / "model", card={"name": "tiny", "version": "0", "created": "now"},
                               run_config=cfg.to_dict(), detection={"temperature": 1.0, "thresholds": {}})
    studies = group_studies(load_iu_xray(split="test", views=("Frontal", "Lateral"), image_size=32,
                                         limit_studies=6))
    generated = ["Small right pleural effusion.", "Large left pneumothorax.", "Normal chest."]
    evaluation = tmp_path / "evaluation"
    evaluation.mkdir()
    lines = [json.dumps({"study_id": s["study_id"], "generated": generated[i % 3], "reference": s["report"],
                         "mesh_labels": s["labels"].tolist(), "detection_probabilities": [0.1] * 14})
             for i, s in enumerate(studies)]
    (evaluation / PREDICTIONS).write_text("\n".join(lines) + "\n")
    summary = run_error_analysis(cfg, model_dir, evaluation, tmp_path / "errors")
    out = tmp_path / "errors"
    assert summary["studies"] == len(studies) and summary["categories"][HALLUCINATED]["studies"] >= 2
    assert set(summary["confusion_critical"]) == set(CRITICAL_FINDINGS)
    assert summary["image_quality"]["any_error"]["exposure"]["mean_with_error"] is not None
    detail = json.loads((out / ERROR_ANALYSIS).read_text())
    assert [s["study_id"] for s in detail["per_study"]] == [s["study_id"] for s in studies]
    assert json.loads((out / ERROR_SUMMARY).read_text()) == json.loads(json.dumps(summary))
    for name in (CONFUSION_PLOT, PREVALENCE_PLOT, EXAMPLES_PLOT, QUALITY_PLOT):
        with Image.open(out / name) as picture:
            assert picture.format == "PNG" and picture.size[0] > 300
