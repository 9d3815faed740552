"""The retrain trigger: turns a policy decision into at most one training-pipeline run.

    trigger = RetrainTrigger("runs/monitoring")
    last, busy = trigger.state(is_running=launcher.is_running)      # inputs of the pure policy
    outcome = trigger.fire(decision, request, launcher)             # starts a run when decision.action == "retrain"

Guarantees (tested): no overlapping runs (an exclusive, non-blocking file lock around each launch, and a cluster
run counts as in progress while its launcher says so); idempotency (a decision's key is recorded before the launch,
so the same key never launches twice, even after a crash mid-launch); the cooldown is the policy's, fed from the
ledger's last trigger time. The ledger (`trigger_ledger.json`, written atomically) keeps every trigger: key,
reasons, when, backend, run ids, status.

Launchers are injected (`launch(request) -> LaunchResult`): `pipelines.monitoring.LocalRetrainLauncher` runs the
training pipeline through kfp.local exactly as `make run` does, `monitoring.launch.ClusterLauncher` submits it to
a KFP API server; monitoring itself never imports the pipelines.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from model_core.files import atomic_write_text
from monitoring.policy import RETRAIN, Decision

log = logging.getLogger(__name__)

LEDGER = "trigger_ledger.json"
LOCK = "trigger.lock"
STALE_CLUSTER_RUN = timedelta(hours=48)   # a cluster run never reported finished stops blocking after this


@dataclass
class RetrainRequest:
    """What a launcher needs: why, the evidence, and the key it must record with the run."""
    idempotency_key: str
    reasons: list[str]
    model_version: str
    drift_report: str | None = None        # path of drift.json (logged as an MLflow artifact with the run)
    decision: dict = field(default_factory=dict)

    def run_tags(self) -> dict[str, str]:
        """MLflow tags / KFP run parameters that record why the run exists."""
        return {"trigger.source": "monitoring", "trigger.reason": ",".join(self.reasons),
                "trigger.idempotency_key": self.idempotency_key, "trigger.model_version": self.model_version}


@dataclass
class LaunchResult:
    backend: str                           # "local" | "kfp"
    run_id: str                            # KFP run id, or the local pipeline's MLflow run id
    status: str                            # "finished" | "started" | "failed"
    mlflow_run_id: str | None = None
    detail: dict = field(default_factory=dict)


Launcher = Callable[[RetrainRequest], LaunchResult]


def _utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class RetrainTrigger:
    def __init__(self, state_dir: str | os.PathLike, clock: Callable[[], datetime] = _utc_now):
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.clock = clock

    # ------------------------------------------------------------------ ledger

    def ledger(self) -> dict:
        path = self.dir / LEDGER
        if not path.is_file():
            return {"runs": {}, "last_trigger_at": None, "active": None}
        try:
            return json.loads(path.read_text())
        except ValueError:
            raise RuntimeError(f"the trigger ledger {path} is unreadable; refusing to trigger (fail closed) until it "
                               "is repaired or removed") from None

    def _save(self, ledger: dict) -> None:
        atomic_write_text(self.dir / LEDGER, json.dumps(ledger, indent=2, default=str))

    @contextlib.contextmanager
    def _exclusive(self):
        """Yield True while holding the trigger lock, False when another process holds it."""
        with open(self.dir / LOCK, "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # ------------------------------------------------------------------ state for the policy

    def state(self, is_running: Callable[[str], bool] | None = None) -> tuple[datetime | None, bool]:
        """(time of the last trigger, whether a triggered run is still in progress)."""
        ledger = self.ledger()
        last = datetime.fromisoformat(ledger["last_trigger_at"]) if ledger.get("last_trigger_at") else None
        with self._exclusive() as free:
            if not free:
                return last, True                          # a launch holds the lock right now
        active = ledger.get("active")
        if active and active.get("backend") == "kfp":
            if is_running is not None:
                return last, bool(is_running(active["run_id"]))
            started = datetime.fromisoformat(active["started_at"])
            return last, self.clock() - started < STALE_CLUSTER_RUN
        return last, False

    # ------------------------------------------------------------------ firing

    def fire(self, decision: Decision, request: RetrainRequest, launch: Launcher) -> dict:
        """Start one run for a "retrain" decision; returns {fired, why, run}. Never launches twice for one key and
        never while another launch holds the lock."""
        if decision.action != RETRAIN:
            return {"fired": False, "why": f"decision is {decision.action}", "run": None}
        key = decision.idempotency_key
        if not key or key != request.idempotency_key:
            raise ValueError("a retrain request must carry its decision's idempotency key")
        with self._exclusive() as free:
            if not free:
                return {"fired": False, "why": "another trigger is launching a run (no overlapping runs)",
                        "run": None}
            ledger = self.ledger()
            if key in ledger["runs"]:
                return {"fired": False, "why": "already triggered for this evidence (idempotency key)",
                        "run": ledger["runs"][key]}
            now = self.clock().isoformat()
            entry = {"key": key, "reasons": request.reasons, "triggered_at": now, "status": "launching",
                     "model_version": request.model_version}
            ledger["runs"][key] = entry
            ledger["last_trigger_at"] = now
            self._save(ledger)                             # recorded before launching: a crash cannot launch twice
            log.info("retrain triggered (%s), key %s", ", ".join(request.reasons), key)
            try:
                result = launch(request)
            except Exception as exc:  # noqa: BLE001 — any launcher failure is recorded in the ledger, then re-raised
                entry.update(status="failed", detail=f"{type(exc).__name__}: {exc}"[:500])
                self._save(ledger)
                raise
            entry.update(status=result.status, backend=result.backend, run_id=result.run_id,
                         mlflow_run_id=result.mlflow_run_id, detail=result.detail)
            ledger["active"] = ({"backend": result.backend, "run_id": result.run_id, "started_at": now}
                                if result.status == "started" else None)
            self._save(ledger)
        return {"fired": True, "why": "retrain", "run": entry, "result": asdict(result)}
