"""The signed gate decision that travels with the model: `gate_decision.json` + `gate_decision.json.sig`.

Written at gate time (`write_gate_record`), logged to MLflow with the run (artifact `gate/`), and read back by
everything that may put the model in front of patients: `registry.models.promote`, serving's model loading and
`rrg serve`. Each of them calls `verify_gate_record`, which refuses (GateRecordError) a record that is missing,
not signed by a trusted key, changed after signing, or made for other model files; a verified "reject" is
returned as such and the caller refuses it. Tags and aliases in the registry are never evidence: anyone who can
reach the MLflow server can set them, nobody without the signing key can make this record.

Record (JSON, sorted keys): the `gate_decision` output (passed, decision, reasons, checks = the figures,
review_rate, config = the thresholds) plus
    schema:  "rrg.gate_decision/1"
    verdict: "promote" | "reject"
    inputs:  {"metrics_sha256": SHA-256 of the metrics file the gate read,
              "model_files": {relative path: SHA-256} of every file of the model directory}
The model files are every regular file under the model directory except training checkpoints (`checkpoints/`),
an ONNX export made beside it (`onnx/`), a gate record kept inside it (`gate/`) and hidden files (write probes).
The detached signature (`model_core.signing`) covers the record file's exact bytes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from model_core.files import atomic_write_bytes, sha256_file
from model_core.signing import SignatureError, Signer, read_record, record_bytes, trusted_public_keys, verify

SCHEMA = "rrg.gate_decision/1"
RECORD_FILE = "gate_decision.json"
SIGNATURE_FILE = "gate_decision.json.sig"
RECORD_DIR = "gate"           # the run artifact path in MLflow, and the record's place inside a model directory
VERDICTS = ("promote", "reject")
# Sub-directories of a model directory that are not part of the model the gate judged (see module docstring).
_NOT_MODEL = ("checkpoints", "onnx", RECORD_DIR)


class GateRecordError(ValueError):
    """The signed gate decision is missing, malformed, untrusted, tampered with or made for other model files.
    The message says which, naming files by their place in the model directory only."""


def model_file_hashes(model_dir: str | os.PathLike) -> dict[str, str]:
    """{relative posix path: SHA-256} of the files that make up the model directory (see module docstring)."""
    root = Path(model_dir)
    if not root.is_dir():
        raise GateRecordError("the model directory to hash does not exist")
    hashes = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if rel.parts[0] in _NOT_MODEL or any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        hashes[rel.as_posix()] = sha256_file(path)
    if not hashes:
        raise GateRecordError("the model directory holds no files to hash")
    return hashes


def write_gate_record(decision: Mapping, model_dir: str | os.PathLike, out_dir: str | os.PathLike,
                      signer: Signer, *, metrics_file: str | os.PathLike) -> Path:
    """Write `gate_decision.json` and its detached signature into out_dir; returns the record's path.

    decision: `model_core.evaluation.gates.gate_decision` output. metrics_file: the metrics it was computed from.
    Both files are written atomically, the signature last (a record without one is refused, never trusted).
    """
    if decision.get("decision") not in VERDICTS or not isinstance(decision.get("passed"), bool):
        raise GateRecordError("the gate decision has no verdict (decision must be promote or reject, passed a bool)")
    if (decision["decision"] == "promote") != decision["passed"]:
        raise GateRecordError("the gate decision contradicts itself (decision and passed disagree)")
    record = {**decision, "schema": SCHEMA, "verdict": decision["decision"],
              "inputs": {"metrics_sha256": sha256_file(metrics_file), "model_files": model_file_hashes(model_dir)}}
    data = (json.dumps(record, sort_keys=True, indent=1) + "\n").encode("utf-8")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / SIGNATURE_FILE).unlink(missing_ok=True)   # an old signature never vouches for a new record
    atomic_write_bytes(out / RECORD_FILE, data)
    atomic_write_bytes(out / SIGNATURE_FILE, record_bytes(signer.sign(data)))
    return out / RECORD_FILE


def read_verified_record(record_dir: str | os.PathLike, model_dir: str | os.PathLike | None,
                         trusted_keys=None) -> dict:
    """The record in record_dir once its signature verifies and (with model_dir) the model files match.

    trusted_keys: {key_id: public key}, an iterable of keys, or None for `model_core.signing.trusted_public_keys()`
    ($RRG_TRUSTED_KEYS, else the local development key). model_dir=None skips the file check (callers that do
    not hold the model); every consumer that loads or promotes a model passes it.
    """
    directory = Path(record_dir)
    record_path, sig_path = directory / RECORD_FILE, directory / SIGNATURE_FILE
    if not record_path.is_file():
        raise GateRecordError(f"no signed gate decision: {RECORD_FILE} is missing")
    if not sig_path.is_file():
        raise GateRecordError(f"the gate decision is not signed: {SIGNATURE_FILE} is missing")
    data = record_path.read_bytes()
    keys = trusted_public_keys() if trusted_keys is None else trusted_keys
    try:
        verify(data, read_record(sig_path.read_bytes(), SIGNATURE_FILE), keys)
    except SignatureError as exc:
        raise GateRecordError(f"the gate decision's signature does not verify: {exc}") from None
    try:
        record = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise GateRecordError(f"{RECORD_FILE} is signed but not JSON") from None
    if not isinstance(record, dict) or record.get("schema") != SCHEMA or record.get("verdict") not in VERDICTS:
        raise GateRecordError(f"{RECORD_FILE} is not a gate decision of schema {SCHEMA} with a verdict")
    verdict = record["verdict"]
    if (verdict == "promote") != (record.get("passed") is True) or record.get("decision") != verdict:
        raise GateRecordError(f"{RECORD_FILE} contradicts itself (verdict, decision and passed disagree)")
    expected = (record.get("inputs") or {}).get("model_files")
    if not isinstance(expected, dict) or not expected:
        raise GateRecordError(f"{RECORD_FILE} records no model file hashes")
    if model_dir is not None:
        _check_model_files(expected, model_file_hashes(model_dir))
    return record


def verify_gate_record(record_dir: str | os.PathLike, model_dir: str | os.PathLike | None,
                       trusted_keys=None) -> str:
    """The verified verdict, "promote" or "reject" (GateRecordError when missing, invalid, tampered with or made
    for other model files). A "reject" is returned, not raised: the caller refuses it in its own words."""
    return read_verified_record(record_dir, model_dir, trusted_keys)["verdict"]


def require_promoted(record_dir: str | os.PathLike, model_dir: str | os.PathLike | None,
                     trusted_keys=None) -> dict:
    """The verified record of a model that passed the gates; GateRecordError for everything else, a verified
    "reject" included (the message then lists the gate's reasons: figures and thresholds, no input data)."""
    record = read_verified_record(record_dir, model_dir, trusted_keys)
    if record["verdict"] != "promote":
        reasons = "; ".join(str(r) for r in record.get("reasons", []))[:500]
        raise GateRecordError(f"the signed gate decision is reject ({reasons or 'no reasons recorded'})")
    return record


def _check_model_files(expected: dict, actual: dict) -> None:
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    changed = sorted(k for k in set(expected) & set(actual) if expected[k] != actual[k])
    if missing or extra or changed:
        parts = [f"{label}: {', '.join(names[:5])}{' …' if len(names) > 5 else ''}"
                 for label, names in (("changed", changed), ("missing", missing), ("not recorded", extra)) if names]
        raise GateRecordError("the model files do not match the hashes in the signed gate decision ("
                              + "; ".join(parts) + ")")
