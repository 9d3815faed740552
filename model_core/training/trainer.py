"""Two-stage training: stage 0 for parts without pretrained weights, then stage 1 (align) and 2 (fine-tune).

    stage0_encoder  encoder + detection head on the 14 labels            — a from-scratch encoder; with a frozen
                    (pretrained) encoder, the detection head alone on its cached features
    stage0_lm       language model on the training reports (NLL)         — only if the LM is not pretrained
    stage1          projector + detection head, LM frozen (production config: lr 1e-3, 5 epochs)
    stage2          projector + detection head + LM (production config: lr 2e-5, 10 epochs)

The encoder is frozen from stage 1 on (a pretrained one from the start, `model.vision.freeze`), so its features
are computed once: a frozen pretrained encoder's go through the on-disk FeatureCache (`train.feature_cache`), so a
second run reads them instead of encoding again; a from-scratch encoder's are kept in memory. Every stage runs
through `deepspeed.initialize` (ZeRO-2 by default; single process on CPU) and falls back to plain
PyTorch, saying so, when DeepSpeed cannot initialise. Each epoch ends with a checkpoint; `resume=True`
continues from the newest one with the same data order, RNG state, optimizer and schedule.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import socket
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from model_core.artifacts import CHECKPOINTS_DIR, LAST_CHECKPOINT
from model_core.chexpert import CHEXPERT_LABELS
from model_core.config import TrainConfig, resolve_path
from model_core.data.iu_xray import load_split
from model_core.modeling.grounding import logit_thresholds as grounding_logit_thresholds
from model_core.modeling.hints import logit_threshold
from model_core.modeling.model import IGNORE_INDEX, ModelOutput, RadiologyMultimodalModel
from model_core.modeling.model_dir import save_model_dir
from model_core.modeling.reference import build_reference_stats
from model_core.modeling.tokenizer import (
    clean_target,
    pad_batch,
    prepare_pretrained_tokenizer,
    train_report_tokenizer,
)
from model_core.modeling.vision import encoder_card
from model_core.provenance import collect_provenance, version_string
from model_core.sbom import write_sbom
from model_core.stats import expected_calibration_error
from model_core.training import distributed
from model_core.training.calibration import fit_temperature, grounding_thresholds, hint_thresholds, operating_thresholds
from model_core.training.examples import Examples, build_examples, features_from_pixels, study_view_features

log = logging.getLogger(__name__)

STAGES = ("stage0_encoder", "stage0_lm", "stage1", "stage2")
LOSS_TERMS = ("loss", "loss_report", "loss_detect", "loss_proj")


class StopTraining(Exception):
    """Raised by `stop_after_epochs` to simulate an interrupted run (tests of --resume)."""


# --------------------------------------------------------------------------- data

class _IndexDataset(Dataset):
    def __init__(self, n: int):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return i


def _loader(n: int, batch_size: int, shuffle: bool, seed: int, shard: bool = False) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    if shard and distributed.world_size() > 1:  # this rank's share of one permutation, the same on every rank
        order = torch.randperm(n, generator=generator).tolist() if shuffle else list(range(n))
        return DataLoader(distributed.shard(order), batch_size=batch_size, collate_fn=lambda idx: torch.tensor(idx))
    return DataLoader(_IndexDataset(n), batch_size=batch_size, shuffle=shuffle, generator=generator,
                      collate_fn=lambda idx: torch.tensor(idx))


# --------------------------------------------------------------------------- backends

class _Backend:
    """One optimisation step interface over DeepSpeed or plain PyTorch."""

    def __init__(self, model, params, stage_cfg, cfg: TrainConfig, total_steps: int, ds_config: dict | None):
        self.model, self.cfg = model, cfg
        self.engine = None
        optimizer = torch.optim.AdamW(params, lr=stage_cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = get_cosine_schedule_with_warmup(
            optimizer, num_warmup_steps=int(cfg.warmup_ratio * total_steps), num_training_steps=max(total_steps, 1))
        self.amp_dtype = _amp_dtype(cfg.precision)
        self._plain_attributes = {id(p): set(vars(p)) for p in model.parameters()}
        if ds_config is not None:
            try:
                self.engine = _deepspeed_engine(model, optimizer, scheduler, ds_config, cfg)
                self.kind = "deepspeed"
            except Exception as exc:  # noqa: BLE001 — any failure to initialise means: fall back, loudly
                log.warning("DeepSpeed could not initialise (%s: %s); falling back to plain PyTorch",
                            type(exc).__name__, exc)
        distributed.require_engine(self.engine)
        if self.engine is None:
            self.kind = "torch"
            self.optimizer, self.scheduler = optimizer, scheduler
            self.micro_step = 0

    def backward_step(self, loss: torch.Tensor) -> None:
        if self.engine is not None:
            self.engine.backward(loss)
            self.engine.step()
            return
        (loss / self.cfg.grad_accum_steps).backward()
        self.micro_step += 1
        if self.micro_step % self.cfg.grad_accum_steps == 0:
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.cfg.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)

    def close(self) -> None:
        """Release DeepSpeed's gradient hooks so the next stage's engine owns the parameters alone. Under ZeRO-3
        each rank holds only its shard of every parameter: they are gathered whole first, and the parameters
        become ordinary tensors again (for the next stage's engine, the weight check and the saved model)."""
        if self.engine is None:
            return
        if self.engine.zero_optimization_stage() != 3:
            self.engine.destroy()
            return
        import deepspeed  # the engine exists, so DeepSpeed imports; imported here like `_deepspeed_engine` does

        params = list(self.model.parameters())
        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            whole = [p.data.detach().clone() for p in params]
        self.engine.destroy()
        for p, data in zip(params, whole):
            p.data = data
            for name in set(vars(p)) - self._plain_attributes.get(id(p), set()):
                delattr(p, name)        # ZeRO-3's bookkeeping (ds_id, ds_tensor, all_gather, ...)
        for name in ("_external_params", "ds_external_parameters", "all_parameters"):
            self.model.projector.__dict__.pop(name, None)    # `_deepspeed_engine`'s external-parameter registration

    def model_state_dict(self) -> dict:
        """The model's whole weights (ZeRO-3: gathered from every rank's shard; a collective call)."""
        if self.engine is None or self.engine.zero_optimization_stage() != 3:
            return self.model.state_dict()
        import deepspeed  # see close()

        with deepspeed.zero.GatheredParameters(list(self.model.parameters()), modifier_rank=None):
            return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def lr(self) -> float:
        if self.engine is not None:
            return float(self.engine.get_lr()[0])
        return float(self.scheduler.get_last_lr()[0])

    def state_dict(self) -> dict:
        if self.engine is not None:
            # ZeRO partitions the optimizer state by rank: rank 0 gathers every rank's part for the checkpoint.
            return {"optimizer": distributed.gather_to_main(self.engine.optimizer.state_dict()),
                    "scheduler": self.engine.lr_scheduler.state_dict(),
                    "global_steps": self.engine.global_steps, "micro_steps": self.engine.micro_steps}
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "micro_step": self.micro_step}

    def load_state_dict(self, state: dict) -> None:
        if self.engine is not None:
            # ZeRO optimizers take one state dict per data-parallel rank.
            self.engine.optimizer.load_state_dict(distributed.per_rank_states(state["optimizer"]),
                                                  load_from_fp32_weights=True)
            self.engine.lr_scheduler.load_state_dict(state["scheduler"])
            self.engine.global_steps, self.engine.micro_steps = state["global_steps"], state["micro_steps"]
            return
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.micro_step = state["micro_step"]


