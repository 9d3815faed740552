"""Request and response models of the report API. Unknown fields and wrong types are errors.

Every model is `extra="forbid"` and `strict=True`: `{"age": "70"}` or an unknown key is a 422 that names the
field, never a silent coercion. Identifiers are limited to what a FHIR `id` allows (letters, digits, `-`, `.`,
at most 64 characters), which covers DICOM UIDs, so a study id can be used as is in FHIR references.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, field_validator, model_validator

API = "/api/v1"                 # the path prefix of the report endpoints (the version of these models)
ID_PATTERN = r"^[A-Za-z0-9.\-]{1,64}$"
DICOM_UID_PATTERN = r"^[0-9]+(\.[0-9]+)*$"

FRONTAL_VIEWS = frozenset({"PA", "AP", "Frontal"})
LATERAL_VIEWS = frozenset({"Lateral", "LL", "RL"})
# What clients send (case-insensitive; the seed's example writes "LATERAL") → the canonical view the service uses.
# The canonical names keep the frontal/lateral slot notion of serving.studies.
VIEW_SPELLINGS = {"PA": "PA", "AP": "AP", "FRONTAL": "Frontal",
                  "LATERAL": "Lateral", "LAT": "Lateral", "LL": "LL", "RL": "RL"}


def canonical_view(value):
    """A view as sent (any case, surrounding blanks) → PA/AP/Frontal/Lateral/LL/RL. Non-strings are left to the
    type check; an unknown name is an error listing the accepted ones (never echoing the input)."""
    if not isinstance(value, str):
        return value
    canonical = VIEW_SPELLINGS.get(value.strip().upper())
    if canonical is None:
        raise ValueError(f"view must be one of {', '.join(VIEW_SPELLINGS)} (any case)")
    return canonical


View = Annotated[
    Literal["PA", "AP", "Frontal", "Lateral", "LL", "RL"], BeforeValidator(canonical_view),
    WithJsonSchema({"type": "string", "examples": ["PA", "LATERAL"], "description": (
        "projection, case-insensitive: PA, AP or FRONTAL (frontal); LATERAL, LAT, LL or RL (lateral)")})]
# "standard" is the seed's name for the default rendering; it is the structured one (serving.report_text).
ReportTemplate = Literal["standard", "structured", "narrative", "impression"]

_STRICT = ConfigDict(extra="forbid", strict=True)


class ImageRef(BaseModel):
    """One DICOM instance of the study in the PACS, and its projection."""

    model_config = _STRICT
    series_uid: str = Field(pattern=DICOM_UID_PATTERN, max_length=64, description="SeriesInstanceUID")
    instance_uid: str = Field(pattern=DICOM_UID_PATTERN, max_length=64, description="SOPInstanceUID")
    view: View


class PriorStudy(BaseModel):
    model_config = _STRICT
    study_id: str | None = Field(default=None, pattern=ID_PATTERN)
    date: dt.date | None = Field(default=None, description="ISO date (YYYY-MM-DD) of the prior study")
    description: str | None = Field(default=None, max_length=200)

    @field_validator("date", mode="before")
    @classmethod
    def _iso_date(cls, value):
        # strict mode refuses strings for dates; accept exactly an ISO date string
        if isinstance(value, str):
            try:
                return dt.date.fromisoformat(value)
            except ValueError:
                raise ValueError("date must be an ISO date YYYY-MM-DD") from None
        return value


class ClinicalContext(BaseModel):
    model_config = _STRICT
    age: int | None = Field(default=None, ge=0, le=130)
    sex: Literal["M", "F", "O", "U"] | None = None
    indication: str | None = Field(default=None, max_length=1000)
    prior_studies: list[PriorStudy] = Field(default_factory=list, max_length=20, description=(
        "earlier studies: ISO date strings (\"2024-01-15\", as in the seed's example) or objects "
        "{study_id, date, description}"))

    @field_validator("prior_studies", mode="before")
    @classmethod
    def _dates_as_strings(cls, value):
        # The seed's example sends bare date strings; they mean a prior study known only by its date.
        if isinstance(value, list):
            return [{"date": item} if isinstance(item, str) else item for item in value]
        return value

    def prompt_context(self) -> dict:
        """The dict `model_core.tokenizer.build_prompt` reads (age, sex, indication, prior study dates)."""
        priors = [p.date.isoformat() if p.date else (p.description or "prior study") for p in self.prior_studies]
        return {"age": self.age, "sex": self.sex if self.sex in ("M", "F") else None,
                "indication": self.indication or "", "prior_studies": priors}


class _ReportOptions(BaseModel):
    model_config = _STRICT
    clinical_context: ClinicalContext = Field(default_factory=ClinicalContext)
    report_template: ReportTemplate = Field(
        default="structured", description="default rendering of GET /reports/{id}/text")
    confidence_threshold: float = Field(
        default=0.5, ge=0.0, le=1.0,
        description="findings the detector alone reports must reach it; a critical finding below it triggers review")


class ReportRequest(_ReportOptions):
    """Body of POST /api/v1/studies/{study_id}/report (images are fetched from the PACS)."""

    study_id: str = Field(pattern=ID_PATTERN, description="StudyInstanceUID (must equal the path's study id)")
    images: list[ImageRef] = Field(max_length=16)

    @field_validator("images")
    @classmethod
    def _not_empty(cls, images: list[ImageRef]) -> list[ImageRef]:
        if not images:
            raise ValueError("images is empty: at least one frontal (PA/AP/Frontal) image is required")
        return images


class UploadOptions(_ReportOptions):
    """The optional `request` part of POST …/report:upload: the JSON body's fields other than the images.

    `views` gives the projection of each uploaded file, in order; without it a DICOM file's ViewPosition is
    used, and a PNG/JPEG file (or a DICOM file without ViewPosition) counts as frontal.
    """

    study_id: str | None = Field(default=None, pattern=ID_PATTERN, description="if given, must equal the path's")
    views: list[View] | None = Field(default=None, max_length=16)


class Finding(BaseModel):
    finding: str = Field(description="the report sentence (or standard phrase) stating the finding")
    confidence: float = Field(description="detection-head probability (temperature-calibrated)")
    severity: str | None = Field(description="trace … massive, when the sentence states one")
    bounding_box: list[float] | None = Field(default=None, description="always null: no localiser")
    is_critical: bool


class ReportResponse(BaseModel):
    report_id: str
    findings: list[Finding]
    impression: str
    recommendations: str = Field(description="the recommendations as one text (the seed's shape); '' when none")
    recommendation_items: list[str] = Field(default_factory=list, description="the same recommendations, one per item")
    processing_time_ms: float
    model_version: str
    requires_radiologist_review: bool
    review_reasons: list[str] = Field(
        default_factory=list, description="why review is required (finding names and numbers only, no PHI)")

    @model_validator(mode="before")
    @classmethod
    def _recommendations_from_items(cls, data):
        # Reports stored before recommendations became a string hold the list: read them in today's shape.
        if isinstance(data, dict) and isinstance(data.get("recommendations"), list):
            data = {**data, "recommendation_items": data["recommendations"],
                    "recommendations": join_recommendations(data["recommendations"])}
        return data


def join_recommendations(items: list[str]) -> str:
    """The recommendation items as the response's one text."""
    return " ".join(item.strip() for item in items if item.strip())


