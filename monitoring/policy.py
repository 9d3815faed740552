"""The retrain policy: drift results and alerts → none / alert / retrain. Pure: no clock, no files, no network.

    decision = decide(PolicyInput(drift={...}, alerts=[...], now=..., last_retrain_at=..., run_in_progress=False,
                                  model_version="3", window_end=...), cooldown_hours=72)

Rules, in order:
  1. retrain evidence: data drift (MMD) or concept drift (a critical finding's F1 more than N points below the
     reference). Label-prevalence shifts and the pneumothorax CUSUM alert but do not retrain on their own: case mix
     moves with seasons and referral patterns without the model being wrong.
  2. with evidence, retrain unless a run is in progress (no overlap) or the last trigger is within the cooldown;
     then "alert", saying which rule held it back.
  3. without evidence: "alert" when any alert or drift verdict is raised, else "none".
The idempotency key is a hash of (model version, window end day, retrain reasons): the same evidence about the same
model on the same day never starts a second run, however often the cycle runs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from monitoring.alerts import Alert

NONE, ALERT, RETRAIN = "none", "alert", "retrain"
RETRAIN_DETECTORS = ("mmd", "concept_f1")


@dataclass(frozen=True)
class PolicyInput:
    drift: dict            # detector method → status ("ok" | "drift" | "insufficient data")
    alerts: list[Alert]
    now: datetime
    last_retrain_at: datetime | None
    run_in_progress: bool
    model_version: str
    window_end: datetime


@dataclass(frozen=True)
class Decision:
    action: str
    reasons: list[str] = field(default_factory=list)
    idempotency_key: str | None = None
    held_back_by: str | None = None

    def to_dict(self) -> dict:
        return {"action": self.action, "reasons": list(self.reasons), "idempotency_key": self.idempotency_key,
                "held_back_by": self.held_back_by}


def idempotency_key(model_version: str, window_end: datetime, reasons: list[str]) -> str:
    text = "|".join([model_version, window_end.date().isoformat(), *sorted(reasons)])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def decide(state: PolicyInput, cooldown_hours: float) -> Decision:
    evidence = [f"{m}_drift" for m in RETRAIN_DETECTORS if state.drift.get(m) == "drift"]
    notices = sorted({a.name for a in state.alerts} | {f"{m}_drift" for m, s in state.drift.items() if s == "drift"})
    if evidence:
        key = idempotency_key(state.model_version, state.window_end, evidence)
        if state.run_in_progress:
            return Decision(ALERT, notices, key, "a retraining run is in progress (no overlapping runs)")
        if state.last_retrain_at is not None and state.now - state.last_retrain_at < timedelta(hours=cooldown_hours):
            return Decision(ALERT, notices, key, f"cooldown: the last retrain started within {cooldown_hours:g} h")
        return Decision(RETRAIN, evidence + [n for n in notices if n not in evidence], key)
    return Decision(ALERT if notices else NONE, notices)
