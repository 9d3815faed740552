"""S3 artifact store through boto3, against moto's standalone S3 server on 127.0.0.1 — a stand-in for S3
(no cloud is reachable here): the MLflow server proxies artifacts into the bucket and serves them back."""

import os
import socket
import subprocess
import sys
import time

import boto3
import mlflow
import pytest

from registry import tracking


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "MLFLOW_S3_ENDPOINT_URL": url}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        boto3.client("s3", endpoint_url=url).create_bucket(Bucket="rrg-artifacts")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def test_artifacts_go_to_the_bucket_and_come_back(s3_endpoint, tmp_path):
    with tracking.MlflowServer(tmp_path / "mlflow", artifacts="s3://rrg-artifacts/mlflow") as server:
        run_id = tracking.start_run(server.uri, run_name="s3")
        report = tmp_path / "metrics.json"
        report.write_text('{"BLEU-4": 0.15}')
        tracking.log_artifacts(server.uri, run_id, report, "evaluation")
        back = mlflow.MlflowClient(server.uri).download_artifacts(run_id, "evaluation/metrics.json",
                                                                  str(tmp_path / "dl"))
        assert open(back).read() == '{"BLEU-4": 0.15}'
    keys = [o["Key"] for o in boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(
        Bucket="rrg-artifacts").get("Contents", [])]
    assert any(k.startswith("mlflow/") and k.endswith("evaluation/metrics.json") for k in keys), keys


def test_other_artifact_schemes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="s3://bucket/prefix"):
        tracking.MlflowServer(tmp_path, artifacts="gs://bucket/x")
