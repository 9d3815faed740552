"""Who may read the auditors' page: bearer tokens with the scope `packet.read`, and login sessions.

    RRG_AUDITOR_TOKENS="<token>[:<scope>[+<scope>…]],<token>…"

Parsed by `model_core.tokens` (the format every token list here shares; sites are not used by this page).
A token listed without scopes holds `packet.read`; a token whose scopes do not include it is known but refused
(403). Tokens are at least 16 characters of [A-Za-z0-9._~-] (`python -c "import secrets;
print(secrets.token_urlsafe(32))"`); only their SHA-256 is kept, and a token is named in logs by `token_id` (the
first 16 hex digits of it). Kept apart from the report API's $RRG_API_TOKENS: an auditor's token must not be able
to read reports, and a report reader's token must not read packets.

A browser logs in once (POST /login with the token); the session id in an HttpOnly, SameSite=Strict cookie then
stands for the token for `SESSION_SECONDS`. Sessions live in the process (one process serves the page).
"""

from __future__ import annotations

import hmac
import os
import secrets
import threading
import time
from dataclasses import dataclass

from model_core.tokens import parse_token_spec, token_digest, token_id

PACKET_READ = "packet.read"
ENV_TOKENS = "RRG_AUDITOR_TOKENS"
SESSION_SECONDS = 8 * 3600


class TokenConfigError(ValueError):
    """$RRG_AUDITOR_TOKENS is malformed; the message names the entry by position, never the token."""


@dataclass(frozen=True)
class Principal:
    token_id: str
    scopes: frozenset[str]

    @property
    def may_read_packets(self) -> bool:
        return PACKET_READ in self.scopes


def parse_tokens(spec: str | None = None) -> dict[str, Principal]:
    """Token spec (default $RRG_AUDITOR_TOKENS) → {sha256(token): Principal}."""
    spec = os.environ.get(ENV_TOKENS, "") if spec is None else spec
    entries = parse_token_spec(spec, ENV_TOKENS, error=TokenConfigError)
    return {token_digest(e.token): Principal(token_id(e.token), e.scopes or frozenset({PACKET_READ}))
            for e in entries}


class Gatekeeper:
    """Tokens and sessions: `principal(bearer=…, session=…)` → the Principal or None."""

    def __init__(self, tokens: dict[str, Principal], session_seconds: int = SESSION_SECONDS):
        self.tokens = tokens
        self.session_seconds = session_seconds
        self._sessions: dict[str, tuple[Principal, float]] = {}
        self._lock = threading.Lock()

    def check_token(self, token: str | None) -> Principal | None:
        if not token:
            return None
        digest = token_digest(token.strip())
        # Every entry is compared in constant time, so the time taken does not reveal a near match.
        found = [p for known, p in self.tokens.items() if hmac.compare_digest(known, digest)]
        return found[0] if found else None

    def open_session(self, principal: Principal) -> str:
        session = secrets.token_urlsafe(32)
        with self._lock:
            now = time.monotonic()
            self._sessions = {k: v for k, v in self._sessions.items() if v[1] > now}   # drop expired ones
            self._sessions[token_digest(session)] = (principal, now + self.session_seconds)
        return session

    def close_session(self, session: str | None) -> None:
        if session:
            with self._lock:
                self._sessions.pop(token_digest(session), None)

    def principal(self, bearer: str | None = None, session: str | None = None) -> Principal | None:
        if bearer:
            return self.check_token(bearer)
        if session:
            with self._lock:
                found = self._sessions.get(token_digest(session))
            if found and found[1] > time.monotonic():
                return found[0]
        return None