def _amp_dtype(precision: str) -> torch.dtype | None:
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"train.precision must be auto, fp32, bf16 or fp16, got {precision!r}")
    if precision == "auto":
        if torch.cuda.is_available():
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def load_deepspeed_config(path: str | None, cfg: TrainConfig) -> dict | None:
    """The DeepSpeed JSON with the batch/accumulation/clipping/precision values of the train config filled in."""
    if path is None:
        return None
    ds_path = resolve_path(path)
    if not ds_path.is_file():
        raise FileNotFoundError(f"DeepSpeed config not found: {ds_path}")
    ds = json.loads(ds_path.read_text())
    ds.update(train_micro_batch_size_per_gpu=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum_steps,
              gradient_clipping=cfg.max_grad_norm)
    amp = _amp_dtype(cfg.precision)
    # Mixed precision on CPU runs through torch.autocast in the step (DeepSpeed's bf16 optimizer wants a GPU).
    on_gpu = torch.cuda.is_available()
    ds["bf16"] = {"enabled": bool(on_gpu and amp == torch.bfloat16)}
    ds["fp16"] = {"enabled": bool(on_gpu and amp == torch.float16)}
    return ds


def _deepspeed_engine(model, optimizer, scheduler, ds_config: dict, cfg: TrainConfig):
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(key, value)
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    distributed.ensure_process_group()  # a store on 127.0.0.1; DeepSpeed's own (env://) would listen on all interfaces
    # deepspeed is imported here, not at the top: it is heavy, and a failure to import it must end in the
    # plain-PyTorch fallback of `_Backend`, not in an import error of this module.
    import deepspeed

    if ds_config.get("zero_optimization", {}).get("stage") == 3:
        # ZeRO-3 gathers a module's weights only around its own forward and backward; the projector reads its
        # layers' weights itself for ‖θ_proj‖² (`MultimodalProjector.forward(squared_norm=True)`).
        for name, param in model.projector.named_parameters():
            if "." in name:
                deepspeed.zero.register_external_parameter(model.projector, param)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config)
    return engine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- the trainer

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def plan_stages(model: RadiologyMultimodalModel, cfg: TrainConfig) -> list[str]:
    """Stages that run: stage 0 parts only for what has no pretrained weights (stage0_encoder also for a frozen
    encoder: it then trains the detection head alone); stages with 0 epochs are skipped."""
    stages = []
    if not model.config.vision.pretrained or model.config.vision.freeze:
        stages.append("stage0_encoder")
    if not model.config.text.pretrained:
        stages.append("stage0_lm")
    stages += ["stage1", "stage2"]
    return [s for s in stages if getattr(cfg, s).epochs > 0]


