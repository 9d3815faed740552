"""MIMIC-CXR-JPG loader, tested on the official layout only (MIMIC is credentialed; no real data here).

The fixture rebuilds the PhysioNet folder structure in tmp_path with a few embedded IU X-ray JPEGs
standing in for MIMIC images and hand-written reports in MIMIC's free-text style.
"""

from __future__ import annotations

import gzip
import logging
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from model_core.chexpert import CHEXPERT_LABELS, LABEL_INDEX
from model_core.data.images import load_image
from model_core.data.manifest import EMBEDDED_ROOT, DataError
from model_core.data.mimic import (
    CHEXPERT_FILE,
    METADATA_FILE,
    SPLIT_FILE,
    load_mimic_cxr_dataset,
    parse_mimic_report,
    study_dir,
)

SOURCE_JPEGS = sorted((EMBEDDED_ROOT / "images").glob("*.jpg"))[:4]

REPORT_FULL = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with new onset ascites  // eval for infection

 TECHNIQUE:  Chest PA and lateral

 COMPARISON:  None.

 FINDINGS:

 The heart is mildly enlarged.  Mild pulmonary vascular
 congestion without frank edema.

 IMPRESSION:

 Mild cardiomegaly.  Possible mild edema.
"""
REPORT_IMPRESSION_ONLY = """                                 FINAL REPORT
 HISTORY:  Chest pain.

 IMPRESSION:  No acute cardiopulmonary process.
"""
REPORT_FINDINGS_ONLY = """ FINAL REPORT
 REASON FOR EXAMINATION:  Shortness of breath.

 FINDINGS:  Small right pleural effusion.  No pneumothorax.
"""
REPORT_COMBINED = """ WET READ: ___ ___ 3:14 AM
  no ptx

 FINAL REPORT
 CLINICAL HISTORY:  Line placement.

 FINDINGS AND IMPRESSION:  Right internal jugular line ends in the mid SVC.  No pneumothorax.
"""
REPORT_NO_SECTIONS = """ FINAL REPORT
 CHEST RADIOGRAPH PERFORMED ON ___

 Heart size is normal without free text headers.
