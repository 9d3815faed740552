"""`rrg rollout status|shadow|ab|analyze|promote|rollback|watch`: the safe rollout from the command line.

    challenger ─(shadow)─► shadow ─(ab: the shadow comparison says advance)─► ab ─(analyze → promote)─► champion
                                                                                  (watch: rollback automatically)

Each command is one library call (registry.rollout, monitoring.ab); figures come from the prediction log
(`monitoring.log_url`, or --log) and thresholds from the config's `rollout:` section. Registry versions are
logged by serving as NAME/N, which is how the log is queried here.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta, timezone

import numpy as np

from model_core.config import load_config


def _print(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _since(text: str | None) -> str | None:
    """`7d`, `48h`, `30m` → an ISO time that long ago; an ISO time as is; None → None."""
    if not text:
        return None
    units = {"d": "days", "h": "hours", "m": "minutes"}
    if text[-1] in units and text[:-1].replace(".", "", 1).isdigit():
        delta = timedelta(**{units[text[-1]]: float(text[:-1])})
        return (datetime.now(timezone.utc) - delta).isoformat()
    return text


def _log(args, cfg):
    from model_core.prediction_log import PredictionLog

    return PredictionLog(args.log or cfg.monitoring.log_url)


def _tracking(args) -> str:
    import os

    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise ValueError("no MLflow tracking server: pass --tracking-uri or set MLFLOW_TRACKING_URI")
    return uri


def _alias(uri: str, name: str, alias: str) -> str:
    from registry import models

    version = models._alias_version(models._client(uri), name, alias)
    if version is None:
        raise ValueError(f"{name} has no {alias!r} version")
    return version


def cmd_rollout(args) -> int:
    from monitoring import ab
    from registry import models, rollout

    cfg = load_config(args.config, args.set)
    uri, name, command = _tracking(args), args.model, args.rollout_command
    if command == "status":
        _print(rollout.status(uri, name))
    elif command == "shadow":
        _print(rollout.advance(uri, name, args.version, rollout.SHADOW, args.reason))
        print(f"shadow window: {cfg.rollout.shadow_window_hours:g} h on {cfg.rollout.shadow_share:.0%} of studies; "
              f"serve the shadow with models:/{name}@shadow", file=sys.stderr)
    elif command == "ab":
        champion = _alias(uri, name, models.CHAMPION)
        log = _log(args, cfg)
        shadow = ab.analyze_shadow(log, f"{name}/{champion}", f"{name}/{args.version}", cfg.rollout,
                                   since=_since(args.since))
        log.close()
        rollout.record_decision(uri, name, args.version, "shadow", shadow)
        _print(shadow)
        if shadow["decision"] != "advance":
            print(f"not advanced to the A/B test: {'; '.join(shadow['reasons'])}", file=sys.stderr)
            return 1
        _print(rollout.advance(uri, name, args.version, rollout.AB, args.reason))
        print(f"A/B: {cfg.rollout.ab_share:.0%} of studies (salt {cfg.rollout.ab_salt!r}) go to "
              f"models:/{name}@ab", file=sys.stderr)
    elif command == "analyze":
        return _analyze(args, cfg, uri, name)
    elif command == "promote":
        analysis = rollout.status(uri, name)["versions"].get(str(args.version), {}).get("rollout", {}).get("ab")
        if analysis is None:
            raise ValueError(f"{name} version {args.version} has no recorded A/B analysis: run `rrg rollout analyze`")
        _print(rollout.promote(uri, name, args.version, analysis, cfg.rollout, args.reason))
    elif command == "rollback":
        _print(models.rollback(uri, name, args.reason))
    elif command == "watch":
        return _watch(args, cfg, uri, name)
    return 0


def _watch(args, cfg, uri: str, name: str) -> int:
    """One look of the blue-green watch: the new champion's review-flag rate and P99 latency in the window vs
    the previous champion's, plus the alerts given; rolls back automatically (audited) when past the limits."""
    from registry import models, rollout

    champion, previous = _alias(uri, name, models.CHAMPION), _alias(uri, name, models.PREVIOUS)
    log = _log(args, cfg)
    since = _since(args.since or f"{cfg.rollout.watch_window_hours:g}h")
    watched = _figures(log.predictions(since=since, model_version=f"{name}/{champion}"))
    baseline = _figures(log.predictions(model_version=f"{name}/{previous}"))
    log.close()
    result = rollout.watch(uri, name, args.alert or [], watched, baseline, cfg.rollout)
    _print({**result, "watched": watched, "baseline": baseline})
    return 3 if result["state"] == "rolled back" else 0


