"""IU X-ray loading: the manifest contract, splits, checksums and the one image preprocessing path.

The manifest format of `data/iu_xray/manifest.csv` (one row per image) is the project's input
contract for any IU-format dataset: the columns in `MANIFEST_COLUMNS` must be present.

Splits of the embedded data (study level, fixed, documented in `data/iu_xray/splits.csv`):
  test  = the manifest's `val` studies (R2Gen's IU X-ray val split, 382 studies). R2Gen's own test
          split is kept back by the data owner as an independent test set and is not in the repo.
  val   = a seeded 10 % of the manifest's `train` studies (model selection, thresholds)
  train = the remaining `train` studies
A manifest without a `splits.csv` beside it uses its own `split` column as it is.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError

from model_core.chexpert import NUM_LABELS

log = logging.getLogger(__name__)

EMBEDDED_ROOT = Path(__file__).resolve().parent.parent / "data" / "iu_xray"
MANIFEST_COLUMNS = (
    "uid", "split", "image", "projection", "indication", "comparison", "findings", "impression", "mesh",
)
SPLITS = ("train", "val", "test", "all")
VIEWS = ("Frontal", "Lateral")
SPLIT_SEED = 20160201
VAL_FRACTION = 0.10
CHECKSUM_FILE = "SHA256SUMS"
# Decompression-bomb guard: refuse images larger than this before decoding pixels.
MAX_IMAGE_PIXELS = 8192 * 8192


class DataError(ValueError):
    """Bad input data; the message names the file, row or column at fault."""


# --------------------------------------------------------------------------- manifest

def read_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """Read and validate an IU-format manifest (one row per image). Text columns are '' when empty."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"manifest not found: {path}")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"manifest {path} is not a readable CSV: {exc}") from None
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"manifest {path} is missing required column(s): {', '.join(missing)}")
    if df.empty:
        raise DataError(f"manifest {path} has no rows")
    for col in ("uid", "image", "projection"):
        blank = df.index[df[col].str.strip() == ""]
        if len(blank):
            raise DataError(f"manifest {path} row {_row_number(blank[0])}: column '{col}' is empty")
    bad_view = df.index[~df["projection"].isin(VIEWS)]
    if len(bad_view):
        i = bad_view[0]
        raise DataError(
            f"manifest {path} row {_row_number(i)}: projection {df.at[i, 'projection']!r} is not one of {VIEWS}"
        )
    for col in ("findings", "impression", "indication", "comparison", "mesh"):
        df[col] = df[col].str.strip()
    return df


def _row_number(index: int) -> int:
    """1-based line number in the CSV file (line 1 is the header)."""
    return int(index) + 2


# --------------------------------------------------------------------------- splits

def carve_splits(manifest: pd.DataFrame, val_fraction: float = VAL_FRACTION, seed: int = SPLIT_SEED) -> pd.DataFrame:
    """Study-level splits for the embedded data: manifest `val` → test; a seeded slice of `train` → val.

    Returns a DataFrame (uid, split) sorted by uid, one row per study.
    """
    studies = manifest.drop_duplicates("uid")[["uid", "split"]]
    unknown = sorted(set(studies["split"]) - {"train", "val"})
    if unknown:
        raise DataError(f"cannot carve splits: unexpected manifest split value(s) {unknown}; expected train/val")
    train_uids = sorted(studies.loc[studies["split"] == "train", "uid"], key=_uid_key)
    rng = np.random.default_rng(seed)
    n_val = int(round(val_fraction * len(train_uids)))
    val_uids = set(rng.permutation(train_uids)[:n_val].tolist())
    split = {uid: ("val" if uid in val_uids else "train") for uid in train_uids}
    split.update({uid: "test" for uid in studies.loc[studies["split"] == "val", "uid"]})
    out = pd.DataFrame({"uid": list(split), "split": list(split.values())})
    return out.sort_values("uid", key=lambda s: s.map(_uid_key)).reset_index(drop=True)


def _uid_key(uid: str):
    return (0, int(uid)) if str(uid).isdigit() else (1, str(uid))


