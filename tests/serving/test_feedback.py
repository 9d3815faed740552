"""Radiologist feedback: the word-level edit distance, the sign-off endpoint (scope, validation, what is kept
and what never is), the PHI screen of the validated-study pool, and an export that retraining can load."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time

import pytest
from fastapi.testclient import TestClient
from test_api import STUDY, TOKENS, A, FakePacs, R, W, _metric, _post, body, fake_decode_dicom, fake_model, make_app
from test_prediction_logging import EmbeddingBackend

from model_core.chexpert import LABEL_INDEX
from model_core.config import ServingConfig
from model_core.data.iu_xray import load_iu_xray
from model_core.data.validated import export_validated_dataset
from model_core.prediction_log import PredictionLog
from serving.errors import Unavailable
from serving.feedback import word_edit_distance
from serving.schemas import FeedbackRequest, ReportRequest
from serving.service import ReportService

FEEDBACK = "feedback-token-0123456789abcdef"
F = {"Authorization": f"Bearer {FEEDBACK}"}
SIGNED = ("FINDINGS: Small left pleural effusion. Heart size is normal. "
          "IMPRESSION: Small left pleural effusion.")
SIGNED_WITH_PHI = "FINDINGS: Compared with the study of 03/04/2024, no change. IMPRESSION: Stable, per Dr. Smith."


@pytest.mark.parametrize("a, b, distance", [
    ("", "", 0),
    ("", "two words", 2),
    ("one two three", "", 3),
    ("no acute disease", "No acute disease.", 0),                 # case and punctuation are free
    ("small right pneumothorax", "small left pneumothorax", 1),    # substitution
    ("heart normal", "heart size normal", 1),                      # insertion
    ("a b c d", "b c d a", 2),                                     # a move is a deletion and an insertion
    ("kitten sitting on mat", "sitting kitten on the mat", 3),
])
def test_word_edit_distance(a, b, distance):
    assert word_edit_distance(a, b) == distance
    assert word_edit_distance(b, a) == distance


def _app(tmp_path):
    return make_app(tmp_path, model=fake_model(EmbeddingBackend()), tokens=f"{TOKENS},{FEEDBACK}:report.feedback")


def _feedback(c, report_id, text=SIGNED, rating=4, outcome="edited", headers=F):
    return c.post(f"/api/v1/reports/{report_id}/feedback",
                  json={"final_report": text, "rating": rating, "outcome": outcome}, headers=headers)


def test_sign_off_is_recorded_without_the_text(tmp_path, caplog):
    with caplog.at_level(logging.DEBUG), TestClient(_app(tmp_path)) as c:
        rid = _post(c).json()["report_id"]
        assert c.app.state.service.writer.flush()
        r = _feedback(c, rid)
        assert r.status_code == 200, r.text
        out = r.json()
        # draft "FINDINGS: Small right pneumothorax. Heart size is normal. IMPRESSION: Small right pneumothorax."
        # signed: right→left, pneumothorax→pleural effusion (2 substitutions + 1 insertion), twice
        assert out["edit_distance"] == 6 and out["draft_words"] == 12
        assert out["final_labels"] == {"Pleural Effusion": 1}
        assert out["validated_dataset"] == "added"
        assert _metric(c, "rrg_feedback_total", outcome="edited") == 1
    (feedback,) = PredictionLog(str(tmp_path / "predictions.sqlite3")).feedback()
    assert (feedback.report_id, feedback.rating, feedback.outcome, feedback.edit_distance) == (rid, 4, "edited", 6)
    assert feedback.final_labels[LABEL_INDEX["Pleural Effusion"]] == 1
    assert feedback.final_text_sha256 == hashlib.sha256(SIGNED.encode()).hexdigest()
    assert b"left pleural" not in (tmp_path / "predictions.sqlite3").read_bytes()
    logged = "\n".join(rec.getMessage() for rec in caplog.records if not rec.name.startswith("httpx"))
    audit = (tmp_path / "audit.jsonl").read_text()
    assert "feedback on report" in logged and "left pleural" not in logged and "left pleural" not in audit
    assert json.loads(audit.splitlines()[-1])["event"] == "report.feedback"


def test_feedback_needs_its_own_scope_and_a_known_report(tmp_path):
    with TestClient(_app(tmp_path)) as c:
        rid = _post(c).json()["report_id"]
        assert _feedback(c, rid, headers=R).status_code == 403
        assert _feedback(c, rid, headers=W).status_code == 403
        assert _feedback(c, rid, headers={}).status_code == 401
        assert _feedback(c, rid, headers=A).status_code == 200           # a token listed without scopes has it
        assert _feedback(c, "no-such-report").status_code == 404
        assert _feedback(c, rid, rating=6).status_code == 422
        bad = _feedback(c, rid, outcome="maybe")
        assert bad.status_code == 422 and "outcome" in bad.json()["detail"]
        assert c.post(f"/api/v1/reports/{rid}/feedback", json={"final_report": SIGNED, "rating": 3,
                                                              "outcome": "accepted", "extra": 1},
                      headers=F).status_code == 422
    events = [json.loads(line)["event"] for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert events.count("report.feedback.refused") == 7 and events.count("report.feedback") == 1


def test_text_with_identifiers_is_refused_from_the_dataset_not_redacted(tmp_path):
    with TestClient(_app(tmp_path)) as c:
        rid = _post(c).json()["report_id"]
        assert c.app.state.service.writer.flush()
        out = _feedback(c, rid, text=SIGNED_WITH_PHI, outcome="rejected", rating=1).json()
        assert out["validated_dataset"].startswith("not added: the signed text matches identifier patterns")
        assert "(titled_name, date)" in out["validated_dataset"]
        assert "Smith" not in json.dumps(out) and "03/04/2024" not in json.dumps(out)
    pool = tmp_path / "validated"
    assert not (pool / "studies.jsonl").exists()
    assert "Smith" not in "".join(p.read_bytes().decode("latin-1") for p in pool.rglob("*") if p.is_file())
    assert len(PredictionLog(str(tmp_path / "predictions.sqlite3")).feedback()) == 1   # the sign-off still counts


def test_validated_studies_export_as_a_dataset_retraining_loads(tmp_path):
    with TestClient(_app(tmp_path)) as c:
        rid = _post(c).json()["report_id"]
        assert c.app.state.service.writer.flush()
        assert _feedback(c, rid).json()["validated_dataset"] == "added"
    log = PredictionLog(str(tmp_path / "predictions.sqlite3"))
    version = export_validated_dataset(log, tmp_path / "validated", tmp_path / "datasets")
    assert version.name == "v0001"
    data = load_iu_xray(root=version, split="all", image_size=32)
    assert len(data["images"]) == 1 and data["metadata"][0]["view"] == "Frontal"
    assert data["reports"] == [SIGNED]
    assert data["labels"][0, LABEL_INDEX["Pleural Effusion"]] == 1 and data["labels"][0].sum() == 1
    assert export_validated_dataset(log, tmp_path / "validated", tmp_path / "datasets").name == "v0002"


def test_without_a_prediction_log_feedback_is_unavailable(tmp_path):
    service = ReportService(config=ServingConfig(), model_source=None, model=fake_model(), pacs=FakePacs(),
                            decode_dicom=fake_decode_dicom, auth=None, audit_path=tmp_path / "audit.jsonl")

    async def scenario():
        await service.start()
        try:
            made = await service.report_from_pacs(STUDY, ReportRequest(**body()), None, time.perf_counter())
            await service.submit_feedback(made.report_id, FeedbackRequest(final_report=SIGNED, rating=5,
                                                                           outcome="accepted"), None)
        finally:
            await service.stop()

    with pytest.raises(Unavailable, match="no prediction log"):
        asyncio.run(scenario())


def test_openapi_documents_feedback_and_the_switch(tmp_path):
    with TestClient(_app(tmp_path)) as c:
        spec = c.get("/openapi.json").json()
    assert "post" in spec["paths"]["/api/v1/reports/{report_id}/feedback"]
    assert {"get", "post"} <= set(spec["paths"]["/api/v1/admin/automation"])
    schemas = spec["components"]["schemas"]
    assert schemas["FeedbackRequest"]["additionalProperties"] is False
    assert set(schemas["FeedbackRequest"]["required"]) == {"final_report", "rating", "outcome"}
    assert set(schemas["AutomationRequest"]["required"]) == {"paused", "reason"}
    assert {"automated_reports", "prediction_log"} <= set(schemas["ReadyResponse"]["properties"])
