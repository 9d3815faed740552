"""The seed's §4 example request, sent as written, and every field of the seed's example response.

The seed's example writes `"view": "LATERAL"` in capitals, `prior_studies` as bare date strings, and
`"report_template": "standard"`, and its response's `recommendations` is one string. SEED_REQUEST below keeps
those values as the seed writes them (UIDs, age and text are the example's kind of values).
"""

from __future__ import annotations

import base64

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from test_api import LATERAL, STUDY, TOKENS, FakePacs, R, W, fake_decode_dicom, fake_model, make_app

from serving.report_text import render_text
from serving.schemas import ImageRef, ReportRequest, ReportResponse

SEED_REQUEST = {
    "study_id": STUDY,
    "images": [
        {"series_uid": "1.2.840.113619.2.55.3.1234.1", "instance_uid": "1.2.840.113619.2.55.3.1234.1.1",
         "view": "PA"},
        {"series_uid": LATERAL[0], "instance_uid": LATERAL[1], "view": "LATERAL"},
    ],
    "clinical_context": {"age": 65, "sex": "M", "indication": "Shortness of breath, fever",
                         "prior_studies": ["2024-01-15"]},
    "report_template": "standard",
    "confidence_threshold": 0.7,
}
# The seed's example response: each field and the JSON type it has there.
SEED_RESPONSE_FIELDS = {"report_id": str, "findings": list, "impression": str, "recommendations": str,
                        "processing_time_ms": (int, float), "model_version": str,
                        "requires_radiologist_review": bool}
SEED_FINDING_FIELDS = {"finding": str, "confidence": float, "severity": (str, type(None)),
                       "bounding_box": (list, type(None)), "is_critical": bool}


@pytest.fixture()
def seed_client(tmp_path):
    with TestClient(make_app(tmp_path, model=fake_model(), pacs=FakePacs(), tokens=TOKENS,
                             decode_dicom=fake_decode_dicom)) as client:
        yield client


def test_the_seeds_request_is_accepted_and_answers_every_field_of_the_seeds_response(seed_client):
    r = seed_client.post(f"/api/v1/studies/{STUDY}/report", json=SEED_REQUEST, headers=W)
    assert r.status_code == 200, r.text
    out = r.json()
    for name, kind in SEED_RESPONSE_FIELDS.items():
        assert isinstance(out[name], kind), name
    (finding,) = out["findings"]
    for name, kind in SEED_FINDING_FIELDS.items():
        assert isinstance(finding[name], kind), name
    assert finding["is_critical"] is True and finding["finding"] == "Small right pneumothorax."
    assert "Critical finding(s): pneumothorax" in out["recommendations"]
    assert out["recommendations"] == " ".join(out["recommendation_items"])       # the list form kept beside it
    assert out["model_version"] == "fake-7" and out["processing_time_ms"] > 0
    # 0.9 confidence clears the seed's 0.7 threshold and text and detector agree: no review needed
    assert out["requires_radiologist_review"] is False
    # GET returns the same body; the seed's "standard" template is the default text rendering
    assert seed_client.get(f"/api/v1/reports/{out['report_id']}", headers=R).json() == out
    text = seed_client.get(f"/api/v1/reports/{out['report_id']}/text", headers=R).text
    assert "FINDINGS:" in text and "RECOMMENDATIONS:\n- Critical finding(s): pneumothorax" in text
    standard = seed_client.get(f"/api/v1/reports/{out['report_id']}/text?template=standard", headers=R).text
    assert standard == text
    fhir = seed_client.get(f"/api/v1/reports/{out['report_id']}/fhir", headers=R).json()
    assert fhir["contained"][0]["version"] == [{"value": "fake-7"}]
    assert "Critical finding(s): pneumothorax" in base64.b64decode(fhir["presentedForm"][0]["data"]).decode()


@pytest.mark.parametrize("sent, canonical", [
    ("LATERAL", "Lateral"), ("lateral", "Lateral"), ("Lat", "Lateral"), ("LL", "LL"), ("rl", "RL"),
    ("PA", "PA"), ("pa", "PA"), ("ap", "AP"), ("FRONTAL", "Frontal"), (" PA ", "PA")])
def test_views_are_case_insensitive_and_map_onto_frontal_and_lateral(sent, canonical):
    ref = ImageRef.model_validate({"series_uid": "1.2", "instance_uid": "1.2.3", "view": sent})
    assert ref.view == canonical


@pytest.mark.parametrize("view", ["OBLIQUE", "", 3])
def test_an_unknown_view_is_a_422_naming_the_field_without_echoing_it(seed_client, view):
    request = {**SEED_REQUEST, "images": [{**SEED_REQUEST["images"][0], "view": view}]}
    r = seed_client.post(f"/api/v1/studies/{STUDY}/report", json=request, headers=W)
    assert r.status_code == 422
    assert "images.0.view" in r.text and ("OBLIQUE" not in r.text)


def test_prior_studies_take_date_strings_or_objects_and_a_bad_date_is_refused_without_echo():
    request = ReportRequest.model_validate({**SEED_REQUEST, "clinical_context": {
        "prior_studies": ["2024-01-15", {"date": "2023-06-02", "description": "chest radiograph"}]}})
    assert [p.date.isoformat() for p in request.clinical_context.prior_studies] == ["2024-01-15", "2023-06-02"]
    assert request.clinical_context.prompt_context()["prior_studies"] == ["2024-01-15", "2023-06-02"]
    with pytest.raises(ValidationError) as err:
        ReportRequest.model_validate({**SEED_REQUEST, "clinical_context": {"prior_studies": ["15/01/2024x"]}})
    (error,) = err.value.errors()
    assert error["loc"][:3] == ("clinical_context", "prior_studies", 0)
    assert "YYYY-MM-DD" in error["msg"] and "15/01/2024x" not in error["msg"]


def test_a_report_stored_with_the_list_form_reads_back_in_todays_shape():
    stored = {"report_id": "r1", "findings": [], "impression": "No acute disease.",
              "recommendations": ["Follow-up in 3 months.", "Compare with prior."], "processing_time_ms": 12.0,
              "model_version": "rrg/2", "requires_radiologist_review": False}
    response = ReportResponse(**stored)
    assert response.recommendations == "Follow-up in 3 months. Compare with prior."
    assert response.recommendation_items == stored["recommendations"]
    text = render_text({"response": stored, "findings_text": ""}, "standard")
    assert "- Follow-up in 3 months.\n- Compare with prior." in text
