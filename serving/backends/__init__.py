"""Inference backends of the service, and where the model comes from.

    base.py         the Backend contract, LoadedModel, ModelSourceError, model sources (directory, models:/ URIs)
    torch.py        TorchBackend: the reference path, generate_texts on the torch model
    onnxruntime.py  OrtBackend: ONNX Runtime over the pipeline's export (model_core.runtime), the CPU default
    triton.py       TritonBackend: a model served by a Triton Inference Server (tritonclient)
    loading.py      load_model(source, backend=...): resolve the source and build its backend

The PyTriton server that serves a backend on Triton is `serving.triton_server`.
"""

from serving.backends.base import Backend, LoadedModel, ModelSourceError, resolve_source
from serving.backends.loading import load_model
from serving.backends.onnxruntime import OrtBackend
from serving.backends.torch import TorchBackend

__all__ = ["Backend", "LoadedModel", "ModelSourceError", "OrtBackend", "TorchBackend", "load_model",
           "resolve_source"]
