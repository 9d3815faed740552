"""Every error the API answers, mapped to HTTP in one place.

- `serving.errors.ServiceError` (raised by the service and the routes): `{"detail": <message>}` with the error's
  status; `Overloaded` adds `Retry-After`. The message passes `client_message` (no object repr or memory address,
  at most 600 characters) whatever raised it.
- request validation (FastAPI's RequestValidationError): 400 for malformed JSON, else 422 with `detail` naming
  each field and `errors` (location, message, type) without the offending input values, names the API does not
  define (a client's unknown key) or messages that quote the input.
- anything else: 500 with a reference that is logged with the traceback; the service keeps running.
"""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from serving.errors import (
    MalformedInput,
    Overloaded,
    ServiceError,
    client_message,
    describe_validation_errors,
    invalid_input,
)
from serving.middleware import classify

log = logging.getLogger("serving")


def service_error_response(exc: ServiceError) -> JSONResponse:
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, Overloaded) else None
    return JSONResponse({"detail": client_message(str(exc))}, exc.status_code, headers=headers)


async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
    return service_error_response(exc)


def _parameter_names(request: Request) -> set[str]:
    """The names of the matched route's path, query, header and cookie parameters (they may appear in locations)."""
    dependant = getattr(request.scope.get("route"), "dependant", None)
    if dependant is None:
        return set()
    fields = [*dependant.path_params, *dependant.query_params, *dependant.header_params, *dependant.cookie_params]
    return {name for f in fields for name in (f.name, f.alias) if name}


async def _request_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors, names = list(exc.errors()), _parameter_names(request)
    error = invalid_input(errors, names=names)
    if isinstance(error, MalformedInput):
        return service_error_response(error)
    return JSONResponse({"detail": str(error), "errors": describe_validation_errors(errors, names)[1]},
                        error.status_code)


async def _internal(request: Request, exc: Exception) -> JSONResponse:
    ref = uuid.uuid4().hex[:12]
    log.error("internal error %s on %s: %s", ref, classify(request.url.path)[0], type(exc).__name__,
              exc_info=(type(exc), exc, exc.__traceback__))
    return JSONResponse({"detail": f"internal error (reference {ref}); the service is still running"}, 500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(Exception, _internal)
