"""Reading a generated report: GET /api/v1/reports/{report_id} (JSON), …/fhir (FHIR R4), …/text (plain text).
Each read is audited (scope report.read)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, PlainTextResponse

from serving.deps import AUTHENTICATED, ERRORS, Caller, Service
from serving.schemas import API, ReportResponse, ReportTemplate

router = APIRouter(prefix=f"{API}/reports", tags=["reports"], dependencies=AUTHENTICATED)


@router.get("/{report_id}", response_model=ReportResponse, responses=ERRORS)
async def get_report(service: Service, principal: Caller, report_id: str) -> ReportResponse:
    return await service.read_report(report_id, principal)


@router.get("/{report_id}/fhir", responses=ERRORS)
async def get_report_fhir(service: Service, principal: Caller, report_id: str) -> JSONResponse:
    """The report as an HL7 FHIR R4 DiagnosticReport (status preliminary), media type application/fhir+json."""
    return JSONResponse(await service.report_fhir(report_id, principal), media_type="application/fhir+json")


@router.get("/{report_id}/text", responses=ERRORS, response_class=PlainTextResponse)
async def get_report_text(service: Service, principal: Caller, report_id: str,
                          template: Annotated[ReportTemplate | None, Query()] = None) -> PlainTextResponse:
    """Plain text: structured (findings with confidences), narrative, or impression only
    (default: the request's report_template)."""
    return PlainTextResponse(await service.report_text(report_id, template, principal))
