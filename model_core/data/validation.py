"""Data-validation gate for IU-format datasets: a Great Expectations (1.x) suite over the manifest.

`validate_dataset(manifest_path, images_root, out_dir, ...)` reads the manifest (the contract of
`model_core.data`), derives per-study, per-split and per-image columns, validates them with GE
expectations on pandas dataframes and writes a JSON and an HTML report into `out_dir`.
`raise_on_failure(result)` turns a failed validation into a pipeline stop (`DataValidationError`,
a `DataError`).

What is checked (the `check` id of each expectation in brackets; every one is a GE expectation):

Manifest contract (frame "manifest", one row per image)
  * the manifest has rows                                           [contract.rows]
  * every column of `MANIFEST_COLUMNS` exists                       [contract.column_present]
  * uid, image, projection are non-null and non-blank               [contract.non_empty]
Per study (frame "studies", one row per uid)
  * findings OR impression is non-empty                             [contract.report_non_empty]
  * the study-level fields (indication, comparison, findings, impression, mesh) are the same on
    every image row of the study                                    [contract.study_consistent]
Splits (effective split from `model_core.data.study_splits`: splits.csv beside the images wins;
always over the whole manifest, whatever `splits=` selects)
  * every row has an effective split, in {train, val, test}         [splits.assigned, splits.allowed]
  * the manifest's own `split` column is in {train, val, test}      [labels.split]
    (frame "split_rows": one row per image)
  * each study is in exactly one split (frame "splits": distinct (uid, split) pairs of the
    manifest and of splits.csv; uid unique)                         [splits.disjoint]
  * no image file is listed twice, and no identical image file (same SHA-256) is in two
    splits (frame "image_content", over the images decoded)         [images.unique_path, splits.disjoint_content]
Labels
  * projection in {Frontal, Lateral}                                [labels.projection]
  * the 14 MeSH-derived CheXpert labels (`model_core.labels.mesh_to_chexpert`) in {0, 1} (frame
    "labels": one row per study and label; examples name the label)  [labels.mesh_chexpert]
PHI in report text (indication, comparison, findings, impression), see `PHI_PATTERNS` (frame
"report_text": each distinct text of a study's section once; examples name the section)
  * titled names ("Dr. Smith", "Mr Jones", "DR. JONES"), MRN / accession / patient-id numbers,
    any run of 6+ digits, date-of-birth phrases followed by a number, full dates (d/m/yyyy,
    d-m-yy, yyyy-mm-dd, "March 3, 1950"), phone numbers, SSN-shaped numbers, e-mail addresses.
    The collection's own `XXXX` masks pass ("Dr. XXXX", "DOB: XXXX"), and so does clinical
    text such as "T12 vertebral body", "5 mm nodule", "2 cm", "1-1/2 weeks", "ratio of
    16.2/24.7". Month/day fragments whose year is masked ("11/7/ XXXX") are not flagged: a
    d/m pattern cannot be told from a ratio ("19/33").                [phi.<pattern>]
Images (frame "manifest"; computed columns validated by GE expectations)
  * the path stays inside `images_root`                             [images.in_root]
  * the file exists (every row, always)                             [images.exists]
  * it decodes fully (PIL; truncated files fail) under the same decompression-bomb guard as
    `model_core.data.load_image`                                    [images.decodable]
  * grayscale-sane: PIL mode L, I;16*, I or RGB (RGB only with identical channels: mean
    per-pixel channel spread <= `MAX_CHANNEL_SPREAD`), bit depth 8 or 16
                                                                    [images.mode, images.bit_depth, images.grayscale]
  * width and height >= `min_image_size` (the model input size)     [images.min_size]
  * after the project's one preprocessing path (`model_core.data.pil_to_tensor` at
    `min_image_size`): values within [0, 1] and pixel std >= `MIN_PIXEL_STD` (not blank); and at
    most `MAX_SATURATED_FRACTION` of the pixels at 0 or 255 after load_image's 8-bit conversion at
    native size (catches a 16-bit image that `convert("L")` clips to white)
                                                                    [images.range, images.not_blank, images.not_saturated]
  Decoding uses a thread pool. With `sample_images=N` only a seeded sample of N image rows is
  decoded (existence is still checked for every row); the statistics record the mode, seed and
  the sampled rows.

Reports: failures name the check, the GE expectation type, the frame and column, the number of
failing rows and up to `MAX_EXAMPLES` example rows as CSV line numbers and study uids (plus the
report section or label name, in those frames). Report
text (and image paths, which may carry identifiers) never appears in failures, logs or reports;
observed bad values are shown only for enumerated or numeric columns (projection, split, labels,
image size/mode/statistics), and only when short (a shifted CSV can put report text anywhere).

Manifest-level problems that make validation impossible (file missing, not a CSV, splits.csv not
exactly `uid,split`) raise `DataError`; every data problem is a failed expectation instead.

HTML report: rendered here, self-contained (inline CSS, no scripts). GE data docs do build
offline into a folder, but (a) their validation pages print the unexpected values, i.e. the report
text holding the suspected PHI, and (b) the pages load Bootstrap, jQuery, Vega and fonts from
public CDNs when opened, so they are not used.

Great Expectations runs in an ephemeral context with in-memory stores, analytics off
(`GX_ANALYTICS_ENABLED=false` and `analytics_enabled=False` in the context config) and progress
bars off; nothing is written outside `out_dir`.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from model_core.data.images import MAX_IMAGE_PIXELS, pil_to_tensor
from model_core.data.manifest import MANIFEST_COLUMNS, SPLIT_SEED, VIEWS, DataError, study_splits
from model_core.files import atomic_write_text
from model_core.phi import PHI_PATTERNS

log = logging.getLogger(__name__)

ALLOWED_SPLITS = ("train", "val", "test")
REQUIRED_NON_EMPTY = ("uid", "image", "projection")
TEXT_COLUMNS = ("indication", "comparison", "findings", "impression")
STUDY_FIELDS = ("indication", "comparison", "findings", "impression", "mesh")
PRODUCTION_IMAGE_SIZE = 512
MIN_PIXEL_STD = 0.02            # after loading to [0, 1]; the embedded images have std >= 0.12
MAX_SATURATED_FRACTION = 0.6    # share of pixels at 0 or 255 after the 8-bit conversion; embedded data: <= 0.38
MAX_CHANNEL_SPREAD = 0.02       # mean (max channel - min channel) / 255 for RGB-stored grayscale
GRAYSCALE_MODES = ("L", "I;16", "I;16L", "I;16B", "I", "RGB")
MAX_EXAMPLES = 10
REPORT_JSON = "data_validation.json"
REPORT_HTML = "data_validation.html"

# Columns whose observed bad values may be shown (enumerated or numeric, never free text or paths).
_SAFE_VALUE_COLUMNS = {"projection", "split", "effective_split", "image_mode", "image_bit_depth",
                       "image_width", "image_height", "pixel_min", "pixel_max", "pixel_std",
                       "pixel_saturated", "image_channel_spread", "n_study_variants", "value"}


class DataValidationError(DataError):
    """The data-validation gate failed; the message lists the failing checks and example rows."""


@dataclass
class ValidationResult:
    success: bool
    failures: list[dict]
    statistics: dict
    report_html: Path
    report_json: Path
    expectations: list[dict] = field(default_factory=list)

    def summary(self) -> str:
        return _failure_message(self) if not self.success else (
            f"data validation passed ({self.statistics.get('expectations_evaluated', 0)} expectations)")


def raise_on_failure(result: ValidationResult) -> ValidationResult:
    """Raise `DataValidationError` when the validation failed; return the result otherwise."""
    if not result.success:
        raise DataValidationError(_failure_message(result))
    return result


def _failure_message(result: ValidationResult) -> str:
    lines = [f"data validation failed: {len(result.failures)} expectation(s) failed (report: {result.report_html})"]
    for f in result.failures:
        where = f"column '{f['column']}'" if f.get("column") else f"frame '{f['frame']}'"
        rows = ", ".join(_example_str(e) for e in f["examples"][:5])
        more = f" (+{f['unexpected_count'] - 5} more)" if f["unexpected_count"] and f["unexpected_count"] > 5 else ""
        detail = f"; {f['unexpected_count']} row(s): {rows}{more}" if rows else ""
        err = f"; error: {f['exception']}" if f.get("exception") else ""
        lines.append(f"  - [{f['check']}] {f['expectation']} on {where}{detail}{err}")
    return "\n".join(lines)


def _example_str(example: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in example.items())


# --------------------------------------------------------------------------- entry point

def validate_dataset(
    manifest_path: str | os.PathLike,
    images_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    min_image_size: int = PRODUCTION_IMAGE_SIZE,
    splits: str | Sequence[str] | None = None,
    sample_images: int | None = None,
    sample_seed: int = SPLIT_SEED,
    workers: int | None = None,
) -> ValidationResult:
    """Validate an IU-format dataset; write `out_dir/data_validation.{json,html}` (atomically).

    Args:
        manifest_path: the manifest CSV (one row per image).
        images_root: folder the manifest's image paths are relative to; a `splits.csv` there gives
            the effective study split (`model_core.data.study_splits`).
        out_dir: where the reports go.
        min_image_size: smallest accepted image side: the model input size (production 512; the
            embedded 256-px demo data validates with the demo model's 128).
        splits: effective split(s) whose rows are validated ("train", ["train", "val"], ...; None or
            "all": every row). Split membership and study disjointness are always checked over the
            whole manifest, since leakage cannot be seen from one split.
        sample_images: decode a seeded sample of this many image rows instead of all of them.
        sample_seed: seed of that sample.
        workers: image-decoding threads (default: CPU count, at most 8).

    Raises DataError only when the manifest cannot be read at all or splits.csv is malformed; every
    data problem is a failed expectation in the returned result.
    """
    t0 = time.perf_counter()
    manifest_path, images_root, out_dir = Path(manifest_path), Path(images_root), Path(out_dir)
    if min_image_size <= 0:
        raise DataError(f"min_image_size must be positive, got {min_image_size}")
    if sample_images is not None and sample_images <= 0:
        raise DataError(f"sample_images must be positive, got {sample_images}")
    raw, manifest_sha256 = _read_raw_manifest(manifest_path)
    selected = _selected_splits(splits)
    frames, stats = _build_frames(raw, images_root, selected, min_image_size, sample_images, sample_seed, workers)
    suites = _suites(frames, min_image_size)

    t_ge = time.perf_counter()
    checks = _run_ge(frames, suites)
    stats["ge_seconds"] = round(time.perf_counter() - t_ge, 3)
    failures = [c for c in checks if not c["success"]]
    stats.update({
        "manifest": str(manifest_path), "images_root": str(images_root),
        "manifest_sha256": manifest_sha256,
        "min_image_size": min_image_size,
        "expectations_evaluated": len(checks), "expectations_failed": len(failures),
        "great_expectations_version": _ge_version(),
        "elapsed_seconds": round(time.perf_counter() - t0, 3),
    })
    out_dir.mkdir(parents=True, exist_ok=True)
    result = ValidationResult(success=not failures, failures=failures, statistics=stats,
                              report_html=out_dir / REPORT_HTML, report_json=out_dir / REPORT_JSON,
                              expectations=checks)
    payload = {k: v for k, v in asdict(result).items() if k not in ("report_html", "report_json")}
    atomic_write_text(result.report_json, json.dumps(_jsonable(payload), indent=2, sort_keys=False) + "\n")
    atomic_write_text(result.report_html, _render_html(result))
    log.info("data validation %s: %d expectations, %d failed, %d rows, %d images decoded, %.1f s",
             "passed" if result.success else "FAILED", len(checks), len(failures), stats["rows"],
             stats["images"]["decoded"], stats["elapsed_seconds"])
    return result


# --------------------------------------------------------------------------- frames

def _selected_splits(splits) -> tuple[str, ...] | None:
    if splits is None:
        return None
    names = (splits,) if isinstance(splits, str) else tuple(splits)
    if "all" in names:
        return None
    unknown = [s for s in names if s not in ALLOWED_SPLITS]
    if unknown or not names:
        raise DataError(f"unknown split(s) {unknown or names}; expected a subset of {ALLOWED_SPLITS} or 'all'")
    return names


def _read_raw_manifest(path: Path) -> tuple[pd.DataFrame, str]:
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


def _build_frames(raw, images_root, selected, min_size, sample_images, sample_seed, workers):
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
            for s, g in full.groupby(full["effective_split"].fillna("<none>").map(_safe_value), sort=True)
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
        counts = df["projection"].fillna("<empty>").map(_safe_value).value_counts()
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
        stats["images"], frames["image_content"] = _image_columns(df, images_root, min_size, sample_images,
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
    from model_core.chexpert import CHEXPERT_LABELS
    from model_core.labels import labeler as labels_module

    distinct = df.drop_duplicates([c for c in ("uid", "mesh") if c in df.columns])
    cache: dict[str, np.ndarray] = {}
    for value in distinct["mesh"].unique():
        try:
            cache[value] = np.asarray(labels_module.mesh_to_chexpert(value), dtype=np.float64)
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


# --------------------------------------------------------------------------- images

def _image_columns(df, root: Path, min_size: int, sample_images, seed: int, workers):
    """Add per-row image columns; decode all rows or a seeded sample. Returns (stats, content frame)."""
    root_abs = Path(os.path.abspath(root))
    n = len(df)
    in_root = np.zeros(n, dtype=object)
    paths: list[Path | None] = []
    for i, rel in enumerate(df["image"]):
        if rel is None:
            in_root[i] = None
            paths.append(None)
            continue
        # Lexical check ("../", absolute paths), so symlinked image stores inside the root still pass.
        path = Path(os.path.normpath(root_abs / rel))
        ok = root_abs in path.parents
        in_root[i] = bool(ok)
        paths.append(path if ok else None)
    exists = np.array([None if p is None else p.is_file() for p in paths], dtype=object)
    df["image_in_root"] = in_root
    df["image_exists"] = exists

    candidates = [i for i in range(n) if exists[i]]
    if sample_images is not None and sample_images < len(candidates):
        rng = np.random.default_rng(seed)
        chosen = sorted(rng.choice(len(candidates), size=sample_images, replace=False).tolist())
        to_decode = [candidates[k] for k in chosen]
        mode = "sample"
    else:
        to_decode = candidates
        mode = "all"
    n_workers = workers or min(8, os.cpu_count() or 1)
    t0 = time.perf_counter()
    unique_paths = sorted({paths[i] for i in to_decode})
    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        decoded = dict(zip(unique_paths, pool.map(lambda p: _inspect_image(p, min_size), unique_paths)))
    decode_s = time.perf_counter() - t0

    keys = ("image_decodable", "image_mode", "image_bit_depth", "image_width", "image_height",
            "image_channel_spread", "pixel_min", "pixel_max", "pixel_std", "pixel_saturated", "image_sha256")
    columns = {k: [None] * n for k in keys}
    for i in to_decode:
        for k, v in decoded[paths[i]].items():
            columns[k][i] = v
    for k in keys:
        df[k] = pd.Series(columns[k], index=df.index, dtype=object)
    for k in ("image_width", "image_height", "image_bit_depth"):
        df[k] = pd.to_numeric(df[k]).astype("Int64") if df[k].notna().any() else df[k]
    for k in ("image_channel_spread", "pixel_min", "pixel_max", "pixel_std", "pixel_saturated"):
        df[k] = pd.to_numeric(df[k]).astype(float) if df[k].notna().any() else df[k]

    ok = df["image_decodable"] == True  # noqa: E712 (object column)
    stats = {
        "mode": mode, "rows": int(n), "existing": int(sum(bool(e) for e in exists)),
        "decoded": int(len(to_decode)), "unique_files_decoded": len(unique_paths),
        "decodable": int(ok.sum()), "decode_seconds": round(decode_s, 3), "workers": n_workers,
        "preprocess_size": min_size,
    }
    if mode == "sample":
        stats.update({"sample_size": sample_images, "sample_seed": seed,
                      "sampled_rows": [int(df.at[i, "row"]) for i in to_decode]})
    if ok.any():
        good = df[ok]
        stats.update({
            "pil_modes": {str(k): int(v) for k, v in good["image_mode"].value_counts().items()},
            "width": [int(good["image_width"].min()), int(good["image_width"].max())],
            "height": [int(good["image_height"].min()), int(good["image_height"].max())],
            "pixel_std": {"min": round(float(good["pixel_std"].min()), 4),
                          "median": round(float(good["pixel_std"].median()), 4)},
            "pixel_saturated_max": round(float(good["pixel_saturated"].max()), 4),
        })
    content = None
    if "effective_split" in df and ok.any():
        content = df.loc[ok & df["effective_split"].notna(), ["row", "uid", "image_sha256", "effective_split"]]
        content = content.drop_duplicates(["image_sha256", "effective_split"]).reset_index(drop=True)
    return stats, content


def _inspect_image(path: Path, size: int) -> dict:
    """Decode one file: mode, bit depth, size, and pixel statistics after the model's preprocessing."""
    from PIL import Image, UnidentifiedImageError

    out: dict[str, Any] = {"image_decodable": False}
    try:
        data = path.read_bytes()
        out["image_sha256"] = hashlib.sha256(data).hexdigest()
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_IMAGE_PIXELS:  # load_image refuses these: not decodable
                out.update(image_width=int(im.width), image_height=int(im.height))
                return out
            im.load()
            arr = np.asarray(im)
            out.update(image_mode=im.mode, image_width=int(im.width), image_height=int(im.height))
            if im.mode in ("I", "I;16", "I;16L", "I;16B"):
                out["image_bit_depth"] = 16 if arr.size == 0 or int(arr.max()) <= 65535 and int(arr.min()) >= 0 else 32
            elif im.mode == "1":
                out["image_bit_depth"] = 1
            elif im.mode == "F":
                out["image_bit_depth"] = 32
            else:
                out["image_bit_depth"] = 8
            if arr.ndim == 3 and arr.shape[2] >= 3:
                r, g, b = (arr[..., k] for k in range(3))
                if np.array_equal(r, g) and np.array_equal(r, b):  # the usual case; axis reductions are slow
                    out["image_channel_spread"] = 0.0
                else:
                    r, g, b = (c.astype(np.int32) for c in (r, g, b))
                    spread = np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)
                    out["image_channel_spread"] = float(spread.mean() / (65535.0 if arr.dtype == np.uint16 else 255.0))
            else:
                out["image_channel_spread"] = 0.0
            gray = im if im.mode == "L" else im.convert("L")  # the conversion load_image applies
            g = np.asarray(gray)
            saturated = float(np.mean((g == 0) | (g == 255)))  # at native size, where 16-bit clipping shows
            x = pil_to_tensor(gray, size).numpy()  # the project's preprocessing (numpy stats: torch's are slow here)
        out.update(
            image_decodable=True, pixel_saturated=saturated,
            pixel_min=float(x.min()), pixel_max=float(x.max()), pixel_std=float(x.std()),
        )
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        out["image_decodable"] = False
    return out


