"""`load_model(source)`: resolve a model source and build its backend.

With backend="auto", ONNX Runtime serves on CPU from the export the pipeline made next to the model
(`<model_dir>/onnx`, `<model_dir>/../onnx`; for a registry model the run's `onnx` artifact); every ORT backend is
checked against torch on one synthetic image before use. Production serving never exports: exporting is the
pipeline's job, so a model without a usable export is refused with a message naming the fix. Only the
development flag `allow_export_at_startup=True` (logged at WARNING) exports one on startup, as the service
used to.

Nothing is served that the clinical gate did not pass: before any weights are read, the model's signed gate
decision (`model_core.evaluation.gate_record`: for a model directory `<model_dir>/gate/` or the `gate_record`
argument, for a registry version its run's `gate/` artifact) must verify against the trusted keys, say "promote"
and list exactly the model's files with their SHA-256 hashes. Aliases and tags are not evidence. Only the
development flag `allow_ungated_model=True` (`rrg serve --allow-ungated-model`, logged at WARNING) serves a model
without one, e.g. the demo or test models that the gate rejects.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from model_core.artifacts import DETECTION, EXPORT_CONFIG, RUN_CONFIG
from model_core.config import ConfigError, DataConfig, GenerationConfig, build_section
from model_core.evaluation.gate_record import RECORD_DIR, GateRecordError, require_promoted
from model_core.modeling.model_dir import load_model_dir
from model_core.runtime.session import ExportError
from serving.backends.base import (
    EXPORT_DIR_NAME,
    Backend,
    LoadedModel,
    ModelSourceError,
    ResolvedSource,
    default_cache,
    resolve_source,
)
from serving.backends.onnxruntime import OrtBackend
from serving.backends.torch import TorchBackend
from serving.backends.triton import MODEL_NAME, TritonBackend, TritonUnavailable

log = logging.getLogger(__name__)

BACKENDS = ("auto", "onnxruntime", "torch", "triton")
# An export whose detection logits differ from torch's by more than this is not used.
PARITY_TOLERANCE = 1e-3
NO_EXPORT_FIX = ("production serving does not export at startup: export the model with the pipeline's export "
                 "step (`rrg pipeline run`; a registry version brings its run's `onnx` artifact) or "
                 "model_core.export.step.export_onnx(MODEL_DIR, MODEL_DIR/onnx), or serve it with --backend torch; "
                 "in development only, allow an export at startup (`rrg serve --allow-export-at-startup`, "
                 "serving.allow_export_at_startup: true)")


def load_model(source: str | os.PathLike, backend: str = "auto", precision: str = "fp32",
               allow_export_at_startup: bool = False, gen: GenerationConfig | None = None,
               threads: int | None = None, cache_dir: str | os.PathLike | None = None,
               triton_url: str | None = None, triton_model: str = MODEL_NAME, allow_ungated_model: bool = False,
               gate_record: str | os.PathLike | None = None) -> LoadedModel:
    """Resolve `source` and build its backend.

    backend: "auto" or "onnxruntime" (ONNX Runtime over the model's export; ModelSourceError naming the fix when
    it has no usable one), "torch", or "triton" (the model runs in a Triton Inference Server at `triton_url`
    under the name `triton_model`; only the model directory's metadata — version, thresholds, temperature — is
    read here). precision: the ORT decoder, fp32 (default: token-identical to the torch model that was
    evaluated) or int8 (faster; calibrated static quantization, see model_core.export.quantize — a dynamically
    quantized decoder's reports depend on the batch-mates). allow_export_at_startup: development only — export
    the model when it has no usable export (the export step's job in production); if that export fails,
    "auto" serves with torch. gen: generation settings (default: the model's saved ones).
    gate_record: the directory of a model directory's signed gate decision (default `<model_dir>/gate/`; a
    registry version brings its run's). allow_ungated_model: development only — serve a model whose signed
    decision is missing, invalid or "reject" (logged at WARNING); otherwise such a model is refused
    (ModelSourceError) before its weights are read.
    """
    if backend not in BACKENDS:
        raise ModelSourceError(f"backend must be auto, onnxruntime, torch or triton, got {backend!r}")
    resolved = resolve_source(source, cache_dir)
    gate_note = check_gate(resolved, gate_record, allow_ungated_model)
    started = time.perf_counter()
    if backend == "triton":
        loaded = _triton_model(resolved, triton_url, triton_model, gen)
        loaded.gate_status = gate_note
        return loaded
    try:
        model, detection, saved = load_model_dir(resolved.model_dir)
    except (FileNotFoundError, OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelSourceError(f"cannot load the model in {resolved.model_dir}: {type(exc).__name__}: {exc}") from None
    model = model.float().eval()
    gen = gen or build_section(GenerationConfig, saved.get("generation", {}), "generation.")
    notes: list[str] = [gate_note] if gate_note.startswith("UNGATED") else []
    chosen: Backend | None = None
    if backend in ("auto", "onnxruntime"):
        chosen = _ort_backend(model, resolved, detection, gen, precision, threads, notes)
        if chosen is None and not allow_export_at_startup:
            why = "; ".join(notes) or f"none in {', '.join(str(d) for d in resolved.export_dirs)}"
            raise ModelSourceError(f"no usable ONNX export for {resolved.source} ({why}): {NO_EXPORT_FIX}")
        if chosen is None:
            chosen = _export_at_startup(model, resolved, detection, gen, precision, threads, saved, notes)
        if chosen is None and backend == "onnxruntime":
            raise ModelSourceError(f"no usable ONNX export for {resolved.source}: {'; '.join(notes)}")
    if chosen is None:
        chosen = TorchBackend(model, detection, gen)
    log.info("model %s (version %s) loaded with the %s backend in %.1f s", resolved.source, resolved.version,
             chosen.name, time.perf_counter() - started)
    return LoadedModel(backend=chosen, source=resolved.source, model_dir=resolved.model_dir,
                       version=resolved.version, detection=detection, gen=gen, max_views=model.num_views,
                       notes=notes, gate_status=gate_note)


def check_gate(resolved: ResolvedSource, gate_record: str | os.PathLike | None, allow_ungated_model: bool) -> str:
    """Verify the signed gate decision of a resolved model; returns LoadedModel.gate_status (an ungated model's
    also goes to LoadedModel.notes).

    ModelSourceError when it is missing, invalid, "reject" or made for other model files, unless
    allow_ungated_model (then a WARNING says what is being served without a passing decision)."""
    record_dir = Path(gate_record) if gate_record is not None else resolved.gate_record_dir
    try:
        if record_dir is None:
            raise GateRecordError("no signed gate decision found")
        record = require_promoted(record_dir, resolved.model_dir)
    except GateRecordError as exc:
        if not allow_ungated_model:
            raise ModelSourceError(
                f"refusing to serve {resolved.source}: {exc}. Serving needs a passing signed gate decision "
                f"(the pipeline's gate step writes it; for a model directory put it in <model_dir>/{RECORD_DIR}/ "
                "or pass --gate-record DIR); development only: --allow-ungated-model") from None
        log.warning("serving %s WITHOUT a passing signed gate decision (%s): development only "
                    "(allow_ungated_model / --allow-ungated-model); never for patients", resolved.source, exc)
        return f"UNGATED (development only): {exc}"
    log.info("signed gate decision verified for %s: promote; %d model files match", resolved.source,
             len(record["inputs"]["model_files"]))
    return "signed gate decision verified: promote; model file hashes match"


def _triton_model(resolved: ResolvedSource, url: str | None, name: str, gen: GenerationConfig | None
                  ) -> LoadedModel:
    """The model served by Triton: thresholds, temperature and version from the model directory, no weights."""
    if not url:
        raise ModelSourceError("backend triton needs the server's address (serving.triton_url / --triton-url)")
    try:
        detection = json.loads((resolved.model_dir / DETECTION).read_text())
        saved = json.loads((resolved.model_dir / RUN_CONFIG).read_text())
    except (OSError, ValueError) as exc:
        raise ModelSourceError(f"cannot read the model's metadata in {resolved.model_dir}: "
                               f"{type(exc).__name__}: {exc}") from None
    try:
        client = TritonBackend(url, model_name=name)
    except TritonUnavailable as exc:
        raise ModelSourceError(str(exc)) from None
    gen = gen or build_section(GenerationConfig, saved.get("generation", {}), "generation.")
    log.info("model %s (version %s) served by Triton at %s as %r", resolved.source, resolved.version, url, name)
    return LoadedModel(backend=client, source=resolved.source, model_dir=resolved.model_dir,
                       version=resolved.version, detection=detection, gen=gen,
                       notes=[f"generation runs in Triton ({url}, model {name!r}) with the server's settings"])


# --------------------------------------------------------------------------- ONNX Runtime

def _parity_probe(model, ort_backend: OrtBackend) -> float:
    """Max |Δ| of the detection logits, torch vs the export, on one fixed synthetic image."""
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 1, 1, model.image_size, model.image_size, generator=gen)
    with torch.inference_mode():
        ref = model.detect(model.encode_images(image)).float().numpy()
    got = ort_backend.label_logits(image.numpy())
    return float(np.abs(ref - got).max())


def _usable_export(model, export_dir: Path, detection: dict, gen: GenerationConfig, precision: str,
                   threads: int | None, notes: list[str]) -> OrtBackend | None:
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


def _ort_backend(model, resolved: ResolvedSource, detection: dict, gen: GenerationConfig, precision: str,
                 threads: int | None, notes: list[str]) -> OrtBackend | None:
    """The backend over the first usable export next to the model, or None (why: in notes)."""
    for export_dir in resolved.export_dirs:
        if (export_dir / EXPORT_CONFIG).is_file():
            found = _usable_export(model, export_dir, detection, gen, precision, threads, notes)
            if found is not None:
                log.info("using the ONNX export in %s (%s decoder)", export_dir, precision)
                return found
    return None


def _writable_export_dir(resolved: ResolvedSource) -> Path:
    candidate = resolved.model_dir / EXPORT_DIR_NAME
    try:
        candidate.parent.mkdir(parents=True, exist_ok=True)
        probe = candidate.parent / f".rrg-write-probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
        return candidate
    except OSError:
        digest = hashlib.sha256(str(resolved.model_dir.resolve()).encode()).hexdigest()[:16]
        return default_cache() / EXPORT_DIR_NAME / digest


def _export_at_startup(model, resolved: ResolvedSource, detection: dict, gen: GenerationConfig, precision: str,
                       threads: int | None, saved: dict, notes: list[str]) -> OrtBackend | None:
    """Development only (allow_export_at_startup): export the model now, as the pipeline's export step would,
    with the INT8 decoder calibrated on the training run's data (the `data` section of the model's config.json)."""
    # The export wing (exporters, quantizer, parity figures) is imported only on this development path:
    # production serving and the Triton server environment never load it.
    from model_core.export.step import export_onnx

    try:
        data_cfg = build_section(DataConfig, saved.get("data", {}), "data.")
    except ConfigError as exc:
        notes.append(f"the model's data config is unusable ({exc}): the INT8 decoder is quantized dynamically")
        data_cfg = None
    out = _writable_export_dir(resolved)
    log.warning("no usable ONNX export next to the model: exporting to %s at startup, calibrating on the training "
                "run's data (development only: allow_export_at_startup; in production the pipeline's export step "
                "makes the export)", out)
    try:
        export_onnx(resolved.model_dir, out, quantize=True, check=False, latency=False,   # both decoders
                    data_cfg=data_cfg)
    except Exception as exc:  # noqa: BLE001 — any export failure means: serve with torch
        notes.append(f"export on startup failed: {type(exc).__name__}: {exc}")
        log.warning("ONNX export on startup failed (%s: %s); serving with torch", type(exc).__name__, exc)
        return None
    return _usable_export(model, out, detection, gen, precision, threads, notes)
