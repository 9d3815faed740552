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

Health (issue 12: store faults must not be invisible): the file is checked with `PRAGMA quick_check` when it is
opened (a corrupt store → ReportStoreError, so `rrg serve` stops before the port opens). A failed read or write
sets `failure` at once (the service then reports not ready and refuses new reports before inference); `health()`
is what /readyz shows, and never blocks on I/O: it starts a background re-check (a probe write and a quick_check
on a connection of its own) when the store is failing, or when the last full check is older than
`CHECK_EVERY_S`. A re-check that passes clears `failure`, so the service recovers by itself.
"""

from __future__ import annotations

import contextlib
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
CHECK_EVERY_S = 900.0      # a full quick_check reads the whole file: at most every 15 minutes while healthy
RECHECK_FAILED_S = 5.0     # while failing, look again at most this often (a disk freed, a file restored)


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
            problem = _quick_check(self._db)
        except (sqlite3.Error, OSError) as exc:
            raise ReportStoreError(f"cannot open the report store {self.path}: {type(exc).__name__}: {exc}") from None
        if problem is not None:
            self._db.close()
            raise ReportStoreError(f"the report store {self.path} is corrupt (PRAGMA quick_check: {problem}); "
                                   "restore it from a backup or move it aside")
        self.failure: str | None = None         # why the latest read, write or check failed; None: healthy
        self._checked_at = time.monotonic()
        self._checking = False
        self.prune()

    def put(self, report_id: str, record: dict) -> None:
        """Keep a report; ReportStoreError (and `failure` set) when SQLite or the disk refuses."""
        payload = json.dumps(record, separators=(",", ":"))
        with self._failing("write"), self._lock:
            self._db.execute("INSERT OR REPLACE INTO reports (report_id, created_at, record) VALUES (?, ?, ?)",
                             (report_id, time.time(), payload))
        if time.monotonic() - self._last_prune > _PRUNE_EVERY_S:
            with self._failing("prune"):
                self.prune()

    def get(self, report_id: str) -> dict | None:
        with self._failing("read"), self._lock:
            row = self._db.execute("SELECT record, created_at FROM reports WHERE report_id = ?",
                                   (report_id,)).fetchone()
        if row is None or row[1] < time.time() - self.retention_s:
            return None
        return json.loads(row[0])

    def delete(self, report_id: str) -> None:
        with self._failing("delete"), self._lock:
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

    # ------------------------------------------------------------------ health

    @contextlib.contextmanager
    def _failing(self, action: str):
        """SQLite / OS errors of `action` → `failure` set, ReportStoreError (SQLite's reason, never the data)."""
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            self.failure = f"{action} failed: {type(exc).__name__}: {exc}"
            log.error("report store %s: %s", self.path, self.failure)
            raise ReportStoreError(f"the report store {action} failed ({type(exc).__name__})") from None

    def health(self) -> tuple[bool, str]:
        """(healthy, state) for /readyz, at once: a due re-check runs in the background (see the module doc)."""
        due = RECHECK_FAILED_S if self.failure is not None else CHECK_EVERY_S
        if not self._checking and time.monotonic() - self._checked_at > due:
            self._checking = True
            threading.Thread(target=self.check, name="report-store-check", daemon=True).start()
        if self.failure is not None:
            return False, f"failing: {self.failure} (new reports are refused)"
        return True, "ok"

    def check(self) -> bool:
        """A probe write and a quick_check (blocking); clears or sets `failure`; True when healthy."""
        try:
            with self._lock:
                self._db.execute("CREATE TABLE IF NOT EXISTS store_probe (id INTEGER PRIMARY KEY, at REAL NOT NULL)")
                self._db.execute("INSERT OR REPLACE INTO store_probe (id, at) VALUES (1, ?)", (time.time(),))
                if self.path == ":memory:":
                    problem = _quick_check(self._db)
            if self.path != ":memory:":
                # a connection of its own: reading the whole file must not hold the lock the requests need
                reader = sqlite3.connect(Path(self.path).resolve().as_uri() + "?mode=ro", uri=True, timeout=10.0)
                try:
                    problem = _quick_check(reader)
                finally:
                    reader.close()
            self.failure = None if problem is None else f"corrupt (PRAGMA quick_check: {problem})"
        except (sqlite3.Error, OSError) as exc:
            self.failure = f"check failed: {type(exc).__name__}: {exc}"
        finally:
            self._checked_at = time.monotonic()
            self._checking = False
        if self.failure is not None:
            log.error("report store %s: %s", self.path, self.failure)
        return self.failure is None


def _quick_check(db: sqlite3.Connection) -> str | None:
    """None when `PRAGMA quick_check` says ok, else its first problem (page numbers, no data)."""
    rows = db.execute("PRAGMA quick_check(5)").fetchall()
    if rows == [("ok",)]:
        return None
    lines = [line for row in rows for line in str(row[0]).splitlines() if not line.startswith("***")]
    return "; ".join(lines[:3]) or "not ok"
