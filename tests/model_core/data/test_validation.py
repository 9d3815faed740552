"""The data-validation gate (model_core.data.validation): the embedded data passes, each bad case fails by name."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from model_core.data.manifest import EMBEDDED_ROOT, SPLIT_SEED, DataError
from model_core.data.validation import (
    PHI_PATTERNS,
    REPORT_HTML,
    REPORT_JSON,
    DataValidationError,
    raise_on_failure,
    validate_dataset,
)
from model_core.data.validation import dataset as validation_frames

DEMO_INPUT = 128  # configs/demo.yaml model.vision.image_size


@pytest.fixture()
def no_network(monkeypatch):
    """Any attempt to open a network connection (GE analytics, version checks) fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted during data validation")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _validate(root: Path, out: Path, **kw):
    return validate_dataset(root / "manifest.csv", root, out, min_image_size=kw.pop("min_image_size", DEMO_INPUT), **kw)


def _failed(result) -> set[tuple[str, str | None]]:
    return {(f["check"], f["column"]) for f in result.failures}


def _edit_manifest(root: Path, fn) -> pd.DataFrame:
    df = pd.read_csv(root / "manifest.csv", dtype=str, keep_default_na=False)
    df = fn(df)
    df.to_csv(root / "manifest.csv", index=False)
    return df


def _save_jpeg(path: Path, arr: np.ndarray) -> None:
    Image.fromarray(arr).save(path, format="JPEG", quality=95)


# --------------------------------------------------------------------------- passing data

def test_embedded_data_passes_on_a_seeded_image_sample(tmp_path, no_network):
    result = validate_dataset(EMBEDDED_ROOT / "manifest.csv", EMBEDDED_ROOT, tmp_path, min_image_size=DEMO_INPUT,
                              sample_images=40)
    assert result.success, result.summary()
    assert result.failures == []
    stats = result.statistics
    assert stats["rows"] == 6682 and stats["studies"] == 3444 and stats["splits_source"] == "splits.csv"
    assert {s: v["studies"] for s, v in stats["splits"].items()} == {"train": 2756, "val": 306, "test": 382}
    images = stats["images"]
    assert images["mode"] == "sample" and images["decoded"] == 40 and images["existing"] == 6682
    assert len(images["sampled_rows"]) == 40 and images["sample_seed"] == SPLIT_SEED
    assert images["width"] == [256, 256]
    # every kind of check ran (GE expectations, not hand-written asserts)
    checks = {c["check"] for c in result.expectations}
    assert {"contract.column_present", "contract.non_empty", "contract.report_non_empty", "splits.disjoint",
            "labels.projection", "labels.split", "labels.mesh_chexpert", "images.exists", "images.decodable",
            "images.min_size", "images.not_blank", "splits.disjoint_content"} <= checks
    assert {f"phi.{name}" for name in PHI_PATTERNS} <= checks
    assert all(c["expectation"].startswith("expect_") for c in result.expectations)
    # reports written atomically (no temp files left), JSON parses, HTML says PASSED
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([REPORT_HTML, REPORT_JSON])
    payload = json.loads(result.report_json.read_text())
    assert payload["success"] is True and payload["statistics"]["images"]["decoded"] == 40
    assert "PASSED" in result.report_html.read_text()
    assert raise_on_failure(result) is result


def test_sample_is_seeded(tiny_iu, tmp_path):
    a = _validate(tiny_iu, tmp_path / "a", sample_images=5, sample_seed=7).statistics["images"]["sampled_rows"]
    b = _validate(tiny_iu, tmp_path / "b", sample_images=5, sample_seed=7).statistics["images"]["sampled_rows"]
    assert a == b and len(a) == 5


