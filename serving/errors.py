"""What the report service refuses or fails with, free of HTTP types: `serving.service` raises these and
`serving.http_errors` turns every one into a JSON error answer (`{"detail": <message>}` with its status).

Each class carries the HTTP status the API answers with (`status_code`), as the PACS client, the DICOM decoder and
the image decoder already do for their own errors; an instance may take the status such an error names (a PACS
client's 404, a decoder's 415). Messages are meant for the client: they name what is wrong, never the input.
"""

from __future__ import annotations


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


def describe_validation_errors(errors: list[dict]) -> tuple[str, list[dict]]:
    """Pydantic errors → one sentence naming each field, and the list without the offending input values."""
    clean, parts = [], []
    for e in errors:
        loc = [str(p) for p in e.get("loc", ())]
        where = ".".join(loc) or "body"
        msg = "unknown field (not part of the API)" if e.get("type") == "extra_forbidden" else e.get("msg", "")
        parts.append(f"{where}: {msg}")
        clean.append({"loc": loc, "msg": msg, "type": e.get("type")})
    return "; ".join(parts), clean


def invalid_input(errors: list[dict], prefix: str = "") -> BadInput:
    """The error for pydantic validation errors: MalformedInput when the JSON itself is broken, else BadInput
    naming each field (`prefix` says which part of the request, e.g. "request part: ")."""
    json_errors = [e for e in errors if e.get("type") == "json_invalid"]
    if json_errors:
        ctx = json_errors[0].get("ctx") or {}
        reason = ctx.get("error") or json_errors[0].get("msg", "")
        return MalformedInput(f"{prefix}malformed JSON: {reason}")
    return BadInput(f"{prefix}{describe_validation_errors(errors)[0]}")
