"""`rrg`: the command line of the radiology report generator.

Each subcommand parses arguments, calls one library function and prints where its outputs went.
Bad input ends with `error: <what is wrong>` and exit status 2, never a traceback.

Subcommands import their library inside the function, on purpose: `rrg data stats` must not pay for
loading torch, kfp, mlflow or FastAPI that other subcommands need.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
from pathlib import Path

from model_core.artifacts import BASELINE_WEIGHTS, METRICS
from model_core.config import REPO_ROOT, ConfigError, load_config, resolve_path
from model_core.data.manifest import DataError
from rrg.rollout_cli import add_rollout_parser

log = logging.getLogger("rrg")

DEFAULT_CONFIG = REPO_ROOT / "configs" / "demo.yaml"


def _config(args):
    return load_config(args.config, getattr(args, "set", None))


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


# --------------------------------------------------------------------------- data

def cmd_data_stats(args) -> int:
    from model_core.data.iu_xray import dataset_stats, load_iu_xray, load_split

    cfg = _config(args)
    out = {}
    for split in args.split:
        if args.manifest:
            ds = load_iu_xray(root=args.images_root or Path(args.manifest).parent, split=split,
                              manifest=args.manifest, views=tuple(cfg.data.views))
        else:
            ds = load_split(cfg.data, split)
        out[split] = dataset_stats(ds)
    _print_json(out)
    return 0


def cmd_data_splits(args) -> int:
    from model_core.data.manifest import EMBEDDED_ROOT, write_checksums, write_splits

    splits = write_splits(EMBEDDED_ROOT / "manifest.csv", EMBEDDED_ROOT / "splits.csv")
    n = write_checksums(EMBEDDED_ROOT)
    print(f"wrote {EMBEDDED_ROOT / 'splits.csv'} ({splits['split'].value_counts().to_dict()}) "
          f"and {EMBEDDED_ROOT / 'SHA256SUMS'} ({n} files)")
    return 0


def cmd_data_push(args) -> int:
    from model_core.data.manifest import EMBEDDED_ROOT
    from model_core.data.remote import iu_dataset_files, mimic_dataset_files, push_dataset

    if args.mimic_root:
        files, layout, root = mimic_dataset_files(args.mimic_root), "mimic-cxr-jpg", Path(args.mimic_root)
    else:
        if args.images_root and not args.manifest:
            raise DataError("--images-root needs --manifest (neither: the embedded IU X-ray data)")
        manifest = args.manifest or EMBEDDED_ROOT / "manifest.csv"
        root = args.images_root or (Path(args.manifest).parent if args.manifest else EMBEDDED_ROOT)
        files, layout = iu_dataset_files(manifest, root), "iu"
    index = push_dataset(files, args.to, layout=layout, name=args.name or root.resolve().name)
    _print_json(index)
    return 0


# --------------------------------------------------------------------------- labels, EDA

def cmd_label(args) -> int:
    from model_core.labels.agreement import write_label_table

    write_label_table(args.manifest, args.out)
    print(f"wrote {args.out}")
    return 0


def cmd_eda(args) -> int:
    from model_core.data.eda import run_eda

    cfg = _config(args)
    paths = run_eda(args.out, root=resolve_path(cfg.data.root), split=args.split,
                    manifest=resolve_path(cfg.data.manifest) if cfg.data.manifest else None)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


# --------------------------------------------------------------------------- baseline

def cmd_baseline_train(args) -> int:
    from model_core.evaluation.baseline import train_baseline

    cfg = _config(args)
    model_dir = train_baseline(cfg, args.out)
    print(f"baseline model: {model_dir}")
    return 0


def cmd_baseline_evaluate(args) -> int:
    from model_core.evaluation.baseline import evaluate_baseline

    cfg = _config(args)
    model_dir = Path(args.model)
    if not (model_dir / BASELINE_WEIGHTS).is_file():
        raise DataError(f"no trained baseline in {model_dir}; run `rrg baseline train --out {model_dir}` first")
    metrics = evaluate_baseline(model_dir, manifest=args.manifest, images_root=args.images_root,
                                out_dir=args.out, split=args.split, n_boot=cfg.eval.n_bootstrap, seed=cfg.eval.seed,
                                section=cfg.eval.section)
    _print_json({"n_studies": metrics["n_studies"], **metrics["summary"]})
    print(f"metrics: {Path(args.out) / METRICS}")
    return 0


# --------------------------------------------------------------------------- report model

def cmd_train(args) -> int:
    from model_core.training.trainer import train_report_model

    cfg = _config(args)
    model_dir = train_report_model(cfg, args.out, resume=args.resume)
    print(f"model directory: {model_dir}")
    return 0


def cmd_evaluate(args) -> int:
    from model_core.evaluation.evaluate import evaluate_model_dir

    cfg = _config(args)
    baseline = json.loads(Path(args.baseline_metrics).read_text()) if args.baseline_metrics else None
    metrics = evaluate_model_dir(args.model, args.manifest, args.images_root, args.out, split=args.split,
                                 eval_cfg=cfg.eval, baseline_metrics=baseline)
    _print_json({"n_studies": metrics["n_studies"], **metrics["summary"]})
    print(f"metrics: {Path(args.out) / METRICS}")
    return 0


def cmd_generate(args) -> int:
    import torch

    from model_core.config import GenerationConfig, build_section
    from model_core.data.images import load_image
    from model_core.modeling.generation import generate_report
    from model_core.modeling.model_dir import load_model_dir

    model, detection, saved = load_model_dir(args.model)
    images = torch.stack([load_image(p, model.image_size) for p in args.image])  # (K, 1, H, W)
    context = {"age": args.age, "sex": args.sex, "indication": args.indication or ""}
    gen = build_section(GenerationConfig, saved.get("generation", {}), "generation.")
    report = generate_report(model, images, context, gen, detection.get("thresholds"),
                             float(detection.get("temperature", 1.0)), question=args.question)
    _print_json(report.to_dict())
    return 0


# --------------------------------------------------------------------------- pipeline, registry, packet

def cmd_pipeline_run(args) -> int:
    from pipelines.local import format_summary, run_pipeline

    cfg = _config(args)
    summary = run_pipeline(cfg, args.out, model_name=args.model_name, summary_json=args.summary_json,
                           dataset_uri=args.dataset_uri, train_gpus=args.train_gpus)
    print(format_summary(summary))
    if args.summary_json:
        print(f"  summary JSON: {args.summary_json}")
    return 0


def cmd_pipeline_compile(args) -> int:
    from pipelines.cluster import compile_pipeline

    path = compile_pipeline(args.out, args.image_registry)
    print(f"compiled Kubeflow pipeline IR: {path}")
    return 0


def cmd_pipeline_schedule(args) -> int:
    import tempfile

    from pipelines.cluster import compile_pipeline, schedule_monthly

    cfg = _config(args)
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_pipeline(Path(tmp) / "pipeline.yaml", args.image_registry)
        job = schedule_monthly(args.host, package, params={
            "config_json": json.dumps(cfg.to_dict()), "tracking_uri": args.tracking_uri,
            "mlflow_run_id": "", "model_name": args.model_name, "dataset_uri": args.dataset_uri,
            "train_gpus": args.train_gpus})
    print(f"monthly recurring run created on {args.host}: {getattr(job, 'recurring_run_id', job)}")
    return 0


def _tracking_uri(args) -> str:
    import os

    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise ValueError("no MLflow tracking server: pass --tracking-uri or set MLFLOW_TRACKING_URI")
    return uri


def cmd_registry(args) -> int:
    from registry import models

    uri = _tracking_uri(args)
    if args.registry_command == "history":
        _print_json(models.history(uri, args.model))
    elif args.registry_command == "promote":
        _print_json(models.promote(uri, args.model, args.version, args.reason))
    elif args.registry_command == "reconcile":
        unexplained = models.reconcile_aliases(uri, args.model)
        _print_json(unexplained)
        if unexplained:
            print(f"ALERT: {len(unexplained)} alias move(s) of {args.model} have no audit entry (made outside "
                  "rrg?): check them before serving", file=sys.stderr)
            return 1
        print(f"every alias of {args.model} agrees with its audit trail", file=sys.stderr)
    else:
        _print_json(models.rollback(uri, args.model, args.reason))
    return 0


def _packet_verifier(args):
    """verify_packet with the trusted keys of --trusted-key (else $RRG_TRUSTED_KEYS, else the development key)."""
    from model_core.signing import trusted_public_keys
    from regulatory.archive import verify_packet

    return functools.partial(verify_packet, trusted_keys=trusted_public_keys(args.trusted_key))


def _signature_line(result: dict) -> str:
    sig = result["signature"]
    return (f"Ed25519 signature by key id {sig['key_id'][:16]}..."
            + (" (a DEVELOPMENT key: not evidence for a release)" if sig["development"] else ""))


def cmd_packet_download(args) -> int:
    from registry.models import download_packet

    verifier = _packet_verifier(args)
    path = download_packet(_tracking_uri(args), args.model, args.version, args.out, verify=verifier)
    print(f"packet verified (SHA-256 manifest, {_signature_line(verifier(path))}) and saved: {path}")
    return 0


def cmd_packet_verify(args) -> int:
    result = _packet_verifier(args)(args.file)
    _print_json(result)
    print(f"packet verified: {len(result['files'])} files match SHA256SUMS; {_signature_line(result)}",
          file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- serving

def cmd_serve(args) -> int:
    from serving.app import serve

    cfg = _config(args)
    serve(args.model, cfg.serving, host=args.host, port=args.port, pacs_url=args.pacs_url, backend=args.backend,
          precision=args.precision, triton_url=args.triton_url, allow_export_at_startup=args.allow_export_at_startup,
          audit_log=str(args.audit_log) if args.audit_log else None,
          report_store=str(args.report_store) if args.report_store else None,
          allow_ungated_model=args.allow_ungated_model, gate_record=args.gate_record,
          monitoring=cfg.monitoring,   # the prediction log's URL (monitoring.log_url) comes from the config
          rollout=cfg.rollout)         # a models:/NAME@ALIAS source is followed every rollout.watch_poll_s
    return 0


def cmd_auditors(args) -> int:
    from auditors.app import serve as serve_auditors
    from model_core.signing import trusted_public_keys

    serve_auditors(_tracking_uri(args), args.model, host=args.host, port=args.port,
                   trusted_keys=trusted_public_keys(args.trusted_key) if args.trusted_key else None)
    return 0


# --------------------------------------------------------------------------- monitoring

def cmd_monitor_drift(args) -> int:
    from monitoring.drift import DRIFT_HTML, DRIFT_JSON, run_drift_check

    cfg = _config(args)
    result = run_drift_check(args.model, cfg.monitoring, args.out, manifest=args.manifest,
                             images_root=args.images_root, log_url=args.log, since=args.since,
                             model_version=args.model_version)
    _print_json({k: result[k] for k in ("status", "is_drift", "p_value", "distance", "threshold", "n_reference",
                                        "n_current", "method")})
    print(f"drift report: {Path(args.out) / DRIFT_JSON}, {Path(args.out) / DRIFT_HTML}")
    return 0


def cmd_monitor_run(args) -> int:
    from pipelines.monitoring import run_monitoring_cycle

    cfg = _config(args)
    cycle = run_monitoring_cycle(cfg, args.model, args.out, retrain_out=args.retrain_out,
                                 model_version=args.model_version, model_name=args.model_name, dry_run=args.dry_run,
                                 image_registry=args.image_registry, tracking_uri=args.tracking_uri)
    _print_json({k: cycle[k] for k in ("window_studies", "validated_studies", "drift", "decision", "trigger",
                                       "undelivered")})
    if cycle["undelivered"]:
        print(f"error: alert effect(s) not delivered: {', '.join(cycle['undelivered'])} (see {args.out}/cycle.json)",
              file=sys.stderr)
        return 3
    return 0


def cmd_monitor_schedule(args) -> int:
    from pipelines.monitoring import DAILY_CRON_5, compile_monitoring_pipeline, schedule_daily

    cfg = _config(args)
    package = compile_monitoring_pipeline(args.out, args.image_registry)
    job = schedule_daily(args.host, package, params={
        "config_json": json.dumps(cfg.to_dict()), "model_source": args.model, "tracking_uri": args.tracking_uri,
        "kfp_host": args.host, "training_package": args.training_package, "training_params_json": "{}"})
    print(f"compiled {package}; daily monitoring run ({DAILY_CRON_5}) created on {args.host}: "
          f"{getattr(job, 'recurring_run_id', job)}")
    return 0


# --------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rrg", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p):
        p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="YAML config (default: configs/demo.yaml)")
        p.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a config value, e.g. baseline.epochs=2")
        return p

    data = sub.add_parser("data", help="dataset commands").add_subparsers(dest="data_command", required=True)
    stats = with_config(data.add_parser("stats", help="studies, images, label distribution, report length"))
    stats.add_argument("--split", nargs="+", default=["train", "val", "test"], choices=["train", "val", "test", "all"])
    stats.add_argument("--manifest", type=Path, help="an IU-format manifest (default: the config's dataset)")
    stats.add_argument("--images-root", type=Path, help="root of the manifest's image paths (default: its folder)")
    stats.set_defaults(func=cmd_data_stats)
    splits = data.add_parser("splits", help="rewrite the embedded splits.csv and SHA256SUMS")
    splits.set_defaults(func=cmd_data_splits)
    push = data.add_parser("push", help="upload a dataset with its manifest and SHA-256 list to S3 "
                                        "(the pipeline's dataset_uri)")
    push.add_argument("--to", required=True, metavar="s3://BUCKET/PREFIX",
                      help="a new prefix (AWS_* and MLFLOW_S3_ENDPOINT_URL in the environment for S3-compatible "
                           "stores)")
    source = push.add_mutually_exclusive_group()
    source.add_argument("--manifest", type=Path, help="an IU-format manifest (default: the embedded IU X-ray data)")
    source.add_argument("--mimic-root", type=Path, help="a MIMIC-CXR-JPG folder (official layout)")
    push.add_argument("--images-root", type=Path, help="root of the manifest's image paths (default: its folder)")
    push.add_argument("--name", help="dataset name (default: the images root's folder name)")
    push.set_defaults(func=cmd_data_push)

    label = sub.add_parser("label", help="MeSH-derived and report-labeler CheXpert labels per study")
    label.add_argument("--manifest", type=Path, required=True)
    label.add_argument("--out", type=Path, required=True)
    label.set_defaults(func=cmd_label)

    eda = with_config(sub.add_parser("eda", help="exploratory figures (PNG)"))
    eda.add_argument("--out", type=Path, required=True)
    eda.add_argument("--split", default="all", choices=["train", "val", "test", "all"])
    eda.set_defaults(func=cmd_eda)

    baseline = sub.add_parser("baseline", help="template baseline").add_subparsers(dest="baseline_command",
                                                                                   required=True)
    b_train = with_config(baseline.add_parser("train", help="train the classifier on the train split"))
    b_train.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "baseline" / "model")
    b_train.set_defaults(func=cmd_baseline_train)
    b_eval = with_config(baseline.add_parser("evaluate", help="evaluate on any IU-format manifest"))
    b_eval.add_argument("--model", type=Path, default=REPO_ROOT / "runs" / "baseline" / "model")
    b_eval.add_argument("--manifest", type=Path, required=True)
    b_eval.add_argument("--images-root", type=Path, required=True)
    b_eval.add_argument("--split", default="all", choices=["train", "val", "test", "all"],
                        help="rows of the manifest to evaluate (default: all)")
    b_eval.add_argument("--out", type=Path, required=True)
    b_eval.set_defaults(func=cmd_baseline_evaluate)

    train = with_config(sub.add_parser("train", help="train the report generator (stage 0/1/2)"))
    train.add_argument("--out", type=Path, required=True, help="model directory to write")
    train.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    train.set_defaults(func=cmd_train)

    evaluate = with_config(sub.add_parser("evaluate", help="evaluate a model directory on an IU-format manifest"))
    evaluate.add_argument("--model", type=Path, required=True)
    evaluate.add_argument("--manifest", type=Path, required=True)
    evaluate.add_argument("--images-root", type=Path, required=True)
    evaluate.add_argument("--split", default="all", choices=["train", "val", "test", "all"])
    evaluate.add_argument("--baseline-metrics", type=Path, help="baseline metrics.json shown side by side")
    evaluate.add_argument("--out", type=Path, required=True)
    evaluate.set_defaults(func=cmd_evaluate)

    generate = sub.add_parser("generate", help="write the structured report of one study (JSON)")
    generate.add_argument("--model", type=Path, required=True)
    generate.add_argument("--image", action="append", required=True, help="image file; repeat for a second view")
    generate.add_argument("--indication", default=None)
    generate.add_argument("--age", type=int, default=None)
    generate.add_argument("--sex", choices=["M", "F"], default=None)
    generate.add_argument("--question", default=None, help="free-text question instead of the report instruction")
    generate.set_defaults(func=cmd_generate)

    pipeline = sub.add_parser("pipeline", help="the Kubeflow training pipeline").add_subparsers(
        dest="pipeline_command", required=True)
    p_run = with_config(pipeline.add_parser("run", help="run the whole pipeline locally (kfp.local + MLflow)"))
    p_run.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "pipeline")
    p_run.add_argument("--model-name", default="rrg-report-generator")
    p_run.add_argument("--summary-json", type=Path, help="also write the summary as JSON")
    p_run.add_argument("--dataset-uri", default="",
                       help="s3://… of a dataset pushed with `rrg data push` (default: the config's data)")
    p_run.add_argument("--train-gpus", type=int, default=1,
                       help="training processes, one per GPU (CPU processes on gloo where there is none)")
    p_run.set_defaults(func=cmd_pipeline_run)
    p_compile = pipeline.add_parser("compile", help="compile the cluster pipeline to Kubeflow IR YAML")
    p_compile.add_argument("--out", type=Path, default=Path("pipeline.yaml"))
    p_compile.add_argument("--image-registry", default="ghcr.io/example-hospital")
    p_compile.set_defaults(func=cmd_pipeline_compile)
    p_sched = with_config(pipeline.add_parser("schedule", help="create the monthly recurring run (cron 0 2 1 * *)"))
    p_sched.add_argument("--host", required=True, help="KFP API server URL")
    p_sched.add_argument("--image-registry", default="ghcr.io/example-hospital")
    p_sched.add_argument("--tracking-uri", default="http://mlflow.mlflow.svc:5000")
    p_sched.add_argument("--model-name", default="rrg-report-generator")
    p_sched.add_argument("--dataset-uri", default="", help="s3://… of a pushed dataset (the image holds no data)")
    p_sched.add_argument("--train-gpus", type=int, default=4, help="GPUs of the train step (default 4)")
    p_sched.set_defaults(func=cmd_pipeline_schedule)

    reg = sub.add_parser("registry", help="model registry (MLflow)").add_subparsers(dest="registry_command",
                                                                                    required=True)
    for name, help_text in (("history", "versions, aliases, gate results, audit trail"),
                            ("promote", "make a gate-passing version champion"),
                            ("rollback", "make previous-champion the champion again"),
                            ("reconcile", "alias moves with no audit entry (exit 1 when any)")):
        r = reg.add_parser(name, help=help_text)
        r.add_argument("--model", default="rrg-report-generator")
        r.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI")
        if name == "promote":
            r.add_argument("--version", required=True)
        if name in ("promote", "rollback"):
            r.add_argument("--reason", required=True, help="recorded in the audit trail")
        r.set_defaults(func=cmd_registry)

    srv = with_config(sub.add_parser(
        "serve", help="the report API (FastAPI): PACS over DICOMweb, batching, FHIR",
        description="Settings come from the config's `serving:` section (model_core.config.ServingConfig; "
                    "--set serving.max_batch=4 …); the flags below override it."))
    srv.add_argument("--model", required=True, help="model directory or models:/NAME@champion")
    srv.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    srv.add_argument("--port", type=int, default=None, help="default 8080")
    srv.add_argument("--pacs-url", default=None, help="DICOMweb root (default: $RRG_PACS_URL)")
    srv.add_argument("--backend", default=None, choices=["auto", "onnxruntime", "torch", "triton"])
    srv.add_argument("--precision", default=None, choices=["int8", "fp32"])
    srv.add_argument("--triton-url", default=None, help="Triton Inference Server (HOST:PORT) for --backend triton")
    srv.add_argument("--allow-export-at-startup", action="store_true", default=None,
                     help="development only: export the model to ONNX when it has none (else the pipeline does)")
    srv.add_argument("--gate-record", type=Path, default=None, metavar="DIR",
                     help="a model directory's signed gate decision (default: MODEL/gate/; a models:/ version "
                          "brings its run's)")
    srv.add_argument("--allow-ungated-model", action="store_true",
                     help="development only, logged: serve a model whose signed gate decision is missing, invalid "
                          "or reject (e.g. the demo model). Never for patients")
    srv.add_argument("--audit-log", type=Path, default=None, help="append-only JSONL audit log")
    srv.add_argument("--report-store", type=Path, default=None,
                     help="SQLite file of generated reports (default runs/serving/reports.sqlite3)")
    srv.set_defaults(func=cmd_serve)

    aud = sub.add_parser("auditors", help="the auditors' page: versions, gate results, PCCP verdicts, packets",
                         description="Read-only web page; tokens with the scope packet.read from $RRG_AUDITOR_TOKENS.")
    aud.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI")
    aud.add_argument("--model", default="rrg-report-generator")
    aud.add_argument("--host", default="127.0.0.1")
    aud.add_argument("--port", type=int, default=8090)
    aud.add_argument("--trusted-key", action="append", type=Path, metavar="PEM",
                     help="public key packets must be signed with (repeatable; default: $RRG_TRUSTED_KEYS, else the "
                          "local development key)")
    aud.set_defaults(func=cmd_auditors)

    mon = sub.add_parser("monitor", help="drift monitoring and the retrain trigger").add_subparsers(
        dest="monitor_command", required=True)
    m_drift = with_config(mon.add_parser("drift", help="data and label drift of a window vs the model's reference"))
    m_drift.add_argument("--model", type=Path, required=True, help="model directory (with reference_stats.json)")
    m_source = m_drift.add_mutually_exclusive_group(required=True)
    m_source.add_argument("--manifest", type=Path, help="an IU-format manifest: its studies are the window")
    m_source.add_argument("--log", help="the prediction log (SQLite path or SQLAlchemy URL)")
    m_drift.add_argument("--images-root", type=Path, help="root of the manifest's image paths (default: its folder)")
    m_drift.add_argument("--since", default="7d", help="with --log: 7d, 36h, 90m or an ISO-8601 time (default 7d)")
    m_drift.add_argument("--model-version", default=None, help="with --log: only this model version's predictions")
    m_drift.add_argument("--out", type=Path, required=True, help="folder for drift.json and drift.html")
    m_drift.set_defaults(func=cmd_monitor_drift)
    m_run = with_config(mon.add_parser("run", help="one monitoring cycle: drift, alerts, policy, trigger",
                                       description="Thresholds and the prediction log come from the config's "
                                                   "`monitoring:` section."))
    m_run.add_argument("--model", required=True, help="the served model: a directory or models:/NAME@ALIAS")
    m_run.add_argument("--model-version", default=None, help="the version serving logs (default: any)")
    m_run.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "monitoring" / "cycle")
    m_run.add_argument("--retrain-out", type=Path, default=REPO_ROOT / "runs" / "demo",
                       help="where a local retrain runs (as `make run`: same MLflow registry)")
    m_run.add_argument("--model-name", default="rrg-report-generator")
    m_run.add_argument("--dry-run", action="store_true", help="decide and alert, but start no training run")
    m_run.add_argument("--image-registry", default=None, help="with monitoring.kfp_host: the pipeline's images")
    m_run.add_argument("--tracking-uri", default=None, help="with monitoring.kfp_host: MLflow for the cluster run")
    m_run.set_defaults(func=cmd_monitor_run)
    m_sched = with_config(mon.add_parser("schedule", help="compile the monitoring pipeline; create its daily run"))
    m_sched.add_argument("--host", required=True, help="KFP API server URL")
    m_sched.add_argument("--model", default="models:/rrg-report-generator@champion")
    m_sched.add_argument("--training-package", required=True,
                         help="the compiled training pipeline as the monitoring pod sees it (rrg pipeline compile)")
    m_sched.add_argument("--image-registry", default="ghcr.io/example-hospital")
    m_sched.add_argument("--tracking-uri", default="http://mlflow.mlflow.svc:5000")
    m_sched.add_argument("--out", type=Path, default=Path("monitoring-pipeline.yaml"))
    m_sched.set_defaults(func=cmd_monitor_schedule)

    add_rollout_parser(sub, with_config)
    packet = sub.add_parser("packet", help="510(k) packets").add_subparsers(dest="packet_command", required=True)
    p_dl = packet.add_parser("download", help="fetch a version's packet and verify its hashes and signature")
    p_dl.add_argument("--model", default="rrg-report-generator")
    p_dl.add_argument("--version", required=True)
    p_dl.add_argument("--out", type=Path, required=True)
    p_dl.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI")
    p_dl.add_argument("--trusted-key", action="append", type=Path, metavar="PEM",
                      help="public key whose signature is accepted (repeatable; default: $RRG_TRUSTED_KEYS, else "
                           "the local development key)")
    p_dl.set_defaults(func=cmd_packet_download)
    p_ver = packet.add_parser("verify", help="check a packet's hashes and its signature")
    p_ver.add_argument("file", type=Path, help="the packet zip")
    p_ver.add_argument("--trusted-key", action="append", type=Path, metavar="PEM",
                       help="public key whose signature is accepted (repeatable; default: $RRG_TRUSTED_KEYS, "
                            "else the local development key)")
    p_ver.set_defaults(func=cmd_packet_verify)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return args.func(args)
    except (ConfigError, DataError, ValueError, FileNotFoundError, RuntimeError) as exc:
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
