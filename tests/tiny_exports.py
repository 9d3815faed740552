"""The tiny model exported once per test run, shared by tests/model_core/export and tests/model_core/runtime: the
demo's shape in miniature (a frozen tiny DINOv2 built from config over two view slots, frontal and lateral), with
the findings hint (`model_core.modeling.hints`) on.

Their conftest.py files import the fixtures below (pytest picks up fixtures a conftest imports).
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from filelock import FileLock
from tiny_models import tiny_dinov2_config

from model_core.config import DataConfig, GenerationConfig
from model_core.export.step import export_onnx
from model_core.modeling.model import RadiologyMultimodalModel
from model_core.modeling.model_dir import load_model_dir

GEN = GenerationConfig(num_beams=3, max_new_tokens=10)
CONTEXTS = [{"age": 70, "sex": "M", "indication": "XXXX chest pain"}, None]
# The embedded IU X-ray (the default data config): calibration and parity studies, as the pipeline passes cfg.data.
DATA = DataConfig()


def save_model_dir(model, path):
    """A directory `load_model_dir` accepts: save_pretrained plus the files `rrg train` adds."""
    model.save_pretrained(path)
    (path / "model_card.json").write_text(json.dumps({"provenance": {"git_commit": "abc1234", "packages": {}}}))
    (path / "detection.json").write_text(json.dumps({"temperature": 1.0, "thresholds": {}}))
    return path


@pytest.fixture(scope="session")
def exported(tmp_path_factory, tiny_tokenizer):
    """(model_dir, export_dir, report) of the tiny model, exported once per test run with the data config.

    Under pytest-xdist the workers share the run's base directory and take turns on a file lock, so a
    2-worker run exports once instead of once per worker.
    """
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent          # this run's directory, common to all workers (popen-gw0, popen-gw1, …)
    root = shared / "export_tiny"
    with FileLock(str(shared / "export_tiny.lock")):
        if not (root / "export" / "export_report.json").is_file():
            torch.manual_seed(0)
            config = tiny_dinov2_config()
            # The findings hint on, at logit 0 (p 0.5): the untrained head states different findings per study, so
            # every parity test below also checks that ONNX Runtime builds the same hinted prompts as torch.
            config.findings_hint, config.hint_logit_thresholds = True, [0.0] * 14
            # Grounded drafting on too, at the same thresholds: the parity tests compare grounded texts.
            config.grounded_findings, config.grounding_logit_thresholds = True, [0.0] * 14
            model = RadiologyMultimodalModel(config, tiny_tokenizer).eval()
            save_model_dir(model, root / "model")
            export_onnx(root / "model", root / "export", gen=GEN, n_check=2, latency=False, data_cfg=DATA)
    return root / "model", root / "export", json.loads((root / "export" / "export_report.json").read_text())


@pytest.fixture(scope="module")
def model_dir(exported):
    return exported[0]


@pytest.fixture(scope="module")
def torch_model(model_dir):
    return load_model_dir(model_dir)[0]