# --------------------------------------------------------------------------- expectations

def _gx():
    """Import Great Expectations with analytics off (set before the first import and before any context)."""
    os.environ["GX_ANALYTICS_ENABLED"] = "false"  # no phone-home, whatever the environment said
    import great_expectations as gx

    return gx


def _suites(frames: dict[str, pd.DataFrame], min_size: int) -> dict[str, list[tuple[str, Any]]]:
    """frame → [(check id, GE expectation)] for the columns that the frame has."""
    E = _gx().expectations
    m = frames["manifest"]
    has = set(m.columns)
    man: list[tuple[str, Any]] = [("contract.rows", E.ExpectTableRowCountToBeBetween(min_value=1))]
    man += [("contract.column_present", E.ExpectColumnToExist(column=c)) for c in MANIFEST_COLUMNS]
    man += [("contract.non_empty", E.ExpectColumnValuesToNotBeNull(column=c)) for c in REQUIRED_NON_EMPTY if c in has]
    if "projection" in has:
        man.append(("labels.projection", E.ExpectColumnValuesToBeInSet(column="projection", value_set=list(VIEWS))))
    if "image_exists" in has:
        man += [
            ("images.unique_path", E.ExpectColumnValuesToBeUnique(column="image")),
            ("images.in_root", E.ExpectColumnValuesToBeInSet(column="image_in_root", value_set=[True])),
            ("images.exists", E.ExpectColumnValuesToBeInSet(column="image_exists", value_set=[True])),
            ("images.decodable", E.ExpectColumnValuesToBeInSet(column="image_decodable", value_set=[True])),
            ("images.mode", E.ExpectColumnValuesToBeInSet(column="image_mode", value_set=list(GRAYSCALE_MODES))),
            ("images.bit_depth", E.ExpectColumnValuesToBeInSet(column="image_bit_depth", value_set=[8, 16])),
            ("images.grayscale", E.ExpectColumnValuesToBeBetween(column="image_channel_spread", min_value=0,
                                                                 max_value=MAX_CHANNEL_SPREAD)),
            ("images.min_size", E.ExpectColumnValuesToBeBetween(column="image_width", min_value=min_size)),
            ("images.min_size", E.ExpectColumnValuesToBeBetween(column="image_height", min_value=min_size)),
            ("images.range", E.ExpectColumnValuesToBeBetween(column="pixel_min", min_value=0, max_value=1)),
            ("images.range", E.ExpectColumnValuesToBeBetween(column="pixel_max", min_value=0, max_value=1)),
            ("images.not_blank", E.ExpectColumnValuesToBeBetween(column="pixel_std", min_value=MIN_PIXEL_STD)),
            ("images.not_saturated", E.ExpectColumnValuesToBeBetween(column="pixel_saturated", min_value=0,
                                                                     max_value=MAX_SATURATED_FRACTION)),
        ]
    suites = {"manifest": man}
    if frames.get("split_rows") is not None:
        sr = frames["split_rows"]
        rows_suite = []
        if "split" in sr:
            rows_suite.append(("labels.split", E.ExpectColumnValuesToBeInSet(column="split",
                                                                             value_set=list(ALLOWED_SPLITS))))
        rows_suite += [
            ("splits.assigned", E.ExpectColumnValuesToNotBeNull(column="effective_split")),
            ("splits.allowed", E.ExpectColumnValuesToBeInSet(column="effective_split", value_set=list(ALLOWED_SPLITS))),
        ]
        suites["split_rows"] = rows_suite
    if "studies" in frames:
        s = frames["studies"]
        st = []
        if "report_present" in s:
            st.append(("contract.report_non_empty", E.ExpectColumnValuesToNotBeNull(column="report_present")))
        if "n_study_variants" in s:
            st.append(("contract.study_consistent", E.ExpectColumnValuesToBeInSet(column="n_study_variants",
                                                                                  value_set=[1])))
        suites["studies"] = st
    if frames.get("labels") is not None:
        suites["labels"] = [("labels.mesh_chexpert", E.ExpectColumnValuesToBeInSet(column="value", value_set=[0, 1]))]
    if frames.get("report_text") is not None:
        suites["report_text"] = [(f"phi.{name}", E.ExpectColumnValuesToNotMatchRegex(column="text", regex=regex))
                                 for name, (regex, _) in PHI_PATTERNS.items()]
    if frames.get("splits") is not None:
        suites["splits"] = [("splits.disjoint", E.ExpectColumnValuesToBeUnique(column="uid"))]
    if frames.get("image_content") is not None:
        suites["image_content"] = [("splits.disjoint_content", E.ExpectColumnValuesToBeUnique(column="image_sha256"))]
    return suites


