"""Inference backends of the service, and where the model comes from.

Both backends take a batch of studies and return, per study, the generated report text and the detection
head's calibrated probabilities (14,) (sigmoid(logit / temperature), CheXpert order):

    backend.generate(images: list[(K, 1, H, W) tensors in [0, 1]], contexts: list[dict | None])
        -> list[(text, probs)]

- `TorchBackend`: the reference path, `model_core.generation.generate_texts` on the torch model.
- `OrtBackend`: ONNX Runtime over an export directory (`model_core.export`), FP32 decoder by default (INT8 optional).

Studies of one batch may have different view counts K; they are run in groups of equal K.

`load_model(source)` resolves a model source — a local model directory, or `models:/NAME@ALIAS` /
`models:/NAME/VERSION` in the MLflow registry — and builds the backend. With backend="auto", ONNX Runtime is
used on CPU when an export exists next to the model (`<model_dir>/onnx`, `<model_dir>/../onnx`; for a
registry model the run's `onnx` artifact) or can be created on startup with `export_onnx`; every ORT backend
is checked against torch on one synthetic image before use (a stale or broken export falls back to torch).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from model_core.config import GenerationConfig, build_section

log = logging.getLogger(__name__)

_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")
# An export whose detection logits differ from torch's by more than this is not used.
PARITY_TOLERANCE = 1e-3


class ModelSourceError(RuntimeError):
    """The model source cannot be resolved or loaded; the message names the source and the problem."""


class Backend(Protocol):
    name: str
    image_size: int

    def generate(self, images: list[torch.Tensor], contexts: list[dict | None]) -> list[tuple[str, np.ndarray]]:
        ...


def _groups_by_views(images: list[torch.Tensor]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for i, img in enumerate(images):
        if img.dim() == 3:
            img = images[i] = img.unsqueeze(0)
        if img.dim() != 4:
            raise ValueError(f"study {i}: images must be (K, 1, H, W), got shape {tuple(img.shape)}")
        groups.setdefault(int(img.shape[0]), []).append(i)
    return groups


def _probs(logits: np.ndarray, temperature: float) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64) / temperature))).astype(np.float32)


class TorchBackend:
    """model_core.generation on the torch model (CPU)."""

    name = "torch"

    def __init__(self, model, detection: dict, gen: GenerationConfig):
        self.model = model.float().eval()
        self.temperature = float(detection.get("temperature", 1.0))
        self.gen = gen
        self.image_size = int(model.image_size)

    def generate(self, images: list[torch.Tensor], contexts: list[dict | None]) -> list[tuple[str, np.ndarray]]:
        from model_core.modeling.generation import generate_texts

        images = list(images)
        out: list[tuple[str, np.ndarray] | None] = [None] * len(images)
        for _, idx in _groups_by_views(images).items():
            batch = torch.stack([images[i] for i in idx]).float()
            with torch.inference_mode():
                texts, logits = generate_texts(self.model, batch, [contexts[i] for i in idx], self.gen)
            probs = _probs(logits.float().numpy(), self.temperature)
            for j, i in enumerate(idx):
                out[i] = (texts[j], probs[j])
        return out


def no_repeat_ngram_mask(tokens: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, token ids) that would repeat an n-gram of `tokens` (R, t): transformers' NoRepeatNGramLogitsProcessor
    rule (`model_core.export._no_repeat_ngram_bans` per row), vectorised over rows and positions."""
    rows_n, length = tokens.shape
    if n <= 0 or length + 1 < n:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if n == 1:
        return np.repeat(np.arange(rows_n), length), tokens.reshape(-1)
    starts = length - n + 1                                     # candidate n-gram starts i = 0 … t-n
    match = np.ones((rows_n, starts), bool)
    for k in range(n - 1):                                      # tokens[i + k] == the prefix's k-th token
        match &= tokens[:, k:k + starts] == tokens[:, length - n + 1 + k][:, None]
    rows, cols = np.nonzero(match)
    return rows, tokens[rows, cols + n - 1]


