"""ONNX export (seed §3.8) of a tiny model: parity with torch, INT8, fallback exporter, TensorRT skip, bad input."""

import importlib.util
import json
import logging
import os

import numpy as np
import pytest
import torch
from tiny_models import tiny_model_config  # noqa: E402

from model_core.config import GenerationConfig  # noqa: E402
from model_core.export import onnx_export as export_mod  # noqa: E402
from model_core.export.onnx_export import (
    TENSORRT_SKIPPED,
    ExportError,
    OrtReportGenerator,
    build_tensorrt_engine,
    check_parity,
    export_onnx,
)
from model_core.modeling.generation import generate_texts  # noqa: E402

GEN = GenerationConfig(num_beams=3, max_new_tokens=10)
CONTEXTS = [{"age": 70, "sex": "M", "indication": "XXXX chest pain"}, None]


def save_model_dir(model, path):
    """A directory `load_model_dir` accepts: save_pretrained plus the files `rrg train` adds."""
    model.save_pretrained(path)
    (path / "model_card.json").write_text("{}")
    (path / "detection.json").write_text(json.dumps({"temperature": 1.0, "thresholds": {}}))
    return path


@pytest.fixture(scope="session")
def exported(tmp_path_factory, tiny_tokenizer):
    """(model_dir, export_dir, report) of the tiny model, exported once per test run.

    Under pytest-xdist the workers share the run's base directory and take turns on a file lock, so a
    2-worker run exports once instead of once per worker.
    """
    from filelock import FileLock

    from model_core.modeling.model import RadiologyMultimodalModel

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent          # this run's directory, common to all workers (popen-gw0, popen-gw1, …)
    root = shared / "export_tiny"
    with FileLock(str(shared / "export_tiny.lock")):
        if not (root / "export" / "export_report.json").is_file():
            torch.manual_seed(0)
            model = RadiologyMultimodalModel(tiny_model_config(), tiny_tokenizer).eval()
            save_model_dir(model, root / "model")
            export_onnx(root / "model", root / "export", gen=GEN, n_check=2, latency=False)
    return root / "model", root / "export", json.loads((root / "export" / "export_report.json").read_text())


@pytest.fixture(scope="module")
def model_dir(exported):
    return exported[0]


@pytest.fixture(scope="module")
def torch_model(model_dir):
    from model_core.modeling.model_dir import load_model_dir

    return load_model_dir(model_dir)[0]


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
    # Nothing half-written left beside the output (staging directories start with a dot).
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []


def test_fp32_parity_with_torch(exported):
    parity = exported[2]["parity"]
    assert parity["vision_visual_tokens_max_abs_diff"] < 1e-4
    assert parity["vision_label_logits_max_abs_diff"] < 1e-4
    assert parity["fp32"]["prompt_logits_max_abs_diff"] < 1e-4
    assert parity["fp32"]["first_step_logits_max_abs_diff"] < 1e-4
    assert parity["fp32"]["greedy_texts_identical"]
    # The numpy beam search follows transformers' candidate rules, so it finds the same texts.
    assert parity["fp32"]["beam_texts_identical"]
    assert parity["fp32_ok"]
    assert np.isfinite(parity["int8"]["first_step_logits_max_abs_diff"])
    assert 0.0 <= parity["int8"]["greedy_identical_share"] <= 1.0


def test_multiview_batch_matches_torch(exported, torch_model):
    """Two views per study, left-padded prompts of different lengths, the XX ban: greedy and beam."""
    torch.manual_seed(1)
    images = torch.rand(2, 2, 1, 32, 32)
    engine = OrtReportGenerator(exported[1], gen=GEN)
    for beams in (1, 3):
        ref_texts, ref_logits = generate_texts(torch_model, images, CONTEXTS, GenerationConfig(
            num_beams=beams, max_new_tokens=GEN.max_new_tokens))
        texts, logits = engine.generate(images.numpy(), CONTEXTS, num_beams=beams)
        assert texts == ref_texts
        assert np.abs(logits - ref_logits.numpy()).max() < 1e-4
        assert all("XX" not in t for t in texts)


def test_int8_decoder_is_calibrated_and_batch_invariant(exported, tmp_path, monkeypatch, caplog):
    """Static INT8 (scales from training studies): a study's text is the same alone and in a batch. Without
    calibration studies the export falls back to dynamic INT8, says so, and records it."""
    quant = exported[2]["quantization"]
    assert quant["batch_invariant"] and "quantize_static" in quant["method"] and quant["calibration_feeds"] > 0
    engine = OrtReportGenerator(exported[1], precision="int8", gen=GEN)
    images = np.random.default_rng(4).random((6, 1, 1, 32, 32), dtype=np.float32)
    together = engine.generate(images)
    alone = [engine.generate(images[i:i + 1]) for i in range(6)]
    assert together[0] == [a[0][0] for a in alone]
    from model_core.data.manifest import DataError

    def no_data(*args, **kwargs):
        raise DataError("manifest not found")

    monkeypatch.setattr(export_mod, "_test_studies", no_data)
    with caplog.at_level(logging.WARNING, logger="model_core.export.onnx_export"):
        assert export_mod._calibration(exported[1], 32, 4) is None
    assert "quantized dynamically" in caplog.text
    info = export_mod.quantize_decoder(exported[1] / "decoder.onnx", tmp_path / "dynamic.onnx", None)
    assert not info["batch_invariant"] and "dynamic" in info["method"] and (tmp_path / "dynamic.onnx").is_file()


