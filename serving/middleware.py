"""The service's ASGI middleware: bearer-token auth before the body is read, the JSON body limit, per-route
metrics, the audit of refused report, report-read, feedback and automation requests, JSON 500s for unhandled
errors, and one access-log line per request.

Auth runs here rather than as a route dependency so that a request without a valid token is refused before its
body is read or parsed (FastAPI parses the body before it solves a route's dependencies). The access log names
the route template, never the URL path (which holds study ids); uvicorn's own access log is off (`serve`).

The JSON limit holds for chunked bodies too: `receive` is wrapped to count the body's bytes, and the request is
answered 413 (with `Connection: close`) as soon as they pass the limit, the rest never read. An exception nothing
else handled is answered here as a JSON 500 with a logged reference: Starlette's outermost error middleware would
re-raise it after answering, and uvicorn then drops the keep-alive connection (clients saw transport errors).
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from serving.service import ReportService

log = logging.getLogger("serving")

MAX_JSON_BYTES = 1024 * 1024

_ROUTES = [
    (re.compile(r"^/api/v1/studies/[^/]+/report$"), "/api/v1/studies/{study_id}/report", "report.write"),
    (re.compile(r"^/api/v1/studies/[^/]+/report:upload$"), "/api/v1/studies/{study_id}/report:upload",
     "report.write"),
    (re.compile(r"^/api/v1/reports/[^/]+$"), "/api/v1/reports/{report_id}", "report.read"),
    (re.compile(r"^/api/v1/reports/[^/]+/fhir$"), "/api/v1/reports/{report_id}/fhir", "report.read"),
    (re.compile(r"^/api/v1/reports/[^/]+/text$"), "/api/v1/reports/{report_id}/text", "report.read"),
    (re.compile(r"^/api/v1/reports/[^/]+/heatmaps/[^/]+$"), "/api/v1/reports/{report_id}/heatmaps/{finding}",
     "report.read"),
    (re.compile(r"^/api/v1/reports/[^/]+/feedback$"), "/api/v1/reports/{report_id}/feedback", "report.feedback"),
    (re.compile(r"^/api/v1/admin/automation$"), "/api/v1/admin/automation", "service.admin"),
]
# Refused or failed requests of these scopes are audited here (their successes are audited by the service): POSTs,
# and the GETs of reports (a 404 or 403 on a report read is an access attempt an auditor wants to see).
_AUDITED_REFUSALS = {"report.write": "report.create", "report.feedback": "report.feedback",
                     "service.admin": "automation.set", "report.read": "report.read"}
_READ_ROUTES = {"/api/v1/reports/{report_id}", "/api/v1/reports/{report_id}/fhir", "/api/v1/reports/{report_id}/text",
                "/api/v1/reports/{report_id}/heatmaps/{finding}"}
_REPORT_ID = re.compile(r"^/api/v1/reports/([A-Za-z0-9-]{1,64})(?:/|$)")     # a well-formed id, nothing else
_JSON_BODY_ROUTES = {"/api/v1/studies/{study_id}/report", "/api/v1/reports/{report_id}/feedback",
                     "/api/v1/admin/automation"}
_OPEN_ROUTES = {"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}


def classify(path: str) -> tuple[str, str | None]:
    """(route template, required scope); unknown /api paths need a token too, other paths are 'other'."""
    for pattern, template, scope in _ROUTES:
        if pattern.match(path):
            return template, scope
    if path in _OPEN_ROUTES:
        return path, None
    if path == "/api" or path.startswith("/api/"):   # any API version, known or not: a token first
        return "other-api", "report.read"
    return "other", None


class BodyTooLarge(HTTPException):
    """A body that passed its limit while being read (raised from `receive`; FastAPI re-raises HTTPExceptions
    from body reading, and they are answered with their status, detail and headers)."""

    def __init__(self, limit: int):
        super().__init__(413, f"JSON body above the {limit}-byte limit (reading stopped there)",
                         headers={"Connection": "close"})


def capped_receive(receive, limit: int):
    """`receive`, raising BodyTooLarge once the `http.request` bodies it returned pass `limit` bytes."""
    seen = 0

    async def receive_within_limit():
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit)
        return message

    return receive_within_limit


class ServiceMiddleware:
    """Pure ASGI middleware: bearer-token auth (before the body is read), per-route metrics, access log."""

    def __init__(self, app, service: ReportService):
        self.app, self.service = app, service

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        route, needed = classify(scope["path"])
        status = [500]
        answered = [False]

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                answered[0] = True
            await send(message)

        try:
            if needed is not None and self.service.auth is not None:
                headers = dict(scope.get("headers") or [])
                authorization = headers.get(b"authorization", b"").decode("latin-1") or None
                principal = self.service.auth.authenticate(authorization)
                if principal is None:
                    detail = ("missing bearer token (Authorization: Bearer <token>)" if not authorization
                              else "invalid bearer token")
                    response = JSONResponse({"detail": detail}, 401,
                                            headers={"WWW-Authenticate": 'Bearer realm="rrg"'})
                    return await response(scope, receive, send_wrapper)
                scope.setdefault("state", {})["principal"] = principal     # a refusal below is audited by token
                if needed not in principal.scopes:
                    response = JSONResponse(
                        {"detail": f"this token lacks the scope {needed!r} needed for {route}"}, 403,
                        headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{needed}"'})
                    return await response(scope, receive, send_wrapper)
            if route in _JSON_BODY_ROUTES and scope["method"] == "POST":
                length = dict(scope.get("headers") or []).get(b"content-length")
                if length is not None and (not length.isdigit() or int(length) > MAX_JSON_BYTES):
                    response = JSONResponse({"detail": f"JSON body above the {MAX_JSON_BYTES}-byte limit"}, 413)
                    return await response(scope, receive, send_wrapper)
                receive = capped_receive(receive, MAX_JSON_BYTES)      # chunked: no length to check up front
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            if answered[0]:
                raise                       # the answer has begun: nothing better can be sent now
            if isinstance(exc, BodyTooLarge):
                response = JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)
            else:
                reference = uuid.uuid4().hex[:12]
                log.error("internal error %s on %s: %s", reference, route, type(exc).__name__,
                          exc_info=(type(exc), exc, exc.__traceback__))
                response = JSONResponse(
                    {"detail": f"internal error (reference {reference}); the service is still running"}, 500)
            await response(scope, receive, send_wrapper)
        finally:
            seconds = time.perf_counter() - started
            if status[0] != 200 and self._audited(needed, route, scope["method"]):
                study = re.match(r"^/api/v1/studies/([^/]+)/", scope["path"])
                report = _REPORT_ID.match(scope["path"])
                state = scope.get("state") or {}
                event = _AUDITED_REFUSALS[needed] + (".refused" if status[0] < 500 else ".failed")
                self.service.audit_event(event, state.get("principal"), study.group(1) if study else None,
                                         status[0], report.group(1) if report else None,
                                         unauthenticated=status[0] == 401, required=False)
            metrics = self.service.metrics
            metrics.latency.labels(route).observe(seconds)
            metrics.requests.labels(route, str(status[0])).inc()
            if route not in ("/metrics", "/healthz", "/readyz"):
                log.info("%s %s → %d in %.0f ms", scope["method"], route, status[0], 1000 * seconds)

    @staticmethod
    def _audited(needed: str | None, route: str, method: str) -> bool:
        """Whether a refused or failed request is audited here: POSTs of audited scopes, GETs of reports."""
        if needed not in _AUDITED_REFUSALS:
            return False
        return route in _READ_ROUTES and method == "GET" if needed == "report.read" else method == "POST"