def _figures(records) -> dict:
    if not records:
        return {"review_rate": None, "p99_latency_s": None, "studies": 0}
    return {"review_rate": float(np.mean([r.review_required for r in records])),
            "p99_latency_s": float(np.percentile([r.latency_ms for r in records], 99)) / 1000,
            "studies": len(records)}


def _analyze(args, cfg, uri: str, name: str) -> int:
    """Sample sizes first, then the A/B tests and the decision (recorded with the challenger)."""
    from monitoring import ab
    from registry import models, rollout

    champion_version = _alias(uri, name, models.CHAMPION)
    log = _log(args, cfg)
    since = _since(args.since)
    champion = ab.arm_data(log, ab.CHAMPION_ARM, f"{name}/{champion_version}", since=since)
    challenger = ab.arm_data(log, ab.CHALLENGER_ARM, f"{name}/{args.version}", since=since)
    log.close()
    sd = {"rating": _sd(champion.ratings, 1.0), "edit distance": _sd(champion.edit_distances, 5.0),
          "turnaround ms": _sd(champion.turnaround_ms, 500.0)}
    sensitivity = champion.critical_detected / champion.critical_positives if champion.critical_positives else 0.95
    prevalence = max(champion.critical_positives / max(len(champion.ratings), 1), 0.01)
    sizes = ab.ab_sample_sizes(cfg.rollout, sd, sensitivity, prevalence)
    print(f"sample sizes (power {cfg.rollout.power:g}, alpha {cfg.rollout.promote_alpha:g} / 4, "
          f"{cfg.rollout.ab_share:.0%} on the challenger):", file=sys.stderr)
    for metric, size in sizes.items():
        extra = (f" (≈ {size['studies_a']} / {size['studies_b']} validated studies at {prevalence:.1%} critical "
                 "prevalence: the slow one)") if "studies_a" in size else ""
        print(f"  {metric}: {size['n_a']} champion / {size['n_b']} challenger {size['unit']}{extra}",
              file=sys.stderr)
    result = ab.analyze_ab(champion, challenger, cfg.rollout)
    result["sample_sizes"] = sizes
    rollout.record_decision(uri, name, args.version, "ab", result)
    _print(result)
    print(f"decision: {result['decision']} — {'; '.join(result['reasons'])}", file=sys.stderr)
    return 0 if result["decision"] == "promote" else 1


def _sd(values, default: float) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 and np.std(values) > 0 else default


def add_rollout_parser(sub, with_config) -> None:
    """`rrg rollout …` on the main parser (rrg.cli.build_parser)."""
    ro = sub.add_parser("rollout", help="safe rollout: challenger → shadow → A/B → champion, rollback")
    commands = ro.add_subparsers(dest="rollout_command", required=True)
    for name, help_text in (("status", "aliases, stages, recorded decisions, watch window"),
                            ("shadow", "challenger → shadow (mirrored requests, off the response path)"),
                            ("ab", "shadow → A/B test, when the paired shadow comparison says advance"),
                            ("analyze", "sample sizes, then the A/B tests and the decision (exit 1 unless promote)"),
                            ("promote", "A/B → champion with a recorded promote decision (blue-green watch starts)"),
                            ("rollback", "previous-champion becomes champion again (audited)"),
                            ("watch", "one look of the blue-green watch; rolls back automatically (exit 3)")):
        p = with_config(commands.add_parser(name, help=help_text))
        p.add_argument("--model", default="rrg-report-generator")
        p.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI")
        if name in ("shadow", "ab", "analyze", "promote"):
            p.add_argument("--version", required=True)
        if name in ("shadow", "ab", "promote", "rollback"):
            p.add_argument("--reason", required=True, help="recorded in the audit trail")
        if name == "watch":
            p.add_argument("--alert", action="append", help="a monitoring alert that fired (repeatable)")
        if name in ("ab", "analyze", "watch"):
            p.add_argument("--log", default=None, help="prediction log (default: monitoring.log_url)")
            p.add_argument("--since", default=None, help="window start: 48h, 7d or an ISO time")
        p.set_defaults(func=cmd_rollout)
