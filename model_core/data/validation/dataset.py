"""The frames the data-validation suites run on, derived from the manifest.

    manifest       one row per image (the rows of the splits validated), plus the image columns
    split_rows     one row per image of the whole manifest: split and effective split
    splits         distinct (uid, split) pairs of the manifest and of splits.csv
    studies        one row per uid: report present, number of variants of the study-level fields
    labels         one row per study and label: the MeSH-derived CheXpert value
    report_text    each distinct text of a study's report section once
    image_content  one row per (image SHA-256, split) of the images decoded

Every frame keeps `row`, the CSV line number of the manifest row it comes from (header = line 1).
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from model_core.chexpert import CHEXPERT_LABELS
from model_core.data.manifest import MANIFEST_COLUMNS, DataError, study_splits
from model_core.data.validation.images import image_columns
from model_core.data.validation.report import safe_value
from model_core.data.validation.rules import REQUIRED_NON_EMPTY, STUDY_FIELDS, TEXT_COLUMNS
from model_core.labels.mesh import mesh_to_chexpert


def read_raw_manifest(path: Path) -> tuple[pd.DataFrame, str]:
    """The manifest as `read_manifest` reads it (all str, '' for empty), without stopping at the first
    problem, plus the SHA-256 of the bytes parsed."""
    if not path.is_file():
        raise DataError(f"manifest not found: {path}")
    data = path.read_bytes()
    try:
        df = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"manifest {path} is not a readable CSV: {exc}") from None
    df.columns = [str(c) for c in df.columns]
    for col in df.columns:
        df[col] = df[col].str.strip()
    if "row" in df.columns:  # the CSV line number below takes the name
        df = df.rename(columns={"row": "row (manifest)"})
    df.insert(0, "row", np.arange(len(df), dtype=np.int64) + 2)  # CSV line number, header is line 1
    return df.reset_index(drop=True), hashlib.sha256(data).hexdigest()


def build_frames(raw, images_root, selected, min_size, sample_images, sample_seed, workers):
    """The frames of the module docstring (None or absent where the manifest lacks the columns) and statistics."""
    full = raw.copy()
    cols = set(full.columns)
    for col in REQUIRED_NON_EMPTY:
        if col in cols:
            full[col] = full[col].where(full[col] != "", None)
    stats: dict[str, Any] = {"rows": int(len(full)), "columns_missing": [c for c in MANIFEST_COLUMNS if c not in cols]}
    frames: dict[str, pd.DataFrame | None] = {}
    if "uid" in cols:
        stats["studies"] = int(full["uid"].dropna().nunique())
        frames["splits"], stats["splits_source"] = _effective_split(full, images_root)
    if "effective_split" in full:
        stats["splits"] = {
            s: {"studies": int(g["uid"].nunique()), "images": int(len(g))}
            for s, g in full.groupby(full["effective_split"].fillna("<none>").map(safe_value), sort=True)
        }
        # Split membership is checked on every row; the other checks on the selected splits' rows.
        frames["split_rows"] = full[[c for c in ("row", "uid", "split", "effective_split") if c in full.columns]]
    if selected is not None and "effective_split" in full:
        df = full[full["effective_split"].isin(selected)].reset_index(drop=True)
        stats["splits_validated"] = list(selected)
    else:
        df = full
        stats["splits_validated"] = "all" if selected is None else "all (the manifest has no split information)"
    stats["rows_validated"] = int(len(df))
    if "projection" in cols:
        counts = df["projection"].fillna("<empty>").map(safe_value).value_counts()
        stats["projections"] = {str(k): int(v) for k, v in counts.items()}
    frames["manifest"] = df
    if "mesh" in cols:
        long = frames["labels"] = _label_frame(df)
        if "uid" in cols:
            first_rows = long.drop_duplicates("uid")["row"]
            positives = long[long["row"].isin(first_rows) & (long["value"] == 1)]
            counts = positives["label"].value_counts()
            stats["label_positives_per_study"] = {str(k): int(counts.get(k, 0)) for k in long["label"].unique()}
    text_cols = [c for c in TEXT_COLUMNS if c in cols]
    if text_cols:
        frames["report_text"] = _text_frame(df, text_cols)
    if "uid" in cols:
        frames["studies"] = _study_frame(df)
    if "image" in cols:
        stats["images"], frames["image_content"] = image_columns(df, images_root, min_size, sample_images,
                                                                  sample_seed, workers)
    else:
        stats["images"] = {"mode": "skipped (no image column)", "decoded": 0}
    return frames, stats


def _effective_split(df: pd.DataFrame, root: Path) -> tuple[pd.DataFrame | None, str]:
    """Add `effective_split` (study_splits) and return the distinct (uid, split) pairs to check."""
    splits_file = root / "splits.csv"
    table = None
    if splits_file.is_file():
        table = pd.read_csv(splits_file, dtype=str, keep_default_na=False)
        if list(table.columns) != ["uid", "split"]:
            raise DataError(f"{splits_file} must have exactly the columns uid,split")
        source = "splits.csv"
    elif "split" in df.columns:
        source = "manifest split column"
    else:
        return None, "none (no split column, no splits.csv)"
    uid_known = df.assign(uid=df["uid"].fillna(""))
    try:
        df["effective_split"] = study_splits(root, uid_known).values
    except DataError:  # a study without a split in splits.csv: leave it empty, `splits.assigned` names it
        df["effective_split"] = uid_known["uid"].map(dict(zip(table["uid"], table["split"]))).values
    df["effective_split"] = df["effective_split"].where(df["effective_split"] != "", None)
    pairs = df.loc[df["uid"].notna() & df["effective_split"].notna(), ["row", "uid", "effective_split"]]
    pairs = pairs.drop_duplicates(["uid", "effective_split"]).rename(columns={"effective_split": "split"})
    pairs["source"] = "manifest"
    if table is not None:  # a uid listed twice in splits.csv with two splits is an overlap too
        extra = table.drop_duplicates().assign(row=lambda t: t.index.to_numpy() + 2, source="splits.csv")
        pairs = pd.concat([pairs, extra[["row", "uid", "split", "source"]]], ignore_index=True)
        pairs = pairs.drop_duplicates(["uid", "split"])
    return pairs.reset_index(drop=True), source


def _label_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Long format (row, uid, label, value): the 14 MeSH-derived labels of each distinct (uid, mesh)."""
    distinct = df.drop_duplicates([c for c in ("uid", "mesh") if c in df.columns])
    cache: dict[str, np.ndarray] = {}
    for value in distinct["mesh"].unique():
        try:
            cache[value] = np.asarray(mesh_to_chexpert(value), dtype=np.float64)
        except ValueError:  # not a string: no label can be derived; -99 is not in {0, 1}
            cache[value] = np.full(len(CHEXPERT_LABELS), -99.0)
    k = len(CHEXPERT_LABELS)
    values = np.stack([cache[v] for v in distinct["mesh"]]) if len(distinct) else np.zeros((0, k))
    uids = distinct["uid"].to_numpy() if "uid" in distinct else np.full(len(distinct), None, dtype=object)
    return pd.DataFrame({
        "row": np.repeat(distinct["row"].to_numpy(), k),
        "uid": np.repeat(uids, k),
        "label": np.tile(np.array(CHEXPERT_LABELS, dtype=object), len(distinct)),
        "value": values.reshape(-1),
    })


