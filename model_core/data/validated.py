"""Radiologist-validated studies for retraining: the pool the report service fills, and the versioned IU-format
dataset exported from it.

    pool = ValidatedPool("runs/serving/validated")
    pool.keep_images(report_id, [(pixels, "Frontal")])  # at report time: the model input (uint8 (H, W)) of a study
    outcome = pool.add_signed(report_id, final_text)     # at sign-off: PHI screen, image moved in by hash
    pool.prune(older_than_days=30)                       # model inputs never signed off within the retention
    version_dir = export_validated_dataset(log, pool.root, "runs/validated")   # → runs/validated/v0001, v0002, …

Pool layout (files owner-only, 0600):
    pending/<report_id>.<k>.npy  view k of a served study's model input (uint8, uncompressed: kept on every report,
                                 so it must cost the service ~nothing), until it is signed off or pruned
    images/<sha256>.png          signed-off studies' images (PNG, encoded at sign-off), content-addressed: a study
                                 refers to an image by hash
    studies.jsonl                one line per sign-off: report_id, signed_at, text_sha256, findings, impression,
                                 images [{sha256, view}] (a later sign-off of the same report supersedes)

PHI: the signed text is screened with `model_core.phi.find_phi` before it enters the pool. A text that matches
an identifier pattern is REFUSED (kept out of the pool and of every export), not redacted: a match shows the text
was not de-identified, and redacting the matched spans would keep whatever the patterns missed in a text known to
carry identifiers. The refusal names the patterns, never the text.

An export version is a complete IU-format dataset (`model_core.data.iu_xray.load_iu_xray(root=version_dir)`
reads it): manifest.csv (the IU columns; `mesh` rebuilt from the labels so that `mesh_to_chexpert` gives them
back, uncertain counted as positive; the labeler's raw vector in `chexpert_labels`), splits.csv (a seeded 10 %
of the studies as val), images/, SHA256SUMS and dataset.json. Labels are the report labeler's on the signed text,
as stored in the prediction log's feedback; only sign-offs whose text hash matches the log's are exported.
A version is written in a temporary directory and renamed into place: readers never see half a version.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from model_core.chexpert import CHEXPERT_LABELS, LABEL_INDEX, NUM_LABELS, binarize
from model_core.data.manifest import MANIFEST_COLUMNS, VIEWS, DataError, carve_splits, write_checksums
from model_core.data.reports import split_sections
from model_core.files import atomic_write_text
from model_core.labels.mesh import MESH_TO_CHEXPERT, mesh_term_targets, mesh_to_chexpert, parse_mesh
from model_core.labels.targets import NO_FINDING
from model_core.phi import find_phi
from model_core.prediction_log import PredictionLog

STUDIES_FILE = "studies.jsonl"
DATASET_CARD = "dataset.json"
_REPORT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_VERSION = re.compile(r"^v(\d{4,})$")
# A head term the MeSH table does not list maps to OTHER (an abnormality outside the 14): it keeps No Finding at 0
# for a signed report that names no CheXpert finding but is not normal.
OTHER_ABNORMALITY_TERM = "Abnormality (radiologist-validated, outside CheXpert)"


# --------------------------------------------------------------------------- labels as MeSH

def _mesh_term_per_label() -> dict[str, str]:
    """One MeSH term per CheXpert label that the table maps to that label alone (an unqualified head where there
    is one, else head/qualifier, e.g. Mediastinum/enlarged)."""
    out: dict[str, str] = {}
    for rule in sorted(MESH_TO_CHEXPERT, key=lambda r: bool(r.qualifiers)):
        term = "/".join([rule.head, *sorted(rule.qualifiers)[:1]])
        head, qualifiers = parse_mesh(term)[0]
        targets = mesh_term_targets(head, qualifiers)
        if len(targets) == 1 and targets[0] in LABEL_INDEX:
            out.setdefault(targets[0], term)
    return out


_MESH_FOR = _mesh_term_per_label()


def chexpert_to_mesh(labels) -> str:
    """A CheXpert vector (14,) in {1, 0, -1} → a MeSH string that `mesh_to_chexpert` maps back to
    `binarize(labels, "ones")` (uncertain counts as positive, as in training's default uncertain policy)."""
    target = binarize(np.asarray(labels, dtype=np.float32).reshape(NUM_LABELS), "ones")
    terms = [_MESH_FOR[name] for name in CHEXPERT_LABELS if name != NO_FINDING and target[LABEL_INDEX[name]] == 1]
    if not terms:
        return "normal" if target[LABEL_INDEX[NO_FINDING]] == 1 else OTHER_ABNORMALITY_TERM
    mesh = ";".join(terms)
    if target[LABEL_INDEX[NO_FINDING]] == 0 and mesh_to_chexpert(mesh)[LABEL_INDEX[NO_FINDING]] == 1:
        mesh += ";" + OTHER_ABNORMALITY_TERM          # e.g. a device alone, in a report that is not normal
    return mesh


# --------------------------------------------------------------------------- the pool

@dataclass
class SignOff:
    """What `ValidatedPool.add_signed` did with a signed report: added, or why not (pattern names only)."""
    added: bool
    reason: str | None = None
    phi_patterns: list[str] = field(default_factory=list)


def _write_private(path: Path, data: bytes) -> None:
    """Owner-only file, written whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")   # mkstemp: 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_pixels(pixels: np.ndarray) -> None:
    if not isinstance(pixels, np.ndarray) or pixels.ndim != 2 or pixels.dtype != np.uint8:
        raise DataError("a pool image must be a uint8 (H, W) array")


def _png(pixels: np.ndarray) -> bytes:
    _check_pixels(pixels)
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buf, "PNG")
    return buf.getvalue()


class ValidatedPool:
    """The accumulating pool of signed-off studies (see the module docstring). Thread-safe within a process."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self._lock = threading.Lock()
        for sub in ("pending", "images"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)

    def _pending(self, report_id: str) -> list[Path]:
        return sorted(self.root.joinpath("pending").glob(f"{report_id}.*.npy"),
                      key=lambda p: int(p.name.rsplit(".", 2)[1]))

    def keep_images(self, report_id: str, images: list[tuple[np.ndarray, str | None]]) -> None:
        """Keep a served study's model input: per view, uint8 (H, W) pixels and its projection (Frontal/Lateral,
        None counts as Frontal)."""
        _check_report_id(report_id)
        views = [view or "Frontal" for _, view in images]
        if not images or any(v not in VIEWS for v in views):
            raise DataError(f"keep_images needs one or more images with views among {VIEWS}")
        for k, (pixels, _) in enumerate(images):
            _check_pixels(pixels)
            buf = io.BytesIO()
            np.save(buf, pixels, allow_pickle=False)
            _write_private(self.root / "pending" / f"{report_id}.{k}.npy", buf.getvalue())
        _write_private(self.root / "pending" / f"{report_id}.views.json", json.dumps(views).encode())

    def add_signed(self, report_id: str, final_text: str) -> SignOff:
        """Add a signed-off study: PHI screen of the text, its pending images moved in by hash, one line in
        studies.jsonl. Returns what was done; refusals name the reason and pattern names only."""
        _check_report_id(report_id)
        patterns = find_phi(final_text)
        if patterns:
            return SignOff(False, "the signed text matches identifier patterns; it is kept out of the validated "
                                  "dataset (refused, not redacted)", patterns)
        sections = split_sections(final_text)
        if not (sections["findings"] or sections["impression"]):
            return SignOff(False, "the signed text is empty")
        pending = self._pending(report_id)
        views_file = self.root / "pending" / f"{report_id}.views.json"
        if pending and views_file.is_file():
            views = json.loads(views_file.read_text())
            refs = []
            for path, view in zip(pending, views):
                png = _png(np.load(path, allow_pickle=False))
                digest = hashlib.sha256(png).hexdigest()
                target = self.root / "images" / f"{digest}.png"
                if not target.exists():
                    _write_private(target, png)
                path.unlink()
                refs.append({"sha256": digest, "view": view})
            views_file.unlink()
        elif report_id in (earlier := self.studies()):
            refs = earlier[report_id]["images"]           # an amended sign-off: the study's images are in already
        else:
            return SignOff(False, "the study's images are no longer kept (older than the retention, or image "
                                  "keeping was off when it was reported)")
        entry = {"report_id": report_id, "signed_at": datetime.now(timezone.utc).isoformat(),
                 "text_sha256": hashlib.sha256(final_text.encode("utf-8")).hexdigest(),
                 "findings": sections["findings"], "impression": sections["impression"], "images": refs}
        line = json.dumps(entry, separators=(",", ":")) + "\n"
        with self._lock:
            fd = os.open(self.root / STUDIES_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as fh:
                fh.write(line)
        return SignOff(True)

    def studies(self) -> dict[str, dict]:
        """report_id → its latest sign-off entry."""
        path = self.root / STUDIES_FILE
        out: dict[str, dict] = {}
        if path.is_file():
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        raise DataError(f"{path} line {n} is not JSON") from None
                    out[entry["report_id"]] = entry
        return out

    def prune(self, older_than_days: float) -> int:
        """Delete pending images older than `older_than_days` (never signed off); returns files deleted."""
        cutoff = time.time() - older_than_days * 86400.0
        deleted = 0
        for path in self.root.joinpath("pending").iterdir():
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    deleted += 1
            except FileNotFoundError:            # signed off meanwhile
                continue
        return deleted


def _check_report_id(report_id: str) -> None:
    if not isinstance(report_id, str) or not _REPORT_ID.match(report_id):
        raise DataError("report_id must be 1-128 characters of [A-Za-z0-9._:-]")


# --------------------------------------------------------------------------- export

def export_validated_dataset(log: PredictionLog, pool_root: str | os.PathLike, out_dir: str | os.PathLike,
                             since: str | datetime | None = None) -> Path:
    """Write the next version (out_dir/v0001, v0002, …) of the validated dataset; returns its directory.

    A study is exported when the prediction log holds its prediction and feedback (signed since `since`) and the
    pool holds the same sign-off (text hashes equal); its labels are the feedback's. Raises DataError when no
    study qualifies (an empty manifest is not a dataset)."""
    pool = ValidatedPool(pool_root)
    entries = pool.studies()
    rows, skipped = [], {"not_in_pool": 0, "superseded_sign_off": 0}
    by_study: dict[str, tuple] = {}
    for prediction, feedback in log.validated(since=since):
        entry = entries.get(feedback.report_id)
        if entry is None:
            skipped["not_in_pool"] += 1
        elif entry["text_sha256"] != feedback.final_text_sha256:
            skipped["superseded_sign_off"] += 1
        else:
            by_study[prediction.study_hash] = (prediction, feedback, entry)   # a study's latest sign-off wins
    if not by_study:
        raise DataError(f"no validated study to export from {pool.root} (the log's sign-offs: "
                        f"{skipped['not_in_pool']} not in the pool, {skipped['superseded_sign_off']} superseded)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    numbers = [int(m.group(1)) for p in out_dir.iterdir() if (m := _VERSION.match(p.name))]
    version = f"v{max(numbers, default=0) + 1:04d}"
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=out_dir))
    try:
        (staging / "images").mkdir()
        for study, (_, feedback, entry) in sorted(by_study.items(), key=lambda item: item[0]):
            for ref in entry["images"]:
                name = f"{ref['sha256']}.png"
                shutil.copyfile(pool.root / "images" / name, staging / "images" / name)
                rows.append({"uid": study[:16], "split": "train", "image": f"images/{name}",
                             "projection": ref["view"], "indication": "", "comparison": "",
                             "findings": entry["findings"], "impression": entry["impression"],
                             "mesh": chexpert_to_mesh(feedback.final_labels),
                             "chexpert_labels": json.dumps(feedback.final_labels),
                             "report_id": feedback.report_id, "rating": feedback.rating,
                             "outcome": feedback.outcome, "signed_at": feedback.created_at})
        manifest = pd.DataFrame(rows, columns=[*MANIFEST_COLUMNS, "chexpert_labels", "report_id", "rating",
                                               "outcome", "signed_at"])
        atomic_write_text(staging / "manifest.csv", manifest.to_csv(index=False))
        atomic_write_text(staging / "splits.csv", carve_splits(manifest).to_csv(index=False))
        write_checksums(staging)
        card = {"version": version, "created_at": datetime.now(timezone.utc).isoformat(),
                "studies": len(by_study), "images": len(rows), "since": str(since) if since else None,
                "label_source": "report labeler (model_core.labels) on the radiologist-signed text; mesh column "
                                "rebuilt from it, uncertain counted as positive",
                "splits": "a seeded 10 % of the studies as val, the rest train (model_core.data.manifest)",
                "skipped": skipped}
        atomic_write_text(staging / DATASET_CARD, json.dumps(card, indent=2))
        os.rename(staging, out_dir / version)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir / version
