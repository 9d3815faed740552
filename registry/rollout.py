"""The safe rollout in the registry: challenger → shadow → ab → champion, with a blue-green watch and rollback.

    register (gates pass, a champion serves) ─► challenger ─► shadow ─► ab ─► champion ─► (watch) ─► kept
                                                    │            │        │                   └─► rollback
                                                    └────────────┴────────┴─► withdrawn

Each stage is an alias of the same name, held by one version at a time, and the version's `status` tag. Every
move writes an audit entry (who, when, why) through `registry.models._audit`, whose action is the alias's own
name, so `registry.models.reconcile_aliases` can tell a move made here from one made behind rrg's back.
`champion` is reached only through `registry.models.promote` (it verifies the signed gate decision), and only
from `ab` with an analysis that says "promote". Decisions (champion-vs-challenger check, shadow and A/B
analyses) are recorded as version tags `rollout.<kind>` with both models' figures.

The blue-green watch: promotion records `rollout.watch_until` on the new champion; the previous champion keeps
`previous-champion` (serving keeps it warm). `watch_verdict` turns monitoring's alerts and the watched figures
into keep / rollback; `rollback` moves the alias back (audited) and serving follows the alias.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException

from model_core.config import RolloutConfig
from model_core.evaluation.comparison import champion_challenger_check
from registry import models
from registry.models import AB, CHALLENGER, CHAMPION, PREVIOUS, SHADOW, RegistryError
from registry.models import ROLLOUT_STAGES as STAGES

WITHDRAWN = "withdrawn"
NEXT_STAGE = {CHALLENGER: SHADOW, SHADOW: AB}
TAG_PREFIX = "rollout."
WATCH_UNTIL = "rollout.watch_until"


def _stage(client, name: str, version: str) -> str | None:
    """The rollout stage alias the version holds (challenger, shadow, ab), or None."""
    aliases = set(models.aliases_of(client, name, version))
    return next((stage for stage in STAGES if stage in aliases), None)


def _record(client, name: str, version: str, kind: str, decision: dict) -> None:
    # MLflow tag values are limited (5,000 characters on most stores): figures and reasons fit, full tests may not.
    text = json.dumps(decision, default=float, sort_keys=True)
    if len(text) > 5000:
        text = json.dumps({k: decision[k] for k in decision if k != "tests"}, default=float, sort_keys=True)
    client.set_model_version_tag(name, version, f"{TAG_PREFIX}{kind}", text[:5000])


def advance(tracking_uri: str, name: str, version: str, to_stage: str, reason: str) -> dict:
    """Move a version one stage on (challenger → shadow, shadow → ab), audited. Anything else is refused."""
    client = models._client(tracking_uri)
    version = str(version)
    models._version(client, name, version)
    current = _stage(client, name, version)
    if current is None or NEXT_STAGE.get(current) != to_stage:
        raise RegistryError(f"{name} version {version} is at stage {current or 'none'}; it can move only to "
                            f"{NEXT_STAGE.get(current, 'nothing (promote or withdraw it)')}, not {to_stage}")
    client.set_registered_model_alias(name, to_stage, version)
    client.delete_registered_model_alias(name, current)
    client.set_model_version_tag(name, version, "status", to_stage)
    models._audit(client, name, version, to_stage, reason)
    return {"name": name, "version": version, "stage": to_stage, "from": current}


def withdraw(tracking_uri: str, name: str, version: str, reason: str) -> dict:
    """Take a version out of the rollout (any stage), audited; it is never served again unless re-registered."""
    client = models._client(tracking_uri)
    version = str(version)
    current = _stage(client, name, version)
    if current is None:
        raise RegistryError(f"{name} version {version} is not in the rollout (no challenger/shadow/ab alias)")
    client.delete_registered_model_alias(name, current)
    client.set_model_version_tag(name, version, "status", WITHDRAWN)
    models._audit(client, name, version, WITHDRAWN, reason)
    return {"name": name, "version": version, "stage": WITHDRAWN, "from": current}


def record_decision(tracking_uri: str, name: str, version: str, kind: str, decision: dict) -> None:
    """Keep an analysis (comparison, shadow, ab, watch) with the version, as tag `rollout.<kind>`."""
    client = models._client(tracking_uri)
    models._version(client, name, str(version))
    _record(client, name, str(version), kind, decision)


def compare_with_champion(tracking_uri: str, name: str, version: str, challenger_rows: Sequence[dict],
                          champion_rows: Sequence[dict], cfg: RolloutConfig, seed: int = 0) -> dict:
    """The champion-vs-challenger check on the same test studies (`predictions.jsonl` rows of both evaluations),
    recorded with the challenger as `rollout.comparison` (both models' figures, the tests, the verdict)."""
    decision = champion_challenger_check(champion_rows, challenger_rows, margin_ce_f1=cfg.margin_ce_f1,
                                         margin_bleu4=cfg.margin_bleu4, mcnemar_alpha=cfg.mcnemar_alpha,
                                         n_boot=cfg.n_boot, seed=seed)
    client = models._client(tracking_uri)
    decision["champion_version"] = models._alias_version(client, name, CHAMPION)
    record_decision(tracking_uri, name, version, "comparison", decision)
    return decision


CHAMPION_PREDICTIONS = "evaluation/predictions.jsonl"   # the evaluate step's per-study outputs, logged with each run


def _read_rows(path: str | os.PathLike) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def compare_registered(tracking_uri: str, name: str, version: str, predictions: str | os.PathLike,
                       cfg: RolloutConfig, seed: int = 0) -> dict:
    """The pipeline's champion-vs-challenger check right after a challenger is registered: its evaluation's
    `predictions` against the champion run's (`evaluation/predictions.jsonl`). When the champion's run has no such
    file, or was evaluated on other studies, the version records {"status": "not compared", "why": …}: the
    rollout (shadow, A/B) still compares them on live studies."""
    client = models._client(tracking_uri)
    champion = models._alias_version(client, name, CHAMPION)
    if champion is None:
        decision = {"status": "not compared", "why": "no champion"}
    else:
        run_id = client.get_model_version(name, champion).run_id
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=CHAMPION_PREDICTIONS,
                                                           dst_path=tmp, tracking_uri=tracking_uri)
                champion_rows = _read_rows(path)
            except (MlflowException, OSError):
                champion_rows = None
        if champion_rows is None:
            decision = {"status": "not compared", "why": f"champion version {champion}'s run has no "
                                                         f"{CHAMPION_PREDICTIONS}"}
        else:
            try:
                return compare_with_champion(tracking_uri, name, version, _read_rows(predictions), champion_rows,
                                             cfg, seed)
            except ValueError as exc:       # e.g. the two evaluations hold different studies
                decision = {"status": "not compared", "why": str(exc)[:500]}
        decision["champion_version"] = champion
    record_decision(tracking_uri, name, version, "comparison", decision)
    return decision