def _ge_context():
    gx = _gx()
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(store_backend_defaults=InMemoryStoreBackendDefaults(), analytics_enabled=False,
                               progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
                               data_docs_sites={})
    return gx.get_context(mode="ephemeral", project_config=config)


def _ge_version() -> str:
    return _gx().__version__


def _run_ge(frames: dict[str, pd.DataFrame], suites: dict[str, list]) -> list[dict]:
    gx = _gx()

    context = _ge_context()
    source = context.data_sources.add_pandas("iu_manifest")
    checks: list[dict] = []
    for frame_name, items in suites.items():
        if not items:
            continue
        df = frames[frame_name]
        asset = source.add_dataframe_asset(frame_name)
        batch_def = asset.add_batch_definition_whole_dataframe(f"{frame_name}_all")
        for check, expectation in items:
            expectation.meta = {"check": check, "frame": frame_name}
        # Build the suite whole before adding it: add_expectation on a stored suite re-serialises it every time.
        suite = context.suites.add(gx.ExpectationSuite(name=f"iu_{frame_name}", expectations=[e for _, e in items]))
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"validate_{frame_name}", data=batch_def, suite=suite))
        index_cols = [c for c in ("row", "uid", "section", "label", "source") if c in df.columns]
        run = definition.run(batch_parameters={"dataframe": df}, result_format={
            "result_format": "COMPLETE", "unexpected_index_column_names": index_cols,
            "return_unexpected_index_query": False, "partial_unexpected_count": 0,
        })
        checks += [_summarise(r, frame_name, index_cols) for r in run.results]
    return checks


