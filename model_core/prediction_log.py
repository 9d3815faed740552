"""The prediction log: the PHI-free record of what the served model saw and said, and what radiologists did.

Serving writes it (one `PredictionRecord` per study, one `FeedbackRecord` per radiologist sign-off); monitoring
reads it. It is the only place the two meet, so its schema is a contract:

    log = PredictionLog("runs/serving/predictions.sqlite3")     # or a SQLAlchemy URL: postgresql+psycopg://…
    log.append(PredictionRecord(study_hash=study_hash(uid), created_at=utc_now(), model_name="rrg",
                                model_version="3", role="champion", report_id=rid, embedding=emb,
                                probabilities=probs, text_labels=labels, review_required=False,
                                review_reasons=[], latency_ms=812.0, acquisition={"modality": "DX", ...}))
    log.add_feedback(FeedbackRecord(report_id=rid, created_at=utc_now(), rating=4, outcome="edited",
                                    edit_distance=12, final_labels=labels, final_text_sha256=sha))
    log.predictions(since=..., until=..., model_version=..., role=...)  -> list[PredictionRecord], oldest first
    log.feedback(since=...)                                              -> list[FeedbackRecord], oldest first
    log.validated(since=...)                  -> list[(PredictionRecord, FeedbackRecord)] joined on report_id
    log.purge(older_than_days)                -> rows deleted (predictions + feedback)

What is in it, and what never is: the study UID only as its SHA-256 (`study_hash`), no names, dates of birth,
accession numbers or report text (feedback keeps the final text's SHA-256 and its 14 labels); acquisition metadata
is restricted to the non-identifying keys in `ACQUISITION_KEYS`. Embeddings are `study_embedding` (the mean of the
study's visual tokens; float16, stored as raw bytes). Records are checked on construction; a bad field raises
`PredictionLogError` naming the field, never echoing the value.

Storage: SQLAlchemy Core, so the same tables work on SQLite (default; file created owner-only 0600, WAL mode so
the service writes while monitoring reads) and PostgreSQL (named in configs/production.yaml). Times are stored as
naive UTC datetimes; the records carry them as ISO-8601 strings with an explicit +00:00.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import sqlalchemy as sa

from model_core.chexpert import NUM_LABELS

SCHEMA_VERSION = 1
ROLES = ("champion", "challenger", "shadow")
OUTCOMES = ("accepted", "edited", "rejected")
# Non-identifying DICOM acquisition attributes (no station name, institution, dates, operator, serial number).
ACQUISITION_KEYS = ("modality", "view", "manufacturer", "model_name", "rows", "columns", "bits_stored",
                    "photometric")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_REPORT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_NAME = re.compile(r"^[A-Za-z0-9._:@/+-]{1,200}$")
_REASON = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")   # QA reason codes, not free text


class PredictionLogError(ValueError):
    """A record or a log URL is invalid, or the log cannot be used; the message names the field, not its value."""


# --------------------------------------------------------------------------- helpers for writers

def study_hash(study_uid: str) -> str:
    """SHA-256 hex of a study instance UID: the only form in which a study appears in the log."""
    if not isinstance(study_uid, str) or not study_uid:
        raise PredictionLogError("study_uid must be a non-empty string")
    return hashlib.sha256(study_uid.encode("utf-8")).hexdigest()


def study_embedding(visual_tokens) -> np.ndarray:
    """The embedding logged per study: the mean of the study's visual tokens, the projected image tokens the
    language model reads (`RadiologyMultimodalModel.project_visual_tokens`; the ONNX vision graph's `visual_tokens`
    output; a missing view's tokens are the model's learned missing-view vector, so a study is embedded the same
    way in training, reference and serving).

    visual_tokens: (T, d) for one study or (B, T, d) for a batch, numpy or CPU tensor → float16 (d,) or (B, d).
    Serving and the reference statistics (`model_core.modeling.reference`) both use this one definition."""
    tokens = np.asarray(visual_tokens, dtype=np.float32)
    if tokens.ndim not in (2, 3) or tokens.shape[-2] < 1:
        raise PredictionLogError("visual tokens must be (T, d) or (B, T, d)")
    pooled = tokens.mean(axis=-2)
    if not np.isfinite(pooled).all():
        raise PredictionLogError("visual tokens must be finite")
    return pooled.astype(np.float16)


def utc_now() -> str:
    """The current time as UTC ISO-8601 (what `created_at` holds)."""
    return datetime.now(timezone.utc).isoformat()


def parse_time(value: str | datetime, name: str = "time") -> datetime:
    """An ISO-8601 string or datetime → naive UTC datetime (a naive input is taken as UTC)."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise PredictionLogError(f"{name} must be an ISO-8601 time") from None
    if not isinstance(value, datetime):
        raise PredictionLogError(f"{name} must be an ISO-8601 string or a datetime")
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


