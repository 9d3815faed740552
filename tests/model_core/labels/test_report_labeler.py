"""The CheXpert-style report labeler (model_core.labels.labeler): negation, uncertainty, positives, No Finding."""

from __future__ import annotations

import numpy as np
import pytest

from model_core.chexpert import CHEXPERT_LABELS, LABEL_INDEX, NUM_LABELS
from model_core.labels.extract import normalize_report
from model_core.labels.labeler import label_report, label_reports, text_mentions


def state(text: str, label: str) -> float:
    return float(label_report(text)[LABEL_INDEX[label]])


def positives(vec: np.ndarray) -> set[str]:
    return {name for name, v in zip(CHEXPERT_LABELS, vec) if v == 1.0}


# --- report labeler: negation -------------------------------------------------------------

def test_simple_negation():
    assert state("No pneumothorax.", "Pneumothorax") == 0.0


def test_negation_list_scope():
    vec = label_report("There is no focal consolidation, pleural effusion or pneumothorax")
    for label in ("Consolidation", "Pleural Effusion", "Pneumothorax"):
        assert vec[LABEL_INDEX[label]] == 0.0
    assert vec[LABEL_INDEX["No Finding"]] == 1.0


@pytest.mark.parametrize("text,label", [
    ("Lungs are clear without effusion.", "Pleural Effusion"),
    ("Negative for pneumothorax.", "Pneumothorax"),
    ("Right lower lobe pneumonia has resolved.", "Pneumonia"),
    ("The heart is not enlarged.", "Cardiomegaly"),
    ("No evidence of pulmonary edema.", "Edema"),
    ("The lungs are clear of focal infiltrate.", "Lung Opacity"),
])
def test_negation_triggers(text, label):
    assert state(text, label) == 0.0


def test_negation_mentions_are_reported_as_negated():
    assert text_mentions("No pneumothorax. Mild cardiomegaly.") == {"Pneumothorax": 0.0, "Cardiomegaly": 1.0}


def test_clause_boundary_stops_negation():
    assert state("No pneumothorax, but there is a small right effusion.", "Pleural Effusion") == 1.0
    assert state("No effusion; mild cardiomegaly.", "Cardiomegaly") == 1.0
    assert state("Stable cardiomegaly without effusion.", "Cardiomegaly") == 1.0


def test_pseudo_negation_is_not_negation():
    assert state("No change in mild cardiomegaly.", "Cardiomegaly") == 1.0


# --- report labeler: uncertainty -----------------------------------------------------------

@pytest.mark.parametrize("text,label", [
    ("Possible small left pleural effusion.", "Pleural Effusion"),
    ("cannot exclude pneumonia", "Pneumonia"),
    ("Pneumonia cannot be excluded.", "Pneumonia"),
    ("Opacity may represent atelectasis.", "Atelectasis"),
    ("Findings suggestive of pulmonary edema.", "Edema"),
    ("Atelectasis versus pneumonia.", "Atelectasis"),
    ("Atelectasis versus pneumonia.", "Pneumonia"),
    ("Borderline cardiomegaly.", "Cardiomegaly"),
])
def test_uncertainty(text, label):
    assert state(text, label) == -1.0


def test_uncertainty_reaches_forward_only():
    vec = label_report("Left lower lobe opacity may represent atelectasis.")
    assert vec[LABEL_INDEX["Lung Opacity"]] == 1.0
    assert vec[LABEL_INDEX["Atelectasis"]] == -1.0


# --- report labeler: positives, No Finding, XXXX ---------------------------------------------

@pytest.mark.parametrize("text,label", [
    ("Moderate cardiomegaly.", "Cardiomegaly"),
    ("Right-sided pneumothorax", "Pneumothorax"),
    ("The heart is mildly enlarged.", "Cardiomegaly"),
    ("Small bilateral pleural effusions.", "Pleural Effusion"),
    ("Healed left rib fractures.", "Fracture"),
    ("Right PICC line with tip in the SVC.", "Support Devices"),
    ("Right upper lobe mass.", "Lung Lesion"),
    ("Apical pleural thickening.", "Pleural Other"),
])
def test_positives(text, label):
    assert state(text, label) == 1.0


def test_no_finding_for_normal_report():
    report = ("The heart is normal in size. The mediastinum is unremarkable. The lungs are clear. "
              "There is no pneumothorax or pleural effusion. No acute cardiopulmonary disease.")
    vec = label_report(report)
    assert positives(vec) == {"No Finding"}
    assert vec.dtype == np.float32 and vec.shape == (NUM_LABELS,)


def test_no_finding_rules():
    # A support device alone keeps No Finding (CheXpert); an uncertain finding removes it.
    assert positives(label_report("Left chest pacemaker. Lungs are clear.")) == {"No Finding", "Support Devices"}
    assert state("Possible small effusion.", "No Finding") == 0.0
    # An abnormality outside the 14 labels removes No Finding without adding a label.
    vec = label_report("Calcified granuloma in the right upper lobe.")
    assert not vec.any()


def test_xxxx_deidentification_tokens():
    assert normalize_report("Normal chest x-XXXX.") == "normal chest x-ray."
    assert state("There are no XXXX of a pleural effusion.", "Pleural Effusion") == 0.0
    assert state("XXXX opacity in the right lung base.", "Lung Opacity") == 1.0
    assert positives(label_report("Normal chest x-XXXX. XXXX XXXX.")) == {"No Finding"}


def test_label_reports_shape_and_errors():
    out = label_reports(["Moderate cardiomegaly.", "No pneumothorax."])
    assert out.shape == (2, NUM_LABELS) and out.dtype == np.float32
    assert label_reports([]).shape == (0, NUM_LABELS)
    with pytest.raises(ValueError):
        label_report(None)  # type: ignore[arg-type]

