"""The SBOM and licence section: the CycloneDX SBOM recorded with the model at training time (`model_core.sbom`),
summarised, with what needs attention before release (source-available, copyleft, non-commercial or undeclared
licences, and the data's licence). The SBOM member of the zip is re-serialised from known fields only.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Mapping

from model_core.sbom import ROLE_PROPERTY
from regulatory.inputs import (
    PACKAGE_NAME_RE,
    SHA256_RE,
    VERSION_RE,
    read_created,
    read_formatted,
    read_mapping,
    read_text,
)

SBOM_MEMBER = "sbom.cdx.json"
PURL_RE = re.compile(r"^pkg:pypi/[a-z0-9][a-z0-9-]{0,99}@[A-Za-z0-9.%!_-]{1,80}$")
EXPRESSION_RE = re.compile(r"^[A-Za-z0-9.+\-() ]{1,300}$")
DATA_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
NOT_RECORDED = ("Not recorded: the model directory holds no SBOM (sbom.cdx.json), so the software the model was "
                "trained with cannot be listed here; the packet does not substitute the environment it is built in.")
REASONS = {
    "busl": "Business Source License (source-available, not open source): production use needs a commercial licence "
            "from the licensor, or a replacement",
    "agpl": "AGPL (network copyleft): offering it over a network obliges releasing the source; legal review",
    "gpl": "GPL (strong copyleft): distributing the device with it may oblige releasing its source; legal review or "
           "replacement",
    "lgpl": "LGPL (weak copyleft): keep it a separately replaceable library; legal review",
    "nc": "non-commercial licence: not usable in a commercial device",
    "unknown": "no licence declared in the package metadata: confirm the licence before release",
}
ALIBI_NOTE = "; the drift monitors (monitoring/) use it, the model does not"
DATA_NC = ("non-commercial, no-derivatives data licence: the bundled data is for non-commercial evaluation only; a "
           "commercial device must be trained and tested on data licensed for that use")


def _licences(raw, where: str) -> list[dict]:
    if raw is None:
        return []
    if isinstance(raw, (str, bytes)) or not isinstance(raw, list):
        raise ValueError(f"{where} must be a list")
    out = []
    for i, entry in enumerate(raw):
        entry = read_mapping(entry, f"{where}[{i}]")
        if "expression" in entry:
            out.append({"expression": read_formatted(entry["expression"], f"{where}[{i}]['expression']",
                                                     EXPRESSION_RE, "not an SPDX licence expression")})
            continue
        lic = read_mapping(entry.get("license"), f"{where}[{i}]['license']")
        key = "id" if "id" in lic else "name"
        out.append({"license": {key: read_text(lic.get(key), f"{where}[{i}]['license'][{key!r}]", 200)}})
    return out


def read_sbom_components(sbom) -> tuple[list[dict], list[dict]]:
    """(libraries, data components) of a CycloneDX SBOM, known fields only, each checked by its format."""
    raw = sbom.get("components")
    if isinstance(raw, (str, bytes)) or not isinstance(raw, list):
        raise ValueError("sbom['components'] must be a list")
    libraries, data = [], []
    for i, comp in enumerate(raw):
        where = f"sbom['components'][{i}]"
        comp = read_mapping(comp, where)
        if comp.get("type") == "data":
            hashes = [h.get("content") for h in comp.get("hashes") or [] if isinstance(h, Mapping)
                      and h.get("alg") == "SHA-256"]
            roles = [p.get("value") for p in comp.get("properties") or [] if isinstance(p, Mapping)
                     and p.get("name") == ROLE_PROPERTY]
            data.append({"name": read_formatted(comp.get("name"), f"{where}['name']", DATA_NAME_RE,
                                                "not a file name"),
                         "sha256": read_formatted(hashes[0] if hashes else None, f"{where}['hashes']", SHA256_RE,
                                                  "not a SHA-256 hex digest") if hashes else None,
                         "roles": [read_formatted(r, f"{where}['properties']", DATA_NAME_RE, "not a role name")
                                   for r in roles]})
            continue
        libraries.append({
            "type": "library",
            "name": read_formatted(comp.get("name"), f"{where}['name']", PACKAGE_NAME_RE, "not a package name"),
            "version": read_formatted(comp.get("version"), f"{where}['version']", VERSION_RE, "not a version"),
            "purl": read_formatted(comp.get("purl"), f"{where}['purl']", PURL_RE, "not a pkg:pypi package URL"),
            "licenses": _licences(comp.get("licenses"), f"{where}['licenses']"),
        })
    return libraries, data


def _term_class(term: str) -> str | None:
    t = term.lower().strip("() ")
    if "busl" in t or "business source" in t:
        return "busl"
    if "agpl" in t or "affero" in t:
        return "agpl"
    if "lgpl" in t or "lesser general public" in t:
        return "lgpl"
    if re.search(r"(?<![a-z])gpl(?![a-z])|general public license", t):
        return "gpl"
    if re.search(r"(?<![a-z])nc(?![a-z])|non-?commercial", t):
        return "nc"
    if "proprietary" in t:
        return "unknown"
    return None  # note: SPDX "BSL-1.0" is the permissive Boost licence, not the Business Source License


def licence_class(licenses: list[dict]) -> str | None:
    """The attention class of a component's licences: None when some alternative is unproblematic. Separate
    entries and OR alternatives are choices; AND and WITH terms all apply."""
    if not licenses:
        return "unknown"
    alternatives = []
    for entry in licenses:
        if "expression" in entry:
            alternatives += re.split(r"\s+OR\s+", entry["expression"])
        else:
            alternatives.append(next(iter(entry["license"].values())))
    classes = []
    for alt in alternatives:
        terms = [_term_class(t) for t in re.split(r"\s+(?:AND|WITH)\s+", alt)]
        classes.append(next((c for c in terms if c), None))
    return None if any(c is None for c in classes) else classes[0]


def licence_text(licenses: list[dict]) -> str:
    if not licenses:
        return "not declared"
    return " | ".join(e["expression"] if "expression" in e else next(iter(e["license"].values())) for e in licenses)


def sbom_section(raw, data: dict) -> dict:
    """Summary of the training environment's SBOM and the items that need attention (with the data licence)."""
    attention = []
    if re.search(r"\bNC\b|BY-NC|non-?commercial", data["licence"], re.IGNORECASE):
        attention.append({"component": f"data: {data['dataset']}", "version": "", "licence": data["licence"],
                          "reason": DATA_NC})
    if raw is None:
        return {"recorded": False, "statement": NOT_RECORDED, "attention": attention, "file": None}
    sbom = read_mapping(raw, "sbom")
    if sbom.get("bomFormat") != "CycloneDX":
        raise ValueError("sbom is not a CycloneDX document (bomFormat)")
    libraries, data_components = read_sbom_components(sbom)
    counts = Counter(licence_text(c["licenses"]) for c in libraries)
    for c in libraries:
        cls = licence_class(c["licenses"])
        if cls:
            reason = REASONS[cls] + (ALIBI_NOTE if c["name"].lower() == "alibi-detect" else "")
            attention.append({"component": c["name"], "version": c["version"], "licence": licence_text(c["licenses"]),
                              "reason": reason})
    timestamp = (sbom.get("metadata") or {}).get("timestamp")
    return {
        "recorded": True, "file": SBOM_MEMBER,
        "spec_version": read_formatted(sbom.get("specVersion"), "sbom['specVersion']", VERSION_RE, "not a version"),
        "timestamp": None if timestamp is None else read_created(timestamp),
        "components": len(libraries),
        "licence_counts": [{"licence": k, "components": n} for k, n in sorted(counts.items(),
                                                                              key=lambda kv: (-kv[1], kv[0]))],
        "data_components": data_components,
        "attention": attention,
    }