def _text_frame(df: pd.DataFrame, text_cols: list[str]) -> pd.DataFrame:
    """Long format (row, uid, section, text): each distinct text of a study's section once (first row kept)."""
    uids = df["uid"] if "uid" in df else pd.Series(None, index=df.index, dtype=object)
    parts = [pd.DataFrame({"row": df["row"], "uid": uids, "section": col, "text": df[col]})
             .drop_duplicates(["uid", "text"]) for col in text_cols]
    out = pd.concat(parts, ignore_index=True)
    return out[out["text"] != ""].reset_index(drop=True)


def _study_frame(df: pd.DataFrame) -> pd.DataFrame:
    """One row per uid: first CSV row, variants of the study-level fields, report present (True or None)."""
    rows = df[df["uid"].notna()]
    fields = [c for c in STUDY_FIELDS if c in rows.columns]
    grouped = rows.groupby("uid", sort=False)
    study = grouped.agg(row=("row", "first")).reset_index()
    if fields:
        variants = grouped[fields].nunique(dropna=False)
        study["n_study_variants"] = variants.max(axis=1).reindex(study["uid"]).to_numpy()
    if "findings" in rows.columns or "impression" in rows.columns:
        first = rows.drop_duplicates("uid").set_index("uid")
        findings = first["findings"] if "findings" in first else pd.Series("", index=first.index)
        impression = first["impression"] if "impression" in first else pd.Series("", index=first.index)
        has_report = (findings.str.len() > 0) | (impression.str.len() > 0)
        study["report_present"] = has_report.reindex(study["uid"]).map({True: True, False: None}).to_numpy()
    return study
