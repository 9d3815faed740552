"""The comparison with the current champion: metric deltas, data hashes, model file hashes and software, read
from the champion's own (verified) packet.json. Only known keys are read, each through a reader; a champion
packet of an older schema simply lacks some items ("not recorded").
"""

from __future__ import annotations

from typing import Mapping

from model_core.chexpert import CRITICAL_FINDINGS
from regulatory.inputs import (
    GIT_COMMIT_RE,
    SHA256_RE,
    UNKNOWN_COMMIT,
    read_created,
    read_formatted,
    read_identifier,
    read_mapping,
    read_number,
)
from regulatory.sections import LOWER_IS_BETTER, NOT_RECORDED, SUMMARY_KEYS

NO_CHAMPION = ("No champion: no version of this model was serving when this packet was built, so there is nothing "
               "to compare against (a first version).")
MODEL_FILE_NAMES = ("model.pt", "model_config.json", "detection.json", "config.json")


def read_model_files(raw, where: str = "model_files") -> dict[str, str] | None:
    """{file name: SHA-256} of the model directory's files (known names only); None when not supplied."""
    if raw is None:
        return None
    r = read_mapping(raw, where)
    return {name: read_formatted(r[name], f"{where}[{name!r}]", SHA256_RE, "not a SHA-256 hex digest").lower()
            for name in MODEL_FILE_NAMES if r.get(name) is not None}


def _get(doc: Mapping, *path):
    for key in path:
        if not isinstance(doc, Mapping) or key not in doc:
            return None
        doc = doc[key]
    return doc


def _hash(value, where: str) -> str | None:
    return None if value is None else read_formatted(value, where, SHA256_RE, "not a SHA-256 hex digest").lower()


def read_champion(raw) -> dict | None:
    """The champion's packet.json reduced to what the comparison and the PCCP verdict use."""
    if raw is None:
        return None
    doc = read_mapping(raw, "champion")
    where = "champion['packet']"
    packet = read_mapping(_get(doc, "packet"), where)
    commit = _get(doc, "versions", "git_commit")
    return {
        "model_version": read_identifier(packet.get("model_version"), f"{where}['model_version']"),
        "run_id": read_identifier(packet.get("run_id"), f"{where}['run_id']"),
        "created": read_created(packet.get("created")),
        "decision": "promote" if _get(doc, "gate", "decision") == "promote" else "reject",
        "summary": {k: read_number(_get(doc, "performance", "summary", k, "value"), f"champion summary {k}", True)
                    for k in SUMMARY_KEYS},
        "critical": {f: {m: read_number(_get(doc, "performance", "critical_findings", f, m), f"champion {f} {m}", True)
                         for m in ("sensitivity", "specificity")} for f in CRITICAL_FINDINGS},
        "data": {k: _hash(_get(doc, "data", k), f"champion['data'][{k!r}]")
                 for k in ("manifest_sha256", "image_digest", "splits_sha256")},
        "model_files": read_model_files(_get(doc, "model_files"), "champion['model_files']") or {},
        "git_commit": commit if commit in (None, UNKNOWN_COMMIT, NOT_RECORDED) else read_formatted(
            commit, "champion['versions']['git_commit']", GIT_COMMIT_RE, "not a git commit hash"),
        "pccp_reference": {
            "labeling_sha256": _hash(_get(doc, "pccp", "labeling_sha256"), "champion['pccp']['labeling_sha256']"),
            "test_studies_sha256": _hash(_get(doc, "pccp", "test_separation", "test_studies_sha256"),
                                         "champion test_studies_sha256")},
    }


def _delta(champion: float | None, candidate: float | None) -> float | None:
    return None if champion is None or candidate is None else round(candidate - champion, 6)


def _known(commit: str | None) -> str | None:
    return None if commit in (None, UNKNOWN_COMMIT, NOT_RECORDED) else commit


def _hash_row(item: str, champion: str | None, candidate: str | None) -> dict:
    changed = None if champion is None or candidate is None else champion != candidate
    return {"item": item, "champion": champion, "candidate": candidate, "changed": changed}


def champion_section(champion: dict | None, perf: dict, data: dict, model_files: dict | None,
                     versions: dict, problem: str | None = None) -> dict:
    """Deltas (candidate - champion) of the summary metrics and critical-finding sensitivity/specificity, and
    which data, model and software hashes changed; {"champion": None, "statement": ...} without a champion or
    when the champion's packet failed verification (`problem`, stated)."""
    if problem is not None:
        return {"champion": None, "verified": False,
                "statement": f"NOT COMPARED: the current champion's packet failed verification, so it is not used. "
                             f"{problem}"}
    if champion is None:
        return {"champion": None, "statement": NO_CHAMPION}
    metrics = []
    for key in SUMMARY_KEYS:
        new, old = perf["summary"][key]["value"], champion["summary"][key]
        delta = _delta(old, new)
        better = None if delta is None or delta == 0 else (delta < 0) == (key in LOWER_IS_BETTER)
        metrics.append({"metric": key, "champion": old, "candidate": new, "delta": delta, "better": better})
    for finding in CRITICAL_FINDINGS:
        for metric in ("sensitivity", "specificity"):
            new, old = perf["critical_findings"][finding][metric], champion["critical"][finding][metric]
            delta = _delta(old, new)
            metrics.append({"metric": f"{finding} {metric}", "champion": old, "candidate": new, "delta": delta,
                            "better": None if delta is None or delta == 0 else delta > 0})
    files = model_files or {}
    return {
        "champion": {k: champion[k] for k in ("model_version", "run_id", "created", "decision")},
        "statement": f"Compared with the champion, version {champion['model_version']} (run {champion['run_id']}).",
        "metrics": metrics,
        "data": [_hash_row(label, champion["data"][key], data[key]) for key, label in (
            ("manifest_sha256", "Manifest"), ("image_digest", "Image digest"), ("splits_sha256", "Split assignment"))],
        "model": [_hash_row(name, champion["model_files"].get(name), files.get(name)) for name in MODEL_FILE_NAMES],
        "software": [_hash_row("Git commit", _known(champion["git_commit"]), _known(versions["git_commit"]))],
    }
