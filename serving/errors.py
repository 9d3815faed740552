"""What the report service refuses or fails with, free of HTTP types: `serving.service` raises these and
`serving.http_errors` turns every one into a JSON error answer (`{"detail": <message>}` with its status).

Each class carries the HTTP status the API answers with (`status_code`), as the PACS client, the DICOM decoder and
the image decoder already do for their own errors; an instance may take the status such an error names (a PACS
client's 404, a decoder's 415). Messages are meant for the client: they name what is wrong, never the input.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pydantic import BaseModel

from serving import schemas

# A message fit for an error body: an id or value a message quotes can never make it long, and a Python object's
# repr (`<urllib3.connection.HTTPConnection object at 0x7f…>`, from a library's exception text) never reaches it.
MAX_DETAIL_CHARS = 600
MAX_LISTED_ERRORS = 20
_OBJECT_REPR = re.compile(r"<[^<>]{0,300}? at 0x[0-9a-fA-F]+>")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")
# Where FastAPI says an invalid value was; every other location element must be a name the API defines.
_LOCATIONS = frozenset({"body", "path", "query", "header", "cookie"})
UNKNOWN_NAME = "(unknown name)"


class ServiceError(Exception):
    """Base class; the message is the client's `detail`."""

    status_code = 500

    def __init__(self, message: str, status_code: int | None = None):
        super().__init__(message)
        if status_code is not None:
            self.status_code = status_code


class BadInput(ServiceError):
    """The request is readable but cannot be used (wrong field, no frontal view, an undecodable image)."""

    status_code = 422


class MalformedInput(BadInput):
    """The request cannot be parsed (broken JSON, a broken multipart body)."""

    status_code = 400


class LengthRequired(BadInput):
    """An upload without its size announced."""

    status_code = 411


class TooLarge(BadInput):
    """A body or an image above the service's limit."""

    status_code = 413


class UnsupportedMedia(BadInput):
    """Content of a kind the service does not read (not multipart, not DICOM/PNG/JPEG)."""

    status_code = 415


class NotFound(ServiceError):
    """An unknown (or expired) report, or an instance the PACS does not hold."""

    status_code = 404


class Overloaded(ServiceError):
    """Too many studies wait for the model; the client may retry after `retry_after` seconds."""

    status_code = 429

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(ServiceError):
    """The service cannot answer now: starting, shutting down, no PACS, or the PACS is down."""

    status_code = 503


class UpstreamError(ServiceError):
    """The PACS answered, but not with what was asked for."""

    status_code = 502


class TimedOut(ServiceError):
    """Inference did not finish within the request timeout."""

    status_code = 504


def status_of(exc: BaseException, default: int) -> int:
    """The HTTP status an error of another component names (its `status_code`), else `default`."""
    code = getattr(exc, "status_code", None)
    return code if isinstance(code, int) and 400 <= code < 600 else default


def client_message(text: str) -> str:
    """`text` as an error body may carry it: object reprs and memory addresses replaced, at most MAX_DETAIL_CHARS."""
    text = _ADDRESS.sub("0x…", _OBJECT_REPR.sub("<object>", str(text)))
    return text if len(text) <= MAX_DETAIL_CHARS else text[:MAX_DETAIL_CHARS - 14] + "… (truncated)"


def _schema_names() -> frozenset[str]:
    """Every field name and alias of the API's models (serving.schemas)."""
    names = set()
    for model in vars(schemas).values():
        if isinstance(model, type) and issubclass(model, BaseModel):
            for name, info in model.model_fields.items():
                names.update(n for n in (name, info.alias) if n)
    return frozenset(names)


API_NAMES = _schema_names()


def _message(error: dict) -> str:
    """Pydantic's message, unless it quotes the input (a few error types do): then only the error type."""
    if error.get("type") == "extra_forbidden":
        return "unknown field (not part of the API)"
    msg, value = str(error.get("msg", "")), error.get("input")
    quoted = isinstance(value, (str, int, float)) and not isinstance(value, bool) and len(str(value)) >= 3
    if quoted and str(value) in msg:
        return f"invalid value ({error.get('type')})"
    return msg[:200]


def describe_validation_errors(errors: list[dict], names: Iterable[str] = ()) -> tuple[str, list[dict]]:
    """Pydantic errors → one sentence naming each field, and the list (location, message, type) without the
    offending input values. A location element that is not a name the API defines (an unknown key the client
    sent, a dict key) is replaced by UNKNOWN_NAME; `names` adds the route's parameter names. At most
    MAX_LISTED_ERRORS are listed."""
    known = API_NAMES | _LOCATIONS | set(names)
    clean, parts = [], []
    for e in errors[:MAX_LISTED_ERRORS]:
        loc = [str(p) if isinstance(p, int) or p in known else UNKNOWN_NAME for p in e.get("loc", ())]
        where = ".".join(loc) or "body"
        msg = _message(e)
        parts.append(f"{where}: {msg}")
        clean.append({"loc": loc, "msg": msg, "type": e.get("type")})
    if len(errors) > MAX_LISTED_ERRORS:
        parts.append(f"and {len(errors) - MAX_LISTED_ERRORS} more error(s)")
    return client_message("; ".join(parts)), clean


def invalid_input(errors: list[dict], prefix: str = "", names: Iterable[str] = ()) -> BadInput:
    """The error for pydantic validation errors: MalformedInput when the JSON itself is broken, else BadInput
    naming each field (`prefix` says which part of the request, e.g. "request part: "; `names`: see
    describe_validation_errors)."""
    json_errors = [e for e in errors if e.get("type") == "json_invalid"]
    if json_errors:
        ctx = json_errors[0].get("ctx") or {}
        # the JSON decoder's reason (a position and what it expected), never the text around it
        reason = str(ctx.get("error") or json_errors[0].get("msg", ""))[:200]
        return MalformedInput(client_message(f"{prefix}malformed JSON: {reason}"))
    return BadInput(f"{prefix}{describe_validation_errors(errors, names)[0]}")