def _summarise(r, frame: str, index_cols: list[str]) -> dict:
    cfg = r.expectation_config
    kwargs = cfg.kwargs
    column = kwargs.get("column")
    res = r.result or {}
    examples = []
    for item in (res.get("unexpected_index_list") or [])[:MAX_EXAMPLES]:
        if isinstance(item, dict):
            examples.append({k: _plain(item[k]) for k in index_cols if k in item})
        else:
            examples.append({"index": _plain(item)})
    out = {
        "check": (cfg.meta or {}).get("check", cfg.type), "expectation": cfg.type, "frame": frame,
        "column": column, "success": bool(r.success),
        "unexpected_count": _plain(res.get("unexpected_count")),
        "unexpected_percent": None if res.get("unexpected_percent") is None else round(float(res["unexpected_percent"]), 4),
        "examples": examples,
    }
    params = {k: _plain(v) for k, v in kwargs.items() if k in ("value_set", "min_value", "max_value", "regex")}
    if out["check"].startswith("phi."):
        params["pattern"] = out["check"].split(".", 1)[1]
    out["parameters"] = params
    if column in _SAFE_VALUE_COLUMNS and not r.success:
        values = res.get("unexpected_list") or []
        out["unexpected_values"] = sorted({_safe_value(v) for v in values})[:MAX_EXAMPLES]
    if cfg.type == "expect_column_to_exist" and not r.success:
        out["unexpected_count"] = None
    if r.exception_info and r.exception_info.get("raised_exception"):
        out["exception"] = str(r.exception_info.get("exception_message"))[:300]
    return out


