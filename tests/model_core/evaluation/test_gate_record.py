"""The signed gate decision (model_core.evaluation.gate_record): written from real `gate_decision` output, bound
to the metrics file and the model files, refused when missing, unsigned, tampered with or for other files."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from model_core.chexpert import CRITICAL_FINDINGS
from model_core.config import GateConfig
from model_core.evaluation.gate_record import (
    RECORD_FILE,
    SIGNATURE_FILE,
    GateRecordError,
    model_file_hashes,
    read_verified_record,
    require_promoted,
    verify_gate_record,
    write_gate_record,
)
from model_core.evaluation.gates import gate_decision
from model_core.files import sha256_file
from model_core.signing import Signer, key_id

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
SIGNER = Signer(KEY, key_id(KEY.public_key()), False, "test")
TRUSTED = {SIGNER.key_id: KEY.public_key()}


def _metrics(tp: int) -> dict:
    det = {"positives": 200, "tp": tp, "sensitivity": tp / 200, "sensitivity_ci": (0.985 if tp == 200 else 0.8, 1.0),
           "specificity": 0.9, "specificity_ci": (0.85, 0.95), "threshold": 0.3, "flag_rate": 0.2}
    return {"critical_findings": {f: dict(det) for f in CRITICAL_FINDINGS},
            "hallucination": {"vs_ground_truth": {"rate": {"value": 0.0, "ci_low": 0.0, "ci_high": 0.01}}}}


@pytest.fixture()
def model_dir(tmp_path):
    root = tmp_path / "model"
    (root / "tokenizer").mkdir(parents=True)
    (root / "model.pt").write_bytes(b"weights")
    (root / "detection.json").write_text('{"thresholds": {}}')
    (root / "tokenizer" / "vocab.json").write_text("{}")
    (root / "checkpoints").mkdir()
    (root / "checkpoints" / "last.pt").write_bytes(b"not part of the model")
    return root


def _write(tmp_path, model_dir, tp=200):
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps(_metrics(tp)))
    decision = gate_decision(_metrics(tp), GateConfig())
    write_gate_record(decision, model_dir, tmp_path / "gate", SIGNER, metrics_file=metrics)
    return tmp_path / "gate", decision, metrics


def test_a_passing_record_verifies_and_carries_inputs_thresholds_figures(tmp_path, model_dir):
    record_dir, decision, metrics = _write(tmp_path, model_dir)
    assert verify_gate_record(record_dir, model_dir, TRUSTED) == "promote"
    record = read_verified_record(record_dir, model_dir, TRUSTED)
    files = ("detection.json", "model.pt", "tokenizer/vocab.json")
    assert record["inputs"] == {"metrics_sha256": sha256_file(metrics),
                                "model_files": {name: sha256_file(model_dir / name) for name in files}}
    assert record["checks"] == json.loads(json.dumps(decision["checks"])) and record["config"] == decision["config"]


def test_a_reject_verifies_as_reject_and_require_promoted_refuses_it(tmp_path, model_dir):
    record_dir, decision, _ = _write(tmp_path, model_dir, tp=150)
    assert not decision["passed"] and verify_gate_record(record_dir, model_dir, TRUSTED) == "reject"
    with pytest.raises(GateRecordError, match="signed gate decision is reject"):
        require_promoted(record_dir, model_dir, TRUSTED)


@pytest.mark.parametrize("damage, match", [
    ("no record", f"{RECORD_FILE} is missing"),
    ("no signature", f"{SIGNATURE_FILE} is missing"),
    ("edited record", "does not match the signed content"),
    ("other key", "not among the 1 trusted key"),
    ("weights changed", "changed: model.pt"),
    ("file added", "not recorded: extra.json"),
    ("file removed", "missing: detection.json"),
])
def test_every_damage_is_refused_by_name(tmp_path, model_dir, damage, match):
    record_dir, _, _ = _write(tmp_path, model_dir)
    trusted = TRUSTED
    if damage == "no record":
        (record_dir / RECORD_FILE).unlink()
    elif damage == "no signature":
        (record_dir / SIGNATURE_FILE).unlink()
    elif damage == "edited record":
        text = (record_dir / RECORD_FILE).read_text()
        (record_dir / RECORD_FILE).write_text(text.replace('"verdict": "promote"', '"verdict": "promote" '))
    elif damage == "other key":
        other = Ed25519PrivateKey.generate().public_key()
        trusted = {key_id(other): other}
    elif damage == "weights changed":
        (model_dir / "model.pt").write_bytes(b"other weights")
    elif damage == "file added":
        (model_dir / "extra.json").write_text("{}")
    else:
        (model_dir / "detection.json").unlink()
    with pytest.raises(GateRecordError, match=match):
        verify_gate_record(record_dir, model_dir, trusted)


def test_checkpoints_exports_and_hidden_files_are_not_model_files(model_dir):
    (model_dir / "onnx").mkdir()
    (model_dir / "onnx" / "vision.onnx").write_bytes(b"x")
    (model_dir / ".rrg-write-probe-1").write_text("")
    assert sorted(model_file_hashes(model_dir)) == ["detection.json", "model.pt", "tokenizer/vocab.json"]


def test_a_decision_without_a_consistent_verdict_is_not_written(tmp_path, model_dir):
    metrics = tmp_path / "m.json"
    metrics.write_text("{}")
    with pytest.raises(GateRecordError, match="contradicts itself"):
        write_gate_record({"passed": True, "decision": "reject"}, model_dir, tmp_path / "gate", SIGNER,
                          metrics_file=metrics)
    assert not (tmp_path / "gate" / RECORD_FILE).exists()
