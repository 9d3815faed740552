"""Where generated reports are kept: a SQLite file, so they outlive the process and are shared by processes.

    store = ReportStore("runs/serving/reports.sqlite3", retention_days=30)
    store.put(report_id, record)        # record: the JSON-serialisable dict the API renders from
    store.get(report_id)                # -> dict, or None when unknown or expired

Reports are clinical records (they hold the study id and the generated text), so the file is created
readable by its owner only (0600) and nothing from it is logged. Rows older than `retention_days` are deleted
on open and then at most once a minute on writes. WAL mode lets several service processes on one host (or a
restarted one) read and write the same file; each call opens its own short transaction, guarded by a lock for
the connection shared across the service's threads. ":memory:" keeps the reports in this process only
(tests, throw-away runs).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS reports (
    report_id  TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    record     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS reports_created ON reports (created_at);
"""
_PRUNE_EVERY_S = 60.0


class ReportStoreError(RuntimeError):
    """The report store cannot be opened or used; the message names the file and the problem."""


class ReportStore:
    def __init__(self, path: str | os.PathLike = ":memory:", retention_days: float = 30.0):
        if retention_days <= 0:
            raise ValueError(f"retention_days must be > 0, got {retention_days}")
        self.path = str(path)
        self.retention_s = retention_days * 86400.0
        self._lock = threading.Lock()
        self._last_prune = 0.0
        try:
            if self.path != ":memory:":
                file = Path(self.path)
                file.parent.mkdir(parents=True, exist_ok=True)
                if not file.exists():
                    os.close(os.open(file, os.O_CREAT | os.O_WRONLY, 0o600))
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=10.0, isolation_level=None)
            if self.path != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._db.execute("SELECT count(*) FROM reports").fetchone()
        except (sqlite3.Error, OSError) as exc:
            raise ReportStoreError(f"cannot open the report store {self.path}: {type(exc).__name__}: {exc}") from None
        self.prune()

    def put(self, report_id: str, record: dict) -> None:
        payload = json.dumps(record, separators=(",", ":"))
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO reports (report_id, created_at, record) VALUES (?, ?, ?)",
                             (report_id, time.time(), payload))
        if time.monotonic() - self._last_prune > _PRUNE_EVERY_S:
            self.prune()

    def get(self, report_id: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT record, created_at FROM reports WHERE report_id = ?",
                                   (report_id,)).fetchone()
        if row is None or row[1] < time.time() - self.retention_s:
            return None
        return json.loads(row[0])

    def delete(self, report_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM reports WHERE report_id = ?", (report_id,))

    def prune(self) -> int:
        """Delete the reports older than the retention period; returns how many."""
        with self._lock:
            deleted = self._db.execute("DELETE FROM reports WHERE created_at < ?",
                                       (time.time() - self.retention_s,)).rowcount
        self._last_prune = time.monotonic()
        if deleted:
            log.info("report store: %d report(s) past the %.0f-day retention deleted", deleted,
                     self.retention_s / 86400)
        return deleted

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM reports").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