def test_int8_decoder_runs(exported):
    engine = OrtReportGenerator(exported[1], precision="int8", gen=GEN)
    images = np.random.default_rng(0).random((2, 1, 1, 32, 32), dtype=np.float32)
    for beams in (1, 2):
        texts, logits = engine.generate(images, CONTEXTS, num_beams=beams)
        assert len(texts) == 2 and logits.shape == (2, 14) and all(isinstance(t, str) for t in texts)


class _EarlyStopping:
    """Mixin: study i of a batch ends after about 2 + 3·i tokens (EOS becomes near-certain), so the studies of
    a batch end at different lengths; `rows` records how many rows each decoder call ran."""

    def _process(self, tokens, scores):
        scores = super()._process(tokens, scores)
        if tokens.shape[1] == 0:
            self.study = np.arange(scores.shape[0]) // self.gen.num_beams   # rows b·nb … b·nb+nb-1: study b
        scores[tokens.shape[1] >= 2 + 3 * self.study, self.eos] = 0.0
        return scores

    def _reorder_cache(self, past, rows):
        self.study = self.study[rows]
        return super()._reorder_cache(past, rows)

    def step(self, embeds, mask, positions, past):
        self.rows.append(embeds.shape[0])
        return super().step(embeds, mask, positions, past)


@pytest.mark.parametrize("fast", [False, True], ids=["reference", "serving"])
def test_done_studies_leave_the_batch_without_changing_any_text(exported, fast):
    from serving.backends import _fast_generator_class

    base = _fast_generator_class() if fast else OrtReportGenerator
    engine = type("Engine", (_EarlyStopping, base), {})(exported[1], gen=GenerationConfig(num_beams=3,
                                                                                       max_new_tokens=24))
    images = np.random.default_rng(3).random((5, 1, 1, 32, 32), dtype=np.float32)
    results = {}
    for compact in (False, True):
        engine.compact_done, engine.rows = compact, []
        results[compact] = (engine.generate(images)[0], engine.rows)
    (kept, kept_rows), (compacted, compacted_rows) = results[False], results[True]
    assert compacted == kept
    lengths = [len(engine.tokenizer(t)["input_ids"]) for t in kept]
    assert len(set(lengths)) > 1, "the studies should end at different lengths for this test to mean anything"
    # Without compaction every step runs 5 studies × 3 beams; with it, the rows shrink as studies finish.
    assert set(kept_rows[1:]) == {15}
    assert compacted_rows[1] == 15 and compacted_rows[-1] < 15 and all(r % 3 == 0 for r in compacted_rows[1:])
    assert sum(compacted_rows) < sum(kept_rows)


def test_generator_rejects_bad_input(exported, tmp_path):
    engine = OrtReportGenerator(exported[1], gen=GEN)
    with pytest.raises(ValueError, match="32×32"):
        engine.generate(np.zeros((1, 1, 1, 16, 16), np.float32))
    with pytest.raises(ValueError, match="single-channel"):
        engine.generate(np.zeros((1, 1, 3, 32, 32), np.float32))
    with pytest.raises(ValueError, match="clinical contexts"):
        engine.generate(np.zeros((2, 1, 1, 32, 32), np.float32), [None])
    with pytest.raises(ValueError, match="precision"):
        OrtReportGenerator(exported[1], precision="fp8")
    with pytest.raises(ExportError, match="not an export directory"):
        OrtReportGenerator(tmp_path)
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(ValueError, match="not available"):
            OrtReportGenerator(exported[1], provider="CUDAExecutionProvider")
        assert OrtReportGenerator(exported[1], provider="auto").provider == "CPUExecutionProvider"


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_tensorrt_is_skipped_without_tensorrt(exported):
    assert build_tensorrt_engine(exported[1] / "vision.onnx") == {"tensorrt": TENSORRT_SKIPPED}
    assert exported[2]["tensorrt"] == TENSORRT_SKIPPED


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

    monkeypatch.setattr(export_mod, "_export_dynamo", broken)
    out = tmp_path / "export"
    with caplog.at_level(logging.INFO, logger="model_core.export.onnx_export"):
        report = export_onnx(model_dir, out, quantize=False, check=False)
    assert report["exporter"] == {"vision": "torchscript", "decoder": "torchscript"}
    assert "falling back to the TorchScript exporter" in caplog.text
    assert not (out / "decoder.int8.onnx").exists()

    result = check_parity(model_dir, out, n=1, gen=GEN, latency=True, latency_runs=1)
    assert result["parity"]["fp32"]["first_step_logits_max_abs_diff"] < 1e-4
    assert result["parity"]["fp32"]["greedy_texts_identical"] and "int8" not in result["parity"]
    on_disk = json.loads((out / "export_report.json").read_text())
    assert on_disk["latency"]["beam"]["ort_fp32"]["p50_ms"] > 0 and on_disk["exporter"]["decoder"] == "torchscript"

    # Exporting again over an existing export replaces it whole, leaving no temporary directories.
    (out / "stale.txt").write_text("from an older export")
    export_onnx(model_dir, out, quantize=False, check=False)
    assert not (out / "stale.txt").exists() and (out / "decoder.onnx").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["export"]
