"""load_model: production serving never exports at startup; the development flag does, saying so at WARNING."""

from __future__ import annotations

import json
import logging
import shutil

import pytest

from serving.backends import ModelSourceError, load_model


@pytest.fixture()
def model_without_export(tiny_model_dir, tmp_path):
    """A copy of the tiny model directory with no ONNX export beside it."""
    return shutil.copytree(tiny_model_dir, tmp_path / "model", ignore=shutil.ignore_patterns("onnx"))


@pytest.mark.parametrize("backend", ["auto", "onnxruntime"])
def test_a_model_without_export_is_refused_with_the_fix(model_without_export, backend):
    with pytest.raises(ModelSourceError) as err:
        load_model(model_without_export, backend=backend)
    message = str(err.value)
    assert "no usable ONNX export" in message and "does not export at startup" in message
    assert "export step" in message and "--allow-export-at-startup" in message and "--backend torch" in message
    assert not (model_without_export / "onnx").exists()


def test_the_torch_backend_needs_no_export(model_without_export):
    assert load_model(model_without_export, backend="torch").backend.name == "torch"


def test_the_development_flag_exports_at_startup_with_a_warning(model_without_export, caplog):
    with caplog.at_level(logging.WARNING, logger="serving.backends"):
        loaded = load_model(model_without_export, allow_export_at_startup=True)
    assert loaded.backend.name == "onnxruntime-fp32" and (model_without_export / "onnx" / "decoder.onnx").is_file()
    assert any(r.levelno == logging.WARNING and "development only" in r.getMessage() for r in caplog.records)
    # Calibrated on the training run's data (the model's config.json `data`: here the default, embedded data).
    report = json.loads((model_without_export / "onnx" / "export_report.json").read_text())
    assert report["quantization"]["batch_invariant"]
    again = load_model(model_without_export)       # the export is there now: no flag needed
    assert again.backend.name == "onnxruntime-fp32" and not again.notes
