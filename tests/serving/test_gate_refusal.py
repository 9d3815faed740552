"""Serving refuses a model without a passing signed gate decision (issue 12): missing, "reject", tampered with,
signed by an untrusted key, or made for other model files; only the logged development flag serves one anyway."""

from __future__ import annotations

import json
import logging
import shutil

import pytest

from model_core.evaluation.gate_record import RECORD_DIR, RECORD_FILE
from rrg.cli import main
from serving.backends import ModelSourceError, load_model


@pytest.fixture()
def model_copy(tiny_model_dir, tmp_path):
    """A copy of the tiny model (with its signed passing decision in gate/), no ONNX export."""
    return shutil.copytree(tiny_model_dir, tmp_path / "model", ignore=shutil.ignore_patterns("onnx"))


def test_a_model_with_a_passing_signed_decision_loads(model_copy):
    loaded = load_model(model_copy, backend="torch")
    assert loaded.gate_status == "signed gate decision verified: promote; model file hashes match"
    assert not loaded.notes


def _refused(model_dir, match, **kwargs):
    with pytest.raises(ModelSourceError, match=match) as err:
        load_model(model_dir, backend="torch", **kwargs)
    assert "--allow-ungated-model" in str(err.value)


def test_a_model_without_a_decision_is_refused(model_copy):
    shutil.rmtree(model_copy / RECORD_DIR)
    _refused(model_copy, "no signed gate decision")


def test_a_signed_reject_is_refused(model_copy, gate_records):
    gate_records.sign(model_copy, model_copy / RECORD_DIR, passed=False)
    _refused(model_copy, r"signed gate decision is reject \(Pneumothorax")


def test_a_decision_edited_after_signing_is_refused(model_copy, gate_records):
    gate_records.sign(model_copy, model_copy / RECORD_DIR, passed=False)
    record = model_copy / RECORD_DIR / RECORD_FILE
    data = json.loads(record.read_text())
    data.update(passed=True, decision="promote", verdict="promote")      # the forger's edit
    record.write_text(json.dumps(data, sort_keys=True, indent=1) + "\n")
    _refused(model_copy, "signature does not verify.*does not match the signed content")


@pytest.mark.parametrize("change", ["weights", "thresholds", "added file", "removed file"])
def test_model_files_changed_after_the_gate_are_refused(model_copy, change):
    if change == "weights":
        (model_copy / "model.pt").write_bytes((model_copy / "model.pt").read_bytes() + b"\0")
    elif change == "thresholds":
        (model_copy / "detection.json").write_text(json.dumps({"temperature": 1.0, "thresholds": {"Fracture": 0.99}}))
    elif change == "added file":
        (model_copy / "tokenizer" / "added_tokens.json").write_text("{}")
    else:
        (model_copy / "history.json").unlink(missing_ok=True) if (model_copy / "history.json").exists() else (
            model_copy / "detection.json").unlink()
    _refused(model_copy, "model files do not match the hashes in the signed gate decision")


def test_a_decision_signed_by_an_untrusted_key_is_refused(model_copy, tmp_path, monkeypatch):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    other = tmp_path / "trusted.pub.pem"
    other.write_bytes(Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    monkeypatch.setenv("RRG_TRUSTED_KEYS", str(other))    # production trust: not the development key
    _refused(model_copy, "not among the 1 trusted key")


def test_the_development_flag_serves_an_ungated_model_with_a_warning(model_copy, caplog):
    shutil.rmtree(model_copy / RECORD_DIR)
    with caplog.at_level(logging.WARNING, logger="serving.backends.loading"):
        loaded = load_model(model_copy, backend="torch", allow_ungated_model=True)
    assert any("WITHOUT a passing signed gate decision" in r.getMessage() for r in caplog.records)
    assert loaded.gate_status.startswith("UNGATED (development only)") and loaded.gate_status in loaded.notes


def test_a_gate_record_elsewhere_is_found_with_gate_record(model_copy, tmp_path):
    shutil.move(str(model_copy / RECORD_DIR), tmp_path / "elsewhere")
    _refused(model_copy, "no signed gate decision")
    assert load_model(model_copy, backend="torch", gate_record=tmp_path / "elsewhere").backend.name == "torch"


def test_rrg_serve_refuses_a_model_directory_without_a_decision(model_copy, tmp_path, monkeypatch, capsys):
    """The README's own example, `rrg serve --model DIR`, on a model the gate never passed: error, exit 2, no port."""
    shutil.rmtree(model_copy / RECORD_DIR)
    monkeypatch.setenv("RRG_API_TOKENS", "writer-token-0123456789:report.write")
    rc = main(["serve", "--model", str(model_copy), "--backend", "torch", "--audit-log", str(tmp_path / "a.jsonl"),
               "--port", "9"])   # port 9 (discard): never opened, the refusal comes first
    err = capsys.readouterr().err
    assert rc == 2 and "error: refusing to serve" in err and "Traceback" not in err
