"""Cluster use without a cluster: the compiled IR is checked structurally, and scheduling is tested against
a small local HTTP server that records the KFP API request (no Kubeflow exists on this machine)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import yaml

from model_core import __version__
from pipelines.cluster import CUDA_TAG_SUFFIX, MONTHLY_CRON, compile_pipeline, component_image, schedule_monthly
from pipelines.training import DEFAULT_TRAIN_GPUS


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    path = compile_pipeline(tmp_path_factory.mktemp("ir") / "pipeline.yaml", "registry.example.org/radiology")
    return list(yaml.safe_load_all(path.read_text()))


def test_compiled_pipeline_has_every_step_and_the_gate_condition(compiled):
    spec = compiled[0]
    names = set(spec["components"])
    for step in ("validate-data", "eda", "train", "train-baseline", "evaluate", "gate", "clinical-evidence", "export",
                 "regulatory-packet", "register-model"):
        assert f"comp-{step}" in names
    text = json.dumps(spec)
    assert "gate-passed" in text and "gate-failed" in text and "triggerPolicy" in text


def test_train_runs_the_cuda_image_and_every_other_step_the_cpu_image(compiled):
    executors = compiled[0]["deploymentSpec"]["executors"]
    images = {name: e["container"]["image"] for name, e in executors.items()}
    cpu = component_image("registry.example.org/radiology")
    assert images.pop("exec-train") == f"{cpu}{CUDA_TAG_SUFFIX}" == \
        f"registry.example.org/radiology/rrg-components:{__version__}-cuda"
    assert set(images.values()) == {cpu} and len(images) >= 9


def test_train_requests_the_pipelines_gpu_count_and_shared_memory(compiled):
    spec, platform = compiled
    gpus = spec["root"]["inputDefinitions"]["parameters"]["train_gpus"]
    assert gpus["parameterType"] == "NUMBER_INTEGER" and gpus["defaultValue"] == DEFAULT_TRAIN_GPUS == 4
    train = spec["deploymentSpec"]["executors"]["exec-train"]["container"]
    count = train["resources"]["accelerator"]["resourceCount"]
    assert count == "{{$.inputs.parameters['pipelinechannel--train_gpus']}}"          # the run's value, not a literal
    task = spec["root"]["dag"]["tasks"]["train"]["inputs"]["parameters"]
    assert task["num_gpus"]["componentInputParameter"] == "train_gpus"      # the launcher's process count
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train"]
    assert k8s["emptyDirMounts"] == [{"medium": "Memory", "mountPath": "/dev/shm", "sizeLimit": "16Gi",
                                      "volumeName": "dshm"}]


def test_the_dataset_uri_reaches_the_first_step_and_its_copy_every_data_step(compiled):
    spec, _ = compiled
    uri = spec["root"]["inputDefinitions"]["parameters"]["dataset_uri"]
    assert uri == {"defaultValue": "", "isOptional": True, "parameterType": "STRING"}   # "": the config's data
    tasks = spec["root"]["dag"]["tasks"]
    assert tasks["validate-data"]["inputs"]["parameters"]["dataset_uri"]["componentInputParameter"] == "dataset_uri"
    for step in ("eda", "train", "train-baseline", "evaluate", "clinical-evidence", "export", "regulatory-packet"):
        dataset = tasks[step]["inputs"]["artifacts"]["dataset"]["taskOutputArtifact"]
        assert dataset == {"outputArtifactKey": "dataset", "producerTask": "validate-data"}, step


def test_train_requests_a_gpu_node_and_secrets_not_literals(compiled):
    spec, platform = compiled
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert k8s["exec-train"]["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
    assert k8s["exec-train"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    secret_names = {s["secretName"] for e in k8s.values() for s in e.get("secretAsEnv", [])}
    assert secret_names == {"mlflow-credentials", "s3-credentials"}
    assert "password" not in json.dumps(spec).lower()


def test_baseline_trains_beside_the_model_and_feeds_evaluate(compiled):
    spec, platform = compiled
    tasks = spec["root"]["dag"]["tasks"]
    assert tasks["train"]["dependentTasks"] == ["validate-data"]
    assert tasks["train-baseline"]["dependentTasks"] == ["validate-data"]       # in parallel with train
    assert set(tasks["evaluate"]["dependentTasks"]) == {"validate-data", "train", "train-baseline"}  # + its data
    assert set(tasks["evaluate"]["inputs"]["artifacts"]) == {"dataset", "model", "baseline"}
    assert "config_json" in tasks["export"]["inputs"]["parameters"]


def test_clinical_evidence_runs_after_evaluate_beside_the_gate_and_feeds_the_packet(compiled):
    spec, platform = compiled
    tasks = spec["root"]["dag"]["tasks"]
    evidence = tasks["clinical-evidence"]
    assert set(evidence["dependentTasks"]) == {"validate-data", "train", "evaluate"}       # not the gate
    assert set(evidence["inputs"]["artifacts"]) == {"dataset", "model", "evaluation"}
    assert spec["components"]["comp-clinical-evidence"]["outputDefinitions"]["artifacts"]["evidence"]
    packet = tasks["regulatory-packet"]
    assert packet["inputs"]["artifacts"]["evidence"]["taskOutputArtifact"] == {
        "outputArtifactKey": "evidence", "producerTask": "clinical-evidence"}
    assert {"clinical-evidence", "gate", "export"} <= set(packet["dependentTasks"])
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-clinical-evidence"]
    assert {s["secretName"] for s in k8s["secretAsEnv"]} == {"mlflow-credentials", "s3-credentials"}


def test_only_train_requests_a_gpu(compiled):
    spec, platform = compiled
    executors = spec["deploymentSpec"]["executors"]
    gpu = {name for name, e in executors.items() if "accelerator" in e["container"].get("resources", {})}
    assert gpu == {"exec-train"}
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert "nodeSelector" not in k8s["exec-train-baseline"] and "tolerations" not in k8s["exec-train-baseline"]
    assert {s["secretName"] for s in k8s["exec-train-baseline"]["secretAsEnv"]} == {"mlflow-credentials",
                                                                                 "s3-credentials"}


def test_image_registry_must_be_valid(tmp_path):
    with pytest.raises(ValueError, match="--image-registry"):
        compile_pipeline(tmp_path / "p.yaml", "")


class _Recorder(BaseHTTPRequestHandler):
    requests: list = []

    def _reply(self, body: dict):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length)
        _Recorder.requests.append((self.path, body))
        if "experiments" in self.path:
            self._reply({"experiment_id": "exp-1", "display_name": "radiology-report-generator"})
        elif "pipelines/upload" in self.path:
            self._reply({"pipeline_id": "pl-1", "display_name": "x"})
        else:
            self._reply({"recurring_run_id": "rr-1", "display_name": "rrg-monthly-retrain"})

    def do_GET(self):
        _Recorder.requests.append((self.path, b""))
        self._reply({})

    def log_message(self, *args):
        pass


def test_schedule_creates_a_monthly_recurring_run(tmp_path):
    server = HTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        package = compile_pipeline(tmp_path / "p.yaml", "registry.example.org/radiology")
        schedule_monthly(f"http://127.0.0.1:{server.server_port}", package, params={"model_name": "m"})
    finally:
        server.shutdown()
    runs = [json.loads(body) for path, body in _Recorder.requests if path.endswith("/recurringruns")]
    assert runs, [p for p, _ in _Recorder.requests]
    trigger = runs[0]["trigger"]["cron_schedule"]
    assert trigger["cron"] == MONTHLY_CRON == "0 0 2 1 * *"
    assert runs[0]["max_concurrency"] == 1
