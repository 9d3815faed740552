"""model_core.modeling.generation: beam search and the structured report."""

import numpy as np
import torch

from model_core.chexpert import LABEL_INDEX
from model_core.config import GenerationConfig
from model_core.modeling.generation import generate_report, generate_texts, structure_report


def test_generate_texts_batch_and_no_deid_tokens(tiny_model):
    contexts = [{"age": 70}, None, {"indication": "XXXX pain"}]
    texts, logits = generate_texts(tiny_model, torch.rand(3, 1, 32, 32), contexts,
                                   GenerationConfig(num_beams=4, max_new_tokens=12))
    assert len(texts) == 3 and logits.shape == (3, 14)
    assert all("XX" not in t for t in texts)


def test_generate_report_structure(tiny_model):
    report = generate_report(tiny_model, torch.rand(2, 1, 32, 32), {"age": 50, "sex": "M"},
                             GenerationConfig(num_beams=2, max_new_tokens=8))
    d = report.to_dict()
    assert set(d) >= {"findings", "impression", "recommendations", "text", "label_probabilities"}
    assert len(d["label_probabilities"]) == 14


def test_structure_report_combines_text_and_detector():
    probs = np.full(14, 0.01)
    probs[LABEL_INDEX["Pneumothorax"]] = 0.9     # detector only
    probs[LABEL_INDEX["Cardiomegaly"]] = 0.2     # text only
    text = "FINDINGS: Moderate cardiomegaly. No pleural effusion. IMPRESSION: Cardiomegaly."
    report = structure_report(text, probs, {"Pneumothorax": 0.5, "Cardiomegaly": 0.5})
    by_label = {f.label: f for f in report.findings}
    assert set(by_label) == {"Cardiomegaly", "Pneumothorax"}
    assert by_label["Cardiomegaly"].severity == "moderate" and by_label["Cardiomegaly"].source == "text"
    assert by_label["Cardiomegaly"].confidence == 0.2 and not by_label["Cardiomegaly"].is_critical
    assert by_label["Pneumothorax"].is_critical and by_label["Pneumothorax"].source == "detector"
    assert by_label["Pneumothorax"].bounding_box is None
    assert report.impression == "Cardiomegaly."
    assert any("detector flags possible pneumothorax" in r and "radiologist review" in r
               for r in report.recommendations)


def test_screening_thresholds_alone_do_not_assert_findings():
    probs = np.full(14, 0.01)
    probs[LABEL_INDEX["Fracture"]] = 0.2   # above its 0.05 screening threshold, below confidence 0.5
    report = structure_report("FINDINGS: Acute rib fracture. IMPRESSION: Fracture.", probs, {"Fracture": 0.05})
    assert [f.label for f in report.findings] == ["Fracture"] and report.findings[0].source == "text+detector"
    assert any("Critical finding(s): fracture" in r for r in report.recommendations)
    quiet = structure_report("FINDINGS: Clear lungs.", probs, {"Fracture": 0.05})
    assert quiet.findings == []


def test_normal_report_has_no_findings():
    report = structure_report("FINDINGS: The lungs are clear. IMPRESSION: No acute disease.", np.full(14, 0.01))
    assert report.findings == [] and report.recommendations == []
