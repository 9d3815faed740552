"""The prediction log: schema checks, round trip, filters, feedback join, retention, file safety."""

import os
import sqlite3
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from model_core.chexpert import NUM_LABELS
from model_core.prediction_log import (
    FeedbackRecord,
    PredictionLog,
    PredictionLogError,
    PredictionRecord,
    study_embedding,
    study_hash,
)

UID = "1.2.840.113619.2.55.3.604688119.971.1234567890.123"


def record(report_id="r-1", created_at=None, version="3", role="champion", seed=0, **over) -> PredictionRecord:
    rng = np.random.default_rng(seed)
    fields = dict(study_hash=study_hash(f"{UID}.{seed}"), created_at=created_at or datetime.now(timezone.utc),
                  model_name="rrg", model_version=version, role=role, report_id=report_id,
                  embedding=rng.normal(size=16), probabilities=rng.random(NUM_LABELS),
                  text_labels=[1, 0, -1] + [0] * (NUM_LABELS - 3), review_required=True,
                  review_reasons=["low_confidence", "critical_finding:Pneumothorax"], latency_ms=812.5,
                  acquisition={"modality": "DX", "view": "PA", "rows": 2048, "columns": 2048,
                               "photometric": "MONOCHROME2"})
    fields.update(over)
    return PredictionRecord(**fields)


def feedback(report_id="r-1", created_at=None, outcome="edited") -> FeedbackRecord:
    return FeedbackRecord(report_id=report_id, created_at=created_at or datetime.now(timezone.utc), rating=4,
                          outcome=outcome, edit_distance=7, final_labels=[0] * (NUM_LABELS - 1) + [1],
                          final_text_sha256="ab" * 32)


def test_round_trip_keeps_every_field(tmp_path):
    log = PredictionLog(str(tmp_path / "log.sqlite3"))
    original = record()
    log.append(original)
    (back,) = log.predictions()
    assert back.study_hash == original.study_hash and back.report_id == "r-1" and back.role == "champion"
    assert back.embedding.dtype == np.float16 and np.array_equal(back.embedding, original.embedding)
    assert back.probabilities == pytest.approx(original.probabilities)
    assert back.text_labels == original.text_labels and back.review_reasons == original.review_reasons
    assert back.acquisition == original.acquisition and back.latency_ms == 812.5
    assert back.created_at == original.created_at and back.created_at.endswith("+00:00")


def test_sqlite_file_is_owner_only_and_in_wal_mode(tmp_path):
    path = tmp_path / "sub" / "log.sqlite3"
    PredictionLog(str(path)).append(record())
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_filters_by_time_version_and_role(tmp_path):
    log = PredictionLog(str(tmp_path / "log.sqlite3"))
    now = datetime.now(timezone.utc)
    log.append(record("old", now - timedelta(days=10)))
    log.append(record("v3", now - timedelta(hours=1)))
    log.append(record("v4", now - timedelta(hours=1), version="4"))
    log.append(record("shadow", now - timedelta(hours=1), role="shadow"))
    ids = lambda rows: [r.report_id for r in rows]  # noqa: E731
    assert ids(log.predictions(since=now - timedelta(days=7))) == ["v3", "v4", "shadow"]
    assert ids(log.predictions(until=now - timedelta(days=1))) == ["old"]
    assert ids(log.predictions(model_version="4")) == ["v4"]
    assert ids(log.predictions(role="shadow")) == ["shadow"]
    assert len(log) == 4


def test_feedback_replaces_and_joins_the_prediction(tmp_path):
    log = PredictionLog(":memory:")
    log.append(record("r-1"))
    log.append(record("r-2", seed=1))
    log.add_feedback(feedback("r-1", outcome="rejected"))
    log.add_feedback(feedback("r-1", outcome="accepted"))     # a second sign-off replaces the first
    (fb,) = log.feedback()
    assert fb.outcome == "accepted" and fb.final_labels[-1] == 1
    ((pred, fb2),) = log.validated()
    assert pred.report_id == fb2.report_id == "r-1"


def test_purge_deletes_rows_past_retention_only(tmp_path):
    log = PredictionLog(str(tmp_path / "log.sqlite3"))
    now = datetime.now(timezone.utc)
    log.append(record("old", now - timedelta(days=100)))
    log.add_feedback(feedback("old", now - timedelta(days=95)))
    log.append(record("new", now - timedelta(days=2)))
    log.add_feedback(feedback("new", now - timedelta(days=1)))
    assert log.purge(90) == 2
    assert [r.report_id for r in log.predictions()] == ["new"] and [f.report_id for f in log.feedback()] == ["new"]
    with pytest.raises(PredictionLogError, match="older_than_days"):
        log.purge(0)


@pytest.mark.parametrize("field, value, words", [
    ("study_hash", UID, "study_hash"),
    ("acquisition", {"patient_name": "DOE^JANE"}, "acquisition keys"),
    ("probabilities", [0.5] * 13, "14 values"),
    ("text_labels", [2] * NUM_LABELS, "1, 0 or -1"),
    ("role", "canary", "role"),
    ("review_reasons", ["free text with spaces"], "reason codes"),
])
def test_bad_fields_are_named_never_echoed(field, value, words):
    with pytest.raises(PredictionLogError, match=words) as info:
        record(**{field: value})
    assert "DOE" not in str(info.value) and UID not in str(info.value)


def test_urls_other_than_sqlite_or_postgresql_are_refused(tmp_path):
    with pytest.raises(PredictionLogError, match="SQLite .* or PostgreSQL"):
        PredictionLog("mysql://user:secret@db/predictions")
    assert len(PredictionLog(f"sqlite:///{tmp_path / 'x.sqlite3'}")) == 0


def test_study_embedding_is_the_mean_of_visual_tokens_in_float16():
    tokens = np.arange(2 * 4 * 3, dtype=np.float32).reshape(2, 4, 3)
    emb = study_embedding(tokens)
    assert emb.dtype == np.float16 and emb.shape == (2, 3)
    assert np.array_equal(emb[0], np.array([4.5, 5.5, 6.5], np.float16))
    assert study_embedding(tokens[1]).shape == (3,)
    with pytest.raises(PredictionLogError, match="finite"):
        study_embedding(np.full((4, 3), np.nan))
