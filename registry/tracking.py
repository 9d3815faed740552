"""MLflow tracking: a local tracking server, and logging of config, training, evaluation and lineage.

Nothing here logs report text, pixel data or patient identifiers: params are config values, metrics
are numbers, tags are hashes and versions, artifacts are model files, figures, metrics and the packet.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow

from model_core.data.manifest import read_manifest
from model_core.files import sha256_file
from model_core.provenance import collect_provenance, package_version, version_string

log = logging.getLogger(__name__)

EXPERIMENT = "radiology-report-generator"


# --------------------------------------------------------------------------- the server

class MlflowServer:
    """`mlflow server` on 127.0.0.1 with a sqlite backend and an artifact store: a local directory by default,
    or S3 (`s3://bucket/prefix`, through boto3; endpoint and credentials from the usual AWS / MLflow variables
    such as MLFLOW_S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID) when `artifacts` or $RRG_MLFLOW_ARTIFACTS names one.

    auth_config: a basic-auth configuration (`write_basic_auth_config`): the server then runs MLflow's basic-auth
    app (`--app-name basic-auth`), so every API call, the artifact proxy included, needs a user's credentials
    (clients: $MLFLOW_TRACKING_USERNAME / $MLFLOW_TRACKING_PASSWORD); `/health` stays open. The admin user's
    password comes from $MLFLOW_AUTH_ADMIN_PASSWORD on the first start (a secret, never a literal)."""

    def __init__(self, root: str | os.PathLike, port: int | None = None, artifacts: str | None = None,
                 auth_config: str | os.PathLike | None = None):
        self.auth_config = Path(auth_config).resolve() if auth_config is not None else None
        self.root = Path(root).resolve()
        self.artifacts = artifacts or os.environ.get("RRG_MLFLOW_ARTIFACTS") or str(self.root / "artifacts")
        if "://" in self.artifacts and not self.artifacts.startswith("s3://"):
            raise ValueError(f"artifact store must be a local path or s3://bucket/prefix, got {self.artifacts!r}")
        self.port = port or _free_port()
        self.process: subprocess.Popen | None = None
        self.uri = f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> "MlflowServer":
        self.root.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
               "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
               "--artifacts-destination", self.artifacts, "--serve-artifacts", "--workers", "1"]
        logfile = open(self.root / "server.log", "ab")
        env = {**os.environ, "MLFLOW_ENABLE_TELEMETRY": "false", "DO_NOT_TRACK": "1"}
        # MLflow 3's job runner (huey consumers for GenAI evaluation jobs and trace roll-ups) is not used here and
        # starts eight busy processes per server; a deployment that wants it sets the variable to true.
        env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
        if self.auth_config is not None:
            cmd += ["--app-name", "basic-auth"]
            env["MLFLOW_AUTH_CONFIG_PATH"] = str(self.auth_config)
            # the app's CSRF key: the deployment's secret when set, else one for this server's lifetime only
            env.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", secrets.token_urlsafe(32))
        self.process = subprocess.Popen(cmd, stdout=logfile, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.process.returncode}; "
                                   f"see {self.root / 'server.log'}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as resp:
                    if resp.status == 200:
                        log.info("MLflow tracking server at %s (sqlite under %s, artifacts in %s)", self.uri,
                                 self.root, self.artifacts)
                        return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"mlflow server did not answer on {self.uri} within {timeout:.0f} s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def write_basic_auth_config(path: str | os.PathLike, admin_username: str = "admin") -> Path:
    """An MLflow basic-auth configuration at `path`: users and permissions in a sqlite database beside it; every
    authenticated user may read, and only a resource's creator (the pipeline's user owns its experiments, runs and
    registered models) or a user granted EDIT/MANAGE may change it, so an alias move needs those credentials; the
    admin is `admin_username` (password: $MLFLOW_AUTH_ADMIN_PASSWORD at the server's first start)."""
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("[mlflow]\n"
                    "default_permission = READ\n"
                    f"database_uri = sqlite:///{path.parent / 'basic_auth.db'}\n"
                    f"admin_username = {admin_username}\n"
                    "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                    # a checked password is remembered for 60 s per worker (PBKDF2 on every call is slow); a
                    # password change reaches other workers within that time
                    "auth_cache_ttl_seconds = 60\n")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def tracking_server(root: str | os.PathLike):
    """Yield a tracking URI: $MLFLOW_TRACKING_URI when set, else a server started here (and stopped after)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        log.info("using the MLflow tracking server at %s (MLFLOW_TRACKING_URI)", uri)
        yield uri
        return
    try:
        with MlflowServer(root) as server:
            yield server.uri
    finally:
        # mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI; do not leave the stopped server's address behind.
        os.environ.pop("MLFLOW_TRACKING_URI", None)


# --------------------------------------------------------------------------- logging

def flatten(prefix: str, obj, out: dict | None = None) -> dict:
    """Nested dict → {'a.b.c': value} for MLflow params/metrics."""
    out = {} if out is None else out
    if isinstance(obj, dict):
        for key, value in obj.items():
            flatten(f"{prefix}.{key}" if prefix else str(key), value, out)
    else:
        out[prefix] = obj
    return out


def start_run(tracking_uri: str, run_name: str, tags: dict | None = None) -> str:
    """Create an MLflow run in the project's experiment; returns its run id (the run is left open for steps)."""
    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    exp_id = exp.experiment_id if exp else client.create_experiment(EXPERIMENT)
    run = client.create_run(exp_id, run_name=run_name, tags=tags or {})
    return run.info.run_id


def log_params(tracking_uri: str, run_id: str, params: dict) -> None:
    client = mlflow.MlflowClient(tracking_uri)
    flat = {k: json.dumps(v) if isinstance(v, (list, dict)) else str(v) for k, v in flatten("", params).items()}
    items = list(flat.items())
    for start in range(0, len(items), 100):
        client.log_batch(run_id, params=[mlflow.entities.Param(k[:250], v[:6000]) for k, v in items[start:start + 100]])


def log_metrics(tracking_uri: str, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    client = mlflow.MlflowClient(tracking_uri)
    now = int(time.time() * 1000)
    entries = [mlflow.entities.Metric(k[:250], float(v), now, step) for k, v in metrics.items()
               if isinstance(v, (int, float)) and v == v]  # NaN-free, numbers only
    for start in range(0, len(entries), 500):
        client.log_batch(run_id, metrics=entries[start:start + 500])


def log_history(tracking_uri: str, run_id: str, history: dict) -> None:
    """Per-epoch loss terms of every stage: metric '<stage>.<split>.<term>' at step = epoch."""
    for stage, records in history.items():
        for rec in records:
            values = {f"{stage}.{split}.{term}": v for split in ("train", "val") for term, v in rec[split].items()}
            values[f"{stage}.lr"] = rec["lr"]
            log_metrics(tracking_uri, run_id, values, step=rec["epoch"])


def evaluation_metrics(metrics: dict) -> dict[str, float]:
    """The numbers of an evaluation (summary with CIs, critical findings, hallucination, latency) as flat metrics."""
    out = {}
    for key, entry in metrics.get("summary", {}).items():
        name = "eval." + key.replace(" ", "_")
        for part in ("value", "ci_low", "ci_high"):
            if isinstance(entry, dict) and entry.get(part) is not None:
                out[f"{name}{'' if part == 'value' else '.' + part}"] = entry[part]
    for finding, det in metrics.get("critical_findings", {}).items():
        name = "critical." + finding.replace(" ", "_")
        for key in ("sensitivity", "specificity", "threshold", "positives", "flag_rate"):
            if det.get(key) is not None:
                out[f"{name}.{key}"] = det[key]
        if det.get("sensitivity_ci") and det["sensitivity_ci"][0] is not None:
            out[f"{name}.sensitivity.ci_low"] = det["sensitivity_ci"][0]
    lat = metrics.get("latency")
    if lat:
        out["latency.batch1.p50_ms"] = lat["batch_1"]["p50_ms"]
        out["latency.batch1.p95_ms"] = lat["batch_1"]["p95_ms"]
        out["latency.batch8.p50_ms_per_report"] = lat["batch_8_per_report"]["p50_ms"]
    if "calibration" in metrics:
        out["calibration.test_ece"] = metrics["calibration"]["test_ece"]
    return out


def log_artifacts(tracking_uri: str, run_id: str, local_path: str | os.PathLike,
                  artifact_path: str | None = None) -> None:
    client = mlflow.MlflowClient(tracking_uri)
    path = Path(local_path)
    if path.is_dir():
        client.log_artifacts(run_id, str(path), artifact_path)
    else:
        client.log_artifact(run_id, str(path), artifact_path)


def set_tags(tracking_uri: str, run_id: str, tags: dict) -> None:
    client = mlflow.MlflowClient(tracking_uri)
    for key, value in tags.items():
        client.set_tag(run_id, key, str(value)[:5000])


def end_run(tracking_uri: str, run_id: str, status: str = "FINISHED") -> None:
    mlflow.MlflowClient(tracking_uri).set_terminated(run_id, status)


# --------------------------------------------------------------------------- lineage

def data_lineage(root: str | os.PathLike, manifest: str | os.PathLike) -> dict:
    """Hashes that pin the training data: manifest SHA-256 and a digest over the images' checksums."""
    root, manifest = Path(root), Path(manifest)
    df = read_manifest(manifest)
    digest = hashlib.sha256()
    for rel in sorted(df["image"]):
        digest.update(rel.encode())
        digest.update(sha256_file(root / rel).encode())
    return {"manifest_sha256": sha256_file(manifest), "image_digest_sha256": digest.hexdigest(),
            "images": int(len(df)), "studies": int(df["uid"].nunique())}


# Pipeline tooling: not part of what the model computes, so not in the model card's provenance, but part of
# how the run was made.
PIPELINE_PACKAGES = ("mlflow", "kfp", "great-expectations")


def software_lineage(model_card: dict | None = None) -> dict:
    """The software of a run as flat tags: {model_version, python, git_commit, <package>: version, ...}.

    Versions come from the model card's recorded provenance (`model_card["provenance"]`, written once at
    training time) when a card with one is given, else from `model_core.provenance.collect_provenance()`
    of this environment; the pipeline tools' versions are added either way.
    """
    provenance = (model_card or {}).get("provenance") or collect_provenance()
    return {"model_version": version_string(provenance), "python": provenance["python"],
            "git_commit": provenance["git_commit"], **provenance["packages"],
            **{name: package_version(name) for name in PIPELINE_PACKAGES}}
