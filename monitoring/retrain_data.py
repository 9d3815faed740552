"""What a retrain trains on: the base dataset plus every study radiologists validated since the service started.

    data_cfg, summary = retraining_data(cfg, "runs/demo/retrain-data")

The validated pool (`serving.validated_pool`, filled by the report service at sign-off) and the prediction log
(`monitoring.log_url`) give the next export version (`model_core.data.validated.export_validated_dataset`); the
base dataset (`data.root` / `data.manifest`) plus every export version so far become one IU-format dataset
(`model_core.data.retraining.retraining_dataset`: the base test split unchanged, validated studies in train/val
only). With no validated study yet, the retrain uses the base dataset and the summary says so.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import time
from pathlib import Path

from model_core.config import Config, DataConfig, resolve_path
from model_core.data.manifest import DataError
from model_core.data.retraining import retraining_dataset
from model_core.data.validated import export_validated_dataset
from model_core.prediction_log import PredictionLog

log = logging.getLogger(__name__)

_VERSION = re.compile(r"^v\d{4}$")


def retraining_data(cfg: Config, work_dir: str | os.PathLike) -> tuple[DataConfig, dict]:
    """The data section a retrain runs with, and a summary (studies added, export versions, dataset path)."""
    work = Path(work_dir)
    exports = work / "validated"
    summary = {"base": str(cfg.data.root), "validated_versions": [], "dataset": str(cfg.data.root)}
    pool = cfg.serving.validated_pool
    if not pool or not Path(resolve_path(pool)).is_dir():
        summary["validated"] = "no validated-study pool configured or present (serving.validated_pool)"
        return cfg.data, summary
    prediction_log = PredictionLog(cfg.monitoring.log_url)
    try:
        export_validated_dataset(prediction_log, resolve_path(pool), exports)
    except DataError as exc:   # nothing new signed off: earlier versions (if any) still count
        summary["validated"] = f"no new validated study: {exc}"
    finally:
        prediction_log.close()
    versions = sorted(p for p in exports.glob("v*") if _VERSION.match(p.name)) if exports.is_dir() else []
    if not versions:
        return cfg.data, summary
    root = retraining_dataset(resolve_path(cfg.data.root),
                              resolve_path(cfg.data.manifest) if cfg.data.manifest else None,
                              versions, work / "datasets" / f"{time.strftime('%Y%m%dT%H%M%S')}-{versions[-1].name}")
    summary.update(validated_versions=[v.name for v in versions], dataset=str(root))
    log.info("retraining on %s: the base dataset plus %d validated export version(s)", root, len(versions))
    return dataclasses.replace(cfg.data, root=str(root), manifest=None), summary
