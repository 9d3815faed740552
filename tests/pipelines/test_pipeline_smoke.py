"""The whole pipeline DAG through kfp.local (SubprocessRunner, no Docker) against a real MLflow server on
127.0.0.1 (sqlite), on the smoke config. Two runs share the server: one whose gate thresholds are set to
pass (→ champion) and one with the real clinical gate (→ rejected: too few critical positives). The second one
reads its data from S3 (moto's standalone server on 127.0.0.1, a stand-in for S3): pushed with `rrg data push`,
run with `rrg pipeline run --dataset-uri`, materialised and verified by the first step."""

import json
import os
import zipfile
from pathlib import Path

import boto3
import pandas as pd
import pytest
from moto_s3 import moto_s3_server

from model_core.artifacts import BASELINE_SUMMARY
from model_core.config import REPO_ROOT, load_config
from model_core.data.manifest import EMBEDDED_ROOT
from pipelines.local import format_summary, latest_model_dir, run_pipeline
from registry import models, tracking
from regulatory.archive import verify_packet
from rrg.cli import main as rrg

PERMISSIVE_GATE = ["gate.critical_sensitivity_min=-1.0", "gate.min_positives=0", "gate.specificity_floor=0.0",
                   "gate.hallucination_rate_max=1.01", "gate.gate_on_ci_lower_bound=false"]


DATA_BUCKET = "rrg-data"
SMOKE_DATA = f"s3://{DATA_BUCKET}/datasets/iu-smoke"


def smoke_manifest(out: Path, studies_per_split: int = 24) -> Path:
    """The embedded manifest's rows of the studies the smoke config reads (its first 24 per split, all views)."""
    rows = pd.read_csv(EMBEDDED_ROOT / "manifest.csv", dtype=str, keep_default_na=False)
    splits = pd.read_csv(EMBEDDED_ROOT / "splits.csv", dtype=str, keep_default_na=False)
    keep = set(splits.groupby("split", sort=False)["uid"].apply(lambda u: list(u[:studies_per_split])).sum())
    rows[rows["uid"].isin(keep)].to_csv(out, index=False)
    return out


@pytest.fixture(scope="module")
def pipeline_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    with tracking.MlflowServer(root / "mlflow") as server, moto_s3_server(DATA_BUCKET) as s3_url:
        os.environ["MLFLOW_TRACKING_URI"] = server.uri
        try:
            manifest = smoke_manifest(root / "smoke-manifest.csv")
            assert rrg(["data", "push", "--to", SMOKE_DATA, "--manifest", str(manifest),
                        "--images-root", str(EMBEDDED_ROOT)]) == 0
            passing = run_pipeline(load_config(REPO_ROOT / "configs" / "smoke.yaml", PERMISSIVE_GATE),
                                   root / "pass", model_name="smoke-model", summary_json=root / "pass.json")
            assert rrg(["pipeline", "run", "--config", str(REPO_ROOT / "configs" / "smoke.yaml"), "--out",
                        str(root / "real"), "--model-name", "smoke-model", "--summary-json", str(root / "real.json"),
                        "--dataset-uri", SMOKE_DATA]) == 0
            real = json.loads((root / "real.json").read_text())
            yield server.uri, passing, real, root, s3_url
        finally:
            os.environ.pop("MLFLOW_TRACKING_URI", None)


def test_passing_gate_promotes_to_champion(pipeline_runs):
    uri, passing, _, root, _ = pipeline_runs
    assert passing["gate"]["passed"] and passing["registered"]["status"] == "champion"
    assert "champion" in passing["registered"]["aliases"]
    assert set(passing["steps_seconds"]) >= {"validate_data", "eda", "train", "train_baseline", "evaluate", "export",
                                             "clinical_evidence", "regulatory_packet"}
    assert (Path(passing["baseline_dir"]) / BASELINE_SUMMARY).is_file()
    assert json.loads((root / "pass.json").read_text())["model_dir"] == passing["model_dir"]
    assert str(latest_model_dir(root / "pass")) == passing["model_dir"]          # what the benchmarks default to
    assert latest_model_dir(root / "nothing-here") is None
    assert "BLEU-4" in format_summary(passing)


def test_real_gate_rejects_and_never_serves(pipeline_runs):
    uri, passing, real, *_ = pipeline_runs
    assert not real["gate"]["passed"] and real["registered"]["status"] == "rejected"
    assert any("fails closed" in r for r in real["gate"]["reasons"])
    history = {h["version"]: h for h in models.history(uri, "smoke-model")}
    assert "champion" in history[passing["registered"]["version"]]["aliases"]
    assert history[real["registered"]["version"]]["aliases"] == ["rejected"]


