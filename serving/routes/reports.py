"""Creating a draft report (scope report.write):

    POST /api/v1/studies/{study_id}/report         JSON body (ReportRequest): images fetched from the PACS
    POST /api/v1/studies/{study_id}/report:upload  multipart: `files` (DICOM/PNG/JPEG) + optional `request` JSON

The upload is parsed here, by hand (size and part checks before and while the form is read); what it holds goes
to the service as plain bytes. Every part is capped: the whole body by max_upload_bytes (Content-Length, checked
first), the `request` part to 1 MiB whether it comes as a field or as a file, any other field likewise (Starlette's
max_part_size; file parts spool to disk beyond 1 MiB while the form is parsed).
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from serving.deps import AUTHENTICATED, ERRORS, Caller, Service, StudyPath
from serving.errors import BadInput, LengthRequired, MalformedInput, TooLarge, UnsupportedMedia
from serving.middleware import MAX_JSON_BYTES
from serving.schemas import API, ReportRequest, ReportResponse
from serving.service import UploadedFile, parse_upload_options

router = APIRouter(prefix=f"{API}/studies", tags=["reports"], dependencies=AUTHENTICATED)

# The upload's `request` part is parsed by hand (it may arrive as a field or a file part), so FastAPI does not see
# its model: the request body is described here, and serving.app adds UploadOptions to the schema components.
UPLOAD_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["files"],
            "properties": {
                "files": {"type": "array", "items": {"type": "string", "format": "binary"},
                          "description": "one or more DICOM (CR/DX), PNG or JPEG files of the study"},
                "request": {"$ref": "#/components/schemas/UploadOptions"},
            }},
            "encoding": {"request": {"contentType": "application/json"}}}},
    },
}


@router.post("/{study_id}/report", response_model=ReportResponse, responses=ERRORS)
async def create_report(service: Service, principal: Caller, study_id: StudyPath,
                        body: ReportRequest) -> ReportResponse:
    """Generate a draft report for a study whose images are in the PACS (fetched by UID over DICOMweb)."""
    started = time.perf_counter()
    return await service.report_from_pacs(study_id, body, principal, started)


@router.post("/{study_id}/report:upload", response_model=ReportResponse, responses=ERRORS,
             openapi_extra=UPLOAD_SCHEMA)
async def upload_report(request: Request, service: Service, principal: Caller,
                        study_id: StudyPath) -> ReportResponse:
    """Generate a draft report from uploaded files: multipart `files` parts (DICOM CR/DX, PNG or JPEG) and an
    optional `request` part (JSON: clinical_context, report_template, confidence_threshold, views)."""
    started = time.perf_counter()
    config = service.config
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise UnsupportedMedia("send multipart/form-data with one or more `files` parts")
    length = request.headers.get("content-length")
    if length is None:
        raise LengthRequired("a Content-Length header is required for uploads")
    if not length.isdigit() or int(length) > config.max_upload_bytes:
        raise TooLarge(f"upload of {length} bytes is above the {config.max_upload_bytes}-byte limit")
    try:
        form = await request.form(max_files=config.max_files, max_fields=4, max_part_size=MAX_JSON_BYTES)
    except (MultiPartException, HTTPException) as exc:      # inside an app, Starlette re-raises it as a 400
        message = str(getattr(exc, "message", None) or getattr(exc, "detail", ""))
        if "exceeded maximum size" in message:              # Starlette's cap on a field part (it names no field)
            raise TooLarge(f"a form field is above the {MAX_JSON_BYTES}-byte limit (the only field the upload "
                           "takes is the `request` part)") from None
        raise MalformedInput(f"malformed multipart body: {message}") from None
    try:
        unknown = sorted(set(form.keys()) - {"files", "request"})
        if unknown:
            # counted, not named: a part's name is the client's text
            raise BadInput(f"{len(unknown)} unknown form part(s); expected `files` and optional `request`")
        parts = form.getlist("files")
        if not parts:
            raise BadInput("no `files` part: upload at least one frontal image (DICOM, PNG or JPEG)")
        if any(not isinstance(f, UploadFile) for f in parts):
            raise BadInput("every `files` part must be a file upload (with a filename)")
        raw = form.get("request")
        if isinstance(raw, UploadFile):
            # sent as a file, it escapes Starlette's field cap (files spool to disk): the same cap, by its field
            if raw.size is None or raw.size > MAX_JSON_BYTES:
                raise TooLarge(f"the `request` part is above the {MAX_JSON_BYTES}-byte limit")
            raw = (await raw.read()).decode("utf-8", errors="replace")
        options = parse_upload_options(raw)
        files = [UploadedFile(f.filename, f.content_type, await f.read()) for f in parts]
    finally:
        await form.close()
    return await service.report_from_files(study_id, options, files, principal, started)
