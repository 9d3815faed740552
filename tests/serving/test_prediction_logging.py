"""The prediction log as the service writes it: one PHI-free record per report, off the request path; the
backends' pooled embeddings; a failing log degrades (reports continue) and says so in /readyz and /metrics."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from test_api import (
    LATERAL,
    REPORT_TEXT,
    STUDY,
    FakeBackend,
    W,
    _metric,
    _post,
    fake_decode_dicom,
    fake_dicom,
    fake_model,
    make_app,
)

from model_core.chexpert import LABEL_INDEX
from model_core.prediction_log import ACQUISITION_KEYS, PredictionLog, PredictionRecord, study_hash
from serving.backends import OrtBackend, TorchBackend, load_model
from serving.metrics import Metrics
from serving.prediction_logging import ModelIdentity, PredictionWriter, ServedStudy

EMBEDDING = np.linspace(-1, 1, 24, dtype=np.float32)
SCANNER = {"manufacturer": "ACME MEDICAL", "model_name": "XRAY 3000", "rows": 2048, "columns": 2500,
           "bits_stored": 12, "photometric": "MONOCHROME2", "modality": "DX", "view": "Frontal",
           "study_instance_uid": STUDY, "sop_instance_uid": LATERAL[1]}   # UIDs: must not reach the log


class EmbeddingBackend(FakeBackend):
    """FakeBackend that also gives a fixed pooled embedding (the contract of serving.backends.base)."""

    def generate_with_embeddings(self, images, contexts):
        return [(text, probs, EMBEDDING.copy()) for text, probs in self.generate(images, contexts)]


def decode_with_scanner_metadata(data: bytes, size: int):
    tensor, meta = fake_decode_dicom(data, size)
    return tensor, {**meta, **SCANNER}


def _log(tmp_path) -> PredictionLog:
    return PredictionLog(str(tmp_path / "predictions.sqlite3"))


def test_each_report_is_logged_without_phi(tmp_path):
    app = make_app(tmp_path, model=fake_model(EmbeddingBackend()), decode_dicom=decode_with_scanner_metadata)
    with TestClient(app) as c:
        out = _post(c).json()
        assert app.state.service.writer.flush()
        assert _metric(c, "rrg_prediction_log_writes_total") == 1 and _metric(c, "rrg_prediction_log_ok") == 1
        assert c.get("/readyz").json()["prediction_log"] == "ok (1 record(s) written by this process)"
    (record,) = _log(tmp_path).predictions()
    assert record.report_id == out["report_id"] and record.study_hash == hashlib.sha256(STUDY.encode()).hexdigest()
    assert (record.model_name, record.model_version, record.role) == ("fake", "fake-7", "champion")
    np.testing.assert_allclose(record.embedding, EMBEDDING, atol=1e-3)          # stored as float16
    assert record.probabilities[LABEL_INDEX["Pneumothorax"]] == pytest.approx(0.9)
    assert record.text_labels[LABEL_INDEX["Pneumothorax"]] == 1                 # the labeler on the draft
    assert record.review_required is False and record.review_reasons == []
    assert record.latency_ms == out["processing_time_ms"]
    assert record.acquisition == {key: SCANNER[key] for key in ACQUISITION_KEYS}
    raw = (tmp_path / "predictions.sqlite3").read_bytes()
    for secret in (STUDY, LATERAL[1], "Small right", "Shortness of breath"):
        assert secret.encode() not in raw


def test_review_reasons_are_logged_as_codes(tmp_path):
    backend = EmbeddingBackend(REPORT_TEXT, {"Pneumothorax": 0.1})              # text says it, detector does not
    app = make_app(tmp_path, model=fake_model(backend, thresholds={"Pneumothorax": 0.3}))
    with TestClient(app) as c:
        out = _post(c).json()
        assert app.state.service.writer.flush()
        assert _metric(c, "rrg_unsupported_critical_reports_total") == 1      # the hallucination-rate numerator
    (record,) = _log(tmp_path).predictions()
    assert out["requires_radiologist_review"] and record.review_required
    assert record.review_reasons == ["text_only:Pneumothorax", "low_confidence:Pneumothorax"]
    assert len(out["review_reasons"]) == 2                                     # one code per reason


def test_backends_give_the_same_pooled_embedding(tiny_model_with_export):
    """Torch and ONNX Runtime pool the same visual tokens: the embeddings of one study agree, batch or not."""
    model_dir, loaded = tiny_model_with_export
    assert isinstance(loaded.backend, OrtBackend)
    torch_backend = load_model(model_dir, backend="torch").backend
    assert isinstance(torch_backend, TorchBackend)
    gen = torch.Generator().manual_seed(3)
    size = loaded.backend.image_size
    studies = [torch.rand(1, 1, size, size, generator=gen) for _ in range(3)]
    ort = loaded.backend.generate_with_embeddings(studies, [None] * 3)
    ref = torch_backend.generate_with_embeddings(studies, [None] * 3)
    alone = loaded.backend.generate_with_embeddings(studies[1:2], [None])[0]
    for (_, _, o_emb), (_, _, t_emb) in zip(ort, ref):
        assert o_emb.shape == t_emb.shape and o_emb.ndim == 1
        np.testing.assert_allclose(o_emb, t_emb, atol=1e-4)
    np.testing.assert_allclose(alone[2], ort[1][2], atol=1e-5)
    assert [t for t, _ in loaded.backend.generate(studies, [None] * 3)] == [t for t, _, _ in ort]
    assert not np.allclose(ort[0][2], ort[1][2])                              # it depends on the image


def test_a_failing_log_degrades_and_says_so(tmp_path):
    app = make_app(tmp_path, model=fake_model(EmbeddingBackend()))
    with TestClient(app) as c:
        service = app.state.service
        with sqlite3.connect(tmp_path / "predictions.sqlite3") as db:            # the database loses its table
            db.execute("DROP TABLE predictions")
        r = _post(c)
        assert r.status_code == 200                                             # the report is served
        assert service.writer.flush()
        ready = c.get("/readyz").json()
        assert ready["ready"] is True and ready["prediction_log"].startswith("failing since ")
        assert "PredictionLogError" in ready["prediction_log"]                # the error's kind, no details
        assert _metric(c, "rrg_prediction_log_failures_total", reason="write_error") == 1
        assert _metric(c, "rrg_prediction_log_ok") == 0
        PredictionLog(str(tmp_path / "predictions.sqlite3")).close()           # the table is back
        _post(c)
        assert service.writer.flush()
        assert _metric(c, "rrg_prediction_log_ok") == 1
        assert c.get("/readyz").json()["prediction_log"].startswith("ok")
    assert len(_log(tmp_path)) == 1


def test_a_backend_without_embeddings_is_reported(tmp_path):
    app = make_app(tmp_path)                                                    # FakeBackend: no embedding
    with TestClient(app) as c:
        _post(c)
        assert app.state.service.writer.flush()
        assert "no embedding" in c.get("/readyz").json()["prediction_log"]
        assert _metric(c, "rrg_prediction_log_failures_total", reason="no_embedding") == 1
    assert len(_log(tmp_path)) == 0


def test_logging_can_be_switched_off(tmp_path):
    app = make_app(tmp_path, model=fake_model(EmbeddingBackend()), log_predictions=False, validated_pool=None)
    with TestClient(app) as c:
        assert _post(c).status_code == 200
        assert c.get("/readyz").json()["prediction_log"] == "off (serving.log_predictions is false)"
        assert app.state.service.pool is None                                 # None turns the pool off
    assert len(_log(tmp_path)) == 0 and not (tmp_path / "validated").exists()


def _study(report_id: str, **over) -> ServedStudy:
    fields = dict(report_id=report_id, study_id=STUDY, created_at=datetime.now(timezone.utc).isoformat(),
                  probabilities=np.full(14, 0.1, np.float32), text_labels=[0] * 14, embedding=EMBEDDING,
                  review_required=False, review_codes=[], latency_ms=10.0, acquisition={})
    return ServedStudy(**{**fields, **over})


def test_a_full_queue_drops_records_and_counts_them(tmp_path):
    metrics = Metrics()
    writer = PredictionWriter(_log(tmp_path), ModelIdentity("m", "1", "champion"), metrics, max_pending=1)
    writer.submit(_study("a"))                                                  # not started: stays queued
    writer.submit(_study("b"))
    assert metrics.prediction_log_failures.labels("queue_full")._value.get() == 1
    writer.start()
    assert writer.flush()
    writer.stop()
    assert [r.report_id for r in _log(tmp_path).predictions()] == ["a"]


def test_rows_past_the_retention_are_purged(tmp_path):
    log = _log(tmp_path)
    old = (datetime.now(timezone.utc) - timedelta(days=100)).isoformat()
    log.append(PredictionRecord(study_hash=study_hash("1.2.3"), created_at=old, model_name="m", model_version="1",
                                role="champion", report_id="old", embedding=EMBEDDING, probabilities=[0.1] * 14,
                                text_labels=[0] * 14, review_required=False))
    writer = PredictionWriter(log, ModelIdentity("m", "1", "champion"), Metrics(), retention_days=90)
    writer.start()
    writer.submit(_study("new"))
    assert writer.flush()
    writer.stop()
    assert [r.report_id for r in log.predictions()] == ["new"]


def test_model_inputs_are_kept_for_sign_off(tmp_path):
    app = make_app(tmp_path, model=fake_model(EmbeddingBackend()))
    files = [("files", ("a.dcm", fake_dicom(), "application/dicom"))]
    with TestClient(app) as c:
        rid = c.post(f"/api/v1/studies/{STUDY}/report:upload", files=files,
                     headers=W).json()["report_id"]
        assert app.state.service.writer.flush()
    pending = tmp_path / "validated" / "pending"
    assert (pending / f"{rid}.0.npy").is_file()
    assert json.loads((pending / f"{rid}.views.json").read_text()) == ["Frontal"]
    assert (pending / f"{rid}.0.npy").stat().st_mode & 0o077 == 0              # owner only: pixel data


def test_the_service_never_waits_for_the_log(tmp_path):
    """The request path only queues: with the writer thread stopped, reports are still served at once."""
    app = make_app(tmp_path, model=fake_model(EmbeddingBackend()))
    with TestClient(app) as c:
        service = app.state.service
        service.writer.stop()                                                   # nobody drains the queue now
        for _ in range(3):
            assert _post(c).status_code == 200
        assert service.writer._queue.qsize() == 3
