"""Route dependencies: the service, the caller's principal, and the bearer scheme the OpenAPI document shows.

Tokens are checked by `serving.middleware.ServiceMiddleware` before the body is read; it leaves the principal on
the request, where `current_principal` finds it (None when the service allows anonymous access).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi import Path as PathParam
from fastapi.security import HTTPBearer

from serving.auth import Principal
from serving.schemas import ID_PATTERN, ErrorResponse
from serving.service import ReportService

# Documents the scheme (and lets /docs send a token); the middleware has already enforced it.
bearer = HTTPBearer(auto_error=False, description="RRG_API_TOKENS token")
AUTHENTICATED = [Security(bearer)]

# The error answers each report endpoint documents.
ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 413, 415, 422, 429, 503, 504)}

StudyPath = Annotated[str, PathParam(pattern=ID_PATTERN, description="StudyInstanceUID or study id")]


def get_service(request: Request) -> ReportService:
    return request.app.state.service


def current_principal(request: Request) -> Principal | None:
    return getattr(request.state, "principal", None)


Service = Annotated[ReportService, Depends(get_service)]
Caller = Annotated[Principal | None, Depends(current_principal)]
