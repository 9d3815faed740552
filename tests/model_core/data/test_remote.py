"""Datasets on S3 (push, materialise, verify) against moto's standalone S3 server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import boto3
import pytest
from moto_s3 import moto_s3_server
from test_mimic import build_mimic_fixture

from model_core.config import DataConfig
from model_core.data.iu_xray import load_iu_xray
from model_core.data.manifest import DataError, write_checksums
from model_core.data.mimic import load_mimic_cxr_dataset
from model_core.data.remote import (
    INDEX_FILE,
    dataset_config,
    iu_dataset_files,
    materialise_dataset,
    materialise_for_pipeline,
    mimic_dataset_files,
    parse_s3_uri,
    push_dataset,
)

BUCKET = "rrg-data"


@pytest.fixture(scope="module")
def s3():
    with moto_s3_server(BUCKET) as url:
        yield boto3.client("s3", endpoint_url=url)


def _push_iu(root: Path, prefix: str) -> dict:
    return push_dataset(iu_dataset_files(root / "manifest.csv", root), f"s3://{BUCKET}/{prefix}", layout="iu",
                        name="site_iu")


def _leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir()] if parent.exists() else []


def test_iu_dataset_round_trips_and_loads_the_same(s3, tiny_iu, tmp_path):
    (tiny_iu / "LICENSE.md").write_text("licence of the site's data")
    index = _push_iu(tiny_iu, "round-trip")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="round-trip/")["Contents"]}
    assert {"round-trip/dataset.json", "round-trip/SHA256SUMS", "round-trip/manifest.csv",
            "round-trip/LICENSE.md"} <= keys
    assert index["files"] == len(keys) - 2 and index["layout"] == "iu" and index["manifest"] == ["manifest.csv"]

    dest = tmp_path / "copy" / "site_iu"
    back = materialise_dataset(f"s3://{BUCKET}/round-trip", dest)
    assert back["sha256sums_sha256"] == index["sha256sums_sha256"]
    source, copy = load_iu_xray(tiny_iu, split="all"), load_iu_xray(dest, split="all")   # verify=True: SHA256SUMS
    assert copy["reports"] == source["reports"] and copy["labels"].equal(source["labels"])
    assert [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in copy["images"]] == \
        [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in source["images"]]
    listed = {line.split("  ", 1)[1] for line in (dest / "SHA256SUMS").read_text().splitlines()}
    assert listed == {str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()} - {"SHA256SUMS", INDEX_FILE}
    assert _leftovers(dest.parent) == ["site_iu"]                 # no staging folder left behind


def test_a_pushed_dataset_is_immutable(s3, tiny_iu):
    _push_iu(tiny_iu, "immutable")
    with pytest.raises(DataError, match="already holds a pushed dataset"):
        _push_iu(tiny_iu, "immutable")


def test_a_modified_object_fails_naming_the_file_and_leaves_nothing(s3, tiny_iu, tmp_path):
    _push_iu(tiny_iu, "tampered")
    rel = sorted(p.relative_to(tiny_iu).as_posix() for p in (tiny_iu / "images").iterdir())[3]
    secret = b"PATIENT-BYTES-THAT-MUST-NOT-BE-ECHOED"
    s3.put_object(Bucket=BUCKET, Key=f"tampered/{rel}", Body=secret)
    dest = tmp_path / "out" / "site_iu"
    with pytest.raises(DataError, match="checksum mismatch for " + rel) as err:
        materialise_dataset(f"s3://{BUCKET}/tampered", dest)
    assert "PATIENT" not in str(err.value)
    assert not dest.exists() and _leftovers(dest.parent) == []


def test_a_missing_object_or_an_incomplete_push_is_refused(s3, tiny_iu, tmp_path):
    _push_iu(tiny_iu, "missing")
    rel = sorted(p.relative_to(tiny_iu).as_posix() for p in (tiny_iu / "images").iterdir())[0]
    s3.delete_object(Bucket=BUCKET, Key=f"missing/{rel}")
    with pytest.raises(DataError, match=f"{rel} is listed in .* but missing"):
        materialise_dataset(f"s3://{BUCKET}/missing", tmp_path / "out" / "a")
    s3.delete_object(Bucket=BUCKET, Key="missing/dataset.json")
    with pytest.raises(DataError, match="push did not finish"):
        materialise_dataset(f"s3://{BUCKET}/missing", tmp_path / "out" / "b")
    assert _leftovers(tmp_path / "out") == []


def test_a_rewritten_checksum_list_is_refused(s3, tiny_iu, tmp_path):
    _push_iu(tiny_iu, "sums")
    sums = s3.get_object(Bucket=BUCKET, Key="sums/SHA256SUMS")["Body"].read()
    s3.put_object(Bucket=BUCKET, Key="sums/SHA256SUMS", Body=sums.replace(b"images/", b"IMAGES/", 1))
    with pytest.raises(DataError, match="does not match the SHA-256 recorded in dataset.json"):
        materialise_dataset(f"s3://{BUCKET}/sums", tmp_path / "x")


def test_paths_escaping_the_dataset_are_refused(s3, tiny_iu, tmp_path):
    """Even with a consistent index, a listed path may not leave the destination."""
    evil = f"{'0' * 64}  ../outside.txt\n".encode()
    index = {"format": 1, "layout": "iu", "name": "evil", "manifest": ["manifest.csv"], "files": 1,
             "sha256sums_sha256": hashlib.sha256(evil).hexdigest()}
    s3.put_object(Bucket=BUCKET, Key="evil/SHA256SUMS", Body=evil)
    s3.put_object(Bucket=BUCKET, Key="evil/dataset.json", Body=json.dumps(index).encode())
    with pytest.raises(DataError, match="line 1 is not"):
        materialise_dataset(f"s3://{BUCKET}/evil", tmp_path / "inside" / "d")
    assert not (tmp_path / "inside" / "outside.txt").exists() and not (tmp_path / "outside.txt").exists()


def test_a_local_file_that_no_longer_matches_its_checksum_is_not_pushed(s3, tiny_iu):
    write_checksums(tiny_iu)                                       # as the embedded data has one
    image = sorted((tiny_iu / "images").iterdir())[1]
    image.write_bytes(image.read_bytes() + b"\0")
    with pytest.raises(DataError, match=f"local file {image} does not match"):
        _push_iu(tiny_iu, "corrupt-local")
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="corrupt-local/")


def test_mimic_layout_round_trips_but_the_pipeline_wants_iu(s3, tmp_path):
    source = build_mimic_fixture(tmp_path / "mimic-cxr-jpg")
    index = push_dataset(mimic_dataset_files(source), f"s3://{BUCKET}/mimic", layout="mimic-cxr-jpg", name="mimic")
    assert len(index["manifest"]) == 3
    dest = materialise_dataset(f"s3://{BUCKET}/mimic", tmp_path / "copy")
    assert dest["layout"] == "mimic-cxr-jpg"
    a, b = load_mimic_cxr_dataset(source, split="all"), load_mimic_cxr_dataset(tmp_path / "copy", split="all")
    assert a["reports"] == b["reports"] and a["labels"].equal(b["labels"]) and len(b["images"]) == len(a["images"])
    with pytest.raises(DataError, match="reads IU-format datasets"):
        materialise_for_pipeline(f"s3://{BUCKET}/mimic", tmp_path / "artifact")
    assert not (tmp_path / "artifact").exists()


def test_pipeline_view_of_a_materialised_dataset(s3, tiny_iu, tmp_path):
    _push_iu(tiny_iu, "pipeline")
    metadata = materialise_for_pipeline(f"s3://{BUCKET}/pipeline/", tmp_path / "artifact")
    assert metadata["data_dir"] == "data/site_iu" and metadata["dataset_uri"] == f"s3://{BUCKET}/pipeline"
    cfg = dataset_config(DataConfig(manifest="elsewhere.csv", limit_studies=3), tmp_path / "pod-b", metadata)
    assert (cfg.root, cfg.manifest, cfg.limit_studies) == (str(tmp_path / "pod-b" / "data" / "site_iu"), None, 3)
    assert dataset_config(DataConfig(), tmp_path, {"root": "/x"}) == DataConfig()


@pytest.mark.parametrize("uri", ["", "s3://", "gs://bucket/x", "s3://Bad_Bucket/x", "s3://bucket/a/../b"])
def test_bad_locations_are_named_not_guessed(uri):
    with pytest.raises(DataError, match="s3://bucket/prefix|'..' part"):
        parse_s3_uri(uri)


def test_rrg_data_push_names_the_dataset_after_its_folder(s3, tiny_iu, capsys):
    from rrg.cli import main as rrg

    assert rrg(["data", "push", "--to", f"s3://{BUCKET}/cli", "--manifest", str(tiny_iu / "manifest.csv")]) == 0
    index = json.loads(capsys.readouterr().out)
    assert index["name"] == tiny_iu.name and index["uri"] == f"s3://{BUCKET}/cli" and index["layout"] == "iu"
    assert rrg(["data", "push", "--to", f"s3://{BUCKET}/cli2", "--images-root", str(tiny_iu)]) == 2
    assert "--images-root needs --manifest" in capsys.readouterr().err