def test_phi_patterns_leave_real_iu_text_alone_and_catch_fakes():
    clean = ["Dr. XXXX", "discussed with Dr. XXXX XXXX telephone at XXXX p.m.", "DOB: XXXX", "T12 vertebral body",
             "5 mm nodule", "2 cm", "1-1/2 weeks", "cardiothoracic ratio of 16.2/24.7", "11/7/ XXXX", "T11-12-13",
             "MR imaging", "from electronic medical record."]
    fake = {"titled_name": "seen by Dr. John Smith", "mrn": "MRN: 1234", "long_number": "id 12345678",
            "dob": "DOB 01/02/1950", "date": "on 1950-02-01", "phone": "call (317) 555-0100",
            "ssn": "123-45-6789", "email": "j.smith@example.org"}
    for name, (regex, _) in PHI_PATTERNS.items():
        pattern = re.compile(regex)
        assert not [t for t in clean if pattern.search(t)], name
        assert pattern.search(fake[name]), name


# --------------------------------------------------------------------------- failing data

def test_tiny_copy_passes_before_it_is_broken(tiny_iu, tmp_path):
    result = _validate(tiny_iu, tmp_path)
    assert result.success, result.summary()
    assert result.statistics["images"]["mode"] == "all" and result.statistics["images"]["decoded"] == 16


def test_missing_column_fails_the_contract(tiny_iu, tmp_path):
    _edit_manifest(tiny_iu, lambda df: df.drop(columns=["comparison"]))
    result = _validate(tiny_iu, tmp_path)
    assert _failed(result) == {("contract.column_present", "comparison")}
    assert result.failures[0]["expectation"] == "expect_column_to_exist"


def test_study_in_two_splits_fails_disjointness(tiny_iu, tmp_path):
    def overlap(df):
        df.loc[(df["uid"] == "2") & (df["projection"] == "Lateral"), "split"] = "val"  # study 2 is train
        return df

    _edit_manifest(tiny_iu, overlap)
    result = _validate(tiny_iu, tmp_path)
    assert _failed(result) == {("splits.disjoint", "uid")}
    (failure,) = result.failures
    assert failure["expectation"] == "expect_column_values_to_be_unique"
    assert {e["uid"] for e in failure["examples"]} == {"2"}


def test_uid_listed_in_two_splits_of_splits_csv_fails(tiny_iu, tmp_path):
    uids = pd.read_csv(tiny_iu / "manifest.csv", dtype=str)["uid"].drop_duplicates()
    table = pd.DataFrame({"uid": list(uids) + ["3"], "split": ["train"] * len(uids) + ["test"]})
    table.to_csv(tiny_iu / "splits.csv", index=False)
    result = _validate(tiny_iu, tmp_path)
    assert result.statistics["splits_source"] == "splits.csv"
    assert _failed(result) == {("splits.disjoint", "uid")}
    assert {e["uid"] for e in result.failures[0]["examples"]} == {"3"}


def test_bad_projection_fails_with_value_and_row(tiny_iu, tmp_path):
    _edit_manifest(tiny_iu, lambda df: df.assign(projection=df["projection"].mask(df.index == 4, "PA")))
    result = _validate(tiny_iu, tmp_path)
    assert _failed(result) == {("labels.projection", "projection")}
    (failure,) = result.failures
    assert failure["expectation"] == "expect_column_values_to_be_in_set"
    assert failure["unexpected_values"] == ["PA"] and failure["examples"] == [{"row": 6, "uid": "3"}]