def _iso(naive_utc: datetime) -> str:
    return naive_utc.replace(tzinfo=timezone.utc).isoformat()


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise PredictionLogError(message)


def _float_vector(values, name: str) -> list[float]:
    arr = np.asarray(values, dtype=np.float64).reshape(-1) if values is not None else np.zeros(0)
    _check(arr.shape == (NUM_LABELS,), f"{name} must hold {NUM_LABELS} values (CheXpert order)")
    _check(bool(np.isfinite(arr).all()) and bool(((arr >= 0) & (arr <= 1)).all()), f"{name} must lie in [0, 1]")
    return [float(v) for v in arr]


def _label_vector(values, name: str) -> list[int]:
    try:
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise PredictionLogError(f"{name} must hold {NUM_LABELS} integers") from None
    _check(arr.shape == (NUM_LABELS,), f"{name} must hold {NUM_LABELS} values (CheXpert order)")
    _check(bool(np.isin(arr, (-1, 0, 1)).all()), f"{name} values must be 1, 0 or -1")
    return [int(v) for v in arr]


# --------------------------------------------------------------------------- records

@dataclass
class PredictionRecord:
    """One served study. Shapes: embedding (D,) float16; probabilities (14,) in [0, 1]; text_labels (14,) in
    {1, 0, -1} (the report labeler on the generated draft); latency_ms: the request's model time."""
    study_hash: str
    created_at: str
    model_name: str
    model_version: str
    role: str
    report_id: str
    embedding: np.ndarray
    probabilities: list[float]
    text_labels: list[int]
    review_required: bool
    review_reasons: list[str] = field(default_factory=list)
    latency_ms: float = 0.0
    acquisition: dict = field(default_factory=dict)

    def __post_init__(self):
        _check(isinstance(self.study_hash, str) and bool(_HEX64.match(self.study_hash)),
               "study_hash must be a lowercase SHA-256 hex digest (use prediction_log.study_hash(uid))")
        self.created_at = _iso(parse_time(self.created_at, "created_at"))
        for key in ("model_name", "model_version"):
            _check(isinstance(getattr(self, key), str) and bool(_NAME.match(getattr(self, key))),
                   f"{key} must be 1-200 characters of [A-Za-z0-9._:@/+-]")
        _check(self.role in ROLES, f"role must be one of {', '.join(ROLES)}")
        _check(isinstance(self.report_id, str) and bool(_REPORT_ID.match(self.report_id)),
               "report_id must be 1-128 characters of [A-Za-z0-9._:-]")
        emb = np.asarray(self.embedding)
        _check(emb.ndim == 1 and emb.size > 0, "embedding must be a non-empty 1-D vector")
        emb = emb.astype(np.float16)
        _check(bool(np.isfinite(emb).all()), "embedding must be finite (in float16 range)")
        self.embedding = emb
        self.probabilities = _float_vector(self.probabilities, "probabilities")
        self.text_labels = _label_vector(self.text_labels, "text_labels")
        _check(isinstance(self.review_required, (bool, np.bool_)), "review_required must be a bool")
        self.review_required = bool(self.review_required)
        _check(isinstance(self.review_reasons, (list, tuple))
               and all(isinstance(r, str) and _REASON.match(r) for r in self.review_reasons),
               "review_reasons must be a list of reason codes ([A-Za-z0-9_.:-], at most 64 characters)")
        self.review_reasons = list(self.review_reasons)
        _check(isinstance(self.latency_ms, (int, float)) and np.isfinite(self.latency_ms) and self.latency_ms >= 0,
               "latency_ms must be a finite number ≥ 0")
        self.latency_ms = float(self.latency_ms)
        _check(isinstance(self.acquisition, dict), "acquisition must be a mapping")
        unknown = sorted(set(self.acquisition) - set(ACQUISITION_KEYS))
        _check(not unknown, f"acquisition keys must be among {', '.join(ACQUISITION_KEYS)} "
                            f"({len(unknown)} other key(s) given)")
        for key, value in self.acquisition.items():
            _check(value is None or isinstance(value, (str, int)) and not isinstance(value, bool),
                   f"acquisition.{key} must be a string, an integer or null")
            _check(not isinstance(value, str) or len(value) <= 64, f"acquisition.{key} must be ≤ 64 characters")


