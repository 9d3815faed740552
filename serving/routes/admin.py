"""Operating the service (scope service.admin): the "pause automated reports" switch.

    GET  /api/v1/admin/automation    the current state (AutomationResponse)
    POST /api/v1/admin/automation    {"paused": bool, "reason": str}: pause or resume (audited)

While paused, every report carries requires_radiologist_review: true with the reason in review_reasons; the
monitoring side sets it when the hallucination rate passes its threshold, an operator clears it (serving.automation).
"""

from __future__ import annotations

from fastapi import APIRouter

from serving.deps import AUTHENTICATED, ERRORS, Caller, Service
from serving.schemas import API, AutomationRequest, AutomationResponse

router = APIRouter(prefix=f"{API}/admin", tags=["operations"], dependencies=AUTHENTICATED)


@router.get("/automation", response_model=AutomationResponse, responses=ERRORS)
async def read_automation(service: Service) -> AutomationResponse:
    return await service.read_automation()


@router.post("/automation", response_model=AutomationResponse, responses=ERRORS)
async def set_automation(service: Service, principal: Caller, body: AutomationRequest) -> AutomationResponse:
    """Pause (paused=true) or resume automated reports; the reason is shown in every paused report."""
    return await service.set_automation(body, principal)