def test_phi_in_reports_fails_without_leaking_the_text(tiny_iu, tmp_path):
    def add_phi(df):
        df.loc[df["uid"] == "2", "findings"] = "Seen by Dr. John Smith. Heart size normal."
        df.loc[df["uid"] == "3", "impression"] = "No acute disease. MRN 12345678"
        df.loc[df["uid"] == "4", "indication"] = "Chest pain, DOB 01/02/1950"
        return df

    _edit_manifest(tiny_iu, add_phi)
    result = _validate(tiny_iu, tmp_path)
    assert _failed(result) == {(f"phi.{name}", "text") for name in ("titled_name", "mrn", "long_number", "dob", "date")}
    examples = {f["check"]: f["examples"] for f in result.failures}
    # one example per study section (the study's first CSV row), naming the section, never the text
    assert examples["phi.titled_name"] == [{"row": 4, "uid": "2", "section": "findings"}]
    assert examples["phi.mrn"] == examples["phi.long_number"] == [{"row": 6, "uid": "3", "section": "impression"}]
    assert examples["phi.dob"] == examples["phi.date"] == [{"row": 8, "uid": "4", "section": "indication"}]
    assert {f["expectation"] for f in result.failures} == {"expect_column_values_to_not_match_regex"}
    with pytest.raises(DataValidationError) as err:
        raise_on_failure(result)
    for text in (result.report_json.read_text(), result.report_html.read_text(), str(err.value)):
        assert "Smith" not in text and "12345678" not in text and "01/02/1950" not in text
        assert "Heart size" not in text and "Chest pain" not in text


def test_missing_image_fails(tiny_iu, tmp_path):
    rel = pd.read_csv(tiny_iu / "manifest.csv", dtype=str)["image"].iloc[3]
    (tiny_iu / rel).unlink()
    result = _validate(tiny_iu, tmp_path)
    assert _failed(result) == {("images.exists", "image_exists")}
    assert result.failures[0]["examples"] == [{"row": 5, "uid": "2"}]