def promote(tracking_uri: str, name: str, version: str, analysis: dict, cfg: RolloutConfig, reason: str,
            trusted_keys=None, now: float | None = None) -> dict:
    """ab → champion (blue-green): only with an A/B analysis whose decision is "promote"; the move itself is
    `registry.models.promote` (signed gate verified, previous champion kept as previous-champion, audited).
    Starts the watch window: `rollout.watch_until` on the new champion."""
    client = models._client(tracking_uri)
    version = str(version)
    models._version(client, name, version)
    stage = _stage(client, name, version)
    if stage != AB:
        raise RegistryError(f"{name} version {version} is at stage {stage or 'none'}: only a version in the A/B "
                            "test can be promoted by the rollout (`rrg registry promote` is the audited manual way)")
    if analysis.get("decision") != "promote":
        raise RegistryError(f"the A/B analysis of {name} version {version} does not say promote "
                            f"({analysis.get('decision', 'no decision')}): {'; '.join(analysis.get('reasons', []))}")
    why = "; ".join(str(r) for r in analysis.get("reasons", []))[:300] or "no reasons recorded"
    models.promote(tracking_uri, name, version, f"{reason} (rollout A/B decision promote: {why})", trusted_keys)
    until = (time.time() if now is None else now) + cfg.watch_window_hours * 3600
    _record(client, name, version, "ab", analysis)
    client.set_model_version_tag(name, version, WATCH_UNTIL, f"{until:.3f}")
    return {"name": name, "champion": version, "previous": models._alias_version(client, name, PREVIOUS),
            "watch_until": until}


