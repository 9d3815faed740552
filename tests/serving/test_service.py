"""The report service without HTTP: plain objects in and out, domain errors, and no web framework in its modules."""

import ast
import asyncio
import time
from pathlib import Path

import pytest
from test_api import STUDY, FakeBackend, FakePacs, body, fake_decode_dicom, fake_model, png_bytes

from model_core.config import ServingConfig
from serving.errors import BadInput, NotFound, Overloaded, ServiceError, Unavailable, UnsupportedMedia
from serving.schemas import ReportRequest, UploadOptions
from serving.service import ReportService, UploadedFile, parse_upload_options

REPO = Path(__file__).resolve().parents[2]


def _service(tmp_path, model=None, pacs=None, **config) -> ReportService:
    return ReportService(config=ServingConfig(**config), model_source=None, model=model or fake_model(), pacs=pacs,
                         decode_dicom=fake_decode_dicom, auth=None, audit_path=tmp_path / "audit.jsonl")


def _run(service: ReportService, scenario):
    async def main():
        await service.start()
        try:
            return await scenario()
        finally:
            await service.stop()
    return asyncio.run(main())


@pytest.mark.parametrize("module", ["service", "errors", "settings", "report_text", "metrics"])
def test_the_service_modules_import_no_web_framework(module):
    tree = ast.parse((REPO / "serving" / f"{module}.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert not {name for name in imported if name.split(".")[0] in ("fastapi", "starlette", "uvicorn")}


def test_reports_from_the_pacs_and_from_files_then_read_back(tmp_path):
    service = _service(tmp_path, pacs=FakePacs())

    async def scenario():
        made = await service.report_from_pacs(STUDY, ReportRequest(**body()), None, time.perf_counter())
        uploaded = await service.report_from_files(
            STUDY, parse_upload_options('{"views": ["PA"]}'), [UploadedFile("a.png", "image/png", png_bytes())],
            None, time.perf_counter())
        again = await service.read_report(made.report_id, None)
        text = await service.report_text(uploaded.report_id, "impression", None)
        fhir = await service.report_fhir(made.report_id, None)
        return made, again, text, fhir, await service.readiness()

    made, again, text, fhir, ready = _run(service, scenario)
    assert again == made and made.model_version == "fake-7"
    assert "IMPRESSION: Small right pneumothorax." in text
    assert fhir["resourceType"] == "DiagnosticReport" and fhir["id"] == made.report_id
    assert ready.ready and ready.pacs == "reachable"
    events = [line.split('"event":"')[1].split('"')[0] for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert events == ["report.create", "report.create", "report.read", "report.read.text", "report.read.fhir"]


def test_domain_errors_say_what_is_wrong(tmp_path):
    service = _service(tmp_path)

    async def scenario():
        errors = []
        for call in (lambda: service.read_report("missing", None),
                     lambda: service.report_from_pacs(STUDY, ReportRequest(**body()), None, 0.0),
                     lambda: service.report_from_files(STUDY, UploadOptions(), [UploadedFile("n.txt", None, b"x")],
                                                       None, 0.0),
                     lambda: service.report_from_files(STUDY, UploadOptions(study_id="1.2"), [], None, 0.0)):
            with pytest.raises(ServiceError) as caught:
                await call()
            errors.append(caught.value)
        return errors

    missing, no_pacs, not_an_image, other_study = _run(service, scenario)
    assert isinstance(missing, NotFound) and "30-day retention" in str(missing)
    assert isinstance(no_pacs, Unavailable) and "report:upload" in str(no_pacs)
    assert isinstance(not_an_image, UnsupportedMedia) and not_an_image.status_code == 415
    assert isinstance(other_study, BadInput) and "differs from the study id in the path" in str(other_study)
    with pytest.raises(BadInput, match=r"request part: \(unknown name\): unknown field") as unknown:
        parse_upload_options('{"colour": "red"}')
    assert "colour" not in str(unknown.value)          # a client's key is never echoed (it can carry identifiers)


def test_a_full_queue_is_overloaded_with_a_retry_time(tmp_path):
    service = _service(tmp_path, model=fake_model(FakeBackend(delay=0.3)), max_batch=1, max_wait_ms=0,
                       max_queue=1, workers=1)

    async def scenario():
        options = parse_upload_options(None)
        files = [UploadedFile("a.png", "image/png", png_bytes())]
        return await asyncio.gather(*(service.report_from_files(STUDY, options, files, None, 0.0) for _ in range(4)),
                                    return_exceptions=True)

    outcomes = _run(service, scenario)
    refused = [o for o in outcomes if isinstance(o, Overloaded)]
    assert refused and all(o.retry_after >= 1 and o.status_code == 429 for o in refused)
    assert service.metrics.registry.get_sample_value("rrg_queue_rejected_total") == len(refused)