def test_undecodable_and_truncated_images_fail(tiny_iu, tmp_path):
    images = pd.read_csv(tiny_iu / "manifest.csv", dtype=str)["image"]
    (tiny_iu / images.iloc[0]).write_bytes(b"this is not a JPEG")
    data = (tiny_iu / images.iloc[5]).read_bytes()
    (tiny_iu / images.iloc[5]).write_bytes(data[: len(data) // 2])
    result = _validate(tiny_iu, tmp_path)
    assert _failed(result) == {("images.decodable", "image_decodable")}
    assert [e["row"] for e in result.failures[0]["examples"]] == [2, 7]


def test_too_small_image_fails(tiny_iu, tmp_path):
    rel = pd.read_csv(tiny_iu / "manifest.csv", dtype=str)["image"].iloc[2]
    _save_jpeg(tiny_iu / rel, np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8))
    result = _validate(tiny_iu, tmp_path)
    assert _failed(result) == {("images.min_size", "image_width"), ("images.min_size", "image_height")}
    assert all(f["unexpected_values"] == ["64"] for f in result.failures)
    # the 256-px originals fail the production input size
    production = _validate(tiny_iu, tmp_path / "prod", min_image_size=512)
    assert production.statistics["min_image_size"] == 512
    assert [f["unexpected_count"] for f in production.failures if f["column"] == "image_width"] == [16]


def test_blank_image_fails(tiny_iu, tmp_path):
    rel = pd.read_csv(tiny_iu / "manifest.csv", dtype=str)["image"].iloc[1]
    _save_jpeg(tiny_iu / rel, np.full((256, 256), 128, dtype=np.uint8))
    result = _validate(tiny_iu, tmp_path)
    assert _failed(result) == {("images.not_blank", "pixel_std")}
    assert result.failures[0]["examples"] == [{"row": 3, "uid": "1"}]


def test_sixteen_bit_image_clipped_by_the_loader_and_colour_image_fail(tiny_iu, tmp_path):
    def swap(df):
        df.loc[0, "image"] = "images/sixteen.png"
        df.loc[1, "image"] = "images/colour.jpg"
        return df

    _edit_manifest(tiny_iu, swap)
    grad = (np.arange(256 * 256).reshape(256, 256) % 4000).astype(np.uint16)  # 12-bit values in a 16-bit PNG
    Image.fromarray(grad).save(tiny_iu / "images" / "sixteen.png")
    colour = np.random.default_rng(1).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    _save_jpeg(tiny_iu / "images" / "colour.jpg", colour)
    result = _validate(tiny_iu, tmp_path)
    assert _failed(result) == {("images.not_saturated", "pixel_saturated"),
                               ("images.grayscale", "image_channel_spread")}


def test_contract_and_study_level_failures(tiny_iu, tmp_path, monkeypatch):
    def damage(df):
        df.loc[0, "uid"] = ""                                  # blank required field
        df.loc[df["uid"] == "3", ["findings", "impression"]] = ""  # study without a report
        df.loc[df.index == 6, "mesh"] = "Cardiomegaly"         # mesh differs between study 4's rows
        df.loc[10, "image"] = "../../outside.jpg"              # escapes the images root
        return df

    _edit_manifest(tiny_iu, damage)
    result = _validate(tiny_iu, tmp_path)
    assert _failed(result) == {
        ("contract.non_empty", "uid"), ("contract.report_non_empty", "report_present"),
        ("contract.study_consistent", "n_study_variants"), ("images.in_root", "image_in_root"),
    }
    by_check = {f["check"]: f for f in result.failures}
    assert by_check["contract.non_empty"]["examples"] == [{"row": 2, "uid": None}]
    assert by_check["contract.report_non_empty"]["examples"] == [{"row": 6, "uid": "3"}]


def test_label_outside_zero_one_fails(tiny_iu, tmp_path, monkeypatch):
    real = validation_frames.mesh_to_chexpert
    monkeypatch.setattr(validation_frames, "mesh_to_chexpert", lambda mesh: real(mesh) * 2)
    result = _validate(tiny_iu, tmp_path)
    assert _failed(result) == {("labels.mesh_chexpert", "value")}
    (failure,) = result.failures
    assert failure["unexpected_values"] == ["2.0"]
    assert {"row", "uid", "label"} == set(failure["examples"][0]) and failure["examples"][0]["label"] == "No Finding"


def test_raise_on_failure_lists_checks_and_rows(tiny_iu, tmp_path):
    _edit_manifest(tiny_iu, lambda df: df.assign(projection=df["projection"].mask(df.index == 4, "PA")))
    result = _validate(tiny_iu, tmp_path)
    with pytest.raises(DataError) as err:  # DataValidationError is a DataError: one except clause stops the pipeline
        raise_on_failure(result)
    assert isinstance(err.value, DataValidationError)
    message = str(err.value)
    assert "[labels.projection] expect_column_values_to_be_in_set on column 'projection'" in message
    assert "row=6 uid=3" in message
    assert "FAILED" in result.report_html.read_text()


def test_unreadable_manifest_raises(tmp_path):
    with pytest.raises(DataError, match="not found"):
        validate_dataset(tmp_path / "nope.csv", tmp_path, tmp_path / "out")
    (tmp_path / "manifest.csv").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(DataError):
        validate_dataset(tmp_path / "manifest.csv", tmp_path, tmp_path / "out")


def test_splits_selects_the_rows_checked_but_disjointness_stays_global(tiny_iu, tmp_path):
    def damage(df):
        df.loc[df["uid"] == "1", "projection"] = "PA"                                 # study 1 is val
        df.loc[(df["uid"] == "2") & (df["projection"] == "Lateral"), "split"] = "val"  # study 2 is train
        return df

    _edit_manifest(tiny_iu, damage)
    train = _validate(tiny_iu, tmp_path / "train", splits="train")
    assert train.statistics["splits_validated"] == ["train"] and train.statistics["rows_validated"] == 9
    assert train.statistics["images"]["decoded"] == 9
    assert _failed(train) == {("splits.disjoint", "uid")}
    both = _validate(tiny_iu, tmp_path / "all", splits=["train", "val"])
    assert _failed(both) == {("splits.disjoint", "uid"), ("labels.projection", "projection")}
    with pytest.raises(DataError, match="unknown split"):
        _validate(tiny_iu, tmp_path / "bad", splits="validation")