class FeedbackRequest(BaseModel):
    """Body of POST /api/v1/reports/{report_id}/feedback: the radiologist's sign-off of a draft."""

    model_config = _STRICT
    final_report: str = Field(min_length=1, max_length=20000, description=(
        "the signed final report text; it is never logged and never enters the prediction log (only its SHA-256 "
        "and the report labeler's labels of it do)"))
    rating: int = Field(ge=1, le=5, description="the draft's quality, 1 (useless) to 5 (signed as is)")
    outcome: Literal["accepted", "edited", "rejected"]


class FeedbackResponse(BaseModel):
    report_id: str
    edit_distance: int = Field(description="word-level Levenshtein distance between the draft and the signed text")
    draft_words: int
    final_labels: dict[str, int] = Field(
        description="findings the signed text asserts (1) or raises as possible (-1), by the report labeler")
    validated_dataset: str = Field(description="whether the study joined the validated dataset, or why not")


class AutomationRequest(BaseModel):
    """Body of POST /api/v1/admin/automation: pause or resume automated reports."""

    model_config = _STRICT
    paused: bool
    reason: str = Field(min_length=1, max_length=300, description=(
        "why (returned in every report's review_reasons while paused, and in /readyz); no patient identifiers"))


class AutomationResponse(BaseModel):
    paused: bool
    reason: str | None
    since: str | None = Field(description="when the current state was set (ISO-8601 UTC)")
    by: str | None = Field(description="token id of whoever set it")
    readable: bool = Field(description="false: the state could not be read, so reports count as paused")


class ErrorResponse(BaseModel):
    detail: str | list


class ReadyResponse(BaseModel):
    ready: bool
    model: str
    model_version: str | None
    backend: str | None
    pacs: str
    automated_reports: str = Field(default="active", description=(
        "'active', or 'paused: <reason>' (every report is flagged for review; the service stays ready)"))
    prediction_log: str = Field(default="off", description=(
        "'ok …', 'off', or 'failing …' (reports continue; monitoring loses records; the service stays ready)"))
    audit: str = Field(default="ok", description=(
        "'ok', or 'failing …': a request whose audit record cannot be written is refused (503) and the service "
        "is not ready until a probe record is written"))
    store: str = Field(default="ok", description=(
        "'ok', or 'failing …': the report store failed a read, a write or its quick_check; new reports are refused "
        "(503) before inference, and the service is not ready until a re-check passes"))
    rollout: str = Field(default="served model only", description=(
        "'served model only', or the A/B challenger's and the shadow model's versions and shares (the service "
        "stays ready either way)"))
