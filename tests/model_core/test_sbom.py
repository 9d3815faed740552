"""The SBOM recorded at training (CycloneDX 1.5): licences from package metadata mapped to SPDX where unambiguous,
pypi package URLs, and the data files training read with their hashes."""

from __future__ import annotations

import hashlib
import json
from email.message import Message
from types import SimpleNamespace

import pytest

from model_core.config import REPO_ROOT, load_config
from model_core.files import sha256_file
from model_core.sbom import (
    MANIFEST_ROLE,
    SPLITS_ROLE,
    distribution_licences,
    environment_sbom,
    read_sbom,
    recorded_data_hash,
    write_sbom,
)


def _meta(license_field: str | None = None, expression: str | None = None, classifiers: tuple = ()) -> Message:
    meta = Message()
    if license_field is not None:
        meta["License"] = license_field
    if expression is not None:
        meta["License-Expression"] = expression
    for c in classifiers:
        meta["Classifier"] = c
    return meta


@pytest.mark.parametrize("meta, expected", [
    (_meta(expression="Apache-2.0 OR BSD-3-Clause", license_field="MIT"),
     [{"expression": "Apache-2.0 OR BSD-3-Clause"}]),
    (_meta("Business Source License 1.1", classifiers=("License :: Other/Proprietary License",)),
     [{"license": {"id": "BUSL-1.1"}}]),
    (_meta("GPL V3.0"), [{"license": {"id": "GPL-3.0-only"}}]),
    (_meta("MIT License\n\nCopyright (c) 2022 Someone\nPermission is hereby granted"), [{"license": {"id": "MIT"}}]),
    (_meta("Copyright (c) 2005, NumPy Developers.\nAll rights reserved.",
           classifiers=("License :: OSI Approved :: BSD License",)), [{"license": {"name": "BSD License"}}]),
    (_meta("Dual License", classifiers=("License :: OSI Approved :: BSD License",
                                        "License :: OSI Approved :: Apache Software License")),
     [{"license": {"name": "BSD License"}}, {"license": {"id": "Apache-2.0"}}]),
    (_meta("MIT OR Apache-2.0"), [{"expression": "MIT OR Apache-2.0"}]),
    (_meta("UNKNOWN"), []),
    (_meta(""), []),
])
def test_licences_from_package_metadata(meta, expected):
    assert distribution_licences(meta) == expected


def test_the_sbom_lists_the_environment_and_the_data_training_read(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "manifest.csv").write_text("uid,split,image\n1,train,a.png\n")
    (root / "splits.csv").write_text("uid,split\n1,train\n")
    path = write_sbom(tmp_path / "model", SimpleNamespace(root=str(root), manifest=None))
    sbom = read_sbom(tmp_path / "model")
    assert path.name == "sbom.cdx.json" and json.loads(path.read_text()) == sbom
    assert sbom["bomFormat"] == "CycloneDX" and sbom["specVersion"] == "1.5"
    libraries = {c["name"].lower(): c for c in sbom["components"] if c["type"] == "library"}
    assert libraries["torch"]["purl"].startswith("pkg:pypi/torch@") and "+" not in libraries["torch"]["purl"]
    assert libraries["cryptography"]["licenses"] and "radiology-report-generator" not in libraries
    assert recorded_data_hash(sbom, SPLITS_ROLE) == ("splits.csv", hashlib.sha256(b"uid,split\n1,train\n").hexdigest())
    assert recorded_data_hash(sbom, MANIFEST_ROLE)[0] == "manifest.csv"
    (root / "splits.csv").unlink()  # without splits.csv the manifest carries the split assignment
    no_splits = environment_sbom(SimpleNamespace(root=str(root), manifest=None))
    assert recorded_data_hash(no_splits, SPLITS_ROLE)[0] == "manifest.csv"
    assert read_sbom(tmp_path) is None and recorded_data_hash(None, SPLITS_ROLE) is None


def test_the_trainers_call_records_the_embedded_split_file(tmp_path):
    """`write_sbom(out_dir, cfg.data)` as the trainer calls it, with the smoke config's data section."""
    data_cfg = load_config(REPO_ROOT / "configs" / "smoke.yaml").data
    sbom = read_sbom(write_sbom(tmp_path, data_cfg).parent)
    embedded = REPO_ROOT / data_cfg.root
    assert recorded_data_hash(sbom, SPLITS_ROLE) == ("splits.csv", sha256_file(embedded / "splits.csv"))
    assert recorded_data_hash(sbom, MANIFEST_ROLE) == ("manifest.csv", sha256_file(embedded / "manifest.csv"))
