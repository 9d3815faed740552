"""The export step (ONNX FP32 + INT8, TensorRT where present) on a tiny model: every part written atomically,
the report, fallback exporter, bad input, and what an export without a data config records."""

import importlib.util
import json
import logging

import pytest
from tiny_exports import GEN

from model_core.export import graphs
from model_core.export.parity import check_parity
from model_core.export.sources import SYNTHETIC_SOURCE
from model_core.export.step import export_onnx
from model_core.runtime.session import ExportError


def test_export_writes_every_part_atomically(exported):
    _, out, report = exported
    for name in ("vision.onnx", "decoder.onnx", "decoder.int8.onnx", "embed_tokens.npy", "export_config.json",
                 "export_report.json", "detection.json", "tokenizer/tokenizer.json"):
        assert (out / name).is_file(), name
    assert {"files", "sizes_mb", "exporter", "opset", "quantization", "parity", "versions"} <= set(report)
    expected = "dynamo" if importlib.util.find_spec("onnxscript") else "torchscript"
    assert report["exporter"] == {"vision": expected, "decoder": expected}
    assert report["files"]["decoder.int8.onnx"] < report["files"]["decoder.onnx"]
    meta = json.loads((out / "export_config.json").read_text())
    assert meta["num_layers"] == 2 and meta["num_image_tokens"] == 4 and meta["image_size"] == 32
    assert meta["views"] == 2 and report["parity"]["fp32_ok"]   # frontal + lateral slots, parity on test studies
    # Nothing half-written left beside the output (staging directories start with a dot).
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []


def test_report_versions_are_the_exporting_packages_and_the_training_provenance(exported):
    versions = exported[2]["versions"]
    assert {"torch", "transformers", "numpy", "onnx", "onnxruntime", "onnxscript"} <= set(versions)
    assert versions["provenance"] == {"git_commit": "abc1234", "packages": {}}     # from the model card
    assert all(isinstance(versions[k], str) for k in ("onnx", "onnxruntime", "onnxscript"))


def test_bad_model_and_output_dirs(model_dir, tmp_path):
    with pytest.raises(ExportError, match="not found"):
        export_onnx(tmp_path / "missing", tmp_path / "out")
    not_model = tmp_path / "not_model"
    not_model.mkdir()
    (not_model / "notes.txt").write_text("hello")
    with pytest.raises(ExportError, match="not a model directory"):
        export_onnx(not_model, tmp_path / "out")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(ExportError, match="not writable"):
        export_onnx(model_dir, blocker / "out")
    with pytest.raises(ExportError, match="not a directory"):
        export_onnx(model_dir, blocker)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "not_model"]


def test_fallback_to_torchscript_and_reexport(model_dir, tmp_path, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("dynamo exporter unavailable")

    monkeypatch.setattr(graphs, "_export_dynamo", broken)
    out = tmp_path / "export"
    with caplog.at_level(logging.INFO, logger="model_core.export"):
        report = export_onnx(model_dir, out, quantize=False, check=False)
    assert report["exporter"] == {"vision": "torchscript", "decoder": "torchscript"}
    assert "falling back to the TorchScript exporter" in caplog.text
    assert not (out / "decoder.int8.onnx").exists()

    result = check_parity(model_dir, out, n=1, gen=GEN, latency=True, latency_runs=1)
    assert result["parity"]["fp32"]["first_step_logits_max_abs_diff"] < 1e-4
    assert result["parity"]["fp32"]["greedy_texts_identical"] and "int8" not in result["parity"]
    assert result["parity"]["studies"] == SYNTHETIC_SOURCE          # no data config: the labelled probe
    on_disk = json.loads((out / "export_report.json").read_text())
    assert on_disk["latency"]["beam"]["ort_fp32"]["p50_ms"] > 0 and on_disk["exporter"]["decoder"] == "torchscript"
    assert set(on_disk["latency"]["beam"]["ort_fp32"]) == {"p50_ms", "p95_ms", "n"}

    # Exporting again over an existing export replaces it whole, leaving no temporary directories.
    (out / "stale.txt").write_text("from an older export")
    export_onnx(model_dir, out, quantize=False, check=False)
    assert not (out / "stale.txt").exists() and (out / "decoder.onnx").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["export"]


def test_without_a_data_config_int8_is_dynamic_and_says_why(model_dir, tmp_path, caplog):
    """No data config: never the embedded data behind the caller's back. The INT8 decoder is quantized
    dynamically, with a warning and the reason in the report; parity runs on the labelled synthetic probe."""
    with caplog.at_level(logging.WARNING, logger="model_core.export"):
        report = export_onnx(model_dir, tmp_path / "export", gen=GEN, n_check=2, latency=False)
    quant = report["quantization"]
    assert "dynamic" in quant["method"] and not quant["batch_invariant"]
    assert quant["dynamic_because"] == "no data config given"
    assert "quantized dynamically" in caplog.text
    assert report["parity"]["studies"] == SYNTHETIC_SOURCE and report["parity"]["fp32_ok"]
