"""A finding's heatmap over the report's images (scope report.read; each read is audited):

    GET /api/v1/reports/{report_id}/heatmaps/{finding}   image/png, one panel per view

`finding` is a CheXpert label, e.g. `pleural-effusion` or `Pleural Effusion`. What the report keeps for it and
how the map is computed: serving/heatmaps.py.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response

from serving.deps import AUTHENTICATED, ERRORS, Caller, Service
from serving.errors import Unavailable
from serving.heatmaps import HeatmapRenderer
from serving.schemas import API

router = APIRouter(prefix=f"{API}/reports", tags=["reports"], dependencies=AUTHENTICATED)


def renderer(request: Request, service) -> HeatmapRenderer:
    """One renderer per app, for the model the service has loaded (created on the first request)."""
    if service.model is None:
        raise Unavailable("the model is not loaded yet")
    state = request.app.state
    current = getattr(state, "heatmaps", None)
    if current is None or current.model_dir != service.model.model_dir:
        state.heatmaps = current = HeatmapRenderer(service.model.model_dir)
    return current


@router.get("/{report_id}/heatmaps/{finding}", responses={**ERRORS, 200: {"content": {"image/png": {}}}},
            response_class=Response)
async def get_heatmap(request: Request, service: Service, principal: Caller, report_id: str,
                      finding: str) -> Response:
    """The detection head's heatmap of one finding over each view of the report (PNG; a drafting aid)."""
    record = await asyncio.to_thread(service.get, report_id, principal)
    png = await asyncio.to_thread(renderer(request, service).render, record, finding)
    service.audit_event("report.read.heatmap", principal, record["study_id"], 200, report_id,
                        record["response"]["requires_radiologist_review"])
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})