def train_two_stage(model: RadiologyMultimodalModel, train_dataset: dict, val_dataset: dict, config: TrainConfig,
                    checkpoint_dir: str | os.PathLike | None = None, resume: bool = False,
                    stop_after_epochs: int | None = None, on_epoch=None) -> dict:
    """Train in stages; returns the history {stage: [{epoch, train: {term: mean}, val: {...}, lr, seconds}]}.

    Datasets are `load_iu_xray`-style dicts; examples are their studies (`examples.build_examples`). Checkpoints
    go to `checkpoint_dir/last.pt` after each epoch. `stop_after_epochs` raises StopTraining after that many
    epochs in this call (to test resuming). With a frozen encoder (`model.vision.freeze`) every stage reads
    encoder features computed once (through the disk cache `config.feature_cache` when set); the detection loss's
    positive weights come from the training labels.
    """
    cfg = config
    for name, ds in (("train", train_dataset), ("val", val_dataset)):
        if not ds["images"]:
            raise ValueError(f"{name} dataset is empty")
    seed_everything(cfg.seed)  # a resumed run then restores the checkpoint's RNG state below
    ds_config = load_deepspeed_config(cfg.deepspeed, cfg)
    ckpt_path = Path(checkpoint_dir) / LAST_CHECKPOINT if checkpoint_dir else None
    if cfg.lora.enabled:
        model.apply_lora(cfg.lora)  # before any checkpoint is loaded: its keys are the wrapped model's
    state = None
    if resume:
        if ckpt_path is None or not ckpt_path.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}")
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        torch.set_rng_state(state["rng"])
        log.info("resuming after %s epoch %d", state["stage"], state["epoch"])
    history: dict = state["history"] if state else {}

    examples = {"train": build_examples(model, train_dataset, cfg), "val": build_examples(model, val_dataset, cfg)}
    model.set_label_frequencies(examples["train"].finding_labels)
    pixels = {"train": None, "val": None}
    features = {"train": None, "val": None}

    def get_pixels(split):
        if pixels[split] is None:
            pixels[split] = examples[split].pixels(model, split)
        return pixels[split]

    if model.config.vision.freeze:
        for split in features:
            features[split] = examples[split].features(model, cfg.feature_cache, cfg.batch_size)

    device = training_device()
    model.to(device)   # features and pixels stay on the host; each batch moves to the device (`_StageRunner`)
    epochs_this_call = 0
    for stage in plan_stages(model, cfg):
        stage_cfg = getattr(cfg, stage)
        done_epochs = 0
        if state is not None:
            order = STAGES.index(state["stage"])
            if STAGES.index(stage) < order:
                continue
            if stage == state["stage"]:
                done_epochs = state["epoch"]
                if done_epochs >= stage_cfg.epochs:
                    continue
        trainable = model.set_trainable(stage)
        if stage in ("stage1", "stage2") and cfg.cache_features and features["train"] is None:
            features["train"] = features_from_pixels(model, get_pixels("train"), cfg.batch_size, device)
            features["val"] = features_from_pixels(model, get_pixels("val"), cfg.batch_size, device)
        params = [p for p in model.parameters() if p.requires_grad]
        steps_per_epoch = math.ceil(len(examples["train"]) / cfg.batch_size / cfg.grad_accum_steps)
        backend = _Backend(model, params, stage_cfg, cfg, steps_per_epoch * stage_cfg.epochs, ds_config)
        if state is not None and stage == state["stage"]:
            backend.load_state_dict(state["backend"])
        log.info("%s: training %s (%d params, %s backend, lr %.1e, %d epochs)", stage, "+".join(trainable),
                 sum(p.numel() for p in params), backend.kind, stage_cfg.lr, stage_cfg.epochs)
        runner = _StageRunner(model, stage, cfg, backend, examples, get_pixels, features)
        for epoch in range(done_epochs + 1, stage_cfg.epochs + 1):
            t0 = time.perf_counter()
            train_terms = runner.run_epoch("train", epoch)
            val_terms = runner.run_epoch("val", epoch)
            record = {"epoch": epoch, "train": train_terms, "val": val_terms, "lr": backend.lr(),
                      "backend": backend.kind, "seconds": round(time.perf_counter() - t0, 2)}
            history.setdefault(stage, []).append(record)
            log.info("%s epoch %d/%d train %s | val %s", stage, epoch, stage_cfg.epochs,
                     _fmt(train_terms), _fmt(val_terms))
            if on_epoch is not None and distributed.is_main_process():
                on_epoch(stage, record)                   # e.g. the pipeline's MLflow run, from rank 0 alone
            if ckpt_path is not None:
                _save_checkpoint(ckpt_path, model, stage, epoch, backend, history)
            epochs_this_call += 1
            if stop_after_epochs is not None and epochs_this_call >= stop_after_epochs:
                backend.close()
                raise StopTraining(f"stopped after {epochs_this_call} epoch(s) ({stage} epoch {epoch})")
        backend.close()
        state = None
    model.merge_lora()
    model.requires_grad_(False)
    model.eval()
    model.cpu()   # calibration, reference statistics and the model directory work on the host
    return history


