"""Agreement of the report labeler with the MeSH labels (`labeler_agreement`), and the per-study label table.

Both read an IU-format manifest and label each study's findings + impression with
`model_core.labels.labeler.label_reports`, against `model_core.labels.mesh.mesh_to_chexpert` of
its MeSH field. Results: docs/labeler_agreement.md.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from model_core.chexpert import CHEXPERT_LABELS, NEGATIVE, NUM_LABELS, POSITIVE
from model_core.files import atomic_write_text
from model_core.labels.labeler import label_reports
from model_core.labels.mesh import mesh_to_chexpert
from model_core.stats import precision_recall_f1

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("uid", "findings", "impression", "mesh")


def read_studies(manifest_path: str | os.PathLike, split: str | None = None) -> pd.DataFrame:
    """One row per study (first row of each uid) with a `report` column = findings + impression.

    Raises ValueError naming the missing columns when the manifest lacks uid/findings/impression/mesh,
    and when `split` is given but the manifest has no `split` column.
    """
    frame = pd.read_csv(manifest_path, dtype=str, keep_default_na=False)
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if split is not None and "split" not in frame.columns:
        missing.append("split")
    if missing:
        raise ValueError(f"{manifest_path}: manifest lacks column(s) {', '.join(missing)}")
    studies = frame.drop_duplicates("uid", keep="first")
    if split is not None:
        studies = studies[studies["split"] == split]
    studies = studies.reset_index(drop=True)
    studies["report"] = (studies["findings"].str.strip() + " " + studies["impression"].str.strip()).str.strip()
    return studies


def _mesh_labels(studies: pd.DataFrame) -> np.ndarray:
    return np.stack([mesh_to_chexpert(m) for m in studies["mesh"]]) if len(studies) else np.zeros((0, NUM_LABELS))


def _prf(tp, fp, fn) -> dict[str, float]:
    """Precision, recall, F1 as floats; NaN where undefined (a label nobody marks positive)."""
    precision, recall, f1 = precision_recall_f1(tp, fp, fn, zero_division=float("nan"))
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1)}


def agreement(mesh_labels: np.ndarray, text_labels: np.ndarray) -> dict:
    """Per-label precision/recall/F1 of text labels against MeSH labels (both (N, 14)).

    Uncertain text labels (-1) count as positive. F1 is NaN for a label nobody marks positive,
    and such labels are left out of the macro average.
    """
    truth = np.asarray(mesh_labels) == POSITIVE
    pred = np.asarray(text_labels) != NEGATIVE
    per_label, tps, fps, fns = {}, 0, 0, 0
    for k, label in enumerate(CHEXPERT_LABELS):
        tp = int(np.sum(truth[:, k] & pred[:, k]))
        fp = int(np.sum(~truth[:, k] & pred[:, k]))
        fn = int(np.sum(truth[:, k] & ~pred[:, k]))
        per_label[label] = {**_prf(tp, fp, fn), "support": int(truth[:, k].sum()), "predicted": int(pred[:, k].sum())}
        tps, fps, fns = tps + tp, fps + fp, fns + fn
    macro = {key: float(np.nanmean([v[key] for v in per_label.values()])) for key in ("precision", "recall", "f1")}
    return {"n_studies": int(len(truth)), "uncertain_as": "positive", "per_label": per_label,
            "micro": _prf(tps, fps, fns), "macro": macro}


def labeler_agreement(manifest_path: str | os.PathLike, split: str | None = None,
                      limit: int | None = None) -> dict:
    """Agreement of `label_report` on each study's findings + impression with `mesh_to_chexpert`.

    split: only studies of this manifest split (e.g. "train", "val"); None = all studies.
    limit: only the first `limit` studies (after the split filter), for quick checks.
    Returns {"n_studies", "uncertain_as": "positive", "per_label": {label: {precision, recall, f1,
    support, predicted}}, "micro": {...}, "macro": {...}}; support = MeSH positives.
    """
    studies = read_studies(manifest_path, split)
    if limit is not None:
        studies = studies.iloc[:limit]
    mesh = _mesh_labels(studies)
    text = label_reports(studies["report"])
    log.info("labeler agreement on %d studies (split=%s)", len(studies), split)
    return agreement(mesh, text)


def write_label_table(manifest_path: str | os.PathLike, out_csv: str | os.PathLike) -> Path:
    """Write one row per study: uid, mesh_<label> (0/1) x14, text_<label> (1/0/-1) x14. Returns the path.

    Column names keep the CheXpert label names ("mesh_No Finding"). Written atomically
    (`model_core.files.atomic_write_text`).
    """
    studies = read_studies(manifest_path)
    mesh = _mesh_labels(studies)
    text = label_reports(studies["report"])
    table = pd.DataFrame({"uid": studies["uid"]})
    for k, label in enumerate(CHEXPERT_LABELS):
        table[f"mesh_{label}"] = mesh[:, k].astype(int)
    for k, label in enumerate(CHEXPERT_LABELS):
        table[f"text_{label}"] = text[:, k].astype(int)
    out = Path(out_csv)
    atomic_write_text(out, table.to_csv(index=False))
    log.info("wrote labels of %d studies to %s", len(table), out)
    return out