def write_splits(manifest_path: str | os.PathLike, out_path: str | os.PathLike) -> pd.DataFrame:
    splits = carve_splits(read_manifest(manifest_path))
    atomic_write_text(out_path, splits.to_csv(index=False))
    return splits


def study_splits(root: Path, manifest: pd.DataFrame) -> pd.Series:
    """uid → split for every row of the manifest (splits.csv beside it wins over the `split` column)."""
    splits_path = root / "splits.csv"
    if not splits_path.is_file():
        return manifest["split"]
    table = pd.read_csv(splits_path, dtype=str, keep_default_na=False)
    if list(table.columns) != ["uid", "split"]:
        raise DataError(f"{splits_path} must have exactly the columns uid,split")
    mapping = dict(zip(table["uid"], table["split"]))
    missing = sorted(set(manifest["uid"]) - set(mapping), key=_uid_key)
    if missing:
        raise DataError(f"{splits_path} has no split for study uid(s) {missing[:5]}")
    return manifest["uid"].map(mapping)


# --------------------------------------------------------------------------- checksums

def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_checksums(root: Path) -> dict[str, str]:
    """relative path → sha256 from `root/SHA256SUMS` (sha256sum's format); {} when there is none."""
    path = root / CHECKSUM_FILE
    if not path.is_file():
        return {}
    sums = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        digest, _, rel = line.partition("  ")
        if len(digest) != 64 or not rel:
            raise DataError(f"{path} line {n} is not '<sha256>  <path>'")
        sums[rel] = digest
    return sums


def write_checksums(root: str | os.PathLike) -> int:
    """(Re)write `root/SHA256SUMS` for the manifest, splits, XML archive and every image. Returns the file count."""
    root = Path(root)
    files = [p for p in ("manifest.csv", "splits.csv", "reports_trainval.tgz") if (root / p).is_file()]
    files += sorted(str(p.relative_to(root)) for p in (root / "images").glob("*") if p.is_file())
    lines = [f"{sha256_file(root / rel)}  {rel}" for rel in files]
    atomic_write_text(root / CHECKSUM_FILE, "\n".join(lines) + "\n")
    return len(files)


@lru_cache(maxsize=None)
def _verified(root: Path, rels: tuple[str, ...]) -> bool:
    sums = read_checksums(root)
    for rel in rels:
        expected = sums.get(rel)
        if expected is None:
            continue
        path = root / rel
        if not path.is_file():
            raise DataError(f"file listed in {root / CHECKSUM_FILE} is missing: {path}")
        actual = sha256_file(path)
        if actual != expected:
            raise DataError(
                f"checksum mismatch for {path}: expected sha256 {expected[:12]}…, got {actual[:12]}… "
                "(the file was modified or corrupted)"
            )
    return True


def verify_checksums(root: str | os.PathLike, rel_paths) -> None:
    """Check the given files against `root/SHA256SUMS` (once per process per set); DataError on mismatch."""
    _verified(Path(root).resolve(), tuple(sorted(set(rel_paths))))


# --------------------------------------------------------------------------- images

def load_image(path: str | os.PathLike, size: int = 512) -> torch.Tensor:
    """Decode an image file into a (1, size, size) float32 tensor in [0, 1] (grayscale, bilinear resize).

    This is the single preprocessing path for training, evaluation and serving.
    """
    path = Path(path)
    if size <= 0:
        raise DataError(f"image size must be positive, got {size}")
    if not path.is_file():
        raise DataError(f"image file not found: {path}")
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_IMAGE_PIXELS:
                raise DataError(f"image {path} is {im.width}×{im.height} pixels, above the {MAX_IMAGE_PIXELS} limit")
            return pil_to_tensor(im, size)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"cannot decode image {path}: {exc}") from None


