"""Bearer-token authentication with scopes, and the append-only audit log.

Tokens come from the environment variable RRG_API_TOKENS (or `create_app(tokens=...)`), in the format of
`model_core.tokens` (parsed there, one way for every service):

    RRG_API_TOKENS="<token>[:<scope>[+<scope>…][:site=<site>]][,<scope>…],<token>…"

- entries are comma-separated; an entry `TOKEN` alone holds every scope but `service.admin`, which a token
  gets only by naming it (least privilege for the switch that changes every report);
- `TOKEN:scope` gives that token the scope; further scopes follow with `+`, or as the next comma-separated
  items as long as they are scope names (so `tokA:report.write,report.read,tokB:report.read` gives tokA both
  scopes and tokB read only);
- scopes: `report.write` (POST …/report, …/report:upload), `report.read` (GET /api/v1/reports/…),
  `report.feedback` (POST /api/v1/reports/{id}/feedback: a radiologist's sign-off) and `service.admin`
  (GET/POST /api/v1/admin/automation: pause or resume automated reports);
  `/healthz`, `/readyz`, `/metrics` and the OpenAPI document need no token (they carry no PHI);
- a token is at least 16 characters of [A-Za-z0-9._~-]
  (e.g. `python -c "import secrets; print(secrets.token_urlsafe(32))"`).

Access model (`may_access`): per-site tenancy. `TOKEN:scopes:site=<site>` (or `TOKEN::site=<site>` with the
default scopes) binds a token to a site; a report keeps the site of the token that created it, and a token of
another site is answered 404, as for an unknown report (a 403 would confirm that the report exists). Either every
token names a site or none does: tokens without sites are a single-site deployment, where every `report.read`
token reads every report of the service.

A token is identified in logs and the audit log only by `token_id`: the first 16 hex digits of its SHA-256.
Requests without a valid token get 401 (with `WWW-Authenticate: Bearer`), with a valid token lacking the
scope 403 (`error="insufficient_scope"`).

The audit log is a JSONL file opened in append mode: one line per report request, report read, sign-off or
automation change, holding when, who (token id), the study id's SHA-256, the report id, the model version, the
review flag and the HTTP status (and for automation changes the state and the operator's reason, screened for
identifiers); no report text, no clinical context, no UIDs in clear.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from model_core.tokens import parse_token_spec, token_digest, token_id

SCOPES = ("report.write", "report.read", "report.feedback", "service.admin")
DEFAULT_SCOPES = ("report.write", "report.read", "report.feedback")      # a token listed without scopes
ENV_TOKENS = "RRG_API_TOKENS"


class AuthConfigError(ValueError):
    """RRG_API_TOKENS is malformed; the message says which entry (by position, never the token) and why."""


@dataclass(frozen=True)
class Principal:
    token_id: str
    scopes: frozenset[str]
    site: str | None = None     # None: a single-site deployment (module docstring, `may_access`)


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def parse_tokens(spec: str) -> dict[str, Principal]:
    """RRG_API_TOKENS text → {sha256(token): Principal}. See the module docstring for the format."""
    entries = parse_token_spec(spec, ENV_TOKENS, known_scopes=SCOPES, allow_site=True, error=AuthConfigError)
    with_site = [e.position for e in entries if e.site is not None]
    if with_site and len(with_site) != len(entries):
        without = next(e.position for e in entries if e.site is None)
        raise AuthConfigError(f"{ENV_TOKENS} entry {without}: names no site while others do; in a multi-site "
                              "deployment every token names its site (one without would read every site's reports)")
    return {token_digest(e.token): Principal(token_id(e.token), e.scopes or frozenset(DEFAULT_SCOPES), e.site)
            for e in entries}


def load_tokens(tokens: str | dict | None) -> dict[str, Principal]:
    """create_app's `tokens`: a spec string, {token: [scopes]}, or None (read RRG_API_TOKENS)."""
    if tokens is None:
        tokens = os.environ.get(ENV_TOKENS, "")
    if isinstance(tokens, dict):
        spec = ",".join(f"{t}:{'+'.join(s)}" if s else t for t, s in tokens.items())
        return parse_tokens(spec)
    return parse_tokens(tokens)


def may_access(principal: Principal | None, report_site: str | None) -> bool:
    """Whether `principal` may see a report created under `report_site` (per-site tenancy, module docstring).

    No principal (a service without tokens, development only) and a token without a site (a single-site
    deployment) see every report; a token with a site sees only the reports created under that site."""
    return principal is None or principal.site is None or principal.site == report_site


class Authenticator:
    def __init__(self, tokens: dict[str, Principal]):
        self.tokens = tokens

    def authenticate(self, authorization: str | None) -> Principal | None:
        if not authorization:
            return None
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            return None
        return self.tokens.get(token_digest(credentials.strip()))


class AuditError(RuntimeError):
    """The audit log cannot be opened or a record cannot be durably written: the work it would record is refused."""


class AuditLog:
    """Append-only JSONL audit trail, failing closed.

    Each record is one line written with one `write` on an O_APPEND descriptor, then fsync'ed before `record`
    returns: an acknowledged record is on disk. A write that fails or lands short (full disk) is cut back to the
    file's previous length, so no partial line is left, and raises AuditError; the log then reports itself failed
    (`healthy`, `failure`) until a later record succeeds. The path is checked when the log opens (AuditError).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = threading.Lock()
        self.failure: str | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # O_APPEND: every write lands at the end, even with several processes writing the same file.
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        except OSError as exc:
            raise AuditError(f"cannot open the audit log {self.path}: {exc.strerror or type(exc).__name__}") from None

    @property
    def healthy(self) -> bool:
        return self.failure is None

    def record(self, event: str, who: str | None, study_id: str | None, status: int, model_version: str | None,
               report_id: str | None = None, requires_review: bool | None = None,
               detail: dict | None = None) -> None:
        entry = {
            "at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "event": event, "who": who, "study_sha256": sha256_hex(study_id) if study_id else None,
            "report_id": report_id, "model_version": model_version, "requires_review": requires_review,
            "status": status, **({"detail": detail} if detail else {}),
        }
        line = (json.dumps(entry, separators=(",", ":")) + "\n").encode("utf-8")
        with self._lock:
            before = os.fstat(self._fd).st_size
            try:
                written = os.write(self._fd, line)
                if written != len(line):
                    raise OSError(28, "short write")      # ENOSPC-like: the line did not fit
                os.fsync(self._fd)
            except OSError as exc:
                try:
                    os.ftruncate(self._fd, before)          # no partial line is left behind
                except OSError:
                    pass                                    # nothing more can be done; the failure is reported
                self.failure = f"audit write failed ({exc.strerror or type(exc).__name__})"
                raise AuditError(self.failure) from None
            self.failure = None

    def close(self) -> None:
        with self._lock:
            os.close(self._fd)
