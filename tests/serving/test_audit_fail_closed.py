"""The audit trail fails closed (issue 12): a request whose audit record cannot be durably written is refused (503,
nothing stored or returned), /readyz says not ready until a record can be written again, failures are counted, no
partial line is left, and an unusable audit path stops `rrg serve` before the port opens."""

import errno
import json
import os

import pytest
from fastapi.testclient import TestClient
from test_api import STUDY, W, body, make_app

from rrg.cli import main
from serving.auth import AuditError, AuditLog


def _fail_writes(monkeypatch, mode: str):
    real_write = os.write

    def write(fd, data):
        if mode == "error":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data[: len(data) // 2])        # "short": half the line fits

    monkeypatch.setattr(os, "write", write)


@pytest.mark.parametrize("mode", ["error", "short"])
def test_a_failed_write_leaves_no_partial_line_and_marks_the_log_failed(tmp_path, monkeypatch, mode):
    log = AuditLog(tmp_path / "audit.jsonl")
    log.record("first", "t1", "1.2.3", 200, "v1")
    size = (tmp_path / "audit.jsonl").stat().st_size
    with monkeypatch.context() as m:
        _fail_writes(m, mode)
        with pytest.raises(AuditError, match="audit write failed"):
            log.record("second", "t1", "1.2.3", 200, "v1")
    assert (tmp_path / "audit.jsonl").stat().st_size == size and not log.healthy
    log.record("third", "t1", "1.2.3", 200, "v1")          # the disk has room again
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    assert [json.loads(line)["event"] for line in lines] == ["first", "third"] and log.healthy
    log.close()


def test_a_request_that_cannot_be_audited_is_refused_and_the_service_is_not_ready(tmp_path, monkeypatch):
    with TestClient(make_app(tmp_path)) as client:
        assert client.get("/readyz").json()["audit"] == "ok"
        with monkeypatch.context() as m:
            _fail_writes(m, "error")
            r = client.post(f"/api/v1/studies/{STUDY}/report", json=body(), headers=W)
            assert r.status_code == 503 and "audit record" in r.json()["detail"] and "report_id" not in r.json()
            ready = client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["ready"] is False
            assert ready.json()["audit"].startswith("failing")
        assert len(app_reports(client)) == 0                   # the unaudited report was not kept
        metrics = client.get("/metrics").text.splitlines()
        # two records failed: the report's, and the middleware's record of the refusal (after its response)
        assert [m for m in metrics if m.startswith("rrg_audit_write_failures_total ")] == [
            "rrg_audit_write_failures_total 2.0"]
        assert client.get("/readyz").json()["audit"] == "ok"    # a probe record succeeds: ready again
        assert client.post(f"/api/v1/studies/{STUDY}/report", json=body(), headers=W).status_code == 200
    events = [json.loads(line)["event"] for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert events == ["audit.probe", "report.create"]


def app_reports(client):
    store = client.app.state.service.reports
    return [row[0] for row in store._db.execute("SELECT report_id FROM reports")]


def test_an_unusable_audit_path_stops_rrg_serve_before_the_port_opens(tmp_path, capsys, monkeypatch,
                                                                      tiny_model_dir):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("RRG_API_TOKENS", "tok-0123456789abcdef:report.write")
    code = main(["serve", "--model", str(tiny_model_dir), "--audit-log", str(blocker / "audit.jsonl"),
                 "--report-store", str(tmp_path / "reports.sqlite3")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: cannot open the audit log")