def _fast_generator_class():
    """OrtReportGenerator whose logits processors are vectorised over the batch (same results, see tests).

    The per-row Python n-gram scan of the reference costs O(rows · t) Python steps per token, which grows with
    the batch and hides the gain of batching; here it is a few numpy operations per token.
    """
    from model_core.export.onnx_export import OrtReportGenerator

    class FastOrtReportGenerator(OrtReportGenerator):
        def _process(self, tokens: np.ndarray, scores: np.ndarray) -> np.ndarray:
            scores = scores.copy()
            penalty = self.gen.repetition_penalty
            if penalty != 1.0 and tokens.shape[1]:
                picked = np.take_along_axis(scores, tokens, axis=1)
                np.put_along_axis(scores, tokens, np.where(picked < 0, picked * penalty, picked / penalty), axis=1)
            rows, banned = no_repeat_ngram_mask(tokens, self.gen.no_repeat_ngram_size)
            scores[rows, banned] = -np.inf
            if self.banned.size:
                scores[:, self.banned] = -np.inf
            return scores

        # The reference beam search (`OrtReportGenerator._beam_search`) with two batch-size-dependent costs
        # removed: the candidates come from a partial selection instead of a full stable sort of
        # B × num_beams·V scores, and the KV cache is reordered in place, copying only the rows that change.

        def _top_candidates(self, totals: np.ndarray, width: int) -> np.ndarray:
            return top_k_stable(totals, width)

        def _reorder_cache(self, past: list[np.ndarray], rows: np.ndarray) -> list[np.ndarray]:
            if past and rows.size != past[0].shape[0]:     # studies left the batch: gather the survivors
                return [p[rows] for p in past]
            moved = np.flatnonzero(rows != np.arange(rows.size))
            if moved.size:
                source = rows[moved]
                for p in past:            # ORT's outputs are fresh arrays each step: safe to edit in place
                    p[moved] = p[source]  # (the right-hand side is gathered into a copy first)
            return past

    return FastOrtReportGenerator


