"""GET /api/v1/reports/{id}/fhir: an HL7 FHIR R4 DiagnosticReport that `fhir.resources` validates."""

from __future__ import annotations

import base64

import pytest
from fastapi.testclient import TestClient
from test_api import STUDY, FakeBackend, R, _post, body, fake_model, make_app

pytest.importorskip("fhir.resources")

TEXT = ("FINDINGS: Small right pneumothorax. Mild cardiomegaly. There is a 2 cm nodule in the right upper lobe. "
        "IMPRESSION: Small right pneumothorax. Right upper lobe nodule.")


@pytest.fixture()
def fhir_report(tmp_path):
    backend = FakeBackend(TEXT, {"Pneumothorax": 0.91, "Cardiomegaly": 0.7, "Lung Lesion": 0.2})
    with TestClient(make_app(tmp_path, model=fake_model(backend))) as c:
        out = _post(c, body(confidence_threshold=0.5)).json()
        r = c.get(f"/api/v1/reports/{out['report_id']}/fhir", headers=R)
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/fhir+json")
        text = c.get(f"/api/v1/reports/{out['report_id']}/text", headers=R).text
        yield out, r.json(), text


def test_fhir_diagnostic_report_validates_as_r4(fhir_report):
    from fhir.resources.R4B.diagnosticreport import DiagnosticReport

    out, resource, _ = fhir_report
    report = DiagnosticReport.model_validate(resource)        # R4B = R4 for DiagnosticReport; raises if invalid
    assert report.id == out["report_id"]
    assert resource["status"] == "preliminary"
    assert resource["code"]["coding"] == [{"system": "http://loinc.org", "code": "18748-4",
                                           "display": "Diagnostic imaging study"}]
    assert resource["category"][0]["coding"][0]["code"] == "RAD"
    assert resource["conclusion"] == out["impression"]
    assert resource["imagingStudy"][0]["reference"] == f"ImagingStudy/{STUDY}"
    assert resource["imagingStudy"][0]["identifier"]["value"] == f"urn:oid:{STUDY}"
    assert resource["subject"]["type"] == "Patient" and resource["subject"]["identifier"]["value"] == STUDY
    assert resource["issued"].endswith("+00:00")


def test_fhir_codes_findings_in_snomed_and_the_local_system(fhir_report):
    out, resource, _ = fhir_report
    codes = {c["text"]: {(x["system"], x["code"]) for x in c["coding"]} for c in resource["conclusionCode"]}
    assert [f["finding"] for f in out["findings"]] == list(codes)
    pneumothorax = codes["Small right pneumothorax."]
    assert ("http://snomed.info/sct", "36118008") in pneumothorax
    assert ("urn:rrg:chexpert", "Pneumothorax") in pneumothorax
    assert ("http://snomed.info/sct", "8186001") in codes["Mild cardiomegaly."]
    lesion = codes["There is a 2 cm nodule in the right upper lobe."]
    assert lesion == {("urn:rrg:chexpert", "Lung_Lesion")}          # no confident SNOMED mapping: local only
    confidences = [c["extension"][0]["valueDecimal"] for c in resource["conclusionCode"]]
    assert confidences == [f["confidence"] for f in out["findings"]]


def test_fhir_names_the_model_as_a_device_and_carries_the_review_flag(fhir_report):
    out, resource, text = fhir_report
    (device,) = resource["contained"]
    assert device["resourceType"] == "Device" and device["version"] == [{"value": "fake-7"}]
    generated_by = [e for e in resource["extension"] if e["url"].endswith("generated-by")]
    assert generated_by[0]["valueReference"]["reference"] == f"#{device['id']}"
    assert "performer" not in resource                          # R4 allows no Device performer
    review = [e for e in resource["extension"] if e["url"].endswith("requires-radiologist-review")]
    assert review[0]["valueBoolean"] is out["requires_radiologist_review"] is True   # lung lesion: text only
    reasons = [e["valueString"] for e in resource["extension"] if e["url"].endswith("review-reason")]
    assert reasons == out["review_reasons"] and any(r.startswith("Lung Lesion:") for r in reasons)
    form = resource["presentedForm"][0]
    assert form["contentType"] == "text/plain"
    assert base64.b64decode(form["data"]).decode() == text


def test_fhir_without_impression_or_findings_still_validates(tmp_path):
    from fhir.resources.R4B.diagnosticreport import DiagnosticReport

    backend = FakeBackend("The lungs are clear.", {})
    with TestClient(make_app(tmp_path, model=fake_model(backend))) as c:
        out = _post(c).json()
        resource = c.get(f"/api/v1/reports/{out['report_id']}/fhir", headers=R).json()
    DiagnosticReport.model_validate(resource)
    assert "conclusion" not in resource and "conclusionCode" not in resource
    assert out["findings"] == [] and out["requires_radiologist_review"] is False