def sbom_member(raw) -> bytes | None:
    """The SBOM as the packet carries it (CycloneDX 1.5 JSON of the known fields, sorted), None if not recorded."""
    if raw is None:
        return None
    sbom = read_mapping(raw, "sbom")
    libraries, data_components = read_sbom_components(sbom)
    meta = sbom.get("metadata") or {}
    components = [{**c, "bom-ref": c["purl"]} for c in libraries] + [
        {"type": "data", "bom-ref": f"data:{d['name']}", "name": d["name"],
         "hashes": [{"alg": "SHA-256", "content": d["sha256"]}] if d["sha256"] else [],
         "properties": [{"name": ROLE_PROPERTY, "value": r} for r in d["roles"]]} for d in data_components]
    doc = {"bomFormat": "CycloneDX",
           "specVersion": read_formatted(sbom.get("specVersion"), "sbom['specVersion']", VERSION_RE, "not a version"),
           "version": 1,
           "metadata": {"timestamp": None if meta.get("timestamp") is None else read_created(meta["timestamp"]),
                        "properties": [{"name": "rrg:recorded-at", "value": "training"}]},
           "components": components}
    serial = sbom.get("serialNumber")
    if isinstance(serial, str) and re.fullmatch(r"urn:uuid:[0-9a-f-]{36}", serial):
        doc["serialNumber"] = serial
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode("utf-8")