def training_device() -> torch.device:
    """This process's accelerator (its LOCAL_RANK's GPU in a multi-GPU run), else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def _fmt(terms: dict) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in terms.items())


def _save_checkpoint(path: Path, model, stage: str, epoch: int, backend: _Backend, history: dict) -> None:
    backend_state = backend.state_dict()          # every rank: it gathers ZeRO's per-rank optimizer state
    weights = backend.model_state_dict()          # every rank: ZeRO-3 gathers the parameter shards
    if not distributed.is_main_process():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"model": weights, "stage": stage, "epoch": epoch, "backend": backend_state,
                "rng": torch.get_rng_state(), "history": history}, tmp)
    os.replace(tmp, path)


class _StageRunner:
    """Runs one epoch of a stage over train or val, returning the mean of each loss term."""

    def __init__(self, model, stage, cfg, backend, examples: dict[str, Examples], get_pixels, features):
        self.model, self.stage, self.cfg, self.backend = model, stage, cfg, backend
        self.examples = examples
        self.get_pixels, self.features = get_pixels, features
        self.module = backend.engine if backend.engine is not None else model
        self.device = backend.engine.device if backend.engine is not None else next(model.parameters()).device

    def run_epoch(self, split: str, epoch: int) -> dict:
        training = split == "train"
        self.model.train(training)
        if self.stage != "stage0_encoder":
            self.model.encoder.eval()  # frozen: no dropout noise in its features (a frozen one always is)
        ex = self.examples[split]
        loader = _loader(len(ex.input_ids), self.cfg.batch_size, shuffle=training,
                         seed=self.cfg.seed * 1000 + STAGES.index(self.stage) * 100 + epoch, shard=training)
        sums = {k: 0.0 for k in LOSS_TERMS}
        n = 0
        bar = tqdm(loader, desc=f"{self.stage} e{epoch} {split}", leave=False, disable=None, unit="batch")
        for idx in bar:
            with torch.set_grad_enabled(training):
                out = self._forward(split, idx)
                if training:
                    self.backend.backward_step(out.loss)
            for k in LOSS_TERMS:
                value = getattr(out, k)
                if value is not None:
                    sums[k] += float(value.detach()) * len(idx)
            n += len(idx)
            bar.set_postfix(loss=f"{sums['loss'] / n:.3f}")
        if training:
            sums, n = distributed.all_reduce_sums(sums, n)   # the epoch's means over every rank's share
        return {k: round(v / n, 5) for k, v in sums.items() if v != 0.0 or k == "loss"}

    def _forward(self, split: str, idx: torch.Tensor) -> ModelOutput:
        ex = self.examples[split]
        amp = self.backend.amp_dtype
        on = self._on_device
        with torch.autocast(device_type=self.device.type, dtype=amp or torch.float32, enabled=amp is not None):
            if self.stage == "stage0_encoder":
                if self.features[split] is not None:      # a frozen encoder: the detection head on its features
                    return self.module(vision_features=on(self.features[split][idx]),
                                       finding_labels=on(ex.finding_labels[idx]))
                return self.module(images=on(self.get_pixels(split)[idx]), finding_labels=on(ex.finding_labels[idx]))
            if self.stage == "stage0_lm":
                ids, mask = pad_batch([ex.report_ids[i] for i in idx], self.model.tokenizer.pad_token_id)
                ids, mask = on(ids), on(mask)
                labels = ids.masked_fill(mask == 0, IGNORE_INDEX)
                logits = self.model.language_model(input_ids=ids, attention_mask=mask).logits
                loss = torch.nn.functional.cross_entropy(
                    logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX)
                return ModelOutput(logits=None, label_logits=torch.empty(0), loss=loss, loss_report=loss)
            ids, mask = pad_batch([ex.input_ids[i] for i in idx], self.model.tokenizer.pad_token_id)
            labels, _ = pad_batch([ex.labels[i] for i in idx], IGNORE_INDEX)
            kwargs = {"input_ids": ids, "attention_mask": mask, "labels": labels,
                      "finding_labels": ex.finding_labels[idx]}
            if self.features[split] is not None:
                kwargs["vision_features"] = self.features[split][idx]
            else:
                kwargs["images"] = self.get_pixels(split)[idx]
            return self.module(**{k: on(v) for k, v in kwargs.items()})

    def _on_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """A host batch on the training device (a no-op on CPU)."""
        return tensor.to(self.device, non_blocking=True)


# --------------------------------------------------------------------------- the `rrg train` job

def study_probabilities(model: RadiologyMultimodalModel, dataset: dict, batch_size: int = 32,
                        feature_cache: str | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per-study detection-head logits (the study's view slots, as in training) and 0/1 targets.

    Returns (study_ids, logits (S, 14), targets (S, 14)). feature_cache: the on-disk cache of a frozen encoder.
    """
    ids, targets, features = study_view_features(model, dataset, feature_cache, batch_size)
    with torch.no_grad():
        logits = model.detect(features).numpy()
    return ids, logits, targets