def _safe_value(v, limit: int = 24) -> str:
    """A bad value of an enumerated column, withheld when long (a shifted CSV can put report text there)."""
    text = str(_plain(v))
    return text if len(text) <= limit else f"<{len(text)}-character value withheld>"


def _plain(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if v is pd.NA or (isinstance(v, float) and np.isnan(v)):
        return None
    return v


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return _plain(obj)


# --------------------------------------------------------------------------- HTML

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top;font-size:14px}
th{background:#f3f3f3}.ok{color:#1a7f37;font-weight:bold}.bad{color:#c62828;font-weight:bold}
code{font-size:13px}"""


def _render_html(result: ValidationResult) -> str:
    e = html.escape
    s = result.statistics
    status = '<span class="ok">PASSED</span>' if result.success else '<span class="bad">FAILED</span>'
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Data validation</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>Data validation: {status}</h1>",
             f"<p>{s['expectations_evaluated']} expectations (Great Expectations {e(str(s['great_expectations_version']))}),"
             f" {s['expectations_failed']} failed. Manifest <code>{e(s['manifest'])}</code>"
             f" (sha256 {e(s['manifest_sha256'][:16])}…), images root <code>{e(s['images_root'])}</code>.</p>"]
    img = s.get("images", {})
    parts.append("<h2>Statistics</h2><table>")
    rows = [("rows", s.get("rows")), ("studies", s.get("studies")), ("missing columns", s.get("columns_missing")),
            ("split source", s.get("splits_source")), ("splits", s.get("splits")),
            ("projections", s.get("projections")),
            ("images checked", f"{img.get('mode')}: {img.get('decoded')} of {img.get('rows')} rows decoded"
             + (f" (seed {img.get('sample_seed')})" if img.get("mode") == "sample" else "")),
            ("image sizes (w, h ranges)", f"{img.get('width')} × {img.get('height')}"),
            ("pixel std", img.get("pixel_std")), ("min image size", s.get("min_image_size")),
            ("elapsed (s)", s.get("elapsed_seconds"))]
    parts += [f"<tr><th>{e(k)}</th><td>{e(json.dumps(_jsonable(v)))}</td></tr>" for k, v in rows]
    parts.append("</table>")
    if result.failures:
        parts.append("<h2>Failures</h2><table><tr><th>check</th><th>expectation</th><th>frame</th><th>column</th>"
                     "<th>failing rows</th><th>examples (CSV row, uid)</th><th>bad values</th></tr>")
        for f in result.failures:
            ex = "<br>".join(e(_example_str(x)) for x in f["examples"])
            vals = e(", ".join(f.get("unexpected_values", [])))
            if f.get("exception"):
                vals += f"<br>error: {e(f['exception'])}"
            parts.append(f"<tr><td>{e(f['check'])}</td><td>{e(f['expectation'])}</td><td>{e(f['frame'])}</td>"
                         f"<td>{e(str(f['column'] or ''))}</td><td>{e(str(f['unexpected_count']))}</td>"
                         f"<td>{ex}</td><td>{vals}</td></tr>")
        parts.append("</table>")
    parts.append("<h2>All expectations</h2><table><tr><th>result</th><th>check</th><th>expectation</th>"
                 "<th>frame</th><th>column</th><th>parameters</th></tr>")
    for c in result.expectations:
        mark = '<span class="ok">pass</span>' if c["success"] else '<span class="bad">FAIL</span>'
        params = {k: v for k, v in c["parameters"].items() if k != "regex"}
        parts.append(f"<tr><td>{mark}</td><td>{e(c['check'])}</td><td>{e(c['expectation'])}</td>"
                     f"<td>{e(c['frame'])}</td><td>{e(str(c['column'] or ''))}</td>"
                     f"<td>{e(json.dumps(_jsonable(params)))}</td></tr>")
    parts.append("</table><p>Report text is never shown here; failures give CSV line numbers and study uids."
                 "</p></body></html>\n")
    return "".join(parts)
