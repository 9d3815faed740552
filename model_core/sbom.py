"""The software bill of materials of the environment a model was trained in (CycloneDX 1.5 JSON), recorded once.

The trainer calls `write_sbom(model_dir, cfg.data)` at training time; everything downstream (the regulatory
packet) reads `<model_dir>/sbom.cdx.json` and never samples the environment it runs in, like
`model_core.provenance`. Offline: names, versions and licences come from the installed distributions'
metadata (`importlib.metadata`); the data files training read (the manifest and the split assignment) are
recorded as CycloneDX `data` components with their SHA-256, so a later reader can check that the split it
evaluates on is the one training saw.

Licences, in order of trust: a PEP 639 `License-Expression`; a `License` field naming a known licence (its first
line); the trove classifiers; otherwise none (a reader reports it as unknown). Names are mapped to SPDX ids where
unambiguous (note: SPDX `BSL-1.0` is the permissive Boost licence; the Business Source License is `BUSL-1.1`).
"""

from __future__ import annotations

import json
import os
import platform
import re
import time
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

from model_core import __version__
from model_core.artifacts import SBOM
from model_core.config import resolve_path
from model_core.files import atomic_write_text, sha256_file

SPEC_VERSION = "1.5"
PROJECT = "radiology-report-generator"
ROLE_PROPERTY = "rrg:role"
MANIFEST_ROLE, SPLITS_ROLE = "manifest", "split-assignment"
SPLITS_FILE = "splits.csv"   # the split assignment beside the manifest (model_core.data.manifest.study_splits)

# Lower-cased licence names (License field first lines, trove classifier leaves) → SPDX ids.
_SPDX = {
    "mit": "MIT", "mit license": "MIT", "mit-0": "MIT-0",
    "apache": "Apache-2.0", "apache 2": "Apache-2.0", "apache 2.0": "Apache-2.0", "apache-2.0": "Apache-2.0",
    "apache 2.0 license": "Apache-2.0", "apache license 2.0": "Apache-2.0", "apache license, version 2.0":
    "Apache-2.0", "apache license version 2.0": "Apache-2.0", "apache software license": "Apache-2.0",
    "apache software license 2.0": "Apache-2.0",
    "bsd-2-clause": "BSD-2-Clause", "2-clause bsd": "BSD-2-Clause", "bsd 2-clause license": "BSD-2-Clause",
    "freebsd": "BSD-2-Clause", "bsd-3-clause": "BSD-3-Clause", "3-clause bsd license": "BSD-3-Clause",
    "new bsd license": "BSD-3-Clause", "isc": "ISC", "isc license": "ISC", "isc license (iscl)": "ISC",
    "mpl-2.0": "MPL-2.0", "mozilla public license 2.0 (mpl 2.0)": "MPL-2.0",
    "psf-2.0": "PSF-2.0", "psfl": "PSF-2.0", "python software foundation license": "PSF-2.0",
    "hpnd": "HPND", "historical permission notice and disclaimer (hpnd)": "HPND",
    "zope public license": "ZPL-2.1", "the unlicense (unlicense)": "Unlicense",
    "business source license 1.1": "BUSL-1.1",
    "gpl v3.0": "GPL-3.0-only", "gplv3": "GPL-3.0-only", "gnu general public license v3 (gplv3)": "GPL-3.0-only",
    "gnu general public license v2 (gplv2)": "GPL-2.0-only",
    "gnu general public license v3 or later (gplv3+)": "GPL-3.0-or-later",
    "gnu affero general public license v3": "AGPL-3.0-only",
    "gnu lesser general public license v3 (lgplv3)": "LGPL-3.0-only",
    "gnu lesser general public license v2 or later (lgplv2+)": "LGPL-2.0-or-later",
}
_NOT_A_LICENCE = {"", "unknown", "license", "licence", "dual license", "other", "osi approved", "see license",
                  "see license file"}
_SPDX_EXPRESSION = re.compile(r"^[A-Za-z0-9.+\-]+( (AND|OR|WITH) [A-Za-z0-9.+\-]+)*$")


