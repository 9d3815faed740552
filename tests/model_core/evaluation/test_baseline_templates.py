"""model_core.evaluation.baseline_templates: the template baseline's label → report table."""

from __future__ import annotations

import numpy as np
import pytest

from model_core.chexpert import CHEXPERT_LABELS, LABEL_INDEX, NUM_LABELS
from model_core.evaluation.baseline_templates import NORMAL_FINDINGS, NORMAL_IMPRESSION, template_report
from model_core.labels.labeler import label_report


def _vector(*names: str) -> np.ndarray:
    v = np.zeros(NUM_LABELS)
    for name in names:
        v[LABEL_INDEX[name]] = 1
    return v


# --------------------------------------------------------------------------- templates

def test_normal_study_gets_the_normal_template():
    for labels in (np.zeros(NUM_LABELS), _vector("No Finding"), []):
        report = template_report(labels)
        assert report["findings"] == " ".join(NORMAL_FINDINGS.values())
        assert report["impression"] == NORMAL_IMPRESSION
        assert report["text"] == f"FINDINGS: {report['findings']} IMPRESSION: {NORMAL_IMPRESSION}"
        assert report["positive_labels"] == []


def test_findings_replace_their_normal_sentence():
    report = template_report(_vector("Cardiomegaly", "Pleural Effusion", "Support Devices"))
    assert "The heart is enlarged." in report["findings"]
    assert NORMAL_FINDINGS["heart"] not in report["findings"]
    assert "There is a pleural effusion. There is no pneumothorax." in report["findings"]
    assert report["findings"].endswith("Support devices are present.")
    assert report["impression"] == "Cardiomegaly. Pleural effusion. Support devices in place."
    assert NORMAL_FINDINGS["lungs"] in report["findings"]  # untouched slots keep the normal sentence


def test_names_and_uncertain_values_are_accepted():
    by_name = template_report(["Atelectasis", "Pneumothorax"])
    uncertain = _vector("Atelectasis", "Pneumothorax") * -1
    assert template_report(uncertain)["text"] == by_name["text"]
    assert by_name["positive_labels"] == ["Atelectasis", "Pneumothorax"]
    with pytest.raises(ValueError, match="unknown label"):
        template_report(["Cardiomegally"])
    with pytest.raises(ValueError, match="not a string"):
        template_report("Cardiomegaly")


def test_every_label_but_no_finding_has_a_template():
    for name in CHEXPERT_LABELS[1:]:
        assert template_report([name])["positive_labels"] == [name]


def test_the_labeler_reads_each_template_as_its_own_label():
    assert label_report(template_report([])["text"]).tolist() == _vector("No Finding").tolist()
    for name in CHEXPERT_LABELS[1:]:
        labels = label_report(template_report([name])["text"])
        positive = {CHEXPERT_LABELS[j] for j in np.flatnonzero(labels == 1)} - {"No Finding"}
        assert positive == {name}, (name, positive)