def pil_to_tensor(im: Image.Image, size: int) -> torch.Tensor:
    """PIL image → (1, size, size) float32 in [0, 1]; 16-bit and float images are rescaled, not clipped."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float32)
        if im.mode.startswith("I;16"):
            arr = arr / 65535.0
        else:  # 32-bit integer or float pixels: no fixed range, so use the image's own
            lo, hi = float(arr.min()), float(arr.max())
            arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
        gray = Image.fromarray(arr, mode="F")
    else:
        gray = im.convert("L") if im.mode != "L" else im
    if gray.size != (size, size):
        gray = gray.resize((size, size), Image.BILINEAR)
    arr = np.asarray(gray, dtype=np.float32)
    if gray.mode == "L":
        arr = arr / 255.0
    return torch.from_numpy(np.clip(arr, 0.0, 1.0)).unsqueeze(0)


# --------------------------------------------------------------------------- reports and metadata

_SECTION_RE = re.compile(r"\b(FINDINGS|IMPRESSION)\s*:", re.IGNORECASE)
_AGE_RE = re.compile(r"\b(\d{1,3})[- ](?:year|yr)s?[- ]old\b", re.IGNORECASE)
_MALE_RE = re.compile(r"\b(male|man|gentleman|boy)\b", re.IGNORECASE)
_FEMALE_RE = re.compile(r"\b(female|woman|lady|girl)\b", re.IGNORECASE)


def format_report(findings: str, impression: str) -> str:
    """The structured report text used as the generation target: 'FINDINGS: … IMPRESSION: …'."""
    parts = []
    if findings.strip():
        parts.append(f"FINDINGS: {findings.strip()}")
    if impression.strip():
        parts.append(f"IMPRESSION: {impression.strip()}")
    return " ".join(parts)


def split_sections(report: str) -> dict[str, str]:
    """'FINDINGS: a IMPRESSION: b' → {'findings': 'a', 'impression': 'b'}; text without headers is findings."""
    sections = {"findings": "", "impression": ""}
    matches = list(_SECTION_RE.finditer(report))
    if not matches:
        sections["findings"] = report.strip()
        return sections
    for m, nxt in zip(matches, matches[1:] + [None]):
        end = nxt.start() if nxt else len(report)
        sections[m.group(1).lower()] = report[m.end():end].strip()
    return sections


def clinical_metadata(indication: str) -> dict:
    """Age and sex when the (de-identified) indication states them; None otherwise."""
    age = _AGE_RE.search(indication)
    male, female = _MALE_RE.search(indication), _FEMALE_RE.search(indication)
    sex = "F" if female and not male else "M" if male and not female else None
    return {"age": int(age.group(1)) if age else None, "sex": sex}


# --------------------------------------------------------------------------- dataset

def load_iu_xray(
    root: str | os.PathLike = EMBEDDED_ROOT,
    split: str = "train",
    views: tuple[str, ...] = ("Frontal",),
    image_size: int = 512,
    manifest: str | os.PathLike | None = None,
    verify: bool = True,
    limit_studies: int | None = None,
) -> dict:
    """Load an IU-format dataset split (seed §3.1).

    Args:
        root: images root (image paths in the manifest are relative to it).
        split: "train", "val", "test" or "all".
        views: projections kept (default frontal only).
        image_size: side of the square model input, recorded for `load_image` callers.
        manifest: manifest CSV (default `root/manifest.csv`).
        verify: check files against `root/SHA256SUMS` when that file exists.
        limit_studies: keep only the first N studies of the split (smoke runs and tests).

    Returns: {"images": [path], "reports": [text], "labels": FloatTensor (N, 14), "metadata": [dict]}
    with one entry per kept image. Labels are MeSH-derived (0/1), see `model_core.labels`.
    """
    from model_core.labels import mesh_to_chexpert

    root = Path(root)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {SPLITS}")
    bad_views = [v for v in views if v not in VIEWS]
    if bad_views or not views:
        raise DataError(f"unknown view(s) {bad_views or views}; expected a non-empty subset of {VIEWS}")
    manifest_path = Path(manifest) if manifest is not None else root / "manifest.csv"
    df = read_manifest(manifest_path)
    df = df.assign(split=study_splits(root, df).values)
    if verify:
        rels = [manifest_path.name, "splits.csv"] if manifest is None else []
        verify_checksums(root, rels + df["image"].tolist())
    if split != "all":
        df = df[df["split"] == split]
    df = df[df["projection"].isin(views)]
    if limit_studies is not None:
        if limit_studies <= 0:
            raise DataError(f"limit_studies must be positive, got {limit_studies}")
        df = df[df["uid"].isin(df["uid"].drop_duplicates().iloc[:limit_studies])]
    if df.empty:
        raise DataError(f"no {'/'.join(views)} images in split {split!r} of {manifest_path}")

    images, reports, labels, metadata = [], [], [], []
    for idx, row in df.iterrows():
        report = format_report(row["findings"], row["impression"])
        if not report:
            raise DataError(f"manifest {manifest_path} row {_row_number(idx)} (study {row['uid']}): report is empty")
        path = root / row["image"]
        if not path.is_file():
            raise DataError(f"manifest {manifest_path} row {_row_number(idx)}: image file not found: {path}")
        images.append(str(path))
        reports.append(report)
        labels.append(mesh_to_chexpert(row["mesh"]))
        metadata.append({
            "study_id": row["uid"], "split": row["split"], "view": row["projection"], "image_path": str(path),
            "indication": row["indication"], "comparison": row["comparison"], "findings": row["findings"],
            "impression": row["impression"], "mesh": row["mesh"], **clinical_metadata(row["indication"]),
        })
    label_tensor = torch.tensor(np.stack(labels), dtype=torch.float32).reshape(-1, NUM_LABELS)
    log.info("loaded %d %s images of split %s from %s", len(images), "/".join(views), split, manifest_path.name)
    return {"images": images, "reports": reports, "labels": label_tensor, "metadata": metadata,
            "image_size": image_size}


def dataset_stats(dataset: dict) -> dict:
    """The seed's verification cell: studies, images, label distribution, mean report length (words)."""
    from model_core.chexpert import CHEXPERT_LABELS

    labels = dataset["labels"]
    studies = {m["study_id"] for m in dataset["metadata"]}
    first = {}
    for i, m in enumerate(dataset["metadata"]):
        first.setdefault(m["study_id"], i)
    study_labels = labels[list(first.values())]
    lengths = [len(dataset["reports"][i].split()) for i in first.values()]
    return {
        "studies": len(studies),
        "images": len(dataset["images"]),
        "label_positives": {name: int(study_labels[:, k].eq(1).sum()) for k, name in enumerate(CHEXPERT_LABELS)},
        "mean_report_words": float(np.mean(lengths)) if lengths else 0.0,
    }


