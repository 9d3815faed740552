"""Triton Inference Server, client side: `TritonBackend`, the report service's backend over a Triton server.

    backend = TritonBackend("triton.example:8000")                   # or protocol="grpc", "host:8001"
    backend.generate(images, contexts) -> [(text, probs (14,) float32), ...]    # the serving.backends contract

The server side (PyTriton, `python -m serving.triton_server --model DIR`) is `serving/triton_server.py`. The
model's interface on Triton (model name `rrg_report`, version 1, max_batch_size 8, dynamic batching; one study is
one batch row):

    input   images   FP32   [-1, 1, S, S]   one frontal view per study, pixels in [0, 1]; S = the model's size
    input   context  BYTES  [-1, 1]         JSON of the clinical context (an object), or b"" for none
    output  text     BYTES  [-1, 1]         the report, UTF-8
    output  probs    FP32   [-1, 14]        calibrated probabilities, CheXpert order

The client reads S (its `image_size`) and the server's max batch size from the model's metadata and config, so
it needs only the URL. Studies with K != 1 views are rejected (ValueError): the service feeds the model one
frontal view (`LoadedModel.max_views` = 1). See docs/triton.md.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import numpy as np
from google.protobuf.json_format import MessageToDict

from model_core.chexpert import NUM_LABELS

MODEL_NAME = "rrg_report"
PROTOCOLS = ("http", "grpc")


class TritonUnavailable(RuntimeError):
    """The Triton server cannot be reached, is not live, or the model is not ready; the message names the URL."""


class TritonInferenceError(RuntimeError):
    """The server answered an inference request with an error (or with outputs of the wrong shape)."""


def _split_url(url: str) -> tuple[str, bool]:
    """tritonclient wants "host:port" without a scheme; https:// (or grpcs://) turns SSL on."""
    url = url.strip().rstrip("/")
    ssl = url.startswith(("https://", "grpcs://"))
    for scheme in ("http://", "https://", "grpc://", "grpcs://"):
        if url.startswith(scheme):
            url = url[len(scheme):]
    if not url or "/" in url:
        raise ValueError(f"Triton URL must be host:port (optionally with http:// or https://), got {url!r}")
    return url, ssl


def _client_module(protocol: str):
    # Per protocol: tritonclient's http and grpc clients are separate extras (tritonclient[http] / [grpc]).
    try:
        if protocol == "http":
            import tritonclient.http as module
        else:
            import tritonclient.grpc as module
        from tritonclient.utils import InferenceServerException
    except ImportError as exc:
        raise ImportError(f"the Triton backend needs tritonclient[{protocol}] (pip install "
                          f"'tritonclient[http,grpc]'): {exc}") from exc
    return module, InferenceServerException


