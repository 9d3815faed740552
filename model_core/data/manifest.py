"""The IU-format manifest contract, the fixed study-level splits and the SHA-256 checksums of a dataset.

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

import logging
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from model_core.files import atomic_write_text, sha256_file

log = logging.getLogger(__name__)

EMBEDDED_ROOT = Path(__file__).resolve().parents[2] / "data" / "iu_xray"
MANIFEST_COLUMNS = (
    "uid", "split", "image", "projection", "indication", "comparison", "findings", "impression", "mesh",
)
SPLITS = ("train", "val", "test", "all")
VIEWS = ("Frontal", "Lateral")
SPLIT_SEED = 20160201
VAL_FRACTION = 0.10
CHECKSUM_FILE = "SHA256SUMS"


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
            raise DataError(f"manifest {path} row {csv_row_number(blank[0])}: column '{col}' is empty")
    bad_view = df.index[~df["projection"].isin(VIEWS)]
    if len(bad_view):
        i = bad_view[0]
        raise DataError(
            f"manifest {path} row {csv_row_number(i)}: projection {df.at[i, 'projection']!r} is not one of {VIEWS}"
        )
    for col in ("findings", "impression", "indication", "comparison", "mesh"):
        df[col] = df[col].str.strip()
    return df


def csv_row_number(index: int) -> int:
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
