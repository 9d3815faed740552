"""A full rollout on the smoke model, printed: versions, decisions, figures. Asserts nothing.

    .venv/bin/python benchmarks/rollout_demo.py [--out runs/rollout_demo] [--studies 24] [--ab-share 0.5]

What runs (all real parts: an MLflow server on 127.0.0.1, the report service in process with the torch backend,
the prediction log in SQLite):
1. v1 = the smoke model (configs/smoke.yaml, trained here); v2 = a deliberately DEGRADED challenger: the same
   weights and drafts (so every offline and shadow quality figure equals v1's) with a performance regression
   that only production shows, SIMULATED here: its backend waits DEGRADED_DELAY_S more per batch.
2. Both are evaluated on the same test studies and registered with signed gate decisions. The smoke model cannot
   pass the real clinical gates (too few positives), so the demo gates with relaxed thresholds, SAID SO below.
   v1 becomes champion, v2 challenger; the champion-vs-challenger check is recorded with both models' figures.
3. Shadow: v2 drafts every study off the response path; a simulated radiologist signs each champion draft off
   with the study's reference report (rating 3 for all: ratings here carry no information). The paired shadow
   comparison decides whether v2 advances to the A/B test.
4. A/B: `--ab-share` of studies (sticky) go to v2; sample sizes are printed, then the unpaired tests decide.
5. Blue-green: the A/B cannot say promote on so few studies (the sample sizes say how many it needs); to show
   the watch, the demo promotes v2 with an OPERATOR OVERRIDE decision (printed as such). The watch compares v2's
   review-flag rate and P99 latency with v1's, rolls back automatically (audited), and the alias watcher swaps v1
   back in.
A decision that stops the rollout (comparison failed, shadow says withdraw) ends the demo there, said so.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from model_core.config import EvalConfig, GateConfig, GenerationConfig, build_section, load_config
from model_core.data.iu_xray import group_studies, load_iu_xray
from model_core.data.manifest import EMBEDDED_ROOT
from model_core.evaluation.evaluate import evaluate_model
from model_core.evaluation.gate_record import RECORD_DIR, write_gate_record
from model_core.evaluation.gates import gate_decision
from model_core.files import atomic_write_text
from model_core.modeling.model_dir import load_model_dir
from model_core.prediction_log import PredictionLog
from model_core.signing import load_signer
from model_core.training.trainer import train_report_model
from monitoring import ab
from registry import models, rollout, tracking
from serving.app import create_app
from serving.model_swap import AliasWatcher, mlflow_alias_resolver

REPO = Path(__file__).resolve().parents[1]
NAME = "rrg-rollout-demo"
TOKEN = "demo-writer-token-0123456789abcdef"
H = {"Authorization": f"Bearer {TOKEN}"}
DEGRADED_VERSION, DEGRADED_DELAY_S = "2", 0.5     # v2's simulated performance regression
DEMO_GATE = GateConfig(critical_sensitivity_min=0.0, hallucination_rate_max=1.0, specificity_floor=0.0,
                       gate_on_ci_lower_bound=False, min_positives=0)


def say(title: str, obj=None) -> None:
    print(f"\n== {title}")
    if obj is not None:
        print(json.dumps(obj, indent=1, default=lambda x: round(x, 4) if isinstance(x, float) else str(x))[:4000])


def build_models(out: Path, cfg) -> tuple[Path, Path]:
    # `model_dir`: the name registry.models.verify_version_gate looks for inside a downloaded pyfunc version
    v1, v2 = out / "v1" / "model_dir", out / "v2" / "model_dir"
    if not (v1 / "model_card.json").is_file():
        t0 = time.perf_counter()
        train_report_model(cfg, v1)
        say(f"trained the smoke model in {time.perf_counter() - t0:.0f} s")
    if v2.exists():
        shutil.rmtree(v2)
    shutil.copytree(v1, v2, ignore=shutil.ignore_patterns("checkpoints", RECORD_DIR))
    return v1, v2


def register(uri: str, model_dir: Path, out: Path, studies: int) -> tuple[dict, list[dict]]:
    label = model_dir.parent.name
    ev = out / f"eval-{label}"
    model, detection, saved = load_model_dir(model_dir)
    gen = build_section(GenerationConfig, saved.get("generation", {}), "generation.")
    dataset = load_iu_xray(EMBEDDED_ROOT, split="test", views=("Frontal", "Lateral"), image_size=model.image_size,
                           limit_studies=studies)
    # latency=False: the evaluation's batch-1 timing loop is what the service measures below, per request
    metrics = evaluate_model(model, dataset, detection, gen, EvalConfig(n_bootstrap=200), out_dir=ev,
                             latency=False)
    atomic_write_text(ev / "metrics.json", json.dumps(metrics, default=float))
    decision = gate_decision(metrics, DEMO_GATE)
    gate_dir = out / f"gate-{label}"
    write_gate_record(decision, model_dir, gate_dir, load_signer(), metrics_file=ev / "metrics.json")
    run_id = tracking.start_run(uri, run_name=f"demo-{label}")
    model_uri = models.log_model(uri, run_id, model_dir)
    tracking.log_artifacts(uri, run_id, gate_dir, RECORD_DIR)
    tracking.end_run(uri, run_id)
    registered = models.register(uri, run_id, model_uri, NAME, decision)
    rows = [json.loads(line) for line in (ev / "predictions.jsonl").read_text().splitlines()]
    return registered, rows


def figures(records) -> dict:
    if not records:
        return {"studies": 0, "review_rate": None, "p99_latency_s": None}
    return {"studies": len(records), "review_rate": float(np.mean([r.review_required for r in records])),
            "p99_latency_s": float(np.percentile([r.latency_ms for r in records], 99)) / 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "rollout_demo")
    parser.add_argument("--studies", type=int, default=24)
    parser.add_argument("--ab-share", type=float, default=0.5, help="the seed's 10 %% leaves ~2 of 24 studies")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(REPO / "configs" / "smoke.yaml")
    rollout_cfg = dataclasses.replace(cfg.rollout, ab_share=args.ab_share, n_boot=500)
    v1_dir, v2_dir = build_models(out, cfg)
    server = tracking.MlflowServer(Path(tempfile.mkdtemp(prefix="mlflow-", dir=out)))
    server.start(timeout=300)
    os.environ["MLFLOW_TRACKING_URI"] = server.uri
    # a fresh download cache: serving caches versions by NAME/VERSION, and each demo run starts a new registry
    os.environ["RRG_MODEL_CACHE"] = tempfile.mkdtemp(prefix="model-cache-", dir=out)
    try:
        say("the demo gates with RELAXED thresholds (the smoke model cannot pass the clinical gates)",
            dataclasses.asdict(DEMO_GATE))
        v1, rows1 = register(server.uri, v1_dir, out, args.studies)
        v2, rows2 = register(server.uri, v2_dir, out, args.studies)
        say("registered", {"v1": v1, "v2": v2})
        comparison = rollout.compare_with_champion(server.uri, NAME, v2["version"], rows2, rows1, rollout_cfg)
        say("champion vs challenger on the same test studies", {k: comparison[k] for k in (
            "passed", "reasons", "champion", "challenger", "n_studies")})
        if not comparison["passed"]:
            rollout.withdraw(server.uri, NAME, v2["version"], "champion-vs-challenger check failed")
            say("v2 withdrawn: the champion-vs-challenger check failed; the rollout stops here")
            return
        run_service(server.uri, out, cfg, rollout_cfg, v1["version"], v2["version"], args.studies)
        say("final registry state", rollout.status(server.uri, NAME))
        say("audit trail", {h["version"]: [(a["action"], a["reason"][:90]) for a in sorted(
            h["audit"], key=lambda a: a["at"])] for h in models.history(server.uri, NAME)})
    finally:
        server.stop()


def run_service(uri: str, out: Path, cfg, rollout_cfg, v1: str, v2: str, n_studies: int) -> None:
    log_path = out / "predictions.sqlite3"
    log_path.unlink(missing_ok=True)
    app = create_app(f"models:/{NAME}@champion", tokens=f"{TOKEN}:report.write+report.feedback",
                     audit_log=out / "audit.jsonl", report_store=":memory:", prediction_log=str(log_path),
                     backend="torch")
    data = load_iu_xray(EMBEDDED_ROOT, split="test", views=("Frontal",), image_size=32, limit_studies=n_studies)
    studies = group_studies(data)
    with TestClient(app) as client:
        service = app.state.service
        watcher = AliasWatcher(mlflow_alias_resolver(f"models:/{NAME}@champion"), lambda v: _load(service, v),
                               service.swap_model, poll_s=3600)    # polled by hand below (watcher.check)
        watcher.version = v1
        say(f"serving {service.model.version} (torch backend)")

        def post_all(tag: str) -> list[dict]:
            answers = []
            for i, study in enumerate(studies):
                path = Path(data["images"][study["rows"][0]])
                r = client.post(f"/api/v1/studies/{tag}{i}/report:upload", headers=H,
                                files=[("files", (path.name, path.read_bytes(), "image/jpeg"))])
                assert r.status_code == 200, r.text
                answers.append(r.json())
                client.post(f"/api/v1/reports/{r.json()['report_id']}/feedback", headers=H, json={
                    "final_report": study["report"], "rating": 3, "outcome": "edited"})
            return answers

        rollout.advance(uri, NAME, v2, rollout.SHADOW, "demo: shadow window")
        client.portal.call(service.start_shadow, _load(service, v2), rollout_cfg.shadow_share, "demo-shadow")
        post_all("1.2.3.")
        service.shadow.flush(600)
        service.writer.flush(60)
        client.portal.call(service.stop_shadow)
        log = PredictionLog(str(log_path))
        shadow = ab.analyze_shadow(log, f"{NAME}/{v1}", f"{NAME}/{v2}", rollout_cfg)
        rollout.record_decision(uri, NAME, v2, "shadow", shadow)
        say("shadow window: paired comparison on the same studies", shadow)
        if shadow["decision"] != "advance":
            rollout.withdraw(uri, NAME, v2, f"shadow comparison: {shadow['decision']}")
            say("v2 does not advance; withdrawn, the rollout stops here")
            return
        rollout.advance(uri, NAME, v2, rollout.AB, "demo: shadow comparison advanced")
        client.portal.call(service.start_ab, _load(service, v2), rollout_cfg.ab_share, rollout_cfg.ab_salt)
        post_all("1.2.4.")
        service.writer.flush(60)
        client.portal.call(service.stop_ab)
        champion_arm = ab.arm_data(log, ab.CHAMPION_ARM, f"{NAME}/{v1}", since=None)
        challenger_arm = ab.arm_data(log, ab.CHALLENGER_ARM, f"{NAME}/{v2}")
        sizes = ab.ab_sample_sizes(rollout_cfg, {"rating": 1.0, "edit distance": float(np.std(
            champion_arm.edit_distances) or 5.0), "turnaround ms": float(np.std(champion_arm.turnaround_ms) or 500)},
            sensitivity=0.95, critical_prevalence=0.05)
        say("A/B sample sizes needed (printed before the test)", sizes)
        analysis = ab.analyze_ab(champion_arm, challenger_arm, rollout_cfg)
        rollout.record_decision(uri, NAME, v2, "ab", analysis)
        say("A/B analysis", {k: analysis[k] for k in ("decision", "reasons", "arms", "bonferroni")})
        if analysis["decision"] != "promote":
            analysis = {"decision": "promote", "reasons": [
                "OPERATOR OVERRIDE for the demo: the A/B said keep champion; promoted to show the blue-green watch"]}
            say("OPERATOR OVERRIDE: promoting v2 anyway to demonstrate the blue-green watch", analysis)
        promoted = rollout.promote(uri, NAME, v2, analysis, rollout_cfg, "demo promotion")
        say("promoted (blue-green: v1 stays warm as previous-champion)", promoted)
        client.portal.call(watcher.check)
        say(f"serving follows the alias: now {service.model.version}")
        since = time.time()
        post_all("1.2.5.")
        service.writer.flush(60)
        window = datetime.fromtimestamp(since, timezone.utc).isoformat()
        watched = figures(log.predictions(since=window, model_version=f"{NAME}/{v2}"))
        baseline = figures(log.predictions(model_version=f"{NAME}/{v1}", role="champion"))
        verdict = rollout.watch(uri, NAME, [], watched, baseline, rollout_cfg)
        say("blue-green watch", {"watched (v2)": watched, "baseline (v1)": baseline, **verdict})
        client.portal.call(watcher.check)
        say(f"serving follows the alias after the watch: now {service.model.version}")
        log.close()


class SlowerBackend:
    """The degraded challenger's performance regression, SIMULATED: the real backend plus a fixed wait per batch."""

    def __init__(self, backend, delay_s: float):
        self._backend, self._delay_s = backend, delay_s

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def generate(self, images, contexts):
        time.sleep(self._delay_s)
        return self._backend.generate(images, contexts)

    def generate_with_embeddings(self, images, contexts):
        time.sleep(self._delay_s)
        return self._backend.generate_with_embeddings(images, contexts)


def _load(service, version: str):
    from serving.service import load_configured_model

    loaded = load_configured_model(f"models:/{NAME}/{version}", service.config)
    if version == DEGRADED_VERSION:
        loaded = dataclasses.replace(loaded, backend=SlowerBackend(loaded.backend, DEGRADED_DELAY_S))
    return loaded


if __name__ == "__main__":
    main()
