"""HL7 FHIR R4 DiagnosticReport of a generated report (status `preliminary`: an AI draft awaiting a radiologist).

- code: LOINC 18748-4 "Diagnostic imaging study" (the chest X-ray report as a whole); category RAD.
- subject / imagingStudy: logical references by the study id. The service never sees patient identity: the
  subject is typed `Patient` and identified through the study (system `urn:rrg:study-subject`); the EHR resolves
  it through its ImagingStudy. A DICOM UID study id is also given as `urn:oid:` identifier of the ImagingStudy.
- conclusion: the impression; conclusionCode: one CodeableConcept per listed finding, coded in the local
  system `urn:rrg:chexpert` (the CheXpert observation) and, where the mapping is well established, SNOMED CT.
  Its text is the report sentence, so an uncertain statement ("possible pneumonia") keeps its qualifier.
- the generating model: R4 does not allow a Device as DiagnosticReport.performer, so the model is a contained
  `Device` (name, version) referenced from the extension `urn:rrg:fhir:extension:generated-by`.
- presentedForm: the plain-text rendering (text/plain, base64), so a viewer without structure can show it.
- extensions also carry `requires_radiologist_review` and the review reasons.

`fhir.resources` (8.x) ships R5 as default and R4B (4.3.0) for the 4.x line; DiagnosticReport did not change
between R4 4.0.1 and R4B, so tests validate the resource with `fhir.resources.R4B`.
"""

from __future__ import annotations

import base64
import re

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
LOCAL_CHEXPERT = "urn:rrg:chexpert"
EXT_GENERATED_BY = "urn:rrg:fhir:extension:generated-by"
EXT_REVIEW = "urn:rrg:fhir:extension:requires-radiologist-review"
EXT_REVIEW_REASON = "urn:rrg:fhir:extension:review-reason"
EXT_CONFIDENCE = "urn:rrg:fhir:extension:confidence"
REPORT_CODE = {"system": LOINC, "code": "18748-4", "display": "Diagnostic imaging study"}

# SNOMED CT concepts for the CheXpert observations whose mapping is unambiguous; the others (Lung Opacity,
# Lung Lesion, Enlarged Cardiomediastinum, Pleural Other, Support Devices) stay in the local system only.
SNOMED_CODES: dict[str, tuple[str, str]] = {
    "Cardiomegaly": ("8186001", "Cardiomegaly"),
    "Edema": ("19242006", "Pulmonary edema"),
    "Consolidation": ("95436008", "Lung consolidation"),
    "Pneumonia": ("233604007", "Pneumonia"),
    "Atelectasis": ("46621007", "Atelectasis"),
    "Pneumothorax": ("36118008", "Pneumothorax"),
    "Pleural Effusion": ("60046008", "Pleural effusion"),
    "Fracture": ("125605004", "Fracture of bone"),
}
_DICOM_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def finding_concept(label: str, text: str | None = None, confidence: float | None = None) -> dict:
    codings = []
    if label in SNOMED_CODES:
        code, display = SNOMED_CODES[label]
        codings.append({"system": SNOMED, "code": code, "display": display})
    codings.append({"system": LOCAL_CHEXPERT, "code": label.replace(" ", "_"), "display": label})
    concept: dict = {"coding": codings, "text": text or label}
    if confidence is not None:
        concept["extension"] = [{"url": EXT_CONFIDENCE, "valueDecimal": round(float(confidence), 4)}]
    return concept


def diagnostic_report(record: dict) -> dict:
    """The FHIR R4 DiagnosticReport (a JSON-ready dict) of a stored report record (see `serving.service`)."""
    response, study_id = record["response"], record["study_id"]
    report_id = response["report_id"]
    study_ref: dict = {"reference": f"ImagingStudy/{study_id}", "display": f"Imaging study {study_id}"}
    if _DICOM_UID.match(study_id):
        study_ref["identifier"] = {"system": "urn:dicom:uid", "value": f"urn:oid:{study_id}"}
    device = {
        "resourceType": "Device", "id": "model",
        "deviceName": [{"name": "rrg chest X-ray report generator", "type": "model-name"}],
        "version": [{"value": str(response["model_version"])}],
        "type": {"text": "AI software: radiology report drafting aid (not for autonomous diagnosis)"},
    }
    extensions = [
        {"url": EXT_GENERATED_BY, "valueReference": {"reference": "#model", "display": "report model "
                                                     f"{response['model_version']}"}},
        {"url": EXT_REVIEW, "valueBoolean": bool(response["requires_radiologist_review"])},
    ]
    extensions += [{"url": EXT_REVIEW_REASON, "valueString": r} for r in response.get("review_reasons", [])]
    resource: dict = {
        "resourceType": "DiagnosticReport",
        "id": report_id,
        "contained": [device],
        "extension": extensions,
        "identifier": [{"system": "urn:rrg:report-id", "value": report_id}],
        "status": "preliminary",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD",
                                  "display": "Radiology"}]}],
        "code": {"coding": [REPORT_CODE], "text": "Chest X-ray report (AI-generated draft)"},
        "subject": {"type": "Patient", "identifier": {"system": "urn:rrg:study-subject", "value": study_id},
                    "display": f"Patient of imaging study {study_id}"},
        "issued": record["created"],
        "imagingStudy": [study_ref],
        "presentedForm": [{"contentType": "text/plain", "language": "en", "title": "AI draft report",
                           "data": base64.b64encode(record["text_rendering"].encode()).decode("ascii")}],
    }
    if response.get("impression"):
        resource["conclusion"] = response["impression"]
    concepts = []
    for finding, label in zip(response["findings"], record["labels"]):
        concepts.append(finding_concept(label, finding["finding"], finding["confidence"]))
    if concepts:
        resource["conclusionCode"] = concepts
    return resource