@dataclass
class FeedbackRecord:
    """A radiologist's sign-off of one report: rating 1-5, outcome, edit distance (characters) between the draft
    and the signed text, the report labeler's labels of the signed text, and that text's SHA-256 (never the text)."""
    report_id: str
    created_at: str
    rating: int
    outcome: str
    edit_distance: int
    final_labels: list[int]
    final_text_sha256: str

    def __post_init__(self):
        _check(isinstance(self.report_id, str) and bool(_REPORT_ID.match(self.report_id)),
               "report_id must be 1-128 characters of [A-Za-z0-9._:-]")
        self.created_at = _iso(parse_time(self.created_at, "created_at"))
        _check(isinstance(self.rating, (int, np.integer)) and not isinstance(self.rating, bool)
               and 1 <= self.rating <= 5, "rating must be an integer 1-5")
        self.rating = int(self.rating)
        _check(self.outcome in OUTCOMES, f"outcome must be one of {', '.join(OUTCOMES)}")
        _check(isinstance(self.edit_distance, (int, np.integer)) and not isinstance(self.edit_distance, bool)
               and self.edit_distance >= 0, "edit_distance must be an integer ≥ 0")
        self.edit_distance = int(self.edit_distance)
        self.final_labels = _label_vector(self.final_labels, "final_labels")
        _check(isinstance(self.final_text_sha256, str) and bool(_HEX64.match(self.final_text_sha256)),
               "final_text_sha256 must be a lowercase SHA-256 hex digest")


# --------------------------------------------------------------------------- tables

_metadata = sa.MetaData()
predictions_table = sa.Table(
    "predictions", _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("report_id", sa.String(128), nullable=False),
    sa.Column("study_hash", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),        # naive UTC
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("model_version", sa.String(200), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("embedding", sa.LargeBinary, nullable=False),      # float16 little-endian bytes
    sa.Column("embedding_dim", sa.Integer, nullable=False),
    sa.Column("probabilities", sa.Text, nullable=False),         # JSON list of 14 floats
    sa.Column("text_labels", sa.Text, nullable=False),           # JSON list of 14 ints
    sa.Column("review_required", sa.Boolean, nullable=False),
    sa.Column("review_reasons", sa.Text, nullable=False),        # JSON list of reason codes
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("acquisition", sa.Text, nullable=False),           # JSON object over ACQUISITION_KEYS
    sa.Index("predictions_created", "created_at"),
    sa.Index("predictions_report", "report_id"),
)
feedback_table = sa.Table(
    "feedback", _metadata,
    sa.Column("report_id", sa.String(128), primary_key=True),    # a later sign-off of the same report replaces it
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("rating", sa.Integer, nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("edit_distance", sa.Integer, nullable=False),
    sa.Column("final_labels", sa.Text, nullable=False),
    sa.Column("final_text_sha256", sa.String(64), nullable=False),
    sa.Index("feedback_created", "created_at"),
)
schema_table = sa.Table("prediction_log_schema", _metadata, sa.Column("version", sa.Integer, nullable=False))


def _engine(url: str) -> sa.Engine:
    """A SQLAlchemy engine for a URL, or for a SQLite file path / ":memory:" (owner-only file, WAL)."""
    if not isinstance(url, str) or not url:
        raise PredictionLogError("the prediction log URL must be a non-empty string")
    if "://" in url:
        try:
            parsed = sa.make_url(url)
        except sa.exc.ArgumentError:
            raise PredictionLogError("the prediction log URL is not a valid SQLAlchemy URL") from None
        backend = parsed.get_backend_name()
        if backend == "sqlite":
            return _engine(parsed.database or ":memory:")
        if backend != "postgresql":
            raise PredictionLogError("the prediction log must be SQLite (a path) or PostgreSQL (postgresql://…)")
        return sa.create_engine(parsed, pool_pre_ping=True)
    if url == ":memory:":
        return sa.create_engine("sqlite://", poolclass=sa.pool.StaticPool,
                                connect_args={"check_same_thread": False})
    path = Path(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))   # before SQLite creates it with the umask's mode
    engine = sa.create_engine(f"sqlite:///{path}", connect_args={"check_same_thread": False, "timeout": 10.0})

    @sa.event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn, _record):
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")      # the service writes while monitoring reads
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    return engine


