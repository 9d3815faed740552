"""The "pause automated reports" switch on the running service: set and cleared through the authenticated admin
endpoint, every report flagged while paused, persisted across restarts and shared by replicas, audited, shown in
/readyz and /metrics, and fail closed when its state cannot be read."""

from __future__ import annotations

import json
import sqlite3

from fastapi.testclient import TestClient
from test_api import TOKENS, A, W, _metric, _post, make_app

from serving.auth import token_id

OPERATOR = "operator-token-0123456789abcdef"
OP = {"Authorization": f"Bearer {OPERATOR}"}
REASON = "hallucination rate 7.5 % above 5 % over the last 24 h (monitoring)"


def _app(tmp_path, **kwargs):
    return make_app(tmp_path, tokens=f"{TOKENS},{OPERATOR}:service.admin", **kwargs)


def _set(c, paused: bool, reason: str = REASON, headers=OP):
    return c.post("/api/v1/admin/automation", json={"paused": paused, "reason": reason}, headers=headers)


def test_pause_flags_every_report_until_an_operator_clears_it(tmp_path):
    with TestClient(_app(tmp_path)) as c:
        assert _post(c).json()["requires_radiologist_review"] is False
        state = _set(c, True).json()
        assert state["paused"] is True and state["reason"] == REASON and state["by"] == token_id(OPERATOR)
        out = _post(c).json()
        assert out["requires_radiologist_review"] is True
        assert out["review_reasons"] == [f"automated reports are paused by an operator: {REASON}"]
        ready = c.get("/readyz").json()
        assert ready["ready"] is True and ready["automated_reports"].startswith("paused since ")
        assert REASON in ready["automated_reports"]
        assert _metric(c, "rrg_automation_paused") == 1
        assert _metric(c, "rrg_review_flags_total", kind="automation_paused") == 1
        assert c.get("/api/v1/admin/automation", headers=OP).json()["paused"] is True
    with TestClient(_app(tmp_path)) as c:                                  # a restart keeps the pause
        assert _post(c).json()["requires_radiologist_review"] is True
        assert _metric(c, "rrg_automation_paused") == 1
        assert _set(c, False, "reviewed: hallucination rate back to 2 %").json()["paused"] is False
        assert _post(c).json()["requires_radiologist_review"] is False
        assert c.get("/readyz").json()["automated_reports"] == "active"
        assert _metric(c, "rrg_automation_paused") == 0
    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    changes = [e for e in audit if e["event"].startswith("automation.")]
    assert [e["event"] for e in changes] == ["automation.pause", "automation.resume"]
    assert changes[0]["who"] == token_id(OPERATOR) and changes[0]["detail"] == {"paused": True, "reason": REASON}


def test_the_switch_needs_the_admin_scope_by_name(tmp_path):
    with TestClient(_app(tmp_path)) as c:
        assert _set(c, True, headers=W).status_code == 403
        assert _set(c, True, headers=A).status_code == 403            # a token without scopes is not an admin
        assert _set(c, True, headers={}).status_code == 401
        assert c.get("/api/v1/admin/automation", headers=W).status_code == 403
        assert c.post("/api/v1/admin/automation", json={"paused": True}, headers=OP).status_code == 422
        assert c.post("/api/v1/admin/automation", json={"paused": "yes", "reason": "x"}, headers=OP).status_code == 422
        assert _post(c).json()["requires_radiologist_review"] is False
    events = [json.loads(line)["event"] for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert events.count("automation.set.refused") == 5


def test_a_reason_with_identifiers_is_refused_without_echoing_it(tmp_path):
    with TestClient(_app(tmp_path)) as c:
        r = _set(c, True, "patient MRN: 12345678 had a bad report")
        assert r.status_code == 422 and "mrn" in r.json()["detail"] and "12345678" not in r.json()["detail"]
        assert c.get("/api/v1/admin/automation", headers=OP).json()["paused"] is False


def test_replicas_share_one_state(tmp_path):
    """Two services on one prediction-log database (two pods on one PostgreSQL): a pause set on one reaches the
    other within its refresh time."""
    first, second = _app(tmp_path), _app(tmp_path, report_store=str(tmp_path / "other-reports.sqlite3"))
    with TestClient(first) as a, TestClient(second) as b:
        assert _post(b).json()["requires_radiologist_review"] is False
        _set(a, True)
        second.state.service.automation.refresh_s = 0                        # do not wait out the cache here
        assert _post(b).json()["requires_radiologist_review"] is True


def test_an_unreadable_state_counts_as_paused(tmp_path):
    app = _app(tmp_path)
    with TestClient(app) as c:
        app.state.service.automation.refresh_s = 0
        with sqlite3.connect(tmp_path / "predictions.sqlite3") as db:
            db.execute("DROP TABLE serving_automation")
        out = _post(c).json()
        assert out["requires_radiologist_review"] is True
        assert "cannot be read" in out["review_reasons"][-1]
        ready = c.get("/readyz").json()
        assert ready["ready"] is True and ready["automated_reports"].startswith("paused: the automation state")
        state = c.get("/api/v1/admin/automation", headers=OP).json()
        assert state["paused"] is True and state["readable"] is False
        assert _set(c, False, "table restored").status_code == 503           # nothing to write to: said so
