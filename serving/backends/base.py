"""The backend contract of the service, and where the model comes from.

Every backend takes a batch of studies and returns, per study, the generated report text and the detection
head's calibrated probabilities (14,) (sigmoid(logit / temperature), CheXpert order):

    backend.generate(images: list[(K, 1, H, W) tensors in [0, 1]], contexts: list[dict | None])
        -> list[(text, probs)]

A backend may also give each study's pooled image embedding, which the service writes to the prediction log
for drift monitoring (`generate_outputs` calls whichever the backend has; without the method, no embedding):

    backend.generate_with_embeddings(images, contexts) -> list[(text, probs, embedding (d_l,) float32)]

The embedding is `model_core.prediction_log.study_embedding` of the study's visual tokens, the projected image
tokens the language model reads (torch: `project_visual_tokens(encode_images(x))`; ONNX: the vision graph's
`visual_tokens` output): both backends, and the reference statistics saved with the model, give the same vector.

`resolve_source(source)` turns a model source — a local model directory, or `models:/NAME@ALIAS` /
`models:/NAME/VERSION` in the MLflow registry — into the model directory, its version and the places where its
ONNX export may be (`<model_dir>/onnx`, `<model_dir>/../onnx`; for a registry model the run's `onnx` artifact).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from model_core.artifacts import EXPORT_CONFIG, MODEL_CARD
from model_core.config import GenerationConfig
from model_core.evaluation.gate_record import RECORD_DIR
from model_core.modeling.model_dir import find_model_dir

log = logging.getLogger(__name__)

_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")
EXPORT_DIR_NAME = "onnx"      # an export beside the model, and the pipeline's run artifact of the export step


class ModelSourceError(RuntimeError):
    """The model source cannot be resolved or loaded; the message names the source and the problem."""


class Backend(Protocol):
    name: str
    image_size: int

    def generate(self, images: list[torch.Tensor], contexts: list[dict | None]) -> list[tuple[str, np.ndarray]]:
        ...


@dataclass
class ResolvedSource:
    source: str
    model_dir: Path
    version: str
    export_dirs: list[Path] = field(default_factory=list)   # where an export may already be
    gate_record_dir: Path | None = None    # where its signed gate decision is (model_core.evaluation.gate_record)


@dataclass
class LoadedModel:
    backend: Backend
    source: str
    model_dir: Path
    version: str
    detection: dict
    gen: GenerationConfig
    # The model's view slots per study (1: one frontal image; 2: frontal + lateral, as trained and evaluated).
    max_views: int = 1
    notes: list[str] = field(default_factory=list)
    gate_status: str = ""    # how the signed gate decision was checked (serving.backends.loading.check_gate)

    @property
    def thresholds(self) -> dict[str, float]:
        return dict(self.detection.get("thresholds", {}))


def groups_by_views(images: list[torch.Tensor]) -> dict[int, list[int]]:
    """Indices of the studies per view count K (studies of one batch are run in groups of equal K); 3-D images
    (1, H, W) are taken as one view, in place."""
    groups: dict[int, list[int]] = {}
    for i, img in enumerate(images):
        if img.dim() == 3:
            img = images[i] = img.unsqueeze(0)
        if img.dim() != 4:
            raise ValueError(f"study {i}: images must be (K, 1, H, W), got shape {tuple(img.shape)}")
        groups.setdefault(int(img.shape[0]), []).append(i)
    return groups


def study_embedding(visual_tokens) -> np.ndarray:
    """`model_core.prediction_log.study_embedding` (the one definition): visual tokens (B, T, d) → (B, d)."""
    # Imported here, not at the top: model_core.prediction_log needs SQLAlchemy, which the Triton server's venv
    # (.venv-triton, scripts/install_triton.sh) does not install; that server only calls `generate`.
    from model_core.prediction_log import study_embedding as embed

    return embed(visual_tokens)


def generate_outputs(backend: Backend, images: list[torch.Tensor], contexts: list[dict | None]
                     ) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    """(text, probs, embedding or None) per study, from `generate_with_embeddings` when the backend has it."""
    with_embeddings = getattr(backend, "generate_with_embeddings", None)
    if with_embeddings is not None:
        return with_embeddings(images, contexts)
    return [(text, probs, None) for text, probs in backend.generate(images, contexts)]


def calibrated_probs(logits: np.ndarray, temperature: float) -> np.ndarray:
    """sigmoid(logit / temperature), float32."""
    return (1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64) / temperature))).astype(np.float32)


# --------------------------------------------------------------------------- model sources

def _card_version(model_dir: Path) -> str:
    try:
        card = json.loads((model_dir / MODEL_CARD).read_text())
    except (OSError, ValueError):
        return "unknown"
    return str(card.get("version") or card.get("name") or "unknown")


def default_cache() -> Path:
    return Path(os.environ.get("RRG_MODEL_CACHE", Path.home() / ".cache" / "rrg" / "models"))


def resolve_source(source: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> ResolvedSource:
    """A local model directory, or `models:/NAME@ALIAS` / `models:/NAME/VERSION` from the MLflow registry."""
    text = str(source)
    if text.startswith("models:/"):
        return _resolve_registry(text, Path(cache_dir) if cache_dir else default_cache())
    model_dir = Path(text)
    if not model_dir.is_dir():
        raise ModelSourceError(f"model source {text!r} is neither a model directory nor a models:/NAME@ALIAS URI")
    if not (model_dir / MODEL_CARD).is_file():
        raise ModelSourceError(f"{model_dir} is not a complete model directory (no {MODEL_CARD}); "
                               "train one with `rrg train --out DIR`")
    return ResolvedSource(text, model_dir, _card_version(model_dir),
                          [model_dir / EXPORT_DIR_NAME, model_dir.parent / EXPORT_DIR_NAME], model_dir / RECORD_DIR)


def _resolve_registry(uri: str, cache_dir: Path) -> ResolvedSource:
    """Download the registered version's artifacts once (cached per NAME/VERSION) and find the model dir.

    The pyfunc model logged by `registry.models.log_model` keeps the model directory under
    `artifacts/model_dir`; the run's `onnx` artifact (the pipeline's export step) is fetched beside it when
    present. The tracking/registry server comes from MLFLOW_TRACKING_URI as usual.
    """
    # mlflow only for models:/ sources: the Triton server environment (.venv-triton) serves model directories
    # and has no mlflow (docs/triton.md).
    import mlflow
    from mlflow.exceptions import MlflowException

    match = _MODELS_URI.match(uri)
    if not match:
        raise ModelSourceError(f"{uri!r} is not a registry URI of the form models:/NAME@ALIAS or models:/NAME/VERSION")
    name = match["name"]
    client = mlflow.MlflowClient()
    try:
        mv = (client.get_model_version_by_alias(name, match["alias"]) if match["alias"]
              else client.get_model_version(name, match["version"]))
    except MlflowException as exc:
        raise ModelSourceError(f"cannot resolve {uri} in the registry at {mlflow.get_tracking_uri()}: "
                               f"{exc.message if hasattr(exc, 'message') else exc}") from None
    target = cache_dir / f"{re.sub(r'[^A-Za-z0-9._-]', '_', name)}-v{mv.version}"
    if not (target / ".complete").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            # Pinned to the version (not the alias): an alias moved during the download cannot mix versions.
            mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{mv.version}",
                                                dst_path=str(staging / "model"))
            if mv.run_id:
                try:
                    mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path=EXPORT_DIR_NAME,
                                                        dst_path=str(staging / "run"))
                except (MlflowException, OSError) as exc:
                    log.info("registry version %s/%s has no onnx run artifact (%s)", name, mv.version,
                             type(exc).__name__)
            (staging / ".complete").write_text(json.dumps({"uri": uri, "version": mv.version}))
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
        except MlflowException as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise ModelSourceError(f"cannot download {uri} (version {mv.version}): {exc}") from None
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    model_dir = find_model_dir(target / "model")
    if model_dir is None:
        raise ModelSourceError(f"{uri} (version {mv.version}) holds no model directory (no artifacts/model_dir "
                               f"with a {MODEL_CARD})")
    run_dir = target / "run"
    exports = [p.parent for p in sorted(run_dir.rglob(EXPORT_CONFIG))] if run_dir.is_dir() else []
    return ResolvedSource(uri, model_dir, f"{name}/{mv.version}", exports + [target / EXPORT_DIR_NAME],
                          _fetch_gate_record(mv, target))


def _fetch_gate_record(mv, target: Path) -> Path | None:
    """The run's signed gate decision (artifact `gate/`), fetched afresh on every load (it is small, and a cached
    copy must not outlive a change in the registry): `target/gate/`, or None when the run has none."""
    import mlflow
    from mlflow.exceptions import MlflowException

    record = target / RECORD_DIR
    shutil.rmtree(record, ignore_errors=True)
    if not mv.run_id:
        return None
    staging = Path(tempfile.mkdtemp(prefix=".gate.", dir=target))
    try:
        mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path=RECORD_DIR, dst_path=str(staging))
        os.replace(staging / RECORD_DIR, record)
    except (MlflowException, OSError) as exc:
        log.info("registry version %s has no gate run artifact (%s)", mv.version, type(exc).__name__)
        return None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return record


