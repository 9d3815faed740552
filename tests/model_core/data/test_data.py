
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from model_core.chexpert import CHEXPERT_LABELS
from model_core.data.images import load_image
from model_core.data.iu_xray import dataset_stats, load_iu_xray
from model_core.data.manifest import (
    EMBEDDED_ROOT,
    DataError,
    carve_splits,
    read_manifest,
    verify_checksums,
    write_checksums,
)
from model_core.data.reports import clinical_metadata, split_sections


def test_embedded_splits_are_study_level_disjoint_and_match_the_committed_file():
    manifest = read_manifest(EMBEDDED_ROOT / "manifest.csv")
    carved = carve_splits(manifest)
    committed = pd.read_csv(EMBEDDED_ROOT / "splits.csv", dtype=str)
    pd.testing.assert_frame_equal(carved, committed)
    assert carved["uid"].is_unique
    counts = carved["split"].value_counts().to_dict()
    assert counts == {"train": 2756, "val": 306, "test": 382}
    # test split = the manifest's val studies, exactly
    manifest_val = set(manifest.loc[manifest["split"] == "val", "uid"])
    assert set(carved.loc[carved["split"] == "test", "uid"]) == manifest_val


def test_load_iu_xray_returns_images_reports_labels_metadata_for_each_split():
    seen = {}
    for split in ("train", "val", "test"):
        ds = load_iu_xray(split=split, limit_studies=30)
        n = len(ds["images"])
        assert n == len(ds["reports"]) == len(ds["metadata"]) > 0
        assert ds["labels"].shape == (n, len(CHEXPERT_LABELS)) and ds["labels"].dtype == torch.float32
        assert set(ds["labels"].unique().tolist()) <= {0.0, 1.0}
        assert all(m["view"] == "Frontal" and m["split"] == split for m in ds["metadata"])
        assert all(r.startswith(("FINDINGS:", "IMPRESSION:")) for r in ds["reports"])
        seen[split] = {m["study_id"] for m in ds["metadata"]}
    assert not (seen["train"] & seen["val"]) and not (seen["train"] & seen["test"]) and not (seen["val"] & seen["test"])


def test_views_filter_keeps_laterals_when_asked():
    both = load_iu_xray(split="test", views=("Frontal", "Lateral"), limit_studies=10)
    assert {m["view"] for m in both["metadata"]} == {"Frontal", "Lateral"}


def test_load_image_shape_range_and_size():
    path = EMBEDDED_ROOT / "images" / "1_IM-0001-4001.dcm.jpg"
    img = load_image(path, size=64)
    assert img.shape == (1, 64, 64) and img.dtype == torch.float32
    assert 0.0 <= img.min() and img.max() <= 1.0 and img.std() > 0.05
    assert load_image(path).shape == (1, 512, 512)


def test_stats_count_studies_and_images():
    ds = load_iu_xray(split="test", limit_studies=20)
    stats = dataset_stats(ds)
    assert stats["studies"] == 20 and stats["images"] >= 20
    assert set(stats["label_positives"]) == set(CHEXPERT_LABELS)
    assert stats["mean_report_words"] > 5


def test_sections_and_metadata_parsing():
    assert split_sections("FINDINGS: Lungs clear. IMPRESSION: Normal.") == {"findings": "Lungs clear.",
                                                                           "impression": "Normal."}
    assert split_sections("IMPRESSION: No acute disease.") == {"findings": "", "impression": "No acute disease."}
    assert split_sections("Heart normal.") == {"findings": "Heart normal.", "impression": ""}
    assert clinical_metadata("XXXX-year-old female with chest pain") == {"age": None, "sex": "F"}
    assert clinical_metadata("54 year old male, cough") == {"age": 54, "sex": "M"}
    assert clinical_metadata("Chest pain") == {"age": None, "sex": None}


def test_any_iu_format_manifest_loads_without_splits_file(tiny_iu):
    ds = load_iu_xray(root=tiny_iu, split="all")
    assert len({m["study_id"] for m in ds["metadata"]}) >= 6
    assert all(p.startswith(str(tiny_iu)) for p in ds["images"])


# ----------------------------------------------------------------- bad input

def test_missing_manifest_column_is_named(tiny_iu):
    df = pd.read_csv(tiny_iu / "manifest.csv", dtype=str, keep_default_na=False).drop(columns=["mesh"])
    df.to_csv(tiny_iu / "manifest.csv", index=False)
    with pytest.raises(DataError, match="missing required column.*mesh"):
        load_iu_xray(root=tiny_iu, split="all")


def test_missing_image_file_is_named(tiny_iu):
    victim = pd.read_csv(tiny_iu / "manifest.csv", dtype=str)["image"].iloc[0]
    (tiny_iu / victim).unlink()
    with pytest.raises(DataError, match=r"row 2: image file not found: .*" + victim.split("/")[-1]):
        load_iu_xray(root=tiny_iu, split="all", views=("Frontal", "Lateral"))


def test_undecodable_image_is_named(tiny_iu):
    victim = tiny_iu / pd.read_csv(tiny_iu / "manifest.csv", dtype=str)["image"].iloc[0]
    victim.write_bytes(b"this is not a jpeg")
    with pytest.raises(DataError, match=f"cannot decode image .*{victim.name}"):
        load_image(victim, size=32)


def test_empty_report_names_the_row(tiny_iu):
    df = pd.read_csv(tiny_iu / "manifest.csv", dtype=str, keep_default_na=False)
    df.loc[df.index[0], ["findings", "impression"]] = ""
    df.to_csv(tiny_iu / "manifest.csv", index=False)
    with pytest.raises(DataError, match=r"row 2 \(study .*\): report is empty"):
        load_iu_xray(root=tiny_iu, split="all", views=("Frontal", "Lateral"))


def test_unknown_split_and_view():
    with pytest.raises(DataError, match="unknown split 'holdout'"):
        load_iu_xray(split="holdout")
    with pytest.raises(DataError, match="unknown view"):
        load_iu_xray(split="train", views=("AP",))


def test_checksum_mismatch_names_the_file(tiny_iu):
    write_checksums(tiny_iu)
    victim = pd.read_csv(tiny_iu / "manifest.csv", dtype=str)["image"].iloc[1]
    with open(tiny_iu / victim, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(DataError, match=f"checksum mismatch for .*{victim.split('/')[-1]}"):
        verify_checksums(tiny_iu, [victim])


def test_manifest_not_found_and_not_csv(tmp_path):
    with pytest.raises(DataError, match="manifest not found"):
        read_manifest(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="not a readable CSV"):
        read_manifest(tmp_path / "empty.csv")


def test_sixteen_bit_images_are_rescaled_not_clipped(tmp_path):
    ramp = (np.linspace(0, 4095, 64 * 64).reshape(64, 64)).astype(np.uint16)  # a 12-bit ramp in 16-bit storage
    Image.fromarray(ramp, mode="I;16").save(tmp_path / "ramp.png")
    img = load_image(tmp_path / "ramp.png", size=64)
    assert abs(img.max().item() - 4095 / 65535) < 1e-3
    assert (img >= 0.99).float().mean() < 0.01  # nothing saturated to white