# --------------------------------------------------------------------------- files

def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write text so that readers see the old file or the whole new one, never a half-written file."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file ordinary permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_split(data_cfg, split: str) -> dict:
    """`load_iu_xray` driven by a `DataConfig` (the way the CLI, pipeline and tests load data)."""
    from model_core.config import resolve_path

    return load_iu_xray(
        root=resolve_path(data_cfg.root),
        split=split,
        views=tuple(data_cfg.views),
        image_size=data_cfg.image_size,
        manifest=resolve_path(data_cfg.manifest) if data_cfg.manifest else None,
        limit_studies=data_cfg.limit_studies,
    )


def load_images(paths: list[str], size: int, desc: str = "images") -> torch.Tensor:
    """Decode images once through `load_image` → (N, 1, size, size) float32 in [0, 1] (progress bar on a TTY)."""
    from tqdm.auto import tqdm

    if not paths:
        raise DataError("no images to load")
    return torch.stack([load_image(p, size) for p in tqdm(paths, desc=f"decode {desc}", leave=False, unit="img",
                                                          disable=None)])


def group_studies(dataset: dict) -> list[dict]:
    """Group a loaded dataset by study: its frontal images, or its lateral ones when it has no frontal.

    Returns one dict per study in first-appearance order: study_id, rows (indices into the dataset),
    view_fallback (bool: lateral images stand in), report (reference text), labels (14,), metadata (first row's).
    """
    studies: dict[str, dict] = {}
    for i, meta in enumerate(dataset["metadata"]):
        entry = studies.setdefault(meta["study_id"], {"frontal": [], "lateral": [], "first": i})
        entry["frontal" if meta["view"] in ("Frontal", "PA", "AP") else "lateral"].append(i)
    return [{
        "study_id": study_id, "rows": entry["frontal"] or entry["lateral"], "view_fallback": not entry["frontal"],
        "report": dataset["reports"][entry["first"]], "labels": dataset["labels"][entry["first"]].numpy(),
        "metadata": dataset["metadata"][entry["first"]],
    } for study_id, entry in studies.items()]
