"""Report-store faults are visible (issue 12): a store with garbage in its data pages is refused when opened (and
`rrg serve` stops with `error:` before the port opens); a failed write answers 503, is counted, makes /readyz not
ready and refuses the next report before inference; a re-check that passes makes the service ready again."""

import sqlite3

import pytest
from fastapi.testclient import TestClient
from test_api import STUDY, FakeBackend, W, body, fake_model, make_app

from rrg.cli import main
from serving.store import ReportStore, ReportStoreError


def corrupt_data_pages(path) -> None:
    """Garbage over every page of a real store except page 1 and the tables' root pages: the schema still reads
    and `SELECT count(*)` still answers (from the index), but the table's leaves are gone."""
    db = sqlite3.connect(path)
    page = db.execute("PRAGMA page_size").fetchone()[0]
    roots = {row[0] for row in db.execute("SELECT rootpage FROM sqlite_master WHERE rootpage > 0")}
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.close()
    with open(path, "r+b") as f:
        for number in range(2, pages + 1):
            if number not in roots:
                f.seek((number - 1) * page)
                f.write(b"\xa5" * page)


@pytest.fixture()
def corrupted_store(tmp_path):
    path = tmp_path / "reports.sqlite3"
    store = ReportStore(path)
    for i in range(60):
        store.put(f"r{i}", {"response": {"impression": "x" * 3000}, "study_id": f"1.2.{i}"})
    store.close()
    corrupt_data_pages(path)
    return path


def test_a_store_with_garbage_in_its_data_pages_is_refused_when_opened(corrupted_store):
    with pytest.raises(ReportStoreError, match=r"is corrupt \(PRAGMA quick_check: .*Page \d+") as caught:
        ReportStore(corrupted_store)
    assert "reports.sqlite3" in str(caught.value) and "backup" in str(caught.value)


def test_rrg_serve_refuses_a_corrupted_store_before_the_port_opens(corrupted_store, tmp_path, capsys, monkeypatch,
                                                                  tiny_model_dir):
    monkeypatch.setenv("RRG_API_TOKENS", "tok-0123456789abcdef:report.write")
    monkeypatch.delenv("RRG_REPORT_STORE")
    code = main(["serve", "--model", str(tiny_model_dir), "--report-store", str(corrupted_store),
                 "--audit-log", str(tmp_path / "audit.jsonl")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: the report store") and "is corrupt" in err


class _FailingWrites:
    """The store's connection, with every INSERT refused as a full disk would refuse it."""

    def __init__(self, db):
        self.db = db

    def execute(self, sql, *args):
        if sql.lstrip().upper().startswith("INSERT"):
            raise sqlite3.OperationalError("database or disk is full")
        return self.db.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self.db, name)


def _metric(client, name: str) -> float:
    lines = [line for line in client.get("/metrics").text.splitlines() if line.startswith(name + " ")]
    return float(lines[0].split()[1])


def test_a_failed_write_is_503_counted_not_ready_and_refuses_the_next_report_before_inference(tmp_path):
    backend = FakeBackend()
    with TestClient(make_app(tmp_path, model=fake_model(backend))) as client:
        service = client.app.state.service
        assert client.get("/readyz").json()["store"] == "ok"
        real_db = service.reports._db
        service.reports._db = _FailingWrites(real_db)
        r = client.post(f"/api/v1/studies/{STUDY}/report", json=body(), headers=W)
        assert r.status_code == 503 and "report store write failed" in r.json()["detail"]
        assert "report_id" not in r.json() and len(backend.batches) == 1       # inference ran once, for this one
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["ready"] is False
        assert ready.json()["store"] == ("failing: write failed: OperationalError: database or disk is full "
                                         "(new reports are refused)")
        r = client.post(f"/api/v1/studies/{STUDY}/report", json=body(), headers=W)
        assert r.status_code == 503 and "nothing was generated" in r.json()["detail"]
        assert len(backend.batches) == 1                                        # refused before inference
        assert _metric(client, "rrg_report_store_failures_total") == 1.0
        assert service.reports.check() is False                                  # the probe write fails too
        service.reports._db = real_db                                           # the disk has room again
        assert service.reports.check() is True
        assert client.get("/readyz").json()["store"] == "ok"
        assert client.post(f"/api/v1/studies/{STUDY}/report", json=body(), headers=W).status_code == 200


def test_a_store_corrupted_while_serving_makes_the_service_not_ready(tmp_path):
    with TestClient(make_app(tmp_path, report_store=tmp_path / "live.sqlite3")) as client:
        for _ in range(3):
            assert client.post(f"/api/v1/studies/{STUDY}/report", json=body(), headers=W).status_code == 200
        store = client.app.state.service.reports
        for i in range(60):                                   # enough reports for data pages beyond the roots
            store.put(f"filler-{i}", {"response": {"impression": "x" * 3000}, "study_id": f"1.2.{i}"})
        store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        corrupt_data_pages(tmp_path / "live.sqlite3")
        assert store.check() is False
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["store"].startswith("failing: corrupt (PRAGMA quick_check")
