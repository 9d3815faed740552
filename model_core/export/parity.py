"""Torch vs ONNX Runtime: parity of the exported graphs, and latency of the engines per report.

    check_parity(model_dir, export_dir, data_cfg=...)  → {"parity": …, "latency": …}, merged into export_report.json
    parity_and_latency(model, export_dir, gen, …)     the same figures for a loaded model and given studies
    compare_engine_latency(model, engines, …)          p50/p95 ms per report at batch 1, torch eager vs each engine
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from model_core.artifacts import DECODER_INT8_ONNX, EXPORT_CONFIG, EXPORT_REPORT
from model_core.config import DataConfig, GenerationConfig, build_section
from model_core.export.sources import check_model_dir, parity_studies
from model_core.files import atomic_write_text
from model_core.modeling.generation import generate_texts
from model_core.modeling.model_dir import load_model_dir
from model_core.modeling.tokenizer import build_prompt, encode_example, pad_batch
from model_core.runtime.decoding import prompt_positions
from model_core.runtime.ort_generator import OrtReportGenerator
from model_core.runtime.session import ExportError
from model_core.stats import latency_summary

log = logging.getLogger(__name__)

# FP32 export is usable when its vision outputs and first-step logits are this close to torch's (and greedy
# texts are identical).
FP32_TOLERANCE = 1e-3


def _max_abs(a, b, where: np.ndarray | None = None) -> float:
    diff = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    if where is not None:
        diff = diff[where]
    return float(diff.max()) if diff.size else 0.0


def time_per_report(engines: dict, images: torch.Tensor, contexts: list, runs: int) -> dict[str, dict]:
    """p50/p95 wall time of each engine fn(images[i:i+1], [context]) per report at batch 1.

    Each engine gets one untimed warm-up call; then the engines take turns on the same study in every run,
    so a slow spell of a shared machine hits all of them alike and the ratios stay fair.
    """
    samples: dict[str, list[float]] = {name: [] for name in engines}
    for fn in engines.values():
        fn(images[:1], contexts[:1])
    for r in range(runs):
        i = r % len(images)
        for name, fn in engines.items():
            t0 = time.perf_counter()
            fn(images[i:i + 1], contexts[i:i + 1])
            samples[name].append(1000 * (time.perf_counter() - t0))
    return {name: latency_summary(ms) for name, ms in samples.items()}


def compare_engine_latency(model, engines: dict, images: torch.Tensor, contexts: list, gen: GenerationConfig,
                           runs: int, modes: tuple[str, ...] = ("beam", "greedy")) -> dict:
    """p50/p95 ms per report at batch 1: torch eager vs each ORT engine, beam (gen.num_beams) and greedy."""
    out = {"batch_size": 1, "threads": torch.get_num_threads(), "runs": runs,
           "provider": next(iter(engines.values())).provider}
    for mode in modes:
        beams = gen.num_beams if mode == "beam" else 1
        torch_gen = replace(gen, num_beams=beams)
        fns = {"torch_eager": lambda x, c: generate_texts(model, x, c, torch_gen)}
        for name, engine in engines.items():
            fns[f"ort_{name}"] = lambda x, c, e=engine: e.generate(x.numpy(), c, num_beams=beams)
        row = {"num_beams": beams, **time_per_report(fns, images, contexts, runs)}
        eager = row["torch_eager"]["p50_ms"]
        row["speedup_vs_eager_p50"] = {name: round(eager / row[name]["p50_ms"], 2) for name in fns
                                       if name != "torch_eager" and row[name]["p50_ms"] > 0}
        out[mode] = row
    return out


@torch.no_grad()
def parity_and_latency(model, export_dir: Path, gen: GenerationConfig, images: torch.Tensor, contexts: list,
                       source: str, latency: bool, latency_runs: int | None = None) -> dict:
    """The figures of `check_parity` for a loaded torch model, an export directory and the studies to compare
    on (images (n, K, 1, H, W), their contexts, and `source`, what they are, recorded in the report)."""
    threads = torch.get_num_threads()
    has_int8 = (export_dir / DECODER_INT8_ONNX).is_file()
    engines = {"fp32": OrtReportGenerator(export_dir, "fp32", gen=gen, threads=threads)}
    if has_int8:
        engines["int8"] = OrtReportGenerator(export_dir, "int8", gen=gen, threads=threads)

    # Vision outputs and the prompt's LM logits, torch vs ORT on the same inputs.
    feats = model.encode_images(images)
    visual_tokens = model.project_visual_tokens(feats).numpy()
    label_logits = model.detect(feats).numpy()
    views = feats.shape[1]
    prefixes = [encode_example(model.tokenizer, build_prompt(c), None, views * model.num_image_tokens)[0]
                for c in contexts]
    ids, mask = pad_batch(prefixes, model.tokenizer.pad_token_id, left=True)
    embeds = model.merge_image_embeddings(feats, ids)
    positions = torch.from_numpy(prompt_positions(mask.numpy()))
    torch_logits = model.language_model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).logits
    torch_logits = torch_logits.float().numpy()
    real = mask.numpy().astype(bool)   # left-padding positions produce unused logits; compare real tokens only

    greedy = replace(gen, num_beams=1)
    torch_greedy, _ = generate_texts(model, images, contexts, greedy)
    torch_beam, _ = generate_texts(model, images, contexts, gen)
    ort_vision = engines["fp32"].encode_images(images.numpy())
    parity: dict = {
        "n_studies": len(images), "studies": source, "num_beams": gen.num_beams,
        "max_new_tokens": gen.max_new_tokens,
        # Report lengths (not the texts) put the per-report latencies in context.
        "torch_mean_words": {"greedy": float(np.mean([len(t.split()) for t in torch_greedy])),
                             "beam": float(np.mean([len(t.split()) for t in torch_beam]))},
        "vision_visual_tokens_max_abs_diff": _max_abs(ort_vision[0], visual_tokens),
        "vision_label_logits_max_abs_diff": _max_abs(ort_vision[1], label_logits),
    }
    for name, engine in engines.items():
        logits, _ = engine.step(embeds.numpy(), mask.numpy(), positions.numpy(), engine.empty_past(len(images)))
        texts_greedy, _ = engine.generate(images.numpy(), contexts, num_beams=1)
        texts_beam, _ = engine.generate(images.numpy(), contexts)
        same_greedy = [a == b for a, b in zip(texts_greedy, torch_greedy)]
        same_beam = [a == b for a, b in zip(texts_beam, torch_beam)]
        parity[name] = {
            "prompt_logits_max_abs_diff": _max_abs(logits, torch_logits, real),
            "first_step_logits_max_abs_diff": _max_abs(logits[:, -1], torch_logits[:, -1]),
            "greedy_texts_identical": all(same_greedy), "greedy_identical_share": float(np.mean(same_greedy)),
            "beam_texts_identical": all(same_beam), "beam_identical_share": float(np.mean(same_beam)),
        }
    parity["fp32_ok"] = bool(parity["vision_visual_tokens_max_abs_diff"] < FP32_TOLERANCE
                             and parity["fp32"]["first_step_logits_max_abs_diff"] < FP32_TOLERANCE
                             and parity["fp32"]["greedy_texts_identical"])
    if not parity["fp32_ok"]:
        log.warning("ONNX FP32 parity check failed: %s", {k: v for k, v in parity.items() if k != "int8"})
    log.info("parity on %d studies (%s): vision %.2e, first-step logits fp32 %.2e%s, greedy texts identical "
             "(fp32) %s", len(images), source, parity["vision_visual_tokens_max_abs_diff"],
             parity["fp32"]["first_step_logits_max_abs_diff"],
             f", int8 {parity['int8']['first_step_logits_max_abs_diff']:.2e}" if has_int8 else "",
             parity["fp32"]["greedy_texts_identical"])
    out = {"parity": parity}
    if latency:
        out["latency"] = compare_engine_latency(model, engines, images, contexts, gen,
                                                latency_runs or max(len(images), 4))
    return out


def check_parity(model_dir: str | os.PathLike, export_dir: str | os.PathLike, n: int = 4,
                 gen: GenerationConfig | None = None, latency: bool = True, latency_runs: int | None = None,
                 write_report: bool = True, data_cfg: DataConfig | None = None) -> dict:
    """Torch vs ONNX Runtime on n studies; merged into export_dir/export_report.json.

    The studies: n test-split studies of data_cfg, or without one the synthetic probe (`sources.parity_studies`;
    the report's parity["studies"] says which). Returns {"parity": {vision diffs, "fp32"/"int8": {prompt/first-
    step logits max abs diff, greedy and beam texts identical (+ share)}, "fp32_ok"}, "latency": {...}} (latency
    unless latency=False).
    """
    model_dir, export_dir = check_model_dir(model_dir), Path(export_dir)
    if not (export_dir / EXPORT_CONFIG).is_file():
        raise ExportError(f"{export_dir} is not an export directory ({EXPORT_CONFIG} missing)")
    model, _, saved = load_model_dir(model_dir)
    gen = gen or build_section(GenerationConfig, saved.get("generation", {}), "generation.")
    images, contexts, source = parity_studies(data_cfg, n, model.image_size, model.num_views)
    result = parity_and_latency(model.float().eval(), export_dir, gen, images, contexts, source, latency,
                                latency_runs)
    if write_report:
        path = export_dir / EXPORT_REPORT
        report = json.loads(path.read_text()) if path.is_file() else {}
        report.update(result)
        atomic_write_text(path, json.dumps(report, indent=2, default=float))
    return result
