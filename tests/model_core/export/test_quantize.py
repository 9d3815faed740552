"""The INT8 decoder: static with calibration studies from the data config (batch-invariant), else dynamic."""

import logging

import numpy as np
from tiny_exports import DATA, GEN

from model_core.data.manifest import DataError
from model_core.export import quantize
from model_core.runtime.ort_generator import OrtReportGenerator


def test_int8_decoder_is_calibrated_and_batch_invariant(exported, tmp_path, monkeypatch, caplog):
    """Static INT8 (scales from training studies): a study's text is the same alone and in a batch. Without
    calibration studies the export falls back to dynamic INT8, says so, and records it."""
    quant = exported[2]["quantization"]
    assert quant["batch_invariant"] and "quantize_static" in quant["method"] and quant["calibration_feeds"] > 0
    assert "dynamic_because" not in quant
    engine = OrtReportGenerator(exported[1], precision="int8", gen=GEN)
    images = np.random.default_rng(4).random((6, 1, 1, 32, 32), dtype=np.float32)
    together = engine.generate(images)
    alone = [engine.generate(images[i:i + 1]) for i in range(6)]
    assert together[0] == [a[0][0] for a in alone]

    def no_data(*args, **kwargs):
        raise DataError("manifest not found")

    monkeypatch.setattr(quantize, "load_studies", no_data)
    with caplog.at_level(logging.WARNING, logger="model_core.export.quantize"):
        feeds, why = quantize.export_calibration(exported[1], DATA, 32, 4)
    assert feeds is None and "DataError" in why and "quantized dynamically" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="model_core.export.quantize"):
        assert quantize.export_calibration(exported[1], None, 32, 4) == (None, "no data config given")
    assert "quantized dynamically" in caplog.text
    info = quantize.quantize_decoder(exported[1] / "decoder.onnx", tmp_path / "dynamic.onnx", None)
    assert not info["batch_invariant"] and "dynamic" in info["method"] and (tmp_path / "dynamic.onnx").is_file()
