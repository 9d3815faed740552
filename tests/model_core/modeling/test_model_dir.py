"""model_core.modeling.model_dir: the one writer and reader of a model directory."""

import json
import os
from pathlib import Path

import pytest
import torch

from model_core.artifacts import DETECTION, HISTORY, MODEL_CARD, MODEL_DIR_FILES, RUN_CONFIG
from model_core.modeling.model_dir import STAGING_DIR, load_detection, load_model_dir, save_model_dir

CARD = {"name": "tiny", "version": "0.1.0+abc1234", "provenance": {"git_commit": "abc1234"}}
DETECTION_DOC = {"temperature": 1.5, "thresholds": {"Pneumothorax": 0.2}}


def test_save_then_load_round_trip(tiny_model, tmp_path):
    tiny_model.eval()
    (tmp_path / "checkpoints").mkdir()          # what training leaves beside the model: kept
    out = save_model_dir(tiny_model, tmp_path, card=CARD, run_config={"generation": {"num_beams": 2}},
                         detection=DETECTION_DOC, history={"stage1": []})
    assert out == tmp_path
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {*MODEL_DIR_FILES, DETECTION, HISTORY, RUN_CONFIG, "checkpoints"}
    assert not (tmp_path / STAGING_DIR).exists()
    assert json.loads((tmp_path / MODEL_CARD).read_text()) == CARD
    model, detection, saved = load_model_dir(tmp_path)
    assert detection == DETECTION_DOC and saved == {"generation": {"num_beams": 2}}
    images = torch.rand(1, 1, 32, 32)
    assert torch.equal(model(images=images).label_logits, tiny_model(images=images).label_logits)


def test_the_model_card_is_moved_in_last(tiny_model, tmp_path, monkeypatch):
    moved, replace = [], os.replace

    def recording_replace(src, dst):
        moved.append(Path(dst).name)
        replace(src, dst)

    monkeypatch.setattr(os, "replace", recording_replace)
    save_model_dir(tiny_model, tmp_path, card=CARD, run_config={}, detection=DETECTION_DOC)
    assert moved[-1] == MODEL_CARD and HISTORY not in moved   # history=None: not written


def test_a_directory_without_a_model_card_is_not_a_model(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)        # every part but the card: an interrupted write
    with pytest.raises(FileNotFoundError, match=f"no {MODEL_CARD}"):
        load_model_dir(tmp_path)


def test_detection_defaults_when_absent(tmp_path):
    detection = load_detection(tmp_path)
    assert detection["temperature"] == 1.0 and set(detection["thresholds"].values()) == {0.5}