def watch_verdict(alerts: Sequence[str], watched: dict, baseline: dict, cfg: RolloutConfig) -> dict:
    """Keep or roll back a new champion inside its watch window. alerts: names of monitoring alerts that fired
    for it; watched / baseline: {"review_rate", "p99_latency_s"} of the new and the previous champion (limits:
    review rate up by more than rollback_review_rate_increase, P99 above rollback_p99_latency_s or above
    rollback_p99_latency_ratio × the previous champion's).
    Returns {"rollback": bool, "reasons": [...]}; pure, so the limits are tested without a registry."""
    reasons = [f"monitoring alert fired: {a}" for a in alerts]
    rate, before = watched.get("review_rate"), baseline.get("review_rate")
    if rate is not None and before is not None and rate - before > cfg.rollback_review_rate_increase:
        reasons.append(f"review-flag rate {rate:.3f} vs {before:.3f} before: up by more than "
                       f"{cfg.rollback_review_rate_increase:g}")
    p99, p99_before = watched.get("p99_latency_s"), baseline.get("p99_latency_s")
    if p99 is not None and p99 > cfg.rollback_p99_latency_s:
        reasons.append(f"P99 latency {p99:.1f} s above {cfg.rollback_p99_latency_s:g} s")
    elif p99 is not None and p99_before and p99 > cfg.rollback_p99_latency_ratio * p99_before:
        reasons.append(f"P99 latency {p99:.2f} s is more than {cfg.rollback_p99_latency_ratio:g}× the previous "
                       f"champion's {p99_before:.2f} s")
    return {"rollback": bool(reasons), "reasons": reasons or ["no alert, watched metrics within limits"]}


def watch(tracking_uri: str, name: str, alerts: Sequence[str], watched: dict, baseline: dict,
          cfg: RolloutConfig, now: float | None = None) -> dict:
    """One look of the blue-green watch at the champion: inside its window, roll back automatically (audited)
    when `watch_verdict` says so. Returns {"state": "no watch" | "watching" | "rolled back" | "watch ended"}."""
    client = models._client(tracking_uri)
    champion = models._alias_version(client, name, CHAMPION)
    if champion is None:
        return {"state": "no watch", "reason": "no champion"}
    mv = models._version(client, name, champion)
    until = mv.tags.get(WATCH_UNTIL)
    now = time.time() if now is None else now
    if until is None:
        return {"state": "no watch", "champion": champion}
    if now > float(until):
        client.delete_model_version_tag(name, champion, WATCH_UNTIL)
        return {"state": "watch ended", "champion": champion}
    verdict = watch_verdict(alerts, watched, baseline, cfg)
    _record(client, name, champion, "watch", {**verdict, "at": now})
    if not verdict["rollback"]:
        return {"state": "watching", "champion": champion, **verdict}
    back = models.rollback(tracking_uri, name, "automatic rollback by the blue-green watch: "
                           + "; ".join(verdict["reasons"]))
    try:
        client.delete_model_version_tag(name, champion, WATCH_UNTIL)
    except MlflowException:
        pass                       # already gone: the rollback is what matters
    return {"state": "rolled back", "champion": back["champion"], "replaced": champion, **verdict}


def status(tracking_uri: str, name: str) -> dict:
    """Who holds which alias, each version's status, recorded decisions and the watch window."""
    client = models._client(tracking_uri)
    try:
        model = client.get_registered_model(name)
    except MlflowException:
        raise RegistryError(f"no registered model named {name!r}") from None
    out = {"name": name, "aliases": dict(sorted((model.aliases or {}).items())), "versions": {}}
    for alias, version in out["aliases"].items():
        mv = client.get_model_version(name, str(version))
        decisions = {k[len(TAG_PREFIX):]: _loads(v) for k, v in mv.tags.items() if k.startswith(TAG_PREFIX)}
        out["versions"][str(version)] = {"alias": alias, "status": mv.tags.get("status"), "rollout": decisions}
    return out


def _loads(value: str):
    try:
        return json.loads(value)
    except ValueError:
        return value
