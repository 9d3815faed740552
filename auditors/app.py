"""The auditors' page (FastAPI, server-rendered with Jinja2; read-only).

    GET  /login, POST /login (form field `token`), POST /logout
    GET  /                          → /versions
    GET  /versions                  every version: gate result, PCCP verdict, packet hash and signature status
    GET  /versions/{version}        one version: gate checks, PCCP criteria, every file's SHA-256, the signature
    GET  /versions/{version}/packet the packet zip (verified now; a packet that fails verification is refused, 409)
    GET  /healthz                   liveness (no token)
Every page but /login and /healthz needs `packet.read`: a bearer token (`Authorization: Bearer …`) or the session
cookie of a browser login. Without either a browser is sent to /login and an API client gets 401; a token
without the scope gets 403. Responses carry a strict Content-Security-Policy (no scripts at all) and no-store.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

import uvicorn
from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from auditors.catalogue import Catalogue, PacketUnavailable
from auditors.tokens import Gatekeeper, Principal, TokenConfigError, parse_tokens

log = logging.getLogger("auditors")

TEMPLATES = Path(__file__).resolve().parent / "templates"
SESSION_COOKIE = "rrg_auditor_session"
_VERSION_RE = re.compile(r"^[0-9]{1,9}$")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; "
                               "base-uri 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
    env.filters["short"] = lambda digest, n=16: f"{digest[:n]}…" if digest else "—"
    env.filters["num"] = lambda v: "—" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))
    return env


def create_app(tracking_uri: str, model_name: str = "rrg-report-generator", tokens: str | None = None,
               trusted_keys: Mapping | None = None, ttl_seconds: float = 300.0) -> FastAPI:
    """tokens: the $RRG_AUDITOR_TOKENS format (default: that variable); without any token the app refuses to start.
    trusted_keys: {key_id: Ed25519 public key} packets must be signed with (default: `model_core.signing`'s
    trusted keys: $RRG_TRUSTED_KEYS, else the local development key)."""
    table = parse_tokens(tokens)
    if not table:
        raise TokenConfigError("no auditor tokens configured: set RRG_AUDITOR_TOKENS (scope packet.read)")
    gate = Gatekeeper(table)
    catalogue = Catalogue(tracking_uri, model_name, trusted_keys, ttl_seconds)
    env = _environment()
    app = FastAPI(title="Auditors' page: model versions and 510(k) packets", docs_url=None, redoc_url=None,
                  openapi_url=None)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    def page(name: str, status: int = 200, **context) -> HTMLResponse:
        return HTMLResponse(env.get_template(name).render(model_name=model_name, **context), status_code=status)

    def who(request: Request) -> Principal | None:
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        bearer = credentials.strip() if scheme.lower() == "bearer" else None
        return gate.principal(bearer=bearer, session=request.cookies.get(SESSION_COOKIE))

    def refuse(request: Request, principal: Principal | None) -> Response | None:
        """None when the request may read packets; else the answer (login redirect, 401 or 403)."""
        if principal is not None and principal.may_read_packets:
            return None
        if principal is not None:
            return page("message.html", 403, title="Not allowed",
                        message="This token does not hold the scope packet.read.")
        if "authorization" in request.headers or "text/html" not in request.headers.get("accept", ""):
            return PlainTextResponse("a bearer token with the scope packet.read is required", 401,
                                     headers={"WWW-Authenticate": 'Bearer scope="packet.read"'})
        return RedirectResponse("/login", 303)

    @app.get("/healthz", response_class=PlainTextResponse)
    def healthz():
        return "ok"

    @app.get("/auditors.css")
    def stylesheet():
        return Response((TEMPLATES / "auditors.css").read_bytes(), media_type="text/css")

    @app.get("/login", response_class=HTMLResponse)
    def login_form():
        return page("login.html")

    @app.post("/login")
    def login(request: Request, token: str = Form("")):
        principal = gate.check_token(token)
        if principal is None:
            log.info("auditors: login refused")
            return page("login.html", 401, error="That token is not accepted.")
        if not principal.may_read_packets:
            return page("login.html", 403, error="That token does not hold the scope packet.read.")
        log.info("auditors: login by token %s", principal.token_id)
        response = RedirectResponse("/versions", 303)
        response.set_cookie(SESSION_COOKIE, gate.open_session(principal), max_age=gate.session_seconds,
                            httponly=True, samesite="strict", secure=request.url.scheme == "https")
        return response

    @app.post("/logout")
    def logout(request: Request):
        gate.close_session(request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse("/login", 303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    @app.get("/")
    def home():
        return RedirectResponse("/versions", 303)

    @app.get("/versions")
    def versions(request: Request):
        principal = who(request)
        if (answer := refuse(request, principal)) is not None:
            return answer
        return page("versions.html", versions=catalogue.versions())

    @app.get("/versions/{version}")
    def version(request: Request, version: str):
        principal = who(request)
        if (answer := refuse(request, principal)) is not None:
            return answer
        row = catalogue.version(version) if _VERSION_RE.match(version) else None
        if row is None:
            return page("message.html", 404, title="No such version",
                        message=f"{model_name} has no version with that number.")
        return page("version.html", row=row)

    @app.get("/versions/{version}/packet")
    def packet(request: Request, version: str):
        principal = who(request)
        if (answer := refuse(request, principal)) is not None:
            return answer
        if not _VERSION_RE.match(version):
            return page("message.html", 404, title="No such version", message="Version numbers are digits.")
        try:
            name, data = catalogue.packet_bytes(version)
        except PacketUnavailable as exc:
            status = 409 if exc.state != "no packet" else 404
            return page("message.html", status, title=f"Packet of version {version} not served",
                        message=f"{exc.state}: {exc}")
        log.info("auditors: packet of version %s downloaded by token %s", version, principal.token_id)
        return Response(data, media_type="application/zip", headers={
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}"})

    return app


def serve(tracking_uri: str, model_name: str = "rrg-report-generator", host: str = "127.0.0.1", port: int = 8090,
          trusted_keys: Mapping | None = None, log_level: str = "info") -> None:
    """Run the page with uvicorn (blocking). Tokens come from $RRG_AUDITOR_TOKENS."""
    app = create_app(tracking_uri, model_name, trusted_keys=trusted_keys)
    uvicorn.run(app, host=host, port=port, log_level=log_level, workers=1)
