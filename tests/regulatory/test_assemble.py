"""The packet of a pipeline run: version, creation time, software provenance and SBOM come from the model directory
(recorded at training; the packet never samples its own environment); the test-set separation is read from the
run's split file and predictions; the champion's packet is verified before it is compared."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from importlib import metadata

import pytest
from packet_inputs import CREATED, PROVENANCE, SBOM, make_gate, make_metrics, read_zip, rewrite_zip

from model_core.artifacts import METRICS, MODEL_CARD, MODEL_WEIGHTS, PREDICTIONS
from model_core.artifacts import SBOM as SBOM_FILE
from model_core.sbom import data_components
from regulatory.assemble import build_run_packet


def _run(tmp_path, provenance: dict | None, sbom: bool = True) -> dict:
    """A model directory, evaluation output, gate decision and data lineage as the pipeline steps leave them."""
    model_dir, evaluation_dir, root = tmp_path / "model", tmp_path / "evaluation", tmp_path / "iu_xray"
    for folder in (model_dir, evaluation_dir, root):
        folder.mkdir()
    card = {"version": "0.1.0+544817a", "created": CREATED, "train_studies": 2473, "val_studies": 275}
    if provenance is not None:
        card["provenance"] = provenance
    (model_dir / MODEL_CARD).write_text(json.dumps(card))
    (model_dir / MODEL_WEIGHTS).write_bytes(b"weights")
    (evaluation_dir / METRICS).write_text(json.dumps(make_metrics()))
    (evaluation_dir / PREDICTIONS).write_text('{"study_id": "2", "generated": "FINDINGS: canary"}\n')
    (tmp_path / "decision.json").write_text(json.dumps(make_gate(True)))
    (root / "splits.csv").write_text("uid,split\n1,train\n2,test\n")
    if sbom:  # as model_core.sbom.write_sbom records it at training: packages and the data files read
        recorded = dict(SBOM, components=SBOM["components"][:6] + data_components(root))
        (model_dir / SBOM_FILE).write_text(json.dumps(recorded))
    return {"model_dir": model_dir, "evaluation_dir": evaluation_dir, "decision_path": tmp_path / "decision.json",
            "lineage": {"root": str(root), "manifest_sha256": "a" * 64, "image_digest_sha256": "sha256:" + "b" * 64}}


@pytest.mark.parametrize("recorded", [True, False])
def test_run_packet_takes_versions_from_the_model_card(tmp_path, monkeypatch, recorded):
    def no_sampling(*args, **kwargs):
        raise AssertionError("the packet must not sample the environment it is built in")

    monkeypatch.setattr(subprocess, "run", no_sampling)  # no git call
    monkeypatch.setattr(platform, "python_version", no_sampling)
    monkeypatch.setattr(metadata, "distributions", no_sampling)  # no SBOM of the packet's own environment
    run = _run(tmp_path, PROVENANCE if recorded else None, sbom=recorded)
    path = build_run_packet(run_id="0123abcd" * 4, model_name="rrg-demo", out_dir=tmp_path / "out", **run)
    doc = json.loads(read_zip(path)["packet.json"])
    assert path.name == "510k_packet_rrg-demo_v0.1.0+544817a.zip"
    assert doc["packet"]["created"] == CREATED and doc["packet"]["run_id"] == "0123abcd" * 4
    assert doc["data"]["studies_per_split"] == {"train": 2473, "val": 275, "test": 382}
    splits_sha = hashlib.sha256(b"uid,split\n1,train\n2,test\n").hexdigest()
    assert doc["data"]["splits_sha256"] == splits_sha
    assert doc["model_files"] == {"model.pt": hashlib.sha256(b"weights").hexdigest()}
    separation = doc["pccp"]["test_separation"]
    assert separation["evaluated_studies"] == 1 and separation["evaluated_in_training_splits"] == 0
    assert separation["split_sha256_at_evaluation"] == splits_sha
    assert separation["split_sha256_at_training"] == (splits_sha if recorded else None)
    assert doc["sbom"]["recorded"] is recorded and ("sbom.cdx.json" in read_zip(path)) is recorded
    assert doc["champion"]["champion"] is None
    assert "Demner-Fushman" in doc["data"]["citation"]
    versions = doc["versions"]
    if recorded:
        assert versions["recorded"] is True and versions["python"] == PROVENANCE["python"]
        assert versions["git_commit"] == PROVENANCE["git_commit"] and versions["packages"] == PROVENANCE["packages"]
    else:
        assert versions == {"recorded": False, "python": "not recorded", "model_core": "not recorded",
                            "git_commit": "not recorded", "git_dirty": None, "packages": None}


def test_run_packet_compares_with_the_verified_champion_packet(tmp_path):
    run = _run(tmp_path, PROVENANCE)
    champion = build_run_packet(run_id="champion-run", model_name="rrg-demo", out_dir=tmp_path / "champion", **run)
    path = build_run_packet(run_id="candidate-run", model_name="rrg-demo", out_dir=tmp_path / "out",
                            champion_packet=champion, **run)
    diff = json.loads(read_zip(path)["packet.json"])["champion"]
    assert diff["champion"]["run_id"] == "champion-run"
    assert {r["item"]: r["changed"] for r in diff["model"]}["model.pt"] is False
    tampered = tmp_path / "tampered.zip"
    packet_json = read_zip(champion)["packet.json"].replace(b'"champion-run"', b'"forged-run"')
    rewrite_zip(champion, tampered, {"packet.json": packet_json})
    path = build_run_packet(run_id="candidate-run", model_name="rrg-demo", out_dir=tmp_path / "out2",
                            champion_packet=tampered, **run)
    doc = json.loads(read_zip(path)["packet.json"])
    assert doc["champion"]["champion"] is None and doc["champion"]["verified"] is False
    assert doc["champion"]["statement"].startswith("NOT COMPARED") and "sha256 mismatch" in doc["champion"]["statement"]
    assert "forged-run" not in read_zip(path)["packet.json"].decode()
    separation = next(c for c in doc["pccp"]["verdict"]["criteria"] if c["criterion"].startswith("Test set"))
    assert separation["status"] == "not verifiable" and doc["pccp"]["verdict"]["within"] is False
