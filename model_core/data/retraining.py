"""The dataset a retrain trains on: the base dataset plus the radiologist-validated studies exported from service.

    version = export_validated_dataset(log, pool_root, "runs/validated")          # model_core.data.validated
    root = retraining_dataset("data/iu_xray", None, [version], "runs/retrain/data") # → an IU-format dataset

The result is one IU-format dataset (manifest.csv, splits.csv, images/, SHA256SUMS, dataset.json) that
`load_iu_xray(root=...)` and the pipeline's data validation read like any other:
- the base dataset's studies keep their splits, so its **test split is the same studies** before and after a retrain
  (the gate and the PCCP compare versions on it, and it is never trained on);
- validated studies enter **train and val only** (the export's own seeded split); one that claims `test` is refused;
- study ids must not collide (a validated study's id is a hash prefix, the base's are IU numbers).
Images are hard-linked where the file system allows (else copied): a retrain does not double the disk it reads.
The dataset is built in a temporary directory and renamed into place: nothing half-written is left.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from model_core.data.manifest import MANIFEST_COLUMNS, DataError, study_splits, write_checksums
from model_core.files import atomic_write_text

DATASET_CARD = "dataset.json"


def _read(root: Path, manifest: Path, what: str) -> pd.DataFrame:
    if not manifest.is_file():
        raise DataError(f"{what}: no manifest at {manifest}")
    df = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{what}: the manifest lacks the columns {missing}")
    return df.assign(split=study_splits(root, df).values)


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:          # another file system, or links not allowed: a copy reads the same
        shutil.copyfile(src, dst)


def retraining_dataset(base_root: str | os.PathLike, base_manifest: str | os.PathLike | None,
                       validated: list[str | os.PathLike], out_dir: str | os.PathLike) -> Path:
    """Write base + validated studies as one IU-format dataset into out_dir (which must not exist); returns it.

    base_manifest: None → base_root/manifest.csv. validated: export version directories
    (`model_core.data.validated.export_validated_dataset`), oldest first."""
    base_root, out = Path(base_root), Path(out_dir)
    if out.exists():
        raise DataError(f"{out} exists already: a retraining dataset is written once")
    base = _read(base_root, Path(base_manifest) if base_manifest else base_root / "manifest.csv", "base dataset")
    frames = [base.assign(_root=str(base_root), source="base")]
    seen = set(base["uid"])
    for version in map(Path, validated):
        extra = _read(version, version / "manifest.csv", f"validated dataset {version.name}")
        if (extra["split"] == "test").any():
            raise DataError(f"validated dataset {version.name} puts studies in the test split; validated studies "
                            "may only be trained on (train/val): the test split stays the base dataset's")
        clash = seen & set(extra["uid"])
        if clash:
            raise DataError(f"validated dataset {version.name} reuses {len(clash)} study id(s) already in the "
                            "retraining dataset")
        seen |= set(extra["uid"])
        frames.append(extra.assign(_root=str(version), source=f"validated/{version.name}"))
    rows = pd.concat(frames, ignore_index=True)
    names = rows["image"].map(lambda p: Path(p).name)
    if names.duplicated().any():
        raise DataError(f"{int(names.duplicated().sum())} image file name(s) occur twice across the datasets")

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for src_root, rel, name in zip(rows["_root"], rows["image"], names):
            _link(Path(src_root) / rel, staging / "images" / name)
        manifest = rows.assign(image="images/" + names).drop(columns=["_root"])
        atomic_write_text(staging / "manifest.csv", manifest.to_csv(index=False))
        splits = manifest.drop_duplicates("uid")[["uid", "split"]].sort_values("uid")
        atomic_write_text(staging / "splits.csv", splits.to_csv(index=False))
        write_checksums(staging)
        studies = manifest.drop_duplicates("uid")
        card = {"sources": {src: int((studies["source"] == src).sum()) for src in studies["source"].unique()},
                "studies_per_split": {s: int((studies["split"] == s).sum()) for s in ("train", "val", "test")},
                "test_split": "the base dataset's, unchanged (validated studies are train/val only)"}
        atomic_write_text(staging / DATASET_CARD, json.dumps(card, indent=2))
        os.rename(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out