def train_report_model(cfg, out_dir: str | os.PathLike, resume: bool = False,
                       stop_after_epochs: int | None = None, on_epoch=None) -> Path:
    """Train the report generator from a full `Config` and write a self-contained model directory.

    out_dir receives: model.pt, model_config.json, tokenizer/, encoder_config/, lm_config/,
    detection.json (temperature, thresholds), history.json, config.json, model_card.json;
    per-epoch checkpoints live in out_dir/checkpoints/ (used by `resume`). The model card records the
    software provenance (`model_core.provenance.collect_provenance`) once, under "provenance"; its
    "version" is `version_string` of that record.

    In a data-parallel run (`model_core.training.distributed`) every rank trains, the ranks must agree on the
    weights (card "distributed"), and rank 0 alone writes checkpoints and the directory and calls
    `on_epoch(stage, record)` after each epoch.
    """
    out = Path(out_dir)
    started = time.perf_counter()
    seed_everything(cfg.train.seed)
    train_ds, val_ds = load_split(cfg.data, "train"), load_split(cfg.data, "val")
    if cfg.model.text.pretrained:
        tokenizer = prepare_pretrained_tokenizer(cfg.model.text.pretrained)
    else:
        tokenizer = train_report_tokenizer([clean_target(r) for r in train_ds["reports"]], cfg.model.text.vocab_size)
    model = RadiologyMultimodalModel(cfg.model, tokenizer)
    history = train_two_stage(model, train_ds, val_ds, cfg.train, checkpoint_dir=out / CHECKPOINTS_DIR,
                              resume=resume, stop_after_epochs=stop_after_epochs, on_epoch=on_epoch)
    weights_per_rank = distributed.agree_on_weights(model)
    if not distributed.is_main_process():
        return out

    _, val_logits, val_targets = study_probabilities(model, val_ds, cfg.train.batch_size, cfg.train.feature_cache)
    calibration = fit_temperature(val_logits, val_targets)
    val_probs = 1 / (1 + np.exp(-val_logits / calibration["temperature"]))
    operating = operating_thresholds(val_probs, val_targets, cfg.gate.operating_point_sensitivity)
    detection = {"temperature": calibration["temperature"], "calibration": calibration,
                 "val_ece": expected_calibration_error(val_probs, val_targets), **operating}
    if model.config.findings_hint:   # the prompt's findings: thresholds chosen on validation, kept with the model
        hints = hint_thresholds(val_probs, val_targets, model.config.hint_critical_false_share)
        model.config.hint_logit_thresholds = [logit_threshold(hints["thresholds"][label], calibration["temperature"])
                                              for label in CHEXPERT_LABELS]
        detection["hint"] = hints
    if model.config.grounded_findings:   # the draft's stated findings: critical ones within one shared budget
        statements = grounding_thresholds(val_probs, val_targets, model.config.grounding_critical_false_share)
        model.config.grounding_logit_thresholds = grounding_logit_thresholds(statements["thresholds"],
                                                                             calibration["temperature"])
        detection["grounding"] = statements
    provenance = collect_provenance()
    card = {
        "name": cfg.name, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "version": version_string(provenance), "training_seconds": round(time.perf_counter() - started, 1),
        "train_studies": len({m["study_id"] for m in train_ds["metadata"]}),
        "val_studies": len({m["study_id"] for m in val_ds["metadata"]}),
        "stages": {stage: {"epochs": len(recs), "backend": recs[-1]["backend"]} for stage, recs in history.items()},
        "encoder": encoder_card(cfg.model.vision, model.encoder),
        "distributed": {"world_size": len(weights_per_rank), "weights_sha256": weights_per_rank},
        "provenance": provenance,
    }
    # Written before the model card (which `save_model_dir` moves in last and marks the directory complete):
    # the monitors' reference (held-out test studies' embeddings and calibrated probabilities; the PCA fitted
    # on validation studies, kept out of the reference) and the training environment's SBOM (the packet's PCCP
    # verdict needs it).
    build_reference_stats(model, load_split(cfg.data, "test"), out, detection=detection, fit_ds=val_ds,
                          max_reference=cfg.monitoring.max_reference, pca_components=cfg.monitoring.pca_components,
                          feature_cache=cfg.train.feature_cache, batch_size=cfg.train.batch_size, seed=cfg.train.seed)
    write_sbom(out, cfg.data)
    save_model_dir(model, out, card=card, run_config=cfg.to_dict(), detection=detection, history=history)
    log.info("model directory written: %s (%.0f s)", out, card["training_seconds"])
    return out

