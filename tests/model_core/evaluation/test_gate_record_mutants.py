"""The signed gate record's refusals, each with its exact message, and its file format (issue 12, item 5; the
survivors of benchmarks/mutation_safety.py, module gate_record, over test_gate_record.py): every condition of
`read_verified_record` refused on its own (a mutant turning an `or` into an `and` needs the other half true), a
passing record accepted by `require_promoted` only with its own model files, and the listing of changed files."""

from __future__ import annotations

import json

import pytest

from model_core.evaluation.gate_record import (
    RECORD_FILE,
    SCHEMA,
    SIGNATURE_FILE,
    GateRecordError,
    model_file_hashes,
    read_verified_record,
    require_promoted,
    write_gate_record,
)
from model_core.signing import load_signer, record_bytes

PASS = {"passed": True, "decision": "promote", "reasons": ["all clinical safety checks passed"], "checks": []}


@pytest.fixture()
def model_dir(tmp_path):
    root = tmp_path / "model"
    root.mkdir()
    (root / "model.pt").write_bytes(b"weights")
    return root


def _metrics(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("{}")
    return path


def _signed(directory, record: dict | bytes):
    """A record file signed with the session's key, whatever it holds."""
    directory.mkdir(parents=True, exist_ok=True)
    data = record if isinstance(record, bytes) else (json.dumps(record, sort_keys=True, indent=1) + "\n").encode()
    (directory / RECORD_FILE).write_bytes(data)
    (directory / SIGNATURE_FILE).write_bytes(record_bytes(load_signer().sign(data)))
    return directory


def _valid(**changes) -> dict:
    record = {**PASS, "schema": SCHEMA, "verdict": "promote", "inputs": {"model_files": {"model.pt": "0" * 64}}}
    return {**record, **changes}


def _refusal(call) -> str:
    with pytest.raises(GateRecordError) as err:
        call()
    return str(err.value)


def test_a_passing_record_is_required_with_its_own_model_files(tmp_path, model_dir):
    write_gate_record(PASS, model_dir, tmp_path / "gate", load_signer(), metrics_file=_metrics(tmp_path))
    assert require_promoted(tmp_path / "gate", model_dir)["verdict"] == "promote"
    (model_dir / "model.pt").write_bytes(b"other weights")
    assert _refusal(lambda: require_promoted(tmp_path / "gate", model_dir)) == (
        "the model files do not match the hashes in the signed gate decision (changed: model.pt)")


def test_the_record_file_is_sorted_indented_json_and_nested_folders_are_made(tmp_path, model_dir):
    out = tmp_path / "a" / "b" / "gate"
    path = write_gate_record(PASS, model_dir, out, load_signer(), metrics_file=_metrics(tmp_path))
    text = path.read_text()
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=1) + "\n"
    assert text.startswith('{\n "checks": [],\n "decision": "promote",\n "inputs": {\n  "metrics_sha256": "')
    write_gate_record(PASS, model_dir, out, load_signer(), metrics_file=_metrics(tmp_path))   # the folder exists


@pytest.mark.parametrize("decision, message", [
    ({"passed": "true", "decision": "promote"},
     "the gate decision has no verdict (decision must be promote or reject, passed a bool)"),
    ({"passed": True, "decision": "maybe"},
     "the gate decision has no verdict (decision must be promote or reject, passed a bool)"),
    ({"passed": False, "decision": "promote"}, "the gate decision contradicts itself (decision and passed disagree)"),
])
def test_a_decision_without_a_bool_and_a_verdict_is_not_written(tmp_path, model_dir, decision, message):
    assert _refusal(lambda: write_gate_record(decision, model_dir, tmp_path / "gate", load_signer(),
                                              metrics_file=_metrics(tmp_path))) == message
    assert not (tmp_path / "gate").exists()