def top_k_stable(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values per row, best first, ties by lower index: exactly
    `np.argsort(-values, axis=1, kind="stable")[:, :k]`, in O(N) per row instead of O(N log N)."""
    rows, n = values.shape
    if k >= n:
        return np.argsort(-values, axis=1, kind="stable")[:, :k]
    neg = -values
    out = np.empty((rows, k), np.int64)
    part = np.argpartition(neg, k - 1, axis=1)[:, :k]
    for r in range(rows):
        row = neg[r]
        cutoff = row[part[r]].max()                      # the k-th best value
        better = np.flatnonzero(row < cutoff)
        ties = np.flatnonzero(row == cutoff)[:k - better.size]
        chosen = np.concatenate([better, ties])
        out[r] = chosen[np.lexsort((chosen, row[chosen]))]
    return out


class OrtBackend:
    """ONNX Runtime over an export directory (FP32 vision graph; INT8 or FP32 decoder)."""

    def __init__(self, export_dir: str | os.PathLike, detection: dict, gen: GenerationConfig | None = None,
                 precision: str = "fp32", threads: int | None = None, provider: str | None = "CPUExecutionProvider"):
        self.engine = _fast_generator_class()(export_dir, precision=precision, provider=provider, gen=gen,
                                              threads=threads)
        self.name = f"onnxruntime-{precision}"
        self.temperature = float(detection.get("temperature", 1.0))
        self.image_size = int(self.engine.meta["image_size"])
        self.export_dir = Path(export_dir)

    def generate(self, images: list[torch.Tensor], contexts: list[dict | None]) -> list[tuple[str, np.ndarray]]:
        images = list(images)
        out: list[tuple[str, np.ndarray] | None] = [None] * len(images)
        for _, idx in _groups_by_views(images).items():
            batch = np.stack([images[i].detach().cpu().numpy() for i in idx]).astype(np.float32)
            texts, logits = self.engine.generate(batch, [contexts[i] for i in idx])
            probs = _probs(logits, self.temperature)
            for j, i in enumerate(idx):
                out[i] = (texts[j], probs[j])
        return out

    def label_logits(self, images: np.ndarray) -> np.ndarray:
        return self.engine.encode_images(images)[1]


# --------------------------------------------------------------------------- model sources

@dataclass
class ResolvedSource:
    source: str
    model_dir: Path
    version: str
    export_dirs: list[Path] = field(default_factory=list)   # where an export may already be


@dataclass
class LoadedModel:
    backend: Backend
    source: str
    model_dir: Path
    version: str
    detection: dict
    gen: GenerationConfig
    # Views fed to the model per study: the report model is trained and evaluated on one frontal image.
    max_views: int = 1
    notes: list[str] = field(default_factory=list)

    @property
    def thresholds(self) -> dict[str, float]:
        return dict(self.detection.get("thresholds", {}))


def _card_version(model_dir: Path) -> str:
    try:
        card = json.loads((model_dir / "model_card.json").read_text())
    except (OSError, ValueError):
        return "unknown"
    return str(card.get("version") or card.get("name") or "unknown")


def resolve_source(source: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> ResolvedSource:
    """A local model directory, or `models:/NAME@ALIAS` / `models:/NAME/VERSION` from the MLflow registry."""
    text = str(source)
    if text.startswith("models:/"):
        return _resolve_registry(text, Path(cache_dir) if cache_dir else _default_cache())
    model_dir = Path(text)
    if not model_dir.is_dir():
        raise ModelSourceError(f"model source {text!r} is neither a model directory nor a models:/NAME@ALIAS URI")
    if not (model_dir / "model_card.json").is_file():
        raise ModelSourceError(f"{model_dir} is not a complete model directory (no model_card.json); "
                               "train one with `rrg train --out DIR`")
    return ResolvedSource(text, model_dir, _card_version(model_dir),
                          [model_dir / "onnx", model_dir.parent / "onnx"])


def _default_cache() -> Path:
    return Path(os.environ.get("RRG_MODEL_CACHE", Path.home() / ".cache" / "rrg" / "models"))


def _resolve_registry(uri: str, cache_dir: Path) -> ResolvedSource:
    """Download the registered version's artifacts once (cached per NAME/VERSION) and find the model dir.

    The pyfunc model logged by `registry.models.log_model` keeps the model directory under
    `artifacts/model_dir`; the run's `onnx` artifact (the pipeline's export step) is fetched beside it when
    present. The tracking/registry server comes from MLFLOW_TRACKING_URI as usual.
    """
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
                    mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path="onnx",
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
    model_dir = _find_model_dir(target / "model")
    if model_dir is None:
        raise ModelSourceError(f"{uri} (version {mv.version}) holds no model directory (no artifacts/model_dir "
                               "with a model_card.json)")
    exports = [p.parent for p in sorted((target / "run").rglob("export_config.json"))] if (target / "run").is_dir() else []
    return ResolvedSource(uri, model_dir, f"{name}/{mv.version}", exports + [target / "onnx"])


def _find_model_dir(root: Path) -> Path | None:
    preferred = root / "artifacts" / "model_dir"
    if (preferred / "model_card.json").is_file():
        return preferred
    cards = sorted(root.rglob("model_card.json"), key=lambda p: len(p.parts))
    return cards[0].parent if cards else None


# --------------------------------------------------------------------------- loading

def _parity_probe(model, ort_backend: OrtBackend) -> float:
    """Max |Δ| of the detection logits, torch vs the export, on one fixed synthetic image."""
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 1, 1, model.image_size, model.image_size, generator=gen)
    with torch.inference_mode():
        ref = model.detect(model.encode_images(image)).float().numpy()
    got = ort_backend.label_logits(image.numpy())
    return float(np.abs(ref - got).max())


def _writable_export_dir(resolved: ResolvedSource) -> Path:
    for candidate in (resolved.model_dir / "onnx", ):
        try:
            candidate.parent.mkdir(parents=True, exist_ok=True)
            probe = candidate.parent / f".rrg-write-probe-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
            return candidate
        except OSError:
            continue
    digest = hashlib.sha256(str(resolved.model_dir.resolve()).encode()).hexdigest()[:16]
    return _default_cache() / "onnx" / digest


def load_model(source: str | os.PathLike, backend: str = "auto", precision: str = "fp32",
               export: bool = True, gen: GenerationConfig | None = None, threads: int | None = None,
               cache_dir: str | os.PathLike | None = None, triton_url: str | None = None,
               triton_model: str = "rrg_report") -> LoadedModel:
    """Resolve `source` and build its backend.

    backend: "auto" (ONNX Runtime when an export is found or `export` allows creating one, else torch),
    "onnxruntime" (fails when no usable export can be had), "torch", or "triton" (the model runs in a Triton
    Inference Server at `triton_url` under the name `triton_model`; only the model directory's metadata —
    version, thresholds, temperature — is read here). precision: the ORT decoder, fp32 (default: token-identical
    to the torch model that was evaluated) or int8 (faster; calibrated static quantization, see
    model_core.export.quantize_decoder — a dynamically quantized decoder's reports depend on the batch-mates).
    gen: generation settings (default: the model's saved ones).
    """
    from model_core.modeling.model_dir import load_model_dir

    if backend not in ("auto", "onnxruntime", "torch", "triton"):
        raise ModelSourceError(f"backend must be auto, onnxruntime, torch or triton, got {backend!r}")
    resolved = resolve_source(source, cache_dir)
    started = time.perf_counter()
    if backend == "triton":
        return _triton_model(resolved, triton_url, triton_model, gen)
    try:
        model, detection, saved = load_model_dir(resolved.model_dir)
    except (FileNotFoundError, OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelSourceError(f"cannot load the model in {resolved.model_dir}: {type(exc).__name__}: {exc}") from None
    model = model.float().eval()
    gen = gen or build_section(GenerationConfig, saved.get("generation", {}), "generation.")
    notes: list[str] = []
    chosen: Backend | None = None
    if backend in ("auto", "onnxruntime"):
        chosen = _ort_backend(model, resolved, detection, gen, precision, threads, export, notes)
        if chosen is None and backend == "onnxruntime":
            raise ModelSourceError(f"no usable ONNX export for {resolved.source}: {'; '.join(notes)}")
    if chosen is None:
        chosen = TorchBackend(model, detection, gen)
    log.info("model %s (version %s) loaded with the %s backend in %.1f s", resolved.source, resolved.version,
             chosen.name, time.perf_counter() - started)
    return LoadedModel(backend=chosen, source=resolved.source, model_dir=resolved.model_dir,
                       version=resolved.version, detection=detection, gen=gen, notes=notes)


def _triton_model(resolved: ResolvedSource, url: str | None, name: str, gen: GenerationConfig | None
                  ) -> LoadedModel:
    """The model served by Triton: thresholds, temperature and version from the model directory, no weights."""
    if not url:
        raise ModelSourceError("backend triton needs the server's address (serving.triton_url / --triton-url)")
    try:
        detection = json.loads((resolved.model_dir / "detection.json").read_text())
        saved = json.loads((resolved.model_dir / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelSourceError(f"cannot read the model's metadata in {resolved.model_dir}: "
                               f"{type(exc).__name__}: {exc}") from None
    from serving.triton import TritonBackend, TritonUnavailable

    try:
        client = TritonBackend(url, model_name=name)
    except TritonUnavailable as exc:
        raise ModelSourceError(str(exc)) from None
    gen = gen or build_section(GenerationConfig, saved.get("generation", {}), "generation.")
    log.info("model %s (version %s) served by Triton at %s as %r", resolved.source, resolved.version, url, name)
    return LoadedModel(backend=client, source=resolved.source, model_dir=resolved.model_dir,
                       version=resolved.version, detection=detection, gen=gen,
                       notes=[f"generation runs in Triton ({url}, model {name!r}) with the server's settings"])


def _ort_backend(model, resolved: ResolvedSource, detection: dict, gen: GenerationConfig, precision: str,
                 threads: int | None, export: bool, notes: list[str]) -> OrtBackend | None:
    from model_core.export.onnx_export import ExportError, export_onnx

    def usable(export_dir: Path) -> OrtBackend | None:
        try:
            candidate = OrtBackend(export_dir, detection, gen=gen, precision=precision, threads=threads)
        except (ExportError, ValueError, OSError, RuntimeError) as exc:
            notes.append(f"{export_dir}: {type(exc).__name__}: {exc}")
            return None
        diff = _parity_probe(model, candidate)
        if diff > PARITY_TOLERANCE:
            notes.append(f"{export_dir}: detection logits differ from torch by {diff:.2e} (stale export?)")
            log.warning("ONNX export %s does not match the model (max |Δ| %.2e); not used", export_dir, diff)
            return None
        return candidate

    for export_dir in resolved.export_dirs:
        if (export_dir / "export_config.json").is_file():
            found = usable(export_dir)
            if found is not None:
                log.info("using the ONNX export in %s (%s decoder)", export_dir, precision)
                return found
    if not export:
        notes.append("no export found next to the model and exporting on startup is disabled")
        return None
    out = _writable_export_dir(resolved)
    log.info("no usable ONNX export next to the model: exporting to %s", out)
    try:
        export_onnx(resolved.model_dir, out, quantize=True, check=False, latency=False)   # both decoders
    except Exception as exc:  # noqa: BLE001 — any export failure means: serve with torch
        notes.append(f"export on startup failed: {type(exc).__name__}: {exc}")
        log.warning("ONNX export on startup failed (%s: %s); serving with torch", type(exc).__name__, exc)
        return None
    return usable(out)