"""

# (subject_id, study_id, split, [(dicom_id, ViewPosition)], report, {label: value})
STUDIES = [
    (10000032, 50414267, "train", [("d1-pa", "PA"), ("d1-lat", "LATERAL")], REPORT_FULL,
     {"Cardiomegaly": "1.0", "Edema": "-1.0", "Pleural Effusion": "0.0"}),
    (10000032, 53189527, "train", [("d2-ap", "AP")], REPORT_IMPRESSION_ONLY, {"No Finding": "1.0"}),
    (11000011, 51234567, "validate", [("d3-pa", "PA")], REPORT_FINDINGS_ONLY,
     {"Pleural Effusion": "1.0", "Pneumothorax": "0.0"}),
    (12000022, 57654321, "test", [("d4-ap", "AP"), ("d4-ll", "LL")], REPORT_COMBINED,
     {"Support Devices": "1.0", "Pneumothorax": "0.0"}),
]


def build_mimic_fixture(root: Path, compress: bool = True) -> Path:
    """Write a tiny MIMIC-CXR-JPG tree under root (official file names and folders). Returns root."""
    split_rows, chexpert_rows, metadata_rows = [], [], []
    n_jpeg = 0
    for subject_id, study_id, split, dicoms, report, labels in STUDIES:
        folder = study_dir(subject_id, study_id)
        (root / folder).mkdir(parents=True, exist_ok=True)
        report_path = root / "mimic-cxr-reports" / folder.with_suffix(".txt")
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_text(report)
        for dicom_id, view in dicoms:
            shutil.copyfile(SOURCE_JPEGS[n_jpeg % len(SOURCE_JPEGS)], root / folder / f"{dicom_id}.jpg")
            n_jpeg += 1
            split_rows.append({"dicom_id": dicom_id, "study_id": study_id, "subject_id": subject_id, "split": split})
            metadata_rows.append({"dicom_id": dicom_id, "subject_id": subject_id, "study_id": study_id,
                                  "PerformedProcedureStepDescription": "CHEST (PA AND LAT)",
                                  "ViewPosition": view, "Rows": 3056, "Columns": 2544})
        # The official file lists the label columns alphabetically, not in CheXpert order.
        chexpert_rows.append({"subject_id": subject_id, "study_id": study_id,
                              **{name: labels.get(name, "") for name in sorted(CHEXPERT_LABELS)}})
    suffix = ".gz" if compress else ""
    for name, rows in ((SPLIT_FILE, split_rows), (CHEXPERT_FILE, chexpert_rows), (METADATA_FILE, metadata_rows)):
        pd.DataFrame(rows).to_csv(root / name.replace(".gz", suffix), index=False)
    return root


@pytest.fixture()
def mimic_root(tmp_path: Path) -> Path:
    return build_mimic_fixture(tmp_path / "mimic-cxr-jpg")


def rewrite_table(root: Path, name: str, edit) -> None:
    """Apply edit(DataFrame) -> DataFrame to one gzipped table of the fixture."""
    path = root / name
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    edit(df).to_csv(path, index=False)


# --------------------------------------------------------------------------- the returned dict

def test_train_split_returns_the_load_iu_xray_dict(mimic_root: Path):
    ds = load_mimic_cxr_dataset(mimic_root, image_size=64)
    assert set(ds) == {"images", "reports", "labels", "metadata", "image_size"}
    assert ds["image_size"] == 64
    # Frontal images of the two train studies: d1-pa (PA) and d2-ap (AP); the lateral is filtered out.
    assert [m["dicom_id"] for m in ds["metadata"]] == ["d1-pa", "d2-ap"]
    assert ds["images"] == [m["image_path"] for m in ds["metadata"]]
    first = Path(ds["images"][0])
    assert first.is_absolute() and first == (mimic_root / "files/p10/p10000032/s50414267/d1-pa.jpg").resolve()
    assert load_image(first, size=32).shape == (1, 32, 32)

    labels = ds["labels"]
    assert labels.dtype == torch.float32 and labels.shape == (2, len(CHEXPERT_LABELS))
    expected = torch.zeros(2, len(CHEXPERT_LABELS))
    expected[0, LABEL_INDEX["Cardiomegaly"]] = 1.0
    expected[0, LABEL_INDEX["Edema"]] = -1.0  # uncertain kept
    expected[1, LABEL_INDEX["No Finding"]] = 1.0
    assert torch.equal(labels, expected)

    assert ds["reports"][0] == (
        "FINDINGS: The heart is mildly enlarged. Mild pulmonary vascular congestion without frank edema. "
        "IMPRESSION: Mild cardiomegaly. Possible mild edema."
    )
    assert ds["reports"][1] == "IMPRESSION: No acute cardiopulmonary process."

    meta = ds["metadata"][0]
    assert meta["study_id"] == 50414267 and meta["subject_id"] == 10000032
    assert meta["split"] == "train" and meta["view"] == "PA"
    assert meta["indication"] == "___F with new onset ascites // eval for infection"
    assert meta["comparison"] == "None."
    assert meta["impression"] == "Mild cardiomegaly. Possible mild edema."
    assert meta["age"] is None and meta["sex"] is None
    assert ds["metadata"][1]["findings"] == "" and ds["metadata"][1]["indication"] == "Chest pain."


def test_view_filter(mimic_root: Path):
    all_views = load_mimic_cxr_dataset(mimic_root, split="all", views=None)
    assert sorted(m["view"] for m in all_views["metadata"]) == ["AP", "AP", "LATERAL", "LL", "PA", "PA"]
    lateral = load_mimic_cxr_dataset(mimic_root, split="all", views=("lateral", "LL"))
    assert [m["dicom_id"] for m in lateral["metadata"]] == ["d1-lat", "d4-ll"]
    # Images of one study share the study's label row.
    assert torch.equal(lateral["labels"][0], all_views["labels"][0])
    pa_only = load_mimic_cxr_dataset(mimic_root, split="all", views=("PA",))
    assert [m["dicom_id"] for m in pa_only["metadata"]] == ["d1-pa", "d3-pa"]


@pytest.mark.parametrize("split, dicoms", [
    ("val", ["d3-pa"]), ("validate", ["d3-pa"]), ("test", ["d4-ap"]), ("all", ["d1-pa", "d2-ap", "d3-pa", "d4-ap"]),
])
def test_split_mapping(mimic_root: Path, split: str, dicoms: list[str]):
    ds = load_mimic_cxr_dataset(mimic_root, split=split)
    assert [m["dicom_id"] for m in ds["metadata"]] == dicoms
    splits = {m["dicom_id"]: m["split"] for m in ds["metadata"]}
    assert splits.get("d3-pa", "val") == "val"  # the official "validate" is reported as "val"


def test_split_file_may_already_say_val(mimic_root: Path):
    rewrite_table(mimic_root, SPLIT_FILE, lambda df: df.replace({"split": {"validate": "val"}}))
    assert [m["split"] for m in load_mimic_cxr_dataset(mimic_root, split="val")["metadata"]] == ["val"]


def test_uncompressed_tables_and_custom_reports_dir(tmp_path: Path):
    root = build_mimic_fixture(tmp_path / "plain", compress=False)
    moved = tmp_path / "elsewhere" / "reports"
    shutil.move(root / "mimic-cxr-reports", moved)
    ds = load_mimic_cxr_dataset(root, split="test", reports_dir=moved)
    assert ds["reports"] == [
        "IMPRESSION: Right internal jugular line ends in the mid SVC. No pneumothorax."
    ]


def test_study_without_chexpert_row_is_dropped_with_warning(mimic_root: Path, caplog):
    rewrite_table(mimic_root, CHEXPERT_FILE, lambda df: df[df["study_id"] != "53189527"])
    with caplog.at_level(logging.WARNING, logger="model_core.data.mimic"):
        ds = load_mimic_cxr_dataset(mimic_root)
    assert [m["dicom_id"] for m in ds["metadata"]] == ["d1-pa"]
    assert "no row in mimic-cxr-2.0.0-chexpert.csv.gz" in caplog.text


def test_gzip_tables_are_really_gzipped(mimic_root: Path):
    with gzip.open(mimic_root / SPLIT_FILE, "rt") as fh:
        assert fh.readline().strip() == "dicom_id,study_id,subject_id,split"


# --------------------------------------------------------------------------- report sections

def test_parse_full_report():
    sections = parse_mimic_report(REPORT_FULL)
    assert sections == {
        "findings": "The heart is mildly enlarged. Mild pulmonary vascular congestion without frank edema.",
        "impression": "Mild cardiomegaly. Possible mild edema.",
        "indication": "___F with new onset ascites // eval for infection",
        "comparison": "None.",
    }


def test_parse_missing_sections_and_aliases():
    assert parse_mimic_report(REPORT_IMPRESSION_ONLY) == {
        "findings": "", "impression": "No acute cardiopulmonary process.", "indication": "Chest pain.",
        "comparison": "",
    }
    only_findings = parse_mimic_report(REPORT_FINDINGS_ONLY)
    assert only_findings["findings"] == "Small right pleural effusion. No pneumothorax."
    assert only_findings["impression"] == "" and only_findings["indication"] == "Shortness of breath."
    combined = parse_mimic_report(REPORT_COMBINED)
    assert combined["impression"].startswith("Right internal jugular line")
    assert combined["indication"] == "Line placement."
    assert parse_mimic_report(REPORT_NO_SECTIONS) == dict.fromkeys(combined, "")
    assert parse_mimic_report("") == dict.fromkeys(combined, "")


def test_parse_repeated_section_keeps_last_and_stops_at_next_header():
    text = (
        "IMPRESSION: preliminary read.\n"
        "FINDINGS: Lungs are clear.\n"
        "RECOMMENDATION(S): Follow-up in 3 months.\n"
        "IMPRESSION:\n  Final: no acute process.\n"
        "IMPRESSION:   \n"
        "NOTIFICATION: discussed with Dr. ___ at 10:30.\n"
    )
    sections = parse_mimic_report(text)
    assert sections["findings"] == "Lungs are clear."
    # The empty trailing IMPRESSION does not erase the earlier one; "Final:" is not a header (not capitals).
    assert sections["impression"] == "Final: no acute process."


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("name", [SPLIT_FILE, CHEXPERT_FILE, METADATA_FILE])
def test_missing_csv(mimic_root: Path, name: str):
    (mimic_root / name).unlink()
    with pytest.raises(DataError, match=f"MIMIC-CXR file not found: .*{name.replace('.', '[.]')}"):
        load_mimic_cxr_dataset(mimic_root)


def test_missing_label_column(mimic_root: Path):
    rewrite_table(mimic_root, CHEXPERT_FILE, lambda df: df.drop(columns=["Lung Lesion"]))
    with pytest.raises(DataError, match=r"chexpert\.csv\.gz is missing required column\(s\): 'Lung Lesion'"):
        load_mimic_cxr_dataset(mimic_root)


def test_missing_view_column(mimic_root: Path):
    rewrite_table(mimic_root, METADATA_FILE, lambda df: df.drop(columns=["ViewPosition"]))
    with pytest.raises(DataError, match=r"metadata\.csv\.gz is missing required column\(s\): 'ViewPosition'"):
        load_mimic_cxr_dataset(mimic_root)


def test_bad_label_value_names_row_and_column(mimic_root: Path):
    def edit(df):
        df.loc[2, "Fracture"] = "2.0"
        return df
    rewrite_table(mimic_root, CHEXPERT_FILE, edit)
    with pytest.raises(DataError, match=r"chexpert\.csv\.gz row 4: column 'Fracture' has '2\.0'"):
        load_mimic_cxr_dataset(mimic_root)


def test_unknown_split_name_in_file(mimic_root: Path):
    def edit(df):
        df.loc[3, "split"] = "holdout"
        return df
    rewrite_table(mimic_root, SPLIT_FILE, edit)
    with pytest.raises(DataError, match=r"split\.csv\.gz row 5: unknown split 'holdout'"):
        load_mimic_cxr_dataset(mimic_root)


def test_unknown_split_argument(mimic_root: Path):
    with pytest.raises(DataError, match="unknown split 'dev'"):
        load_mimic_cxr_dataset(mimic_root, split="dev")


def test_non_integer_id(mimic_root: Path):
    def edit(df):
        df.loc[0, "study_id"] = "s50414267"
        return df
    rewrite_table(mimic_root, SPLIT_FILE, edit)
    with pytest.raises(DataError, match=r"split\.csv\.gz row 2: study_id 's50414267' is not an integer id"):
        load_mimic_cxr_dataset(mimic_root)


def test_image_without_metadata_row(mimic_root: Path):
    rewrite_table(mimic_root, METADATA_FILE, lambda df: df[df["dicom_id"] != "d2-ap"])
    with pytest.raises(DataError, match=r"dicom_id 'd2-ap' has no row in .*metadata\.csv\.gz"):
        load_mimic_cxr_dataset(mimic_root)


def test_missing_image_file(mimic_root: Path):
    (mimic_root / "files/p10/p10000032/s53189527/d2-ap.jpg").unlink()
    with pytest.raises(DataError, match=r"split\.csv\.gz row 4: image file not found: .*s53189527/d2-ap\.jpg"):
        load_mimic_cxr_dataset(mimic_root)
    # verify=False trusts the tables (for slow network file systems).
    assert len(load_mimic_cxr_dataset(mimic_root, verify=False)["images"]) == 2


def test_missing_report_file(mimic_root: Path):
    (mimic_root / "mimic-cxr-reports/files/p11/p11000011/s51234567.txt").unlink()
    with pytest.raises(DataError, match=r"report file not found: .*p11/p11000011/s51234567\.txt"):
        load_mimic_cxr_dataset(mimic_root, split="val")


def test_report_without_findings_or_impression(mimic_root: Path):
    report = mimic_root / "mimic-cxr-reports/files/p10/p10000032/s53189527.txt"
    report.write_text(REPORT_NO_SECTIONS)
    with pytest.raises(DataError, match=r"s53189527\.txt has neither a FINDINGS nor an IMPRESSION section"):
        load_mimic_cxr_dataset(mimic_root)
    ds = load_mimic_cxr_dataset(mimic_root, skip_unusable_reports=True)
    assert [m["dicom_id"] for m in ds["metadata"]] == ["d1-pa"]


def test_no_images_left_after_filter(mimic_root: Path):
    with pytest.raises(DataError, match="no SWIMMERS images in split 'train'"):
        load_mimic_cxr_dataset(mimic_root, views=("SWIMMERS",))
