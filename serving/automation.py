"""The operator's "pause automated reports" switch: shared by every replica, kept across restarts, fail closed.

    control = AutomationControl("runs/serving/predictions.sqlite3")     # or postgresql+psycopg://…
    control.set(True, "hallucination rate 7 % > 5 % (monitoring)", who="3f2a…")   # POST /api/v1/admin/automation
    state = control.state()        # AutomationState(paused, reason, since, by, readable)

While paused, every report the service writes carries `requires_radiologist_review: true` with the reason among
its review_reasons, until an operator clears it. The monitoring side sets it through the authenticated endpoint
(scope service.admin), never by writing here.

Where it lives: table `serving_automation` in the prediction log's database (`monitoring.log_url`: a SQLite file
locally, PostgreSQL in production), so every replica behind the Service sees one state and a restart keeps it. The
table is append-only: each change is a row (when, paused, reason, the token id that set it), the newest row is
the state, and the rows are its history. Reads are cached for `refresh_s` seconds (the request path touches the
database at most that often); a pause reaches every replica within that time.

Fail closed: when the state cannot be read (database down, table unreadable), the service treats automated
reports as paused, with a reason that says so, and /readyz shows it; it does not stop serving drafts.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa

log = logging.getLogger("serving")

_metadata = sa.MetaData()
automation_table = sa.Table(
    "serving_automation", _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("changed_at", sa.DateTime, nullable=False),          # naive UTC
    sa.Column("paused", sa.Boolean, nullable=False),
    sa.Column("reason", sa.String(300), nullable=False),
    sa.Column("changed_by", sa.String(64), nullable=False),        # token id (16 hex) or "anonymous"
)
UNREADABLE_REASON = ("the automation state cannot be read, so automated reports count as paused (fail closed) "
                     "until it can be read again")


class AutomationStateError(RuntimeError):
    """The automation state cannot be opened or written; the message names the problem, not the URL's secrets."""


@dataclass(frozen=True)
class AutomationState:
    paused: bool
    reason: str | None = None
    since: str | None = None        # ISO-8601 UTC of the change
    by: str | None = None           # token id of whoever set it
    readable: bool = True           # False: the database could not be read (then paused is True)


def _engine(url: str) -> sa.Engine:
    """An engine for a SQLite path (owner-only file), ":memory:", or a SQLAlchemy URL."""
    if "://" in url:
        return sa.create_engine(url, pool_pre_ping=True)
    if url == ":memory:":
        return sa.create_engine("sqlite://", poolclass=sa.pool.StaticPool, connect_args={"check_same_thread": False})
    path = Path(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    return sa.create_engine(f"sqlite:///{path}", connect_args={"check_same_thread": False, "timeout": 10.0})


class AutomationControl:
    """The pause switch over one database (see the module docstring)."""

    def __init__(self, url: str, refresh_s: float = 2.0):
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._cached: AutomationState | None = None
        self._read_at = -float("inf")
        try:
            self.engine = _engine(url)
            _metadata.create_all(self.engine)
        except (sa.exc.SQLAlchemyError, OSError, ValueError) as exc:
            raise AutomationStateError(f"cannot open the automation state ({type(exc).__name__})") from None
        self.state()

    def peek(self) -> AutomationState | None:
        """The cached state while it is fresh (no I/O: safe on the event loop), else None."""
        with self._lock:
            fresh = time.monotonic() - self._read_at < self.refresh_s
            return self._cached if fresh else None

    def state(self) -> AutomationState:
        """The current state (database read unless the cache is fresh); unreadable → paused (fail closed)."""
        cached = self.peek()
        if cached is not None:
            return cached
        t = automation_table
        try:
            with self.engine.connect() as conn:
                row = conn.execute(sa.select(t).order_by(t.c.id.desc()).limit(1)).first()
            state = (AutomationState(False) if row is None else
                     AutomationState(bool(row.paused), row.reason if row.paused else None,
                                     _iso(row.changed_at), row.changed_by))
        except sa.exc.SQLAlchemyError as exc:
            log.error("automation state unreadable (%s): automated reports count as paused", type(exc).__name__)
            state = AutomationState(True, UNREADABLE_REASON, readable=False)
        with self._lock:
            self._cached, self._read_at = state, time.monotonic()
        return state

    def set(self, paused: bool, reason: str, who: str) -> AutomationState:
        """Record a change (a new row) and return the new state; AutomationStateError when it cannot be written."""
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        try:
            with self.engine.begin() as conn:
                conn.execute(automation_table.insert().values(changed_at=now, paused=bool(paused), reason=reason,
                                                              changed_by=who))
        except sa.exc.SQLAlchemyError as exc:
            raise AutomationStateError(f"cannot write the automation state ({type(exc).__name__})") from None
        with self._lock:
            self._read_at = -float("inf")           # the next read sees the change
        return self.state()

    def history(self, limit: int = 20) -> list[AutomationState]:
        """The latest changes, newest first."""
        t = automation_table
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t).order_by(t.c.id.desc()).limit(limit)).all()
        return [AutomationState(bool(r.paused), r.reason, _iso(r.changed_at), r.changed_by) for r in rows]

    def close(self) -> None:
        self.engine.dispose()


def _iso(naive_utc: datetime) -> str:
    return naive_utc.replace(tzinfo=timezone.utc).isoformat(timespec="seconds")
