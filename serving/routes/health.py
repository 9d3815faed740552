"""Operations endpoints, open without a token (they carry no PHI): /healthz, /readyz, /metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from serving.deps import Service
from serving.schemas import ReadyResponse

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz", response_model=ReadyResponse, responses={503: {"model": ReadyResponse}})
async def readyz(service: Service):
    """Readiness: the model is loaded, the batcher runs, and the PACS answers (when one is configured)."""
    body = await service.readiness()
    return JSONResponse(body.model_dump(), 200 if body.ready else 503)


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(service: Service) -> Response:
    payload, content_type = service.metrics.render()
    return Response(payload, media_type=content_type)