class TritonBackend:
    """The serving.backends contract over a Triton server's `rrg_report` model (see the module docstring).

    url: "host:port" of Triton's HTTP (protocol="http", default port 8000) or gRPC (protocol="grpc", 8001)
    endpoint; "http://" / "https://" prefixes are accepted. timeout_s: the limit for one inference call (and for
    connecting). The server and the model are checked on construction: TritonUnavailable when either is not
    ready. Safe to call from several threads (one tritonclient client per thread).
    """

    def __init__(self, url: str, model_name: str = MODEL_NAME, protocol: str = "http", timeout_s: float = 120.0,
                 model_version: str = ""):
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.url, self._ssl = _split_url(url)
        self.model_name, self.model_version, self.protocol = model_name, str(model_version), protocol
        self.timeout_s = float(timeout_s)
        self.name = f"triton-{protocol}"
        self._module, self._server_error = _client_module(protocol)
        self._local = threading.local()
        self._clients: list[Any] = []
        self._lock = threading.Lock()
        self.image_size, self.max_batch_size = self._read_model()

    # ------------------------------------------------------------------ connection

    def _where(self) -> str:
        return f"Triton at {self.protocol}{'s' if self._ssl else ''}://{self.url}"

    def _client(self):
        client = getattr(self._local, "client", None)
        if client is None:
            if self.protocol == "http":
                client = self._module.InferenceServerClient(
                    self.url, ssl=self._ssl, connection_timeout=min(self.timeout_s, 10.0),
                    network_timeout=self.timeout_s)
            else:
                client = self._module.InferenceServerClient(self.url, ssl=self._ssl)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def _call(self, what: str, fn, *args, **kwargs):
        """Run a tritonclient call; connection failures become TritonUnavailable naming the URL."""
        try:
            return fn(*args, **kwargs)
        except self._server_error as exc:
            text = str(exc)
            unreachable = any(s in text.lower() for s in (
                "connect", "unavailable", "refused", "timed out", "timeout", "deadline", "resolve", "socket"))
            if unreachable:
                raise TritonUnavailable(f"{self._where()} is unreachable ({what}): {text}") from None
            raise TritonInferenceError(f"{self._where()}: {what} failed: {text}") from None
        except (OSError, ConnectionError, TimeoutError) as exc:
            raise TritonUnavailable(f"{self._where()} is unreachable ({what}): {type(exc).__name__}: {exc}") from None

    def _read_model(self) -> tuple[int, int]:
        client = self._client()
        if not self._call("server live check", client.is_server_live):
            raise TritonUnavailable(f"{self._where()} is not live")
        if not self._call("model ready check", client.is_model_ready, self.model_name, self.model_version):
            raise TritonUnavailable(f"{self._where()} is live but model {self.model_name!r} is not ready "
                                    f"(not loaded, still loading, or another name)")
        meta = self._call("model metadata", client.get_model_metadata, self.model_name, self.model_version)
        config = self._call("model config", client.get_model_config, self.model_name, self.model_version)
        if self.protocol == "grpc":  # protobuf messages -> the JSON shape of the HTTP API
            meta = MessageToDict(meta, preserving_proto_field_name=True)
            config = MessageToDict(config, preserving_proto_field_name=True).get("config", {})
        inputs = {t["name"]: t for t in meta.get("inputs", [])}
        outputs = {t["name"]: t for t in meta.get("outputs", [])}
        missing = [n for n in ("images", "context") if n not in inputs] + \
                  [n for n in ("text", "probs") if n not in outputs]
        if missing:
            raise TritonInferenceError(f"{self._where()}: model {self.model_name!r} lacks {missing}; it has inputs "
                                       f"{sorted(inputs)} and outputs {sorted(outputs)} (see serving.backends.triton)")
        shape = [int(d) for d in inputs["images"]["shape"]]
        if len(shape) != 4 or shape[1] != 1 or shape[2] != shape[3] or shape[2] <= 0:
            raise TritonInferenceError(f"{self._where()}: input 'images' of {self.model_name!r} has shape {shape}; "
                                       f"expected [-1, 1, S, S]")
        max_batch = int(config.get("max_batch_size", 0) or 0)
        if max_batch < 1:
            raise TritonInferenceError(f"{self._where()}: model {self.model_name!r} has max_batch_size "
                                       f"{max_batch}; the report model needs batching (max_batch_size >= 1)")
        return shape[2], max_batch

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            try:
                client.close()
            except Exception:  # noqa: BLE001 — closing a dead connection is not an error
                pass
        self._local = threading.local()

    def __enter__(self) -> TritonBackend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ inference

    def _prepare(self, images: list, contexts: list[dict | None]) -> tuple[np.ndarray, np.ndarray]:
        if len(images) != len(contexts):
            raise ValueError(f"{len(contexts)} contexts for {len(images)} studies")
        size = self.image_size
        batch = np.empty((len(images), 1, size, size), np.float32)
        for i, img in enumerate(images):
            arr = img.detach().cpu().numpy() if hasattr(img, "detach") else np.asarray(img)
            if arr.ndim == 3:
                arr = arr[None]
            if arr.ndim != 4 or arr.shape[1] != 1:
                raise ValueError(f"study {i}: images must be (K, 1, H, W), got shape {tuple(arr.shape)}")
            if arr.shape[0] != 1:
                raise ValueError(f"study {i}: the Triton backend takes exactly one (frontal) view per study, "
                                 f"got K={arr.shape[0]}")
            if arr.shape[2:] != (size, size):
                raise ValueError(f"study {i}: image is {arr.shape[2]}x{arr.shape[3]}, the model on "
                                 f"{self._where()} takes {size}x{size}")
            if not np.isfinite(arr).all():
                raise ValueError(f"study {i}: image has non-finite pixels")
            batch[i] = arr[0]
        ctx = np.empty((len(contexts), 1), dtype=np.object_)
        for i, c in enumerate(contexts):
            if c is not None and not isinstance(c, dict):
                raise ValueError(f"study {i}: context must be a dict or None, got {type(c).__name__}")
            ctx[i, 0] = json.dumps(c).encode("utf-8") if c else b""
        return batch, ctx

    def generate(self, images: list, contexts: list[dict | None]) -> list[tuple[str, np.ndarray]]:
        """Reports for a batch of studies (each (1, 1, S, S) or (1, S, S), in [0, 1]); sent in chunks of at most
        the model's max_batch_size rows."""
        batch, ctx = self._prepare(list(images), list(contexts))
        out: list[tuple[str, np.ndarray]] = []
        for start in range(0, len(batch), self.max_batch_size):
            out.extend(self._infer(batch[start:start + self.max_batch_size], ctx[start:start + self.max_batch_size]))
        return out

    def _infer(self, images: np.ndarray, ctx: np.ndarray) -> list[tuple[str, np.ndarray]]:
        m = self._module
        inputs = [m.InferInput("images", list(images.shape), "FP32"), m.InferInput("context", list(ctx.shape), "BYTES")]
        inputs[0].set_data_from_numpy(images)
        inputs[1].set_data_from_numpy(ctx)
        outputs = [m.InferRequestedOutput("text"), m.InferRequestedOutput("probs")]
        client = self._client()
        if self.protocol == "http":
            result = self._call("inference", client.infer, self.model_name, inputs, model_version=self.model_version,
                                outputs=outputs, timeout=int(self.timeout_s * 1e6))
        else:
            result = self._call("inference", client.infer, self.model_name, inputs, model_version=self.model_version,
                                outputs=outputs, client_timeout=self.timeout_s)
        texts, probs = result.as_numpy("text"), result.as_numpy("probs")
        n = len(images)
        if texts is None or probs is None or texts.reshape(-1).shape != (n,) or probs.shape != (n, NUM_LABELS):
            raise TritonInferenceError(f"{self._where()}: unexpected outputs for {n} studies: text "
                                       f"{None if texts is None else texts.shape}, probs "
                                       f"{None if probs is None else probs.shape}")
        texts = [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in texts.reshape(-1)]
        probs = probs.astype(np.float32, copy=False)
        return [(texts[i], probs[i].copy()) for i in range(n)]