@pytest.mark.parametrize("record, message", [
    (b"not json\n", "gate_decision.json is signed but not JSON"),
    (_valid(schema="rrg.gate_decision/0"), f"gate_decision.json is not a gate decision of schema {SCHEMA} with a "
                                           "verdict"),
    (_valid(verdict="maybe"), f"gate_decision.json is not a gate decision of schema {SCHEMA} with a verdict"),
    ([_valid()], f"gate_decision.json is not a gate decision of schema {SCHEMA} with a verdict"),
    (_valid(decision="reject"), "gate_decision.json contradicts itself (verdict, decision and passed disagree)"),
    (_valid(passed=False), "gate_decision.json contradicts itself (verdict, decision and passed disagree)"),
    (_valid(inputs={"model_files": {}}), "gate_decision.json records no model file hashes"),
    (_valid(inputs={"model_files": ["model.pt"]}), "gate_decision.json records no model file hashes"),
    (_valid(inputs={}), "gate_decision.json records no model file hashes"),
])
def test_each_malformed_signed_record_is_refused_by_name(tmp_path, record, message):
    record = json.dumps(record).encode() if isinstance(record, list) else record
    directory = _signed(tmp_path / "gate", record)
    assert _refusal(lambda: read_verified_record(directory, None)) == message


def test_a_malformed_signature_file_is_named(tmp_path):
    directory = _signed(tmp_path / "gate", _valid())
    (directory / SIGNATURE_FILE).write_text("garbage")
    assert _refusal(lambda: read_verified_record(directory, None)) == (
        "the gate decision's signature does not verify: gate_decision.json.sig is not a JSON signature record")


@pytest.mark.parametrize("reasons, shown", [
    (["Fracture: 9/10", "hallucination rate 0.04 >= 0.03"], "Fracture: 9/10; hallucination rate 0.04 >= 0.03"),
    (None, "no reasons recorded"),
    (["x" * 600], "x" * 500),
])
def test_a_reject_names_its_reasons_joined_and_cut_at_500_characters(tmp_path, model_dir, reasons, shown):
    decision = {"passed": False, "decision": "reject", **({"reasons": reasons} if reasons else {})}
    write_gate_record(decision, model_dir, tmp_path / "gate", load_signer(), metrics_file=_metrics(tmp_path))
    assert _refusal(lambda: require_promoted(tmp_path / "gate", model_dir)) == (
        f"the signed gate decision is reject ({shown})")


@pytest.mark.parametrize("changed, listed", [
    (5, "changed: f0.bin, f1.bin, f2.bin, f3.bin, f4.bin"),
    (6, "changed: f0.bin, f1.bin, f2.bin, f3.bin, f4.bin …"),
])
def test_changed_files_are_listed_five_at_most(tmp_path, changed, listed):
    model = tmp_path / "many"
    model.mkdir()
    for i in range(6):
        (model / f"f{i}.bin").write_bytes(b"a")
    write_gate_record(PASS, model, tmp_path / "gate", load_signer(), metrics_file=_metrics(tmp_path))
    for i in range(changed):
        (model / f"f{i}.bin").write_bytes(b"b")
    if changed == 5:
        (model / "f5.bin").unlink()
    (model / "new.bin").write_bytes(b"n")
    missing = "; missing: f5.bin" if changed == 5 else ""
    expected = f"{listed}{missing}; not recorded: new.bin"
    assert _refusal(lambda: require_promoted(tmp_path / "gate", model)) == (
        f"the model files do not match the hashes in the signed gate decision ({expected})")


def test_a_missing_or_empty_model_directory_is_named(tmp_path):
    assert _refusal(lambda: model_file_hashes(tmp_path / "absent")) == "the model directory to hash does not exist"
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    (tmp_path / "empty" / "checkpoints" / "last.pt").write_bytes(b"c")
    (tmp_path / "empty" / ".probe").write_bytes(b"p")
    assert _refusal(lambda: model_file_hashes(tmp_path / "empty")) == "the model directory holds no files to hash"
