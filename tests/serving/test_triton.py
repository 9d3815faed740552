"""The Triton backend (serving/backends/triton.py) against a real Triton Inference Server (PyTriton's bundled
tritonserver, serving/triton_server.py).

The server runs as a subprocess of `.venv-triton/bin/python -m serving.triton_server` (built by
scripts/install_triton.sh: a venv of Debian's python3.11, whose libpython matches Triton's Python-backend stub) on
free loopback ports, serving the tiny model with the ONNX Runtime backend (FP32 decoder, see PRECISION). The client
is `TritonBackend` in the test interpreter. Without `.venv-triton` the server tests skip (the Makefile runs the
install script first); the client-only tests always run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import tiny_model_config

from serving.backends.triton import MODEL_NAME, TritonBackend, TritonInferenceError, TritonUnavailable

REPO = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = "scripts/install_triton.sh"
TRITON_PYTHON = Path(os.environ.get("TRITON_VENV", REPO / ".venv-triton")) / "bin" / "python"
IMAGE_SIZE = tiny_model_config().vision.image_size
# The service's default decoder. (Its results, like the calibrated INT8 decoder's, do not depend on which studies
# share a batch, so the exact comparisons below do not depend on how Triton happened to batch the requests.)
PRECISION = "fp32"
CONTEXTS = [None, {"age": 61, "sex": "F", "indication": "cough and fever"}, None, {"indication": "chest pain"},
            {}, None, {"age": 40}, None, None, {"indication": "dyspnea"}]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _images(n: int, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(1, 1, IMAGE_SIZE, IMAGE_SIZE, generator=gen) for _ in range(n)]


# --------------------------------------------------------------------------- client only (no server)

@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_unreachable_url_raises_triton_unavailable_naming_the_url(protocol):
    port = _free_port()  # nothing listens there
    started = time.monotonic()
    with pytest.raises(TritonUnavailable, match=re.escape(f"127.0.0.1:{port}")) as err:
        TritonBackend(f"127.0.0.1:{port}", protocol=protocol, timeout_s=3)
    assert "unreachable" in str(err.value) or "not live" in str(err.value)
    assert time.monotonic() - started < 30


def test_constructor_validates_arguments():
    with pytest.raises(ValueError, match="protocol"):
        TritonBackend("127.0.0.1:1", protocol="websocket")
    with pytest.raises(ValueError, match="host:port"):
        TritonBackend("http://127.0.0.1:8000/v2/models", timeout_s=1)
    with pytest.raises(ValueError, match="timeout_s"):
        TritonBackend("127.0.0.1:1", timeout_s=0)


@pytest.fixture()
def offline_backend(monkeypatch) -> TritonBackend:
    """A TritonBackend whose model description is faked (32 px, max batch 8): input validation needs no server."""
    monkeypatch.setattr(TritonBackend, "_read_model", lambda self: (IMAGE_SIZE, 8))
    return TritonBackend("http://127.0.0.1:1", timeout_s=1)


@pytest.mark.parametrize("images, contexts, message", [
    ([torch.rand(2, 1, IMAGE_SIZE, IMAGE_SIZE)], [None], "exactly one .*view.*K=2"),
    ([torch.rand(1, 1, 16, 16)], [None], "16x16.*32x32"),
    ([torch.rand(1, 3, IMAGE_SIZE, IMAGE_SIZE)], [None], r"\(K, 1, H, W\)"),
    ([torch.rand(IMAGE_SIZE, IMAGE_SIZE)], [None], r"\(K, 1, H, W\)"),
    ([torch.full((1, 1, IMAGE_SIZE, IMAGE_SIZE), float("nan"))], [None], "non-finite"),
    ([torch.rand(1, 1, IMAGE_SIZE, IMAGE_SIZE)], [None, None], "2 contexts for 1 studies"),
    ([torch.rand(1, 1, IMAGE_SIZE, IMAGE_SIZE)], ["age 40"], "context must be a dict"),
])
def test_client_rejects_bad_input_before_sending(offline_backend, images, contexts, message):
    assert offline_backend.url == "127.0.0.1:1" and offline_backend.name == "triton-http"
    with pytest.raises(ValueError, match=message):
        offline_backend.generate(images, contexts)


def test_client_accepts_3d_images_and_empty_batches(offline_backend):
    batch, ctx = offline_backend._prepare([torch.rand(1, IMAGE_SIZE, IMAGE_SIZE)], [{"age": 3}])
    assert batch.shape == (1, 1, IMAGE_SIZE, IMAGE_SIZE) and batch.dtype == np.float32
    assert json.loads(ctx[0, 0]) == {"age": 3}
    assert offline_backend.generate([], []) == []


# --------------------------------------------------------------------------- a real Triton server

@pytest.fixture(scope="module")
def local_backend(tiny_model_with_export):
    """The in-process ONNX Runtime backend (FP32 decoder, the service's default); its export is the one the server
    then reuses."""
    _, loaded = tiny_model_with_export
    assert loaded.backend.name == f"onnxruntime-{PRECISION}"
    return loaded.backend


class TritonProcess:
    def __init__(self, model_dir: Path, log_path: Path):
        self.http, self.grpc, self.metrics = _free_port(), _free_port(), _free_port()
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                [str(TRITON_PYTHON), "-m", "serving.triton_server", "--model", str(model_dir),
                 "--backend", "onnxruntime", "--precision", PRECISION, "--threads", "1", "--http-port", str(self.http),
                 "--grpc-port", str(self.grpc), "--metrics-port", str(self.metrics), "--max-batch-size", "8",
                 "--max-queue-delay-ms", "200"],
                cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                env={**os.environ, "PYTHONPATH": str(REPO)})

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_bytes().decode(errors="replace")[-chars:]

    def wait_ready(self, timeout: float) -> float:
        started = time.monotonic()
        url = f"http://127.0.0.1:{self.http}/v2/models/{MODEL_NAME}/ready"
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"the Triton server exited with code {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == 200:
                        return time.monotonic() - started
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"model {MODEL_NAME} not ready on {url} within {timeout:.0f} s:\n{self.log_tail()}")

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        found = re.search(rf'^{name}{{[^}}]*model="{MODEL_NAME}"[^}}]*}} (\S+)$', text, re.M)
        assert found, f"{name} for {MODEL_NAME} not in the metrics:\n{text[:2000]}"
        return float(found.group(1))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # serve_with_pytriton stops tritonserver cleanly
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # anything left of the group (tritonserver, stubs)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def triton_python() -> Path:
    if not TRITON_PYTHON.exists():
        pytest.skip(f"no Triton server environment at {TRITON_PYTHON.parent.parent}: run `bash {INSTALL_SCRIPT}` "
                    f"(the Makefile's test target does) to build it")
    return TRITON_PYTHON


@pytest.fixture(scope="module")
def triton_server(triton_python, tiny_model_dir, local_backend, tmp_path_factory):
    server = TritonProcess(tiny_model_dir, tmp_path_factory.mktemp("triton") / "triton.log")
    try:
        server.startup_seconds = server.wait_ready(timeout=240)
    except RuntimeError as exc:
        server.stop()
        pytest.fail(f"could not start the Triton server ({TRITON_PYTHON}): {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_triton_backend_matches_the_in_process_backend(triton_server, local_backend, protocol):
    port = triton_server.http if protocol == "http" else triton_server.grpc
    with TritonBackend(f"127.0.0.1:{port}", protocol=protocol, timeout_s=60) as backend:
        assert backend.image_size == local_backend.image_size == IMAGE_SIZE  # read from the server
        assert backend.max_batch_size == 8 and backend.name == f"triton-{protocol}"
        images = _images(len(CONTEXTS))  # 10 studies: sent as 8 + 2
        remote = backend.generate(images, CONTEXTS)
    local = local_backend.generate(images, CONTEXTS)
    assert len(remote) == len(local) == len(CONTEXTS)
    for (r_text, r_probs), (l_text, l_probs) in zip(remote, local):
        assert isinstance(r_text, str) and r_text == l_text
        assert r_probs.dtype == np.float32 and r_probs.shape == (14,)
        np.testing.assert_allclose(r_probs, l_probs, rtol=1e-5, atol=1e-6)


def test_concurrent_requests_are_batched_by_triton(triton_server, local_backend):
    backend = TritonBackend(f"127.0.0.1:{triton_server.http}", timeout_s=60)
    n = 6
    images = _images(n, seed=1)
    requests_before = triton_server.metric("nv_inference_request_success")
    execs_before = triton_server.metric("nv_inference_exec_count")
    barrier, results, errors = threading.Barrier(n), [None] * n, []

    def one(i):
        try:
            barrier.wait(timeout=30)
            results[i] = backend.generate([images[i]], [CONTEXTS[i]])[0]
        except Exception as exc:  # noqa: BLE001 — reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    backend.close()
    assert not errors, errors
    requests = triton_server.metric("nv_inference_request_success") - requests_before
    execs = triton_server.metric("nv_inference_exec_count") - execs_before
    print(f"{n} concurrent requests -> {execs:.0f} model executions")
    assert requests == n
    assert execs < n, f"{n} concurrent requests ran as {execs:.0f} model executions: no dynamic batching"
    for i, (text, probs) in enumerate(results):
        l_text, l_probs = local_backend.generate([images[i]], [CONTEXTS[i]])[0]
        assert text == l_text
        np.testing.assert_allclose(probs, l_probs, rtol=1e-5, atol=1e-6)


def test_unknown_model_and_server_errors_are_clear(triton_server):
    with pytest.raises(TritonUnavailable, match="model 'no_such_model' is not ready"):
        TritonBackend(f"127.0.0.1:{triton_server.http}", model_name="no_such_model", timeout_s=10)
    with TritonBackend(f"127.0.0.1:{triton_server.http}", timeout_s=10) as backend:
        backend.image_size = 16  # a client that disagrees with the server: Triton refuses the shape
        with pytest.raises(TritonInferenceError, match="inference failed"):
            backend.generate([torch.rand(1, 1, 16, 16)], [None])


def test_the_service_serves_reports_through_triton(triton_server, tiny_model_dir, local_backend, tmp_path):
    """`rrg serve --backend triton`: load_model reads the model directory's metadata and runs the model on Triton;
    the API answers as with the in-process backend."""
    from fastapi.testclient import TestClient
    from test_api import TOKENS, A, png_bytes

    from serving.app import create_app
    from serving.backends import ModelSourceError, load_model

    with pytest.raises(ModelSourceError, match="triton_url"):
        load_model(tiny_model_dir, backend="triton")
    with pytest.raises(ModelSourceError, match="unreachable|not live"):
        load_model(tiny_model_dir, backend="triton", triton_url=f"127.0.0.1:{_free_port()}")
    loaded = load_model(tiny_model_dir, backend="triton", triton_url=f"127.0.0.1:{triton_server.http}")
    assert loaded.backend.name == "triton-http" and loaded.version == "test" and loaded.backend.image_size == IMAGE_SIZE
    responses = {}
    for name, model in (("triton", loaded), ("local", dataclasses.replace(loaded, backend=local_backend))):
        app = create_app(model=model, tokens=TOKENS, audit_log=tmp_path / "audit.jsonl")
        with TestClient(app) as client:
            r = client.post("/api/v1/studies/1.2.3.4/report:upload", headers=A,
                            files=[("files", ("frontal.png", png_bytes(), "image/png"))])
            assert r.status_code == 200, r.text
            assert client.get("/readyz").json()["backend"] == model.backend.name
            responses[name] = r.json()
    for key in ("findings", "impression", "recommendations", "requires_radiologist_review", "model_version"):
        assert responses["triton"][key] == responses["local"][key], key
