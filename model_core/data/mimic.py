"""MIMIC-CXR-JPG loader: the production-scale counterpart of `load_iu_xray`, returning the same dict.

MIMIC-CXR-JPG 2.0.0 is a *credentialed* PhysioNet dataset (signed data use agreement, training in
human-subjects research); it is not in this repository and cannot be downloaded by code here. This
loader is therefore tested on the official file *layout* only (a tiny synthetic fixture built from
the embedded IU X-ray JPEGs in `tests/model_core/data/test_mimic.py`), never on real MIMIC data.

Expected layout (the PhysioNet download, reports unzipped beside it):

    data_dir/
      mimic-cxr-2.0.0-split.csv.gz      dicom_id, study_id, subject_id, split (train/validate/test)
      mimic-cxr-2.0.0-chexpert.csv.gz   subject_id, study_id, the 14 CheXpert columns (1.0/0.0/-1.0/blank)
      mimic-cxr-2.0.0-metadata.csv.gz   dicom_id, ViewPosition, ... (one row per image)
      files/p10/p10000032/s50414267/<dicom_id>.jpg
      mimic-cxr-reports/files/p10/p10000032/s50414267.txt      (free-text report, one per study)

The `.csv.gz` files may also be present uncompressed (`.csv`).

Labels keep the CheXpert encoding of `model_core.chexpert`: 1 positive, 0 negative *or blank*
(not mentioned), -1 uncertain; columns are reordered to `CHEXPERT_LABELS`. Studies that have no
row in the CheXpert file (a handful in the real release) are dropped with a warning, because an
all-blank vector would silently claim "nothing mentioned".

Reports are free text with section headers in capitals followed by a colon ("INDICATION:",
"FINDINGS:", "IMPRESSION:", ...); `parse_mimic_report` pulls out findings / impression /
indication / comparison, whitespace-normalised. MIMIC's `___` de-identification tokens are kept
as they are (as IU X-ray's `XXXX` are in `load_iu_xray`).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from model_core.chexpert import CHEXPERT_LABELS, NEGATIVE, NUM_LABELS, POSITIVE, UNCERTAIN
from model_core.data.manifest import DataError, csv_row_number
from model_core.data.reports import format_report

log = logging.getLogger(__name__)

SPLIT_FILE = "mimic-cxr-2.0.0-split.csv.gz"
CHEXPERT_FILE = "mimic-cxr-2.0.0-chexpert.csv.gz"
METADATA_FILE = "mimic-cxr-2.0.0-metadata.csv.gz"
REPORTS_DIRNAME = "mimic-cxr-reports"

# Split names in the official split file → the project's split names.
SPLIT_NAMES = {"train": "train", "validate": "val", "val": "val", "test": "test"}
SPLITS = ("train", "val", "test", "all")
FRONTAL_VIEWS = ("PA", "AP")
PROGRESS_MIN_ROWS = 5000  # show a progress bar only for real-size splits

# Section header (capitals, then a colon) at the start of a line: "FINDINGS:", "CLINICAL HISTORY:".
_HEADER_RE = re.compile(r"^[ \t]*([A-Z][A-Z ()/,&-]*[A-Z)])[ \t]*:", re.MULTILINE)
# Header name (normalised: upper case, single spaces) → the metadata field it fills.
SECTION_ALIASES: dict[str, str] = {
    "FINDINGS": "findings",
    "FINDING": "findings",
    "IMPRESSION": "impression",
    "IMPRESSIONS": "impression",
    "CONCLUSION": "impression",
    "CONCLUSIONS": "impression",
    # Combined sections go to impression, as in the MIMIC-CXR authors' section parser.
    "FINDINGS AND IMPRESSION": "impression",
    "FINDINGS/IMPRESSION": "impression",
    "IMPRESSION AND FINDINGS": "impression",
    "INDICATION": "indication",
    "INDICATIONS": "indication",
    "CLINICAL INDICATION": "indication",
    "HISTORY": "indication",
    "CLINICAL HISTORY": "indication",
    "REASON FOR EXAM": "indication",
    "REASON FOR EXAMINATION": "indication",
    "COMPARISON": "comparison",
    "COMPARISONS": "comparison",
}
REPORT_FIELDS = ("findings", "impression", "indication", "comparison")


# --------------------------------------------------------------------------- reports

def parse_mimic_report(text: str) -> dict[str, str]:
    """Free-text MIMIC-CXR report → {"findings", "impression", "indication", "comparison"} (str, '' if absent).

    A section runs from its header to the next capitalised header. When a section occurs more than
    once (a wet read before the final report, an addendum) the last non-empty one wins. Text before
    the first header ("FINAL REPORT", "EXAMINATION: ...") and unknown sections are ignored.
    """
    sections = dict.fromkeys(REPORT_FIELDS, "")
    headers = list(_HEADER_RE.finditer(text))
    for header, nxt in zip(headers, headers[1:] + [None]):
        name = " ".join(header.group(1).split())
        field = SECTION_ALIASES.get(name)
        if field is None:
            continue
        body = " ".join(text[header.end(): nxt.start() if nxt else len(text)].split())
        if body:
            sections[field] = body
    return sections


def study_dir(subject_id: int, study_id: int) -> Path:
    """Relative folder of a study: files/p10/p10000032/s50414267 (pXX = first two digits of the subject)."""
    subject = str(subject_id)
    return Path("files") / f"p{subject[:2]}" / f"p{subject}" / f"s{study_id}"


# --------------------------------------------------------------------------- CSV tables

def _find_table(data_dir: Path, name: str) -> Path:
    """The official `.csv.gz` file, or the same file uncompressed."""
    for candidate in (data_dir / name, data_dir / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    raise DataError(f"MIMIC-CXR file not found: {data_dir / name} (nor an uncompressed .csv)")


def _read_table(path: Path, required: tuple[str, ...], id_columns: tuple[str, ...] = ()) -> pd.DataFrame:
    """Read one official CSV, check its columns, parse integer id columns (DataError naming the row)."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, EOFError) as exc:
        raise DataError(f"{path} is not a readable CSV: {exc}") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"{path} is missing required column(s): {', '.join(repr(c) for c in missing)}")
    for col in id_columns:
        values = df[col].str.strip()
        bad = df.index[~values.str.fullmatch(r"\d+")]
        if len(bad):
            i = bad[0]
            raise DataError(f"{path} row {csv_row_number(i)}: {col} {df.at[i, col]!r} is not an integer id")
        df[col] = values.astype(np.int64)
    if "dicom_id" in df.columns:
        df["dicom_id"] = df["dicom_id"].str.strip()
    return df