def _normalise(name: str) -> str:
    """PEP 503 name: lower case, runs of - _ . as one -."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _purl(name: str, version: str) -> str:
    return f"pkg:pypi/{_normalise(name)}@{version.replace('+', '%2B')}"


def _licence_entry(text: str) -> dict | None:
    spdx = _SPDX.get(text.lower())
    if spdx:
        return {"license": {"id": spdx}}
    if text.lower() in _NOT_A_LICENCE or text.lower().startswith("copyright") or len(text) > 80:
        return None
    return {"license": {"name": text}}


def distribution_licences(meta) -> list[dict]:
    """CycloneDX `licenses` of one distribution's metadata (empty: none declared)."""
    expression = (meta.get("License-Expression") or "").strip()
    if expression:
        return [{"expression": expression}]
    first_line = (meta.get("License") or "").strip().split("\n", 1)[0].strip()
    if first_line.lower() in _SPDX:
        return [{"license": {"id": _SPDX[first_line.lower()]}}]
    if _SPDX_EXPRESSION.match(first_line) and " " in first_line and first_line.lower() not in _NOT_A_LICENCE:
        return [{"expression": first_line}]   # e.g. "MIT OR Apache-2.0"
    classifiers = [c.split(" :: ")[-1] for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    entries = [e for e in (_licence_entry(c) for c in classifiers) if e]
    if entries:
        return entries
    entry = _licence_entry(first_line)
    return [entry] if entry else []


def _library_components() -> list[dict]:
    seen: dict[str, dict] = {}
    for dist in metadata.distributions():
        name, version = dist.metadata.get("Name"), dist.version
        if not name or not version or _normalise(name) in seen or _normalise(name) == PROJECT:
            continue
        purl = _purl(name, version)
        seen[_normalise(name)] = {"type": "library", "bom-ref": purl, "name": name, "version": version,
                                  "purl": purl, "licenses": distribution_licences(dist.metadata)}
    return [seen[key] for key in sorted(seen)]


def _data_component(path: Path, roles: list[str]) -> dict:
    digest = sha256_file(path)
    return {"type": "data", "bom-ref": f"data:{path.name}:{digest[:16]}", "name": path.name,
            "hashes": [{"alg": "SHA-256", "content": digest}],
            "properties": [{"name": ROLE_PROPERTY, "value": role} for role in roles]}


def data_components(data_root: str | os.PathLike, manifest: str | os.PathLike | None = None) -> list[dict]:
    """The manifest and the split assignment training reads: `<root>/splits.csv` when it exists, else the
    manifest's own `split` column (the rule of `model_core.data.manifest.study_splits`)."""
    root = resolve_path(data_root)
    manifest_path = resolve_path(manifest) if manifest else root / "manifest.csv"
    splits = root / SPLITS_FILE
    out = []
    if manifest_path.is_file():
        out.append(_data_component(manifest_path, [MANIFEST_ROLE] + ([] if splits.is_file() else [SPLITS_ROLE])))
    if splits.is_file():
        out.append(_data_component(splits, [SPLITS_ROLE]))
    return out


def environment_sbom(data_cfg: Any = None) -> dict:
    """CycloneDX 1.5 JSON (as a dict) of the running environment; `data_cfg` (a `DataConfig`: `root`,
    `manifest`) adds the data files training reads. The serial number is derived from the content."""
    components = _library_components()
    if data_cfg is not None:
        components += data_components(data_cfg.root, getattr(data_cfg, "manifest", None))
    digest = json.dumps(components, sort_keys=True)
    return {
        "bomFormat": "CycloneDX", "specVersion": SPEC_VERSION,
        "serialNumber": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'rrg-sbom:' + digest)}", "version": 1,
        "metadata": {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "lifecycles": [{"phase": "build"}],
            "tools": {"components": [{"type": "application", "name": "model_core.sbom", "version": __version__}]},
            "component": {"type": "machine-learning-model", "bom-ref": "model", "name": PROJECT,
                          "version": __version__},
            "properties": [{"name": "rrg:recorded-at", "value": "training"},
                           {"name": "rrg:python", "value": platform.python_version()}],
        },
        "components": components,
    }


def write_sbom(model_dir: str | os.PathLike, data_cfg: Any = None) -> Path:
    """Record the training environment's SBOM as `<model_dir>/sbom.cdx.json` (written whole); returns its path."""
    path = Path(model_dir) / SBOM
    atomic_write_text(path, json.dumps(environment_sbom(data_cfg), indent=1, sort_keys=True) + "\n")
    return path


def read_sbom(model_dir: str | os.PathLike) -> dict | None:
    """The SBOM recorded with a model directory, or None when none was recorded."""
    path = Path(model_dir) / SBOM
    if not path.is_file():
        return None
    try:
        sbom = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError(f"{path} is not valid JSON") from None
    if not isinstance(sbom, dict) or sbom.get("bomFormat") != "CycloneDX":
        raise ValueError(f"{path} is not a CycloneDX document")
    return sbom


def recorded_data_hash(sbom: dict | None, role: str) -> tuple[str, str] | None:
    """(file name, SHA-256) of the data component with `role` (e.g. SPLITS_ROLE) recorded at training, or None."""
    for component in (sbom or {}).get("components", []):
        if not isinstance(component, dict) or component.get("type") != "data":
            continue
        roles = {p.get("value") for p in component.get("properties", []) if isinstance(p, dict)
                 and p.get("name") == ROLE_PROPERTY}
        hashes = [h.get("content") for h in component.get("hashes", []) if isinstance(h, dict)
                  and h.get("alg") == "SHA-256"]
        if role in roles and hashes:
            return str(component.get("name")), str(hashes[0])
    return None
