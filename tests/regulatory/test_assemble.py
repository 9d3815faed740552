"""The packet of a pipeline run: version, creation time and software provenance come from the model card."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess

import pytest
from packet_inputs import CREATED, PROVENANCE, make_gate, make_metrics, read_zip

from model_core.artifacts import METRICS, MODEL_CARD
from regulatory.assemble import build_run_packet


def _run(tmp_path, provenance: dict | None) -> dict:
    """A model directory, evaluation output, gate decision and data lineage as the pipeline steps leave them."""
    model_dir, evaluation_dir, root = tmp_path / "model", tmp_path / "evaluation", tmp_path / "iu_xray"
    for folder in (model_dir, evaluation_dir, root):
        folder.mkdir()
    card = {"version": "0.1.0+544817a", "created": CREATED, "train_studies": 2473, "val_studies": 275}
    if provenance is not None:
        card["provenance"] = provenance
    (model_dir / MODEL_CARD).write_text(json.dumps(card))
    (evaluation_dir / METRICS).write_text(json.dumps(make_metrics()))
    (tmp_path / "decision.json").write_text(json.dumps(make_gate(True)))
    (root / "splits.csv").write_text("uid,split\n1,train\n")
    return {"model_dir": model_dir, "evaluation_dir": evaluation_dir, "decision_path": tmp_path / "decision.json",
            "lineage": {"root": str(root), "manifest_sha256": "a" * 64, "image_digest_sha256": "sha256:" + "b" * 64}}


@pytest.mark.parametrize("recorded", [True, False])
def test_run_packet_takes_versions_from_the_model_card(tmp_path, monkeypatch, recorded):
    def no_sampling(*args, **kwargs):
        raise AssertionError("the packet must not sample the environment it is built in")

    monkeypatch.setattr(subprocess, "run", no_sampling)  # no git call
    monkeypatch.setattr(platform, "python_version", no_sampling)
    run = _run(tmp_path, PROVENANCE if recorded else None)
    path = build_run_packet(run_id="0123abcd" * 4, model_name="rrg-demo", out_dir=tmp_path / "out", **run)
    doc = json.loads(read_zip(path)["packet.json"])
    assert path.name == "510k_packet_rrg-demo_v0.1.0+544817a.zip"
    assert doc["packet"]["created"] == CREATED and doc["packet"]["run_id"] == "0123abcd" * 4
    assert doc["data"]["studies_per_split"] == {"train": 2473, "val": 275, "test": 382}
    assert doc["data"]["splits_sha256"] == hashlib.sha256(b"uid,split\n1,train\n").hexdigest()
    assert "Demner-Fushman" in doc["data"]["citation"]
    versions = doc["versions"]
    if recorded:
        assert versions["recorded"] is True and versions["python"] == PROVENANCE["python"]
        assert versions["git_commit"] == PROVENANCE["git_commit"] and versions["packages"] == PROVENANCE["packages"]
    else:
        assert versions == {"recorded": False, "python": "not recorded", "model_core": "not recorded",
                            "git_commit": "not recorded", "git_dirty": None, "packages": None}