def _describe_db_error(exc: Exception) -> str:
    return f"{type(exc).__name__}"


class PredictionLog:
    """The prediction log behind a SQLite path or a SQLAlchemy URL (see the module docstring)."""

    def __init__(self, url: str):
        self.url = url
        try:
            self.engine = _engine(url)
            _metadata.create_all(self.engine)
            with self.engine.begin() as conn:
                versions = [row[0] for row in conn.execute(sa.select(schema_table.c.version))]
                if not versions:
                    conn.execute(schema_table.insert().values(version=SCHEMA_VERSION))
                elif max(versions) != SCHEMA_VERSION:
                    raise PredictionLogError(f"the prediction log has schema version {max(versions)}; "
                                             f"this code reads version {SCHEMA_VERSION}")
        except sa.exc.SQLAlchemyError as exc:
            raise PredictionLogError(f"cannot open the prediction log ({_describe_db_error(exc)})") from None
        except OSError as exc:
            raise PredictionLogError(f"cannot create the prediction log file ({type(exc).__name__})") from None
        except ImportError as exc:   # e.g. postgresql+psycopg:// without the psycopg driver installed
            raise PredictionLogError(f"the prediction log's database driver is not installed ({exc.name})") from None

    # ----------------------------------------------------------------- writing

    def append(self, record: PredictionRecord) -> None:
        if not isinstance(record, PredictionRecord):
            raise PredictionLogError("append() takes a PredictionRecord")
        emb = np.ascontiguousarray(record.embedding, dtype="<f2")
        row = {"report_id": record.report_id, "study_hash": record.study_hash,
               "created_at": parse_time(record.created_at), "model_name": record.model_name,
               "model_version": record.model_version, "role": record.role, "embedding": emb.tobytes(),
               "embedding_dim": int(emb.size), "probabilities": json.dumps(record.probabilities),
               "text_labels": json.dumps(record.text_labels), "review_required": record.review_required,
               "review_reasons": json.dumps(record.review_reasons), "latency_ms": record.latency_ms,
               "acquisition": json.dumps(record.acquisition, sort_keys=True)}
        self._write(predictions_table.insert().values(**row))

    def add_feedback(self, feedback: FeedbackRecord) -> None:
        if not isinstance(feedback, FeedbackRecord):
            raise PredictionLogError("add_feedback() takes a FeedbackRecord")
        row = {"report_id": feedback.report_id, "created_at": parse_time(feedback.created_at),
               "rating": feedback.rating, "outcome": feedback.outcome, "edit_distance": feedback.edit_distance,
               "final_labels": json.dumps(feedback.final_labels), "final_text_sha256": feedback.final_text_sha256}
        try:
            with self.engine.begin() as conn:   # replace: portable across SQLite and PostgreSQL
                conn.execute(feedback_table.delete().where(feedback_table.c.report_id == feedback.report_id))
                conn.execute(feedback_table.insert().values(**row))
        except sa.exc.SQLAlchemyError as exc:
            raise PredictionLogError(f"cannot write to the prediction log ({_describe_db_error(exc)})") from None

    def purge(self, older_than_days: float) -> int:
        """Delete predictions and feedback older than `older_than_days`; returns the number of rows deleted."""
        if not isinstance(older_than_days, (int, float)) or isinstance(older_than_days, bool) or older_than_days <= 0:
            raise PredictionLogError("older_than_days must be a number > 0")
        cutoff = parse_time(datetime.now(timezone.utc) - timedelta(days=float(older_than_days)))
        try:
            with self.engine.begin() as conn:
                n = conn.execute(predictions_table.delete().where(predictions_table.c.created_at < cutoff)).rowcount
                n += conn.execute(feedback_table.delete().where(feedback_table.c.created_at < cutoff)).rowcount
        except sa.exc.SQLAlchemyError as exc:
            raise PredictionLogError(f"cannot purge the prediction log ({_describe_db_error(exc)})") from None
        return int(n)

    def _write(self, statement) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(statement)
        except sa.exc.SQLAlchemyError as exc:
            raise PredictionLogError(f"cannot write to the prediction log ({_describe_db_error(exc)})") from None

    # ----------------------------------------------------------------- reading

    def predictions(self, since: str | datetime | None = None, until: str | datetime | None = None,
                    model_version: str | None = None, role: str | None = None) -> list[PredictionRecord]:
        """Predictions with since ≤ created_at < until (either bound optional), oldest first."""
        t = predictions_table
        query = sa.select(t).order_by(t.c.created_at, t.c.id)
        if since is not None:
            query = query.where(t.c.created_at >= parse_time(since, "since"))
        if until is not None:
            query = query.where(t.c.created_at < parse_time(until, "until"))
        if model_version is not None:
            query = query.where(t.c.model_version == str(model_version))
        if role is not None:
            if role not in ROLES:
                raise PredictionLogError(f"role must be one of {', '.join(ROLES)}")
            query = query.where(t.c.role == role)
        return [_prediction_from_row(row) for row in self._read(query)]

    def feedback(self, since: str | datetime | None = None) -> list[FeedbackRecord]:
        t = feedback_table
        query = sa.select(t).order_by(t.c.created_at, t.c.report_id)
        if since is not None:
            query = query.where(t.c.created_at >= parse_time(since, "since"))
        return [_feedback_from_row(row) for row in self._read(query)]

    def validated(self, since: str | datetime | None = None) -> list[tuple[PredictionRecord, FeedbackRecord]]:
        """(prediction, feedback) pairs of radiologist-signed studies, feedback created since `since`, oldest first.
        The ground truth of concept drift: the model's labels vs the signed report's."""
        p, f = predictions_table, feedback_table
        query = (sa.select(p, *[c.label(f"fb_{c.name}") for c in f.c])
                 .join(f, f.c.report_id == p.c.report_id).order_by(f.c.created_at, p.c.id))
        if since is not None:
            query = query.where(f.c.created_at >= parse_time(since, "since"))
        pairs, seen = [], set()
        for row in self._read(query):
            if row.report_id in seen:   # one report, one prediction; a duplicate append counts once
                continue
            seen.add(row.report_id)
            fb = {c.name: getattr(row, f"fb_{c.name}") for c in f.c}
            pairs.append((_prediction_from_row(row), _feedback_from_row(SimpleNamespace(**fb))))
        return pairs

    def __len__(self) -> int:
        rows = self._read(sa.select(sa.func.count()).select_from(predictions_table))
        return int(rows[0][0])

    def _read(self, query) -> list:
        try:
            with self.engine.connect() as conn:
                return list(conn.execute(query))
        except sa.exc.SQLAlchemyError as exc:
            raise PredictionLogError(f"cannot read the prediction log ({_describe_db_error(exc)})") from None

    def close(self) -> None:
        self.engine.dispose()


def _prediction_from_row(row) -> PredictionRecord:
    return PredictionRecord(
        study_hash=row.study_hash, created_at=_iso(row.created_at), model_name=row.model_name,
        model_version=row.model_version, role=row.role, report_id=row.report_id,
        embedding=np.frombuffer(row.embedding, dtype="<f2", count=row.embedding_dim).copy(),
        probabilities=json.loads(row.probabilities), text_labels=json.loads(row.text_labels),
        review_required=bool(row.review_required), review_reasons=json.loads(row.review_reasons),
        latency_ms=row.latency_ms, acquisition=json.loads(row.acquisition))


def _feedback_from_row(row) -> FeedbackRecord:
    return FeedbackRecord(report_id=row.report_id, created_at=_iso(row.created_at), rating=row.rating,
                          outcome=row.outcome, edit_distance=row.edit_distance,
                          final_labels=json.loads(row.final_labels), final_text_sha256=row.final_text_sha256)
