"""Every error the API answers, mapped to HTTP in one place.

- `serving.errors.ServiceError` (raised by the service and the routes): `{"detail": <message>}` with the error's
  status; `Overloaded` adds `Retry-After`.
- request validation (FastAPI's RequestValidationError): 400 for malformed JSON, else 422 with `detail` naming
  each field and `errors` (location, message, type) without the offending input values.
- anything else: 500 with a reference that is logged with the traceback; the service keeps running.
"""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from serving.errors import MalformedInput, Overloaded, ServiceError, describe_validation_errors, invalid_input
from serving.middleware import classify

log = logging.getLogger("serving")


def service_error_response(exc: ServiceError) -> JSONResponse:
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, Overloaded) else None
    return JSONResponse({"detail": str(exc)}, exc.status_code, headers=headers)


async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
    return service_error_response(exc)


async def _request_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = list(exc.errors())
    error = invalid_input(errors)
    if isinstance(error, MalformedInput):
        return service_error_response(error)
    return JSONResponse({"detail": str(error), "errors": describe_validation_errors(errors)[1]}, error.status_code)


async def _internal(request: Request, exc: Exception) -> JSONResponse:
    ref = uuid.uuid4().hex[:12]
    log.error("internal error %s on %s: %s", ref, classify(request.url.path)[0], type(exc).__name__,
              exc_info=(type(exc), exc, exc.__traceback__))
    return JSONResponse({"detail": f"internal error (reference {ref}); the service is still running"}, 500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(Exception, _internal)
