"""Failed report reads are audited (issue 12): a GET of a report that answers 404, 403 or 401 leaves a
`report.read.refused` record naming the token (by id) and the report id only when it is a well-formed id."""

import json
import uuid

from fastapi.testclient import TestClient
from test_api import READER, WRITER, R, W, make_app

from serving.auth import token_id


def _events(tmp_path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]


def test_refused_and_failed_report_reads_are_audited(tmp_path):
    unknown = str(uuid.uuid4())
    odd = "DOE_JOHN_MRN987654321." + "x" * 80            # not an id: never written to the audit log
    with TestClient(make_app(tmp_path)) as client:
        assert client.get(f"/api/v1/reports/{unknown}", headers=R).status_code == 404
        assert client.get(f"/api/v1/reports/{unknown}/fhir", headers=R).status_code == 404
        assert client.get(f"/api/v1/reports/{unknown}/text", headers=R).status_code == 404
        assert client.get(f"/api/v1/reports/{odd}", headers=R).status_code == 404
        assert client.get(f"/api/v1/reports/{unknown}", headers=W).status_code == 403      # lacks report.read
        assert client.get(f"/api/v1/reports/{unknown}").status_code == 401
        assert client.get("/api/v1/no-such-route", headers=R).status_code == 404          # not a report read
    events = _events(tmp_path)
    assert [e["event"] for e in events] == ["report.read.refused"] * 6
    assert [e["status"] for e in events] == [404, 404, 404, 404, 403, 401]
    assert [e["report_id"] for e in events] == [unknown, unknown, unknown, None, unknown, unknown]
    assert [e["who"] for e in events[:4]] == [token_id(READER)] * 4
    assert events[4]["who"] == token_id(WRITER) and events[5]["who"] == "unauthenticated"
    assert "DOE_JOHN" not in (tmp_path / "audit.jsonl").read_text()
