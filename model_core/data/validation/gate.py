"""The data-validation gate's entry point: `validate_dataset` (what it checks: the package docstring)."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from model_core.data.manifest import SPLIT_SEED, DataError
from model_core.data.validation.dataset import build_frames, read_raw_manifest
from model_core.data.validation.report import (
    REPORT_HTML,
    REPORT_JSON,
    ValidationResult,
    jsonable,
    render_html,
)
from model_core.data.validation.rules import ALLOWED_SPLITS, PRODUCTION_IMAGE_SIZE
from model_core.data.validation.suites import build_suites, ge_version, run_suites
from model_core.files import atomic_write_text

log = logging.getLogger(__name__)


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
    raw, manifest_sha256 = read_raw_manifest(manifest_path)
    selected = _selected_splits(splits)
    frames, stats = build_frames(raw, images_root, selected, min_image_size, sample_images, sample_seed, workers)
    suites = build_suites(frames, min_image_size)

    t_ge = time.perf_counter()
    checks = run_suites(frames, suites)
    stats["ge_seconds"] = round(time.perf_counter() - t_ge, 3)
    failures = [c for c in checks if not c["success"]]
    stats.update({
        "manifest": str(manifest_path), "images_root": str(images_root),
        "manifest_sha256": manifest_sha256,
        "min_image_size": min_image_size,
        "expectations_evaluated": len(checks), "expectations_failed": len(failures),
        "great_expectations_version": ge_version(),
        "elapsed_seconds": round(time.perf_counter() - t0, 3),
    })
    out_dir.mkdir(parents=True, exist_ok=True)
    result = ValidationResult(success=not failures, failures=failures, statistics=stats,
                              report_html=out_dir / REPORT_HTML, report_json=out_dir / REPORT_JSON,
                              expectations=checks)
    payload = {k: v for k, v in asdict(result).items() if k not in ("report_html", "report_json")}
    atomic_write_text(result.report_json, json.dumps(jsonable(payload), indent=2, sort_keys=False) + "\n")
    atomic_write_text(result.report_html, render_html(result))
    log.info("data validation %s: %d expectations, %d failed, %d rows, %d images decoded, %.1f s",
             "passed" if result.success else "FAILED", len(checks), len(failures), stats["rows"],
             stats["images"]["decoded"], stats["elapsed_seconds"])
    return result


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