def _study_labels(path: Path, table: pd.DataFrame) -> dict[int, np.ndarray]:
    """study_id → float32 (14,) label vector in CHEXPERT_LABELS order; blank → 0.0 (not mentioned)."""
    raw = table[list(CHEXPERT_LABELS)].apply(lambda col: col.str.strip())
    values = raw.replace("", str(NEGATIVE)).apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    valid = np.isin(values, (POSITIVE, NEGATIVE, UNCERTAIN))
    if not valid.all():
        pos, k = np.argwhere(~valid)[0]
        column = CHEXPERT_LABELS[k]
        raise DataError(
            f"{path} row {csv_row_number(table.index[pos])}: column {column!r} has {raw.iat[pos, k]!r}; "
            "expected 1.0, 0.0, -1.0 or blank"
        )
    duplicated = table.index[table["study_id"].duplicated()]
    if len(duplicated):
        i = duplicated[0]
        raise DataError(f"{path} row {csv_row_number(i)}: study_id {table.at[i, 'study_id']} appears twice")
    return dict(zip(table["study_id"].tolist(), values.astype(np.float32)))


# --------------------------------------------------------------------------- dataset

def load_mimic_cxr_dataset(
    data_dir: str | os.PathLike,
    split: str = "train",
    views: tuple[str, ...] | None = FRONTAL_VIEWS,
    image_size: int = 512,
    reports_dir: str | os.PathLike | None = None,
    verify: bool = True,
    skip_unusable_reports: bool = False,
) -> dict:
    """Load one split of MIMIC-CXR-JPG in the official layout (see the module docstring).

    Args:
        data_dir: folder holding the three `mimic-cxr-2.0.0-*.csv.gz` tables and `files/`.
        split: "train", "val" (the official "validate"; "validate" is accepted too), "test" or "all".
        views: DICOM ViewPosition values kept, case-insensitive (default frontal: PA and AP);
            None keeps every image.
        image_size: side in pixels of the square model input, recorded for `load_image` callers.
        reports_dir: folder holding `files/pXX/pXXXXXXXX/sXXXXXXXX.txt` (default data_dir/mimic-cxr-reports).
        verify: check that every kept image file exists.
        skip_unusable_reports: drop (with a warning) studies whose report has neither a findings nor an
            impression section instead of raising. A few % of real MIMIC-CXR reports have no such
            headers, so a full-dataset run may need this.

    Returns: the `load_iu_xray` dict, one entry per kept image, ordered by (subject, study, dicom):
        images: list[str] absolute JPEG paths
        reports: list[str] "FINDINGS: ... IMPRESSION: ..." (an empty section is omitted)
        labels: torch.FloatTensor (N, 14), CheXpert order, 1 / 0 / -1 (uncertain kept; see `binarize`)
        metadata: list[dict] study_id, subject_id, dicom_id (str), split, view, image_path, findings,
            impression, indication, comparison ('' when absent), mesh (None), age, sex (None: not in
            MIMIC-CXR-JPG)
        image_size: int

    Raises DataError naming the file/row at fault: a missing CSV, a missing column, an unknown split
    (argument or file value), a non-integer id or label value, a missing image or report file, or a
    report with neither findings nor impression (unless `skip_unusable_reports`).
    """
    data_dir = Path(data_dir)
    reports_dir = Path(reports_dir) if reports_dir is not None else data_dir / REPORTS_DIRNAME
    wanted = _normalise_split_arg(split)
    if image_size <= 0:
        raise DataError(f"image size must be positive, got {image_size}")
    if views is not None:
        if isinstance(views, str) or not views:
            raise DataError(f"views must be a non-empty tuple of ViewPosition values or None, got {views!r}")
        wanted_views = {v.strip().upper() for v in views}

    split_path = _find_table(data_dir, SPLIT_FILE)
    chexpert_path = _find_table(data_dir, CHEXPERT_FILE)
    metadata_path = _find_table(data_dir, METADATA_FILE)
    splits = _read_table(split_path, ("dicom_id", "study_id", "subject_id", "split"), ("study_id", "subject_id"))
    chexpert = _read_table(chexpert_path, ("subject_id", "study_id", *CHEXPERT_LABELS), ("subject_id", "study_id"))
    meta = _read_table(metadata_path, ("dicom_id", "ViewPosition"))

    # Split names: validate → val; anything else is an error naming the row.
    split_values = splits["split"].str.strip().str.lower()
    unknown = splits.index[~split_values.isin(list(SPLIT_NAMES))]
    if len(unknown):
        i = unknown[0]
        raise DataError(
            f"{split_path} row {csv_row_number(i)}: unknown split {splits.at[i, 'split']!r}; "
            f"expected one of {sorted(SPLIT_NAMES)}"
        )
    splits["split"] = split_values.map(SPLIT_NAMES)
    if wanted != "all":
        splits = splits[splits["split"] == wanted]

    # View of each image from the metadata table.
    view_of = dict(zip(meta["dicom_id"], meta["ViewPosition"].str.strip()))
    no_meta = splits.index[~splits["dicom_id"].isin(list(view_of))]
    if len(no_meta):
        i = no_meta[0]
        raise DataError(
            f"{split_path} row {csv_row_number(i)}: dicom_id {splits.at[i, 'dicom_id']!r} has no row in {metadata_path}"
        )
    splits = splits.assign(view=splits["dicom_id"].map(view_of))
    if views is not None:
        splits = splits[splits["view"].str.upper().isin(wanted_views)]

    # Labels by study; studies the CheXpert file does not cover are dropped (see module docstring).
    labels_by_study = _study_labels(chexpert_path, chexpert)
    unlabelled = ~splits["study_id"].isin(list(labels_by_study))
    if unlabelled.any():
        log.warning("dropping %d image(s) of %d study(ies) with no row in %s",
                    int(unlabelled.sum()), splits.loc[unlabelled, "study_id"].nunique(), chexpert_path.name)
        splits = splits[~unlabelled]
    splits = splits.sort_values(["subject_id", "study_id", "dicom_id"], kind="stable")
    if splits.empty:
        views_text = "any view" if views is None else "/".join(views)
        raise DataError(f"no {views_text} images in split {split!r} of {split_path}")

    images, reports, labels, metadata = [], [], [], []
    parsed: dict[int, dict[str, str] | None] = {}
    skipped_studies: set[int] = set()
    rows = tqdm(splits.iterrows(), total=len(splits), desc="Reading MIMIC-CXR reports", unit="image",
                leave=False, disable=len(splits) < PROGRESS_MIN_ROWS)
    for idx, row in rows:
        subject_id, study_id, dicom_id = int(row["subject_id"]), int(row["study_id"]), row["dicom_id"]
        folder = study_dir(subject_id, study_id)
        if study_id not in parsed:
            parsed[study_id] = _read_report(reports_dir / folder.with_suffix(".txt"), skip_unusable_reports)
        sections = parsed[study_id]
        if sections is None:
            skipped_studies.add(study_id)
            continue
        image_path = (data_dir / folder / f"{dicom_id}.jpg").resolve()
        if verify and not image_path.is_file():
            raise DataError(f"{split_path} row {csv_row_number(idx)}: image file not found: {image_path}")
        images.append(str(image_path))
        reports.append(format_report(sections["findings"], sections["impression"]))
        labels.append(labels_by_study[study_id])
        metadata.append({
            "study_id": study_id, "subject_id": subject_id, "dicom_id": dicom_id, "split": row["split"],
            "view": row["view"], "image_path": str(image_path), **sections,
            "mesh": None, "age": None, "sex": None,
        })
    if skipped_studies:
        log.warning("skipped %d study(ies) whose report has neither findings nor impression", len(skipped_studies))
    if not images:
        raise DataError(f"no usable images in split {split!r} of {split_path}")
    label_tensor = torch.from_numpy(np.stack(labels).astype(np.float32)).reshape(-1, NUM_LABELS)
    log.info("loaded %d MIMIC-CXR image(s) of %d study(ies), split %s", len(images),
             len(parsed) - len(skipped_studies), wanted)
    return {"images": images, "reports": reports, "labels": label_tensor, "metadata": metadata,
            "image_size": image_size}


def _normalise_split_arg(split: str) -> str:
    if split == "validate":
        return "val"
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {SPLITS} (or 'validate')")
    return split


def _read_report(path: Path, skip_unusable: bool) -> dict[str, str] | None:
    """Parse one report file; None when it is unusable and `skip_unusable` is set."""
    if not path.is_file():
        raise DataError(f"report file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read report file {path}: {exc}") from None
    sections = parse_mimic_report(text)
    if not sections["findings"] and not sections["impression"]:
        if skip_unusable:
            return None
        raise DataError(f"report file {path} has neither a FINDINGS nor an IMPRESSION section")
    return sections
