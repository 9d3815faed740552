"""Loading an IU-format dataset (the embedded IU X-ray or any manifest of that shape)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from model_core.chexpert import CHEXPERT_LABELS, NUM_LABELS
from model_core.config import resolve_path
from model_core.data.manifest import (
    EMBEDDED_ROOT,
    SPLITS,
    VIEWS,
    DataError,
    csv_row_number,
    read_manifest,
    study_splits,
    verify_checksums,
)
from model_core.data.reports import clinical_metadata, format_report
from model_core.labels.mesh import mesh_to_chexpert

log = logging.getLogger(__name__)


def load_iu_xray(
    root: str | os.PathLike = EMBEDDED_ROOT,
    split: str = "train",
    views: tuple[str, ...] = ("Frontal",),
    image_size: int = 512,
    manifest: str | os.PathLike | None = None,
    verify: bool = True,
    limit_studies: int | None = None,
) -> dict:
    """Load a split of an IU-format dataset: per image, its path, report, MeSH-derived labels and metadata.

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
            raise DataError(f"manifest {manifest_path} row {csv_row_number(idx)} (study {row['uid']}): report is empty")
        path = root / row["image"]
        if not path.is_file():
            raise DataError(f"manifest {manifest_path} row {csv_row_number(idx)}: image file not found: {path}")
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
    """Summary of a loaded dataset: studies, images, positives per label (counted per study), mean report words."""
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


def load_split(data_cfg, split: str) -> dict:
    """`load_iu_xray` driven by a `DataConfig` (the way the CLI, pipeline and tests load data)."""
    return load_iu_xray(
        root=resolve_path(data_cfg.root),
        split=split,
        views=tuple(data_cfg.views),
        image_size=data_cfg.image_size,
        manifest=resolve_path(data_cfg.manifest) if data_cfg.manifest else None,
        limit_studies=data_cfg.limit_studies,
    )


def group_studies(dataset: dict) -> list[dict]:
    """Group a loaded dataset by study: its frontal images, or its lateral ones when it has no frontal.

    Returns one dict per study in first-appearance order: study_id, rows (indices into the dataset),
    view_fallback (bool: lateral images stand in), frontal_rows and lateral_rows (the study's rows of each
    projection), report (reference text), labels (14,), metadata (first row's).
    """
    studies: dict[str, dict] = {}
    for i, meta in enumerate(dataset["metadata"]):
        entry = studies.setdefault(meta["study_id"], {"frontal": [], "lateral": [], "first": i})
        entry["frontal" if meta["view"] in ("Frontal", "PA", "AP") else "lateral"].append(i)
    return [{
        "study_id": study_id, "rows": entry["frontal"] or entry["lateral"], "view_fallback": not entry["frontal"],
        "frontal_rows": entry["frontal"], "lateral_rows": entry["lateral"],
        "report": dataset["reports"][entry["first"]], "labels": dataset["labels"][entry["first"]].numpy(),
        "metadata": dataset["metadata"][entry["first"]],
    } for study_id, entry in studies.items()]


def view_slots(study: dict, views: int) -> list[int | None]:
    """The dataset rows that fill a model's view slots for one `group_studies` study (None: no such view).

    views=1: [the first frontal image, or the first lateral one when there is no frontal];
    views=2: [the first frontal image or None, the first lateral image or None]."""
    if views == 1:
        return [study["rows"][0]]
    if views == 2:
        return [(study["frontal_rows"] or [None])[0], (study["lateral_rows"] or [None])[0]]
    raise DataError(f"view slots must be 1 (one image) or 2 (frontal, lateral), got {views}")
