"""The report API: contract, OpenAPI, real tiny model (torch and ONNX Runtime), bad input, auth, QA,
readiness, metrics, audit and logs.

PACS retrieval and DICOM decoding are injected fakes (`FakePacs`, `fake_decode_dicom`) with the interface of
`serving.ingest` / `serving.dicom`; their error classes carry the same names, which is how the app maps them.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import shutil
import socket
import struct
import time
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from reference_decoding import ReferenceOrtGenerator

from model_core.chexpert import LABEL_INDEX
from model_core.config import GenerationConfig
from model_core.modeling.generation import structure_report
from model_core.modeling.model_dir import load_model_dir
from model_core.prediction_log import PredictionLog
from serving.app import create_app
from serving.auth import AuthConfigError, token_id
from serving.backends import LoadedModel
from serving.ingest import PacsClient
from serving.logs import RedactUidFilter
from serving.qa import review

WRITER = "writer-token-0123456789abcdef"
READER = "reader-token-0123456789abcdef"
ADMIN = "admin-token-0123456789abcdef"
TOKENS = f"{WRITER}:report.write,{READER}:report.read,{ADMIN}"
W = {"Authorization": f"Bearer {WRITER}"}
R = {"Authorization": f"Bearer {READER}"}
A = {"Authorization": f"Bearer {ADMIN}"}
STUDY = "1.2.840.113619.2.55.3.1234"
FRONTAL = ("1.2.840.113619.2.55.3.1234.1", "1.2.840.113619.2.55.3.1234.1.1")
LATERAL = ("1.2.840.113619.2.55.3.1234.2", "1.2.840.113619.2.55.3.1234.2.1")
REPORT_TEXT = ("FINDINGS: Small right pneumothorax. Heart size is normal. "
               "IMPRESSION: Small right pneumothorax.")


# --------------------------------------------------------------------------- fakes of serving.ingest / dicom

class PacsUnavailable(Exception):
    pass


class InstanceNotFound(LookupError):
    pass


class DicomInputError(ValueError):
    def __init__(self, message: str, status_code: int = 422):
        super().__init__(message)
        self.status_code = status_code


def fake_dicom(modality: str = "DX", pixels: bool = True, view: str | None = "PA") -> bytes:
    """A stand-in for a DICOM file: 128-byte preamble, DICM, then a JSON 'header' the fake decoder reads."""
    header = {"modality": modality, "pixels": pixels, "view_position": view}
    return b"\0" * 128 + b"DICM" + json.dumps(header).encode()


def fake_decode_dicom(data: bytes, size: int):
    if data[128:132] != b"DICM":
        raise DicomInputError("not a DICOM file (no DICM prefix)")
    header = json.loads(data[132:])
    if header["modality"] not in ("CR", "DX"):
        raise DicomInputError(f"modality {header['modality']} is not a radiograph (CR or DX expected)")
    if not header["pixels"]:
        raise DicomInputError("the DICOM file has no pixel data (PixelData missing)")
    gen = torch.Generator().manual_seed(len(data))
    return torch.rand(1, size, size, generator=gen), {"modality": header["modality"],
                                                       "view_position": header["view_position"]}


class FakePacs:
    def __init__(self, instances: dict | None = None, up: bool = True):
        self.instances = instances if instances is not None else {FRONTAL: fake_dicom(), LATERAL: fake_dicom(view="LL")}
        self.up = up
        self.calls = []

    def fetch_instances(self, study_uid, pairs):
        self.calls.append((study_uid, list(pairs)))
        if not self.up:
            raise PacsUnavailable("cannot connect to http://127.0.0.1:9/dicom-web (connection refused)")
        out = []
        for series, instance in pairs:
            if (series, instance) not in self.instances:
                raise InstanceNotFound(f"instance {instance} of series {series} is not in study {study_uid}")
            out.append(self.instances[(series, instance)])
        return out

    def ping(self):
        return self.up


class FakeBackend:
    """Returns a fixed text and probabilities; records batch sizes."""

    name, image_size = "fake", 32

    def __init__(self, text: str = REPORT_TEXT, probs: dict | None = None, delay: float = 0.0):
        self.text, self.delay, self.batches = text, delay, []
        self.probs = np.full(14, 0.05, np.float32)
        for label, p in (probs if probs is not None else {"Pneumothorax": 0.9}).items():
            self.probs[LABEL_INDEX[label]] = p

    def generate(self, images, contexts):
        self.batches.append(len(images))
        if self.delay:
            time.sleep(self.delay)
        return [(self.text, self.probs.copy()) for _ in images]


def fake_model(backend=None, thresholds=None) -> LoadedModel:
    return LoadedModel(backend=backend or FakeBackend(), source="fake", model_dir=Path("."), version="fake-7",
                       detection={"temperature": 1.0, "thresholds": thresholds or {"Pneumothorax": 0.3}},
                       gen=GenerationConfig())


def make_app(tmp_path, model=None, pacs=None, **kwargs):
    kwargs = {"decode_dicom": fake_decode_dicom, "audit_log": tmp_path / "audit.jsonl", "tokens": TOKENS, **kwargs}
    return create_app(model=model or fake_model(), pacs_client=pacs if pacs is not None else FakePacs(), **kwargs)


def body(**over) -> dict:
    out = {"study_id": STUDY,
           "images": [{"series_uid": FRONTAL[0], "instance_uid": FRONTAL[1], "view": "PA"},
                      {"series_uid": LATERAL[0], "instance_uid": LATERAL[1], "view": "Lateral"}],
           "clinical_context": {"age": 67, "sex": "F", "indication": "Shortness of breath after fall",
                                "prior_studies": [{"date": "2024-03-01", "description": "chest radiograph"}]},
           "report_template": "structured", "confidence_threshold": 0.5}
    out.update(over)
    return out


def png_bytes(size=(64, 64), mode="L") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 120).save(buf, "PNG")
    return buf.getvalue()


def jpeg_bytes(size=(64, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("L", size, 90).save(buf, "JPEG")
    return buf.getvalue()


def huge_png_header(width=20000, height=20000) -> bytes:
    """A valid PNG header announcing width×height pixels (a few bytes of data: a decompression bomb's shape)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


@pytest.fixture()
def client(tmp_path):
    with TestClient(make_app(tmp_path)) as c:
        yield c


def test_openapi_documents_the_contract(client):
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in ("/api/v1/studies/{study_id}/report", "/api/v1/studies/{study_id}/report:upload",
                 "/api/v1/reports/{report_id}", "/api/v1/reports/{report_id}/fhir",
                 "/api/v1/reports/{report_id}/text", "/healthz", "/readyz", "/metrics"):
        assert path in paths, path
    schemas = spec["components"]["schemas"]
    request = schemas["ReportRequest"]
    assert request["additionalProperties"] is False
    assert set(request["required"]) == {"study_id", "images"}
    assert set(request["properties"]) == {"study_id", "images", "clinical_context", "report_template",
                                          "confidence_threshold"}
    assert set(schemas["ImageRef"]["properties"]) == {"series_uid", "instance_uid", "view"}
    assert set(schemas["ClinicalContext"]["properties"]) == {"age", "sex", "indication", "prior_studies"}
    assert schemas["ClinicalContext"]["additionalProperties"] is False
    response = schemas["ReportResponse"]["properties"]
    assert {"report_id", "findings", "impression", "recommendations", "processing_time_ms", "model_version",
            "requires_radiologist_review"} <= set(response)
    assert set(schemas["Finding"]["properties"]) == {"finding", "confidence", "severity", "bounding_box",
                                                     "is_critical"}
    upload = paths["/api/v1/studies/{study_id}/report:upload"]["post"]["requestBody"]["content"]
    assert "files" in upload["multipart/form-data"]["schema"]["properties"]
    assert schemas["UploadOptions"]["additionalProperties"] is False
    assert "views" in schemas["UploadOptions"]["properties"]
    refs = set(re.findall(r'"#/components/schemas/([^"]+)"', json.dumps(spec)))
    assert refs and refs <= set(schemas)                               # every $ref resolves
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    post = paths["/api/v1/studies/{study_id}/report"]["post"]
    assert {"401", "403", "422", "429", "503"} <= set(post["responses"])


def test_report_from_pacs_fetches_only_the_frontal_image(tmp_path):
    pacs = FakePacs()
    with TestClient(make_app(tmp_path, pacs=pacs)) as c:
        r = c.post(f"/api/v1/studies/{STUDY}/report", json=body(), headers=W)
        assert r.status_code == 200, r.text
        out = r.json()
        assert pacs.calls == [(STUDY, [FRONTAL])]           # the model reads one frontal view
        assert out["model_version"] == "fake-7" and out["processing_time_ms"] > 0
        (finding,) = out["findings"]
        assert finding == {"finding": "Small right pneumothorax.", "confidence": 0.9, "severity": "small",
                           "bounding_box": None, "is_critical": True}
        assert out["impression"] == "Small right pneumothorax."
        assert any("pneumothorax" in rec for rec in out["recommendation_items"])
        assert out["requires_radiologist_review"] is False and out["review_reasons"] == []
        got = c.get(f"/api/v1/reports/{out['report_id']}", headers=R)
        assert got.status_code == 200 and got.json() == out
        text = c.get(f"/api/v1/reports/{out['report_id']}/text", headers=R)
        assert text.headers["content-type"].startswith("text/plain")
        assert "FINDINGS:" in text.text and "[confidence 0.90, small, CRITICAL]" in text.text
        narrative = c.get(f"/api/v1/reports/{out['report_id']}/text?template=narrative", headers=R).text
        assert "FINDINGS: Small right pneumothorax. Heart size is normal." in narrative
        assert "IMPRESSION: Small right pneumothorax." in c.get(
            f"/api/v1/reports/{out['report_id']}/text?template=impression", headers=R).text
        assert c.get(f"/api/v1/reports/{out['report_id']}/text?template=poem", headers=R).status_code == 422
        assert c.get("/api/v1/reports/no-such-report", headers=R).status_code == 404


def test_tiny_model_end_to_end_with_torch_backend(tmp_path, tiny_model_dir):
    app = create_app(tiny_model_dir, pacs_client=FakePacs(), tokens=TOKENS, decode_dicom=fake_decode_dicom,
                     audit_log=tmp_path / "audit.jsonl", backend="torch")
    with TestClient(app) as c:
        assert c.get("/readyz").json() == {"ready": True, "model": "loaded", "model_version": "test",
                                           "backend": "torch", "pacs": "reachable", "automated_reports": "active",
                                           "prediction_log": "ok (0 record(s) written by this process)",
                                           "audit": "ok", "store": "ok", "rollout": "served model only"}
        r = c.post(f"/api/v1/studies/{STUDY}/report", json=body(), headers=W)
        assert r.status_code == 200, r.text
        assert r.json()["model_version"] == "test"
        files = [("files", ("frontal.png", png_bytes(), "image/png")),
                 ("files", ("lat.jpg", jpeg_bytes(), "image/jpeg"))]
        up = c.post(f"/api/v1/studies/{STUDY}/report:upload", files=files,
                    data={"request": json.dumps({"views": ["PA", "Lateral"], "report_template": "narrative"})},
                    headers=W)
        assert up.status_code == 200, up.text
        assert c.get(f"/api/v1/reports/{up.json()['report_id']}/text", headers=R).text.count("FINDINGS:") == 1
        assert app.state.service.writer.flush()
    # the torch backend gives the pooled visual embedding (d_l of the tiny model), logged per report
    records = PredictionLog(str(tmp_path / "predictions.sqlite3")).predictions()
    assert [rec.report_id for rec in records] == [r.json()["report_id"], up.json()["report_id"]]
    d_l = app.state.service.model.backend.model.language_model.get_input_embeddings().embedding_dim
    assert all(rec.embedding.shape == (d_l,) and rec.model_version == "test" for rec in records)


def test_ort_backend_is_the_cpu_default_and_matches_torch(tiny_model_with_export):
    """Backend auto exports the model on startup (FP32 and INT8 decoders) and serves with ONNX Runtime (FP32); FP32
    ORT and torch produce identical texts and matching probabilities on a few studies; INT8 keeps the probabilities
    (FP32 vision)."""
    from serving.backends import OrtBackend, TorchBackend, load_model

    model_dir, loaded = tiny_model_with_export
    assert loaded.backend.name == "onnxruntime-fp32" and (model_dir / "onnx" / "decoder.int8.onnx").is_file()
    assert loaded.version == "test"
    again = load_model(model_dir)            # the export next to the model is found, not redone
    assert again.backend.name == "onnxruntime-fp32" and not again.notes
    model, detection, _ = load_model_dir(model_dir)
    gen = GenerationConfig(num_beams=2, max_new_tokens=12)
    reference = TorchBackend(model, detection, gen)
    fp32 = OrtBackend(model_dir / "onnx", detection, gen=gen, precision="fp32")
    torch.manual_seed(1)
    studies = [torch.rand(1, 1, 32, 32) for _ in range(4)]
    contexts = [{"age": 70, "sex": "M", "indication": "cough"}, None, {"indication": "fever"}, {"age": 30}]
    want = reference.generate(studies, contexts)
    got = fp32.generate(studies, contexts)
    for (t_text, t_probs), (o_text, o_probs) in zip(want, got):
        assert o_text == t_text
        np.testing.assert_allclose(o_probs, t_probs, atol=1e-4)
    assert [t for t, _ in loaded.backend.generate(studies, contexts)] == [t for t, _ in want]
    int8 = OrtBackend(model_dir / "onnx", detection, gen=gen, precision="int8")
    int8_texts, _ = ReferenceOrtGenerator(model_dir / "onnx", "int8", gen=gen).generate(
        np.stack([s.numpy() for s in studies]), contexts)
    for (_, t_probs), (text, probs), expected in zip(want, int8.generate(studies, contexts), int8_texts):
        assert text == expected                  # the INT8 decoder's own text for that study and its context
        np.testing.assert_allclose(probs, t_probs, atol=1e-4)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_a_study_gets_the_same_report_whatever_its_batch(tiny_model_with_export, precision):
    """Dynamic batching must not change a study's report: alone, or in a batch of 8 with other studies (FP32, the
    default, and the calibrated INT8 decoder of the startup export)."""
    from serving.backends import OrtBackend

    model_dir, loaded = tiny_model_with_export
    backend = loaded.backend if precision == "fp32" else OrtBackend(model_dir / "onnx", loaded.detection,
                                                                    gen=loaded.gen, precision="int8")
    assert backend.name == f"onnxruntime-{precision}"
    torch.manual_seed(5)
    studies = [torch.rand(1, 1, 32, 32) for _ in range(8)]
    contexts = [None, {"age": 50}, None, {"indication": "cough"}, None, None, {"sex": "F"}, None]
    alone = [backend.generate([s], [c])[0] for s, c in zip(studies, contexts)]
    together = backend.generate(studies, contexts)
    assert [t for t, _ in together] == [t for t, _ in alone]
    np.testing.assert_allclose(np.stack([p for _, p in together]), np.stack([p for _, p in alone]), atol=1e-5)


def test_serving_beam_search_is_token_identical_to_the_reference_ort_generator(tiny_model_with_export):
    """The service's vectorised processors, partial top-k and in-place cache reorder change nothing."""
    from serving.backends import OrtBackend

    model_dir, _ = tiny_model_with_export
    torch.manual_seed(2)
    images = np.stack([torch.rand(1, 1, 32, 32).numpy() for _ in range(5)])
    contexts = [{"age": 70}, None, {"indication": "cough"}, None, {"sex": "F"}]
    for beams, new in ((1, 20), (3, 30), (4, 40)):
        gen = GenerationConfig(num_beams=beams, max_new_tokens=new, no_repeat_ngram_size=2 + beams % 2,
                               repetition_penalty=1.2 if beams == 3 else 1.0)
        reference = ReferenceOrtGenerator(model_dir / "onnx", "int8", gen=gen)
        fast = OrtBackend(model_dir / "onnx", {}, gen=gen, precision="int8").engine
        want, _ = reference.generate(images, contexts)
        got, _ = fast.generate(images, contexts)
        assert got == want, (beams, got, want)


def test_registry_source_downloads_the_champion_and_reports_its_version(tmp_path, tiny_model_dir, monkeypatch):
    """models:/NAME@champion: resolve the alias, download that version's pyfunc artifacts, use artifacts/model_dir."""
    import mlflow  # heavy: imported by the one test that patches it

    from serving.backends import load_model

    calls = []

    class Client:
        def get_model_version_by_alias(self, name, alias):
            calls.append(("alias", name, alias))
            return SimpleNamespace(version="3", run_id="run123")

    def download(artifact_uri=None, run_id=None, artifact_path=None, dst_path=None, **_):
        calls.append(("download", artifact_uri or f"runs:/{run_id}/{artifact_path}"))
        if artifact_uri:
            shutil.copytree(tiny_model_dir, Path(dst_path) / "artifacts" / "model_dir",
                            ignore=shutil.ignore_patterns("onnx", "gate"))
            return dst_path
        if artifact_path == "gate":      # the run's signed gate decision (the fixture's passing one)
            shutil.copytree(tiny_model_dir / "gate", Path(dst_path) / "gate")
            return dst_path
        raise OSError("no onnx artifact")

    monkeypatch.setattr(mlflow, "MlflowClient", Client)
    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", download)
    loaded = load_model("models:/rrg-chest-xray@champion", backend="torch", cache_dir=tmp_path / "cache")
    assert loaded.version == "rrg-chest-xray/3" and loaded.backend.name == "torch"
    assert loaded.model_dir == tmp_path / "cache" / "rrg-chest-xray-v3" / "model" / "artifacts" / "model_dir"
    assert ("download", "models:/rrg-chest-xray/3") in calls      # pinned to the version, not the alias
    calls.clear()
    load_model("models:/rrg-chest-xray@champion", backend="torch", cache_dir=tmp_path / "cache")
    # the model is cached per version; the signed gate decision is fetched (and verified) on every load
    assert [c for c in calls if c[0] == "download"] == [("download", "runs:/run123/gate")]


def test_bad_model_source_is_a_clear_error(tmp_path):
    from serving.backends import ModelSourceError, load_model

    with pytest.raises(ModelSourceError, match="neither a model directory"):
        load_model(tmp_path / "missing")
    with pytest.raises(ModelSourceError, match="no model_card.json"):
        load_model(tmp_path)
    with pytest.raises(ModelSourceError, match="models:/NAME@ALIAS"):
        load_model("models:/only-a-name")


# --------------------------------------------------------------------------- bad input: one test per case

def _post(c, payload=None, study=STUDY, **kwargs):
    return c.post(f"/api/v1/studies/{study}/report", json=payload if payload is not None else body(),
                  headers=W, **kwargs)


def _upload(c, files, request=None, study=STUDY):
    data = {"request": json.dumps(request)} if request is not None else None
    return c.post(f"/api/v1/studies/{study}/report:upload", files=files, data=data, headers=W)


def test_malformed_json_is_400(client):
    r = client.post(f"/api/v1/studies/{STUDY}/report", content=b'{"study_id": "1.2", "images": [',
                    headers={**W, "Content-Type": "application/json"})
    assert r.status_code == 400 and "malformed JSON" in r.json()["detail"]


def test_unknown_field_is_422_naming_where_not_the_key(client):
    """The key is the client's text (it may be an identifier): its place is named, the key itself is not."""
    r = _post(client, body(priority="stat"))
    assert r.status_code == 422 and "body.(unknown name): unknown field" in r.json()["detail"]
    assert "priority" not in r.text
    nested = body()
    nested["clinical_context"]["name"] = "Jane Doe"
    r = _post(client, nested)
    assert r.status_code == 422 and "clinical_context.(unknown name): unknown field" in r.json()["detail"]
    assert "Jane Doe" not in r.text                                  # inputs are not echoed back


def test_wrong_types_are_422_naming_the_field(client):
    ctx = body()["clinical_context"] | {"age": "67"}
    r = _post(client, body(clinical_context=ctx))
    assert r.status_code == 422 and "clinical_context.age" in r.json()["detail"]
    r = _post(client, body(confidence_threshold="high"))
    assert r.status_code == 422 and "confidence_threshold" in r.json()["detail"]
    r = _post(client, body(report_template="haiku"))
    assert r.status_code == 422 and "report_template" in r.json()["detail"]
    r = _post(client, body(images=[{"series_uid": "1.2", "instance_uid": "abc", "view": "PA"}]))
    assert r.status_code == 422 and "instance_uid" in r.json()["detail"]


def test_oversized_json_body_is_413(client):
    r = _post(client, body(clinical_context={"indication": "x" * 900, "prior_studies": []},
                           images=[{"series_uid": "1.2", "instance_uid": "1." + "1" * 60, "view": "PA"}] * 16)
              | {"padding": "y" * 1_100_000})
    assert r.status_code == 413 and "limit" in r.json()["detail"]


def test_study_id_must_match_the_path(client):
    r = _post(client, body(study_id="1.2.3.4"))
    assert r.status_code == 422 and "differs from the study id in the path" in r.json()["detail"]


def test_unknown_uids_are_404_from_the_pacs(client):
    images = [{"series_uid": "1.2.3", "instance_uid": "9.9.9", "view": "PA"}]
    r = _post(client, body(images=images))
    assert r.status_code == 404 and "9.9.9" in r.json()["detail"]


def test_pacs_unreachable_is_503(tmp_path):
    with TestClient(make_app(tmp_path, pacs=FakePacs(up=False))) as c:
        r = _post(c)
        assert r.status_code == 503 and "PACS unavailable" in r.json()["detail"]
        ready = c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["pacs"] == "unreachable"
        assert c.get("/healthz").status_code == 200


def test_no_pacs_configured_is_503_pointing_to_upload(tmp_path):
    app = create_app(model=fake_model(), tokens=TOKENS, decode_dicom=fake_decode_dicom,
                     audit_log=tmp_path / "a.jsonl")
    with TestClient(app) as c:
        r = _post(c)
        assert r.status_code == 503 and "report:upload" in r.json()["detail"]
        assert c.get("/readyz").json()["pacs"].startswith("not configured")


def test_non_image_bytes_are_415(client):
    r = _upload(client, [("files", ("notes.txt", b"patient notes, not an image" * 10, "text/plain"))])
    assert r.status_code == 415 and "files[0]" in r.json()["detail"]
    assert "not a DICOM, PNG or JPEG" in r.json()["detail"]


def test_corrupt_jpeg_is_422(client):
    data = jpeg_bytes()
    r = _upload(client, [("files", ("cxr.jpg", data[: len(data) // 2], "image/jpeg"))])
    assert r.status_code == 422 and "corrupt JPEG" in r.json()["detail"]


def test_corrupt_png_is_422(client):
    data = png_bytes((128, 128))
    r = _upload(client, [("files", ("cxr.png", data[:60], "image/png"))])
    assert r.status_code == 422 and "corrupt PNG" in r.json()["detail"]


def test_dicom_without_pixel_data_is_422(client):
    r = _upload(client, [("files", ("cxr.dcm", fake_dicom(pixels=False), "application/dicom"))])
    assert r.status_code == 422 and "no pixel data" in r.json()["detail"]


def test_ct_and_mr_dicom_are_422(client):
    for modality in ("CT", "MR"):
        r = _upload(client, [("files", ("x.dcm", fake_dicom(modality=modality), "application/dicom"))])
        assert r.status_code == 422 and f"modality {modality}" in r.json()["detail"]
    # the same check on the PACS path
    with_ct = FakePacs({FRONTAL: fake_dicom(modality="CT")})
    app = create_app(model=fake_model(), pacs_client=with_ct, tokens=TOKENS, decode_dicom=fake_decode_dicom,
                     audit_log=Path(client.app.state.service.audit_path))
    with TestClient(app) as c:
        r = _post(c, body(images=body()["images"][:1]))
        assert r.status_code == 422 and "modality CT" in r.json()["detail"] and FRONTAL[1] in r.json()["detail"]


def test_huge_image_is_refused_from_its_header(client):
    started = time.perf_counter()
    r = _upload(client, [("files", ("huge.png", huge_png_header(), "image/png"))])
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    assert time.perf_counter() - started < 2.0                        # 400 Mpx never decoded
    r = _upload(client, [("files", ("big.png", huge_png_header(9000, 9000), "image/png"))])
    assert r.status_code == 413 and "9000×9000" in r.json()["detail"]


def test_missing_frontal_view_is_422(client):
    r = _post(client, body(images=body()["images"][1:]))
    assert r.status_code == 422 and "no frontal view" in r.json()["detail"]
    r = _upload(client, [("files", ("lat.png", png_bytes(), "image/png"))], request={"views": ["Lateral"]})
    assert r.status_code == 422 and "no frontal view" in r.json()["detail"]
    r = _upload(client, [("files", ("lat.dcm", fake_dicom(view="LL"), "application/dicom"))])
    assert r.status_code == 422 and "no frontal view" in r.json()["detail"]


def test_empty_image_list_is_422(client):
    r = _post(client, body(images=[]))
    assert r.status_code == 422 and "images is empty" in r.json()["detail"]
    r = client.post(f"/api/v1/studies/{STUDY}/report:upload", files={"request": (None, "{}")}, headers=W)
    assert r.status_code == 422 and "no `files` part" in r.json()["detail"]


def test_upload_request_part_is_validated(client):
    files = [("files", ("a.png", png_bytes(), "image/png"))]
    r = _upload(client, files, request={"confidence_threshold": 0.4, "colour": "red"})
    assert r.status_code == 422 and "request part: (unknown name): unknown field" in r.json()["detail"]
    r = client.post(f"/api/v1/studies/{STUDY}/report:upload", files=files, data={"request": "{oops"}, headers=W)
    assert r.status_code == 400 and "malformed JSON" in r.json()["detail"]
    r = _upload(client, files, request={"views": ["PA", "Lateral"]})
    assert r.status_code == 422 and "2 entries for 1 files" in r.json()["detail"]
    r = client.post(f"/api/v1/studies/{STUDY}/report:upload", json=body(), headers=W)
    assert r.status_code == 415


def test_uploads_of_png_jpeg_and_dicom_work_and_the_service_stays_up(client):
    """After every bad request above, good ones still succeed (the service stays up)."""
    _upload(client, [("files", ("notes.txt", b"x" * 300, "text/plain"))])
    _post(client, body(images=[]))
    for files in ([("files", ("a.png", png_bytes((80, 60), "RGB"), "image/png"))],
                  [("files", ("a.jpg", jpeg_bytes(), "image/jpeg"))],
                  [("files", ("a.dcm", fake_dicom(), "application/dicom")),
                   ("files", ("b.dcm", fake_dicom(view="LL"), "application/dicom"))]):
        r = _upload(client, files, request={"clinical_context": {"age": 50}, "confidence_threshold": 0.2})
        assert r.status_code == 200, r.text
    assert client.get("/healthz").json() == {"status": "ok"}


# --------------------------------------------------------------------------- security, audit, logs

def test_missing_or_invalid_token_is_401_and_wrong_scope_403(client):
    r = client.post(f"/api/v1/studies/{STUDY}/report", json=body())
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    r = client.post(f"/api/v1/studies/{STUDY}/report", json=body(), headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.json()["detail"] == "invalid bearer token"
    r = client.post(f"/api/v1/studies/{STUDY}/report", content=b"{broken", headers={"Authorization": "Basic x"})
    assert r.status_code == 401                                     # auth before the body is parsed
    r = client.post(f"/api/v1/studies/{STUDY}/report", json=body(), headers=R)
    assert r.status_code == 403 and "report.write" in r.json()["detail"]
    report_id = client.post(f"/api/v1/studies/{STUDY}/report", json=body(), headers=A).json()["report_id"]
    for suffix in ("", "/fhir", "/text"):
        assert client.get(f"/api/v1/reports/{report_id}{suffix}", headers=W).status_code == 403
        assert client.get(f"/api/v1/reports/{report_id}{suffix}", headers=R).status_code == 200
        assert client.get(f"/api/v1/reports/{report_id}{suffix}").status_code == 401
    for open_path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert client.get(open_path).status_code == 200


def test_service_refuses_to_start_without_tokens(monkeypatch, tmp_path):
    monkeypatch.delenv("RRG_API_TOKENS", raising=False)
    with pytest.raises(AuthConfigError, match="no API tokens"):
        create_app(model=fake_model(), audit_log=tmp_path / "a.jsonl")
    monkeypatch.setenv("RRG_API_TOKENS", "short:report.read")
    with pytest.raises(AuthConfigError, match="entry 1"):
        create_app(model=fake_model(), audit_log=tmp_path / "a.jsonl")
    monkeypatch.setenv("RRG_API_TOKENS", TOKENS)
    with TestClient(create_app(model=fake_model(), pacs_client=FakePacs(), decode_dicom=fake_decode_dicom,
                               audit_log=tmp_path / "a.jsonl")) as c:
        assert _post(c).status_code == 200


def test_audit_log_is_append_only_jsonl_without_phi(tmp_path):
    with TestClient(make_app(tmp_path)) as c:
        rid = _post(c).json()["report_id"]
        c.get(f"/api/v1/reports/{rid}/fhir", headers=R)
        c.post(f"/api/v1/studies/{STUDY}/report", json=body(), headers=R)          # 403, audited
    with TestClient(make_app(tmp_path)) as c:                                         # a restart appends
        _post(c)
    text = (tmp_path / "audit.jsonl").read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    assert [e["event"] for e in lines] == ["report.create", "report.read.fhir", "report.create.refused",
                                           "report.create"]
    study_hash = hashlib.sha256(STUDY.encode()).hexdigest()
    assert all(e["study_sha256"] == study_hash for e in lines)
    assert lines[0]["who"] == token_id(WRITER) and lines[1]["who"] == token_id(READER)
    assert lines[0]["model_version"] == "fake-7" and lines[0]["requires_review"] is False
    assert lines[2]["status"] == 403
    for secret in (STUDY, FRONTAL[1], "pneumothorax", "Shortness of breath", WRITER, READER):
        assert secret not in text


def test_logs_hold_no_report_text_no_study_id_no_context(tmp_path, caplog):
    with caplog.at_level(logging.DEBUG):
        with TestClient(make_app(tmp_path)) as c:
            _post(c)
            _upload(c, [("files", ("jane_doe.png", png_bytes(), "image/png"))],
                    request={"clinical_context": {"indication": "Shortness of breath after fall"}})
            _post(c, body(images=[]))
    # the service's own records (httpx here is the test client, logging the URLs it calls)
    logged = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("httpx"))
    assert "report " in logged and "study=" in logged
    for secret in (STUDY, FRONTAL[0], "pneumothorax", "Shortness of breath", "jane_doe", "Small right"):
        assert secret not in logged


def test_log_filter_redacts_dicom_uids_from_any_logger():
    record = logging.LogRecord("dicomweb_client.web", logging.INFO, __file__, 1,
                               'retrieve instance of study "%s" from %s', (STUDY, "127.0.0.1:8042"), None)
    RedactUidFilter().filter(record)
    assert STUDY not in record.getMessage() and "uid#" in record.getMessage()
    assert "127.0.0.1:8042" in record.getMessage()


# --------------------------------------------------------------------------- QA and metrics

def _metric(c, name: str, **labels) -> float:
    for family in text_string_to_metric_families(c.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


@pytest.mark.parametrize("text, probs, threshold, kind", [
    (REPORT_TEXT, {"Pneumothorax": 0.1}, 0.5, "text_only"),                        # text says it, detector not
    ("FINDINGS: Lungs are clear. IMPRESSION: No acute disease.", {"Pneumothorax": 0.8}, 0.5, "detector_only"),
    (REPORT_TEXT, {"Pneumothorax": 0.4}, 0.9, "low_confidence"),                   # agree, but not confident
])
def test_qa_flags_disagreement_and_low_confidence(tmp_path, text, probs, threshold, kind):
    model = fake_model(FakeBackend(text, probs), thresholds={"Pneumothorax": 0.3})
    with TestClient(make_app(tmp_path, model=model)) as c:
        out = _post(c, body(confidence_threshold=threshold)).json()
        assert out["requires_radiologist_review"] is True
        assert any(r.startswith("Pneumothorax:") for r in out["review_reasons"])
        assert _metric(c, "rrg_review_flags_total", kind=kind) == 1
        assert _metric(c, "rrg_review_flagged_reports_total") == 1


def test_qa_agreement_passes_and_metrics_count_everything(client):
    out = _post(client).json()
    assert out["requires_radiologist_review"] is False
    _upload(client, [("files", ("n.txt", b"x" * 300, "text/plain"))])
    c = client
    assert _metric(c, "rrg_critical_findings_total", finding="Pneumothorax") == 1
    assert _metric(c, "rrg_review_flagged_reports_total") == 0
    assert _metric(c, "rrg_requests_total", route="/api/v1/studies/{study_id}/report", status="200") == 1
    assert _metric(c, "rrg_requests_total", route="/api/v1/studies/{study_id}/report:upload", status="415") == 1
    assert _metric(c, "rrg_request_latency_seconds_count", route="/api/v1/studies/{study_id}/report") == 1
    assert _metric(c, "rrg_batch_size_count") == 1 and _metric(c, "rrg_queue_depth") == 0
    assert _metric(c, "rrg_model_info", version="fake-7", backend="fake") == 1


def test_qa_unit_uncertain_text_counts_and_thresholds_come_from_the_model():
    probs = np.full(14, 0.05, np.float32)
    probs[LABEL_INDEX["Pleural Effusion"]] = 0.35
    text = "FINDINGS: Cannot exclude small left pleural effusion. IMPRESSION: Possible small effusion."
    structured = structure_report(text, probs, {"Pleural Effusion": 0.3}, 0.5)
    agree = review(text, probs, {"Pleural Effusion": 0.3}, 0.2, structured.findings)
    assert not agree.requires_review and agree.text_critical == agree.detector_critical == ["Pleural Effusion"]
    strict = review(text, probs, {"Pleural Effusion": 0.5}, 0.2, structured.findings)
    assert strict.kinds == ["text_only"]
    low = review(text, probs, {"Pleural Effusion": 0.3}, 0.5, structured.findings)
    assert low.kinds == ["low_confidence"] and "0.35" in low.reasons[0]


# --------------------------------------------------------------------------- with the real DICOM decoder and PACS

def test_real_dicom_decoder_behind_the_upload_endpoint(tmp_path, dicom):
    """serving.dicom.decode_dicom (the app's default decoder) on real Part 10 files: DX/CR work, CT and files
    without pixel data are 422 with its message, and a lateral ViewPosition counts as lateral."""
    app = create_app(model=fake_model(), tokens=TOKENS, audit_log=tmp_path / "a.jsonl")   # default decoder
    with TestClient(app) as c:
        for modality in ("DX", "CR"):
            data = dicom.to_bytes(dicom.build(modality=modality))
            r = _upload(c, [("files", ("a.dcm", data, "application/dicom"))])
            assert r.status_code == 200, r.text
        r = _upload(c, [("files", ("ct.dcm", dicom.to_bytes(dicom.build(modality="CT")), "application/dicom"))])
        assert r.status_code == 422 and "CT" in r.json()["detail"]
        r = _upload(c, [("files", ("np.dcm", dicom.to_bytes(dicom.build(pixels=False)), "application/dicom"))])
        assert r.status_code == 422 and "pixel" in r.json()["detail"].lower()
        lateral = dicom.to_bytes(dicom.build(dicom.LATERAL_JPEG, view_position="LL"))
        r = _upload(c, [("files", ("lat.dcm", lateral, "application/dicom"))])
        assert r.status_code == 422 and "no frontal view" in r.json()["detail"]
        assert dicom.FAKE_PHI["PatientName"] not in r.text


def test_real_pacs_round_trip_and_outage(tmp_path, orthanc, dicom):
    """Orthanc (DICOMweb) + serving.ingest.PacsClient: report from UIDs, unknown UID 404, PACS down 503."""
    ds = dicom.build()
    pacs = PacsClient(orthanc.dicomweb, timeout=5)
    pacs.store([ds])
    study, series, sop = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
    request = body(study_id=study, images=[{"series_uid": series, "instance_uid": sop, "view": "PA"}])
    app = create_app(model=fake_model(), pacs_client=pacs, tokens=TOKENS, audit_log=tmp_path / "a.jsonl")
    with TestClient(app) as c:
        assert c.get("/readyz").json()["pacs"] == "reachable"
        r = _post(c, request, study=study)
        assert r.status_code == 200, r.text
        missing = body(study_id=study, images=[{"series_uid": series, "instance_uid": "1.2.3.4.5.6", "view": "PA"}])
        r = _post(c, missing, study=study)
        assert r.status_code == 404 and "1.2.3.4.5.6" in r.json()["detail"]
    with socket.socket() as sock:                       # a loopback port with nothing listening: PACS down
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    down = PacsClient(f"http://127.0.0.1:{dead_port}/dicom-web", timeout=2)
    app = create_app(model=fake_model(), pacs_client=down, tokens=TOKENS, audit_log=tmp_path / "a.jsonl")
    with TestClient(app) as c:
        r = _post(c, request, study=study)
        assert r.status_code == 503 and "PACS unavailable" in r.json()["detail"]
        assert c.get("/readyz").status_code == 503 and c.get("/healthz").status_code == 200
