"""The retrain policy (pure) and the trigger: cooldown, no overlapping runs, idempotency."""

import json
import threading
from datetime import datetime, timedelta

import pytest

from monitoring.alerts import Alert
from monitoring.policy import ALERT, NONE, RETRAIN, PolicyInput, decide
from monitoring.trigger import LaunchResult, RetrainRequest, RetrainTrigger

NOW = datetime(2026, 3, 10, 3, 0)


def state(drift=None, alerts=(), last=None, busy=False, now=NOW, version="7"):
    return PolicyInput(drift or {}, list(alerts), now, last, busy, version, now)


def test_data_or_concept_drift_retrains_with_a_stable_key():
    a = decide(state({"mmd": "drift", "label_prevalence": "ok"}), cooldown_hours=72)
    b = decide(state({"mmd": "drift", "label_prevalence": "ok"}, now=NOW + timedelta(hours=5)), cooldown_hours=72)
    assert a.action == RETRAIN and a.reasons[0] == "mmd_drift"
    assert a.idempotency_key == b.idempotency_key                   # same model, same day, same evidence
    assert decide(state({"concept_f1": "drift"}), 72).action == RETRAIN
    other_day = decide(state({"mmd": "drift"}, now=NOW + timedelta(days=1)), 72)
    assert other_day.idempotency_key != a.idempotency_key


def test_cooldown_and_a_running_retrain_hold_the_trigger_back():
    recent = decide(state({"mmd": "drift"}, last=NOW - timedelta(hours=10)), cooldown_hours=72)
    assert recent.action == ALERT and "cooldown" in recent.held_back_by
    assert decide(state({"mmd": "drift"}, last=NOW - timedelta(hours=73)), 72).action == RETRAIN
    busy = decide(state({"mmd": "drift"}, busy=True), 72)
    assert busy.action == ALERT and "in progress" in busy.held_back_by


def test_label_shifts_and_alerts_alert_without_retraining():
    assert decide(state({"label_prevalence": "drift", "cusum": "drift"}), 72).action == ALERT
    page = Alert("CriticalSensitivityLow", "page", "page", "Pneumothorax sensitivity low")
    assert decide(state({"mmd": "ok"}, alerts=[page]), 72).reasons == ["CriticalSensitivityLow"]
    assert decide(state({"mmd": "ok", "concept_f1": "insufficient data"}), 72).action == NONE


class CountingLauncher:
    def __init__(self, block: threading.Event | None = None):
        self.calls, self.block, self.started = [], block, threading.Event()

    def __call__(self, request: RetrainRequest) -> LaunchResult:
        self.calls.append(request)
        self.started.set()
        if self.block:
            self.block.wait(10)
        return LaunchResult("local", f"run-{len(self.calls)}", "finished", f"mlflow-{len(self.calls)}")


def _fire(trigger, drift=None, now=NOW):
    decision = decide(state(drift or {"mmd": "drift"}, now=now), 72)
    request = RetrainRequest(decision.idempotency_key, list(decision.reasons), "7", None, decision.to_dict())
    return decision, request


def test_one_key_launches_once(tmp_path):
    trigger, launcher = RetrainTrigger(tmp_path), CountingLauncher()
    decision, request = _fire(trigger)
    first = trigger.fire(decision, request, launcher)
    again = trigger.fire(decision, request, launcher)
    assert first["fired"] and not again["fired"] and "idempotency" in again["why"]
    assert len(launcher.calls) == 1 and launcher.calls[0].run_tags()["trigger.reason"] == "mmd_drift"
    ledger = json.loads((tmp_path / "trigger_ledger.json").read_text())
    assert ledger["runs"][decision.idempotency_key]["run_id"] == "run-1"
    last, busy = trigger.state()
    assert last is not None and not busy


def test_no_second_run_while_one_is_launching(tmp_path):
    release = threading.Event()
    launcher = CountingLauncher(block=release)
    trigger = RetrainTrigger(tmp_path)
    decision, request = _fire(trigger)
    worker = threading.Thread(target=trigger.fire, args=(decision, request, launcher))
    worker.start()
    assert launcher.started.wait(10)
    try:
        other_decision, other_request = _fire(trigger, {"concept_f1": "drift"})
        blocked = trigger.fire(other_decision, other_request, launcher)
        assert not blocked["fired"] and "no overlapping runs" in blocked["why"]
        assert trigger.state()[1] is True                   # the policy sees a run in progress
    finally:
        release.set()
        worker.join(10)
    assert len(launcher.calls) == 1


def test_a_cluster_run_counts_as_in_progress_while_its_launcher_says_so(tmp_path):
    trigger = RetrainTrigger(tmp_path)
    decision, request = _fire(trigger)
    trigger.fire(decision, request, lambda r: LaunchResult("kfp", "kfp-run-1", "started"))
    assert trigger.state(is_running=lambda run_id: run_id == "kfp-run-1")[1] is True
    assert trigger.state(is_running=lambda run_id: False)[1] is False


def test_a_failed_launch_is_recorded_and_not_retried_for_the_same_key(tmp_path):
    trigger = RetrainTrigger(tmp_path)
    decision, request = _fire(trigger)

    def broken(_request):
        raise RuntimeError("pipeline could not start")

    with pytest.raises(RuntimeError):
        trigger.fire(decision, request, broken)
    assert trigger.ledger()["runs"][decision.idempotency_key]["status"] == "failed"
    assert not trigger.fire(decision, request, CountingLauncher())["fired"]


def test_an_unreadable_ledger_fails_closed(tmp_path):
    (tmp_path / "trigger_ledger.json").write_text("{not json")
    with pytest.raises(RuntimeError, match="fail closed"):
        RetrainTrigger(tmp_path).state()