def test_run_has_lineage_params_metrics_and_artifacts(pipeline_runs):
    import mlflow

    uri, passing, *_ = pipeline_runs
    client = mlflow.MlflowClient(uri)
    run = client.get_run(passing["mlflow_run_id"])
    assert len(run.data.params["data.manifest_sha256"]) == 64 and "software.model_version" in run.data.tags
    assert "stage2.train.loss_report" in run.data.metrics and "eval.BLEU-4.ci_low" in run.data.metrics
    top = {a.path for a in client.list_artifacts(passing["mlflow_run_id"])}
    # the model: an MLflow 3 logged model, not a run artifact
    assert {"evaluation", "eda", "validation", "baseline", "onnx", "packet", "gate", "evidence"} <= top


def test_packet_download_verifies_hashes(pipeline_runs, tmp_path):
    uri, passing, *_ = pipeline_runs
    path = models.download_packet(uri, "smoke-model", passing["registered"]["version"], tmp_path, verify=verify_packet)
    with zipfile.ZipFile(path) as z:
        assert {"packet.pdf", "packet.html", "packet.json", "SHA256SUMS", "bias_audit_sensitivity.png"} <= \
            set(z.namelist()) and "error_examples.png" not in z.namelist()
        doc = json.loads(z.read("packet.json"))
    assert doc["error_analysis"]["status"] == doc["bias_audit"]["status"] == "included"
    assert doc["monitoring"]["drift"]["method"].startswith("MMD")          # the monitor's own check, measured


def test_registered_model_loads_in_a_fresh_process(pipeline_runs, tmp_path):
    import subprocess
    import sys

    uri, passing, *_ = pipeline_runs
    image = REPO_ROOT / "data" / "iu_xray" / "images" / "1_IM-0001-4001.dcm.jpg"
    code = ("import mlflow, pandas as pd, json, sys; mlflow.set_tracking_uri(sys.argv[1]);"
            "m = mlflow.pyfunc.load_model('models:/smoke-model@champion');"
            "print(json.dumps(m.predict(pd.DataFrame({'image_path': [sys.argv[2]]}))[0]['label_probabilities']))")
    out = subprocess.run([sys.executable, "-c", code, uri, str(image)], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    assert len(json.loads(out.stdout.strip().splitlines()[-1])) == 14


def test_the_s3_run_materialised_and_verified_its_data(pipeline_runs):
    import mlflow

    uri, _, real, root, s3_url = pipeline_runs
    params = mlflow.MlflowClient(uri).get_run(real["mlflow_run_id"]).data.params
    assert params["data.dataset_uri"] == SMOKE_DATA and len(params["data.sha256sums_sha256"]) == 64
    pushed = {o["Key"] for o in boto3.client("s3", endpoint_url=s3_url).list_objects_v2(
        Bucket=DATA_BUCKET, Prefix="datasets/iu-smoke/")["Contents"]}
    (copy,) = Path(real["model_dir"]).parents[1].glob("validate-data/dataset/data/iu_xray")
    local = {f"datasets/iu-smoke/{p.relative_to(copy).as_posix()}" for p in copy.rglob("*") if p.is_file()}
    assert local == pushed and {"datasets/iu-smoke/LICENSE.md", "datasets/iu-smoke/splits.csv"} <= pushed
    card = json.loads((Path(real["model_dir"]) / "model_card.json").read_text())
    assert card["train_studies"] == 24 and str(copy) in json.loads(
        (Path(real["model_dir"]) / "config.json").read_text())["data"]["root"]          # trained on the copy
    packet = json.loads(zipfile.ZipFile(real["packet"]).read("packet.json"))
    assert "IU X-ray" in json.dumps(packet)                    # the copy is still recognised as the IU X-ray data


def test_a_tampered_dataset_fails_the_first_step_naming_the_file(pipeline_runs, tmp_path, capfd):
    uri, *_, s3_url = pipeline_runs
    s3 = boto3.client("s3", endpoint_url=s3_url)
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=DATA_BUCKET, Prefix="datasets/iu-smoke/images/")[
        "Contents"])
    for key in s3.list_objects_v2(Bucket=DATA_BUCKET, Prefix="datasets/iu-smoke/")["Contents"]:
        s3.copy_object(Bucket=DATA_BUCKET, Key=key["Key"].replace("iu-smoke", "iu-tampered"),
                       CopySource={"Bucket": DATA_BUCKET, "Key": key["Key"]})
    s3.put_object(Bucket=DATA_BUCKET, Key=keys[5].replace("iu-smoke", "iu-tampered"), Body=b"not the image")
    with pytest.raises(RuntimeError):
        run_pipeline(load_config(REPO_ROOT / "configs" / "smoke.yaml"), tmp_path / "run", model_name="smoke-model",
                     dataset_uri=f"s3://{DATA_BUCKET}/datasets/iu-tampered")
    logs = capfd.readouterr()
    rel = keys[5].removeprefix("datasets/iu-smoke/")
    assert f"checksum mismatch for {rel}" in logs.out + logs.err and "not the image" not in logs.out + logs.err
    assert not list(tmp_path.glob("run/kfp/*/validate-data/dataset/data/*"))       # nothing half-written left
    assert not list(tmp_path.glob("run/kfp/*/train"))                              # the run stopped there
