"""TensorRT: skipped, with a clear status, where tensorrt does not import."""

import importlib.util

import pytest

from model_core.export.tensorrt import TENSORRT_SKIPPED, build_tensorrt_engine


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_tensorrt_is_skipped_without_tensorrt(exported):
    assert build_tensorrt_engine(exported[1] / "vision.onnx") == {"tensorrt": TENSORRT_SKIPPED}
    assert exported[2]["tensorrt"] == TENSORRT_SKIPPED
