"""The one config tree: typed dataclasses, loaded from YAML, overridable from the command line.

    cfg = load_config("configs/demo.yaml", overrides=["baseline.epochs=2", "data.image_size=64"])

Every section is a dataclass; unknown keys and wrongly typed values are errors that name the key,
so a typo in a YAML file never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key."""


@dataclass
class DataConfig:
    root: str = "data/iu_xray"          # images root; relative paths are resolved from the repo root
    manifest: str | None = None         # default: <root>/manifest.csv
    views: list[str] = field(default_factory=lambda: ["Frontal"])
    image_size: int = 512
    limit_studies: int | None = None    # keep only the first N studies of each split (tests, smoke runs)


@dataclass
class BaselineConfig:
    image_size: int = 128
    epochs: int = 8
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    seed: int = 0


@dataclass
class EvalConfig:
    n_bootstrap: int = 1000
    seed: int = 0
    section: str = "findings"           # reference section for BLEU/ROUGE (R2Gen convention: findings)


@dataclass
class VisionConfig:
    # A Hugging Face ViT/DINOv2 `from_pretrained` directory (e.g. a downloaded microsoft/rad-dino), or the symbolic
    # name "dinov2-vits14-imgfocus" (the offline DINOv2 ViT-S/14 of `make weights`); None = build from the fields.
    pretrained: str | None = None
    architecture: str = "vit"          # vit | dinov2: the family built from config when not pretrained
    freeze: bool = False               # frozen from the start (a pretrained encoder): never trained, eval mode,
                                       # its features cached on disk; stage 0 then trains the detection head only
    views: int = 1                     # view slots per study: 1 = one image; 2 = frontal + lateral (missing = masked)
    image_size: int = 128              # model input side; DINOv2: a multiple of 14 (its positions are resized)
    patch_size: int = 16
    hidden_size: int = 128             # d_v
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 256
    num_channels: int = 1              # pretrained RGB backbones take 3: grayscale is repeated
    pool_tokens: int | None = None     # average-pool the patch grid to this many tokens per image (None = all)
    # The detection head reads the CLS token of the encoder's last k layers, each through the encoder's final
    # LayerNorm, concatenated (DINOv2's linear-evaluation protocol uses k = 4); 1 = the last layer's CLS only.
    detect_layers: int = 1
    # Pixel normalisation inside the model, per channel (None: ImageNet statistics for DINOv2, 0.5/0.5 for ViT).
    pixel_mean: list[float] | None = None
    pixel_std: list[float] | None = None


@dataclass
class TextConfig:
    pretrained: str | None = None      # a Hugging Face causal-LM checkpoint directory (BioGPT, LLaMA-class)
    architecture: str = "gpt2"         # gpt2 | llama: the family built from config when not pretrained
    hidden_size: int = 256             # d_l
    num_layers: int = 3
    num_heads: int = 4
    max_positions: int = 320
    vocab_size: int = 2000             # for the BPE tokenizer trained on the reports (from-scratch LM only)
    dropout: float = 0.1
    intermediate_size: int | None = None   # MLP width (default 4 × hidden for gpt2; required for llama)


@dataclass
class ModelConfig:
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    projector_hidden: int = 512        # d_h
    projector_out: int | None = None   # d_l; None = the LM's hidden size
    report_weight: float = 1.0
    detect_weight: float = 0.5
    projector_l2: float = 1e-4
    # Detection-head loss: bce | weighted_bce (positives weighted by negatives/positives of the training labels,
    # capped at pos_weight_max) | focal (focal BCE with focal_gamma, positives weighted as in weighted_bce)
    detect_loss: str = "bce"
    pos_weight_max: float = 10.0
    focal_gamma: float = 2.0
    # The detection head's probabilities (14, gradient stopped) are projected into every visual token, so the LM
    # reads what the head sees without having to learn it from the patch features of 2,700 studies.
    findings_to_lm: bool = False
    # The detection head's findings are stated in the prompt ("Detected: cardiomegaly, pleural effusion."), so the
    # LM writes about what the head sees (`model_core.modeling.hints`). Training states the study's labels; generation
    # states the head's, at per-label logit thresholds the trainer chooses on validation (written here, in CheXpert
    # order; inf = never stated): each maximises the label's F1, and for critical findings only among thresholds
    # whose false statements stay within hint_critical_false_share of validation studies (the hallucination budget).
    findings_hint: bool = False
    hint_logit_thresholds: list[float] | None = None
    hint_critical_false_share: float = 0.005
    # Grounded drafting (`model_core.modeling.grounding`): after decoding, the labels the detection head states are
    # written into the draft (a fixed sentence in their region, replacing a sentence that rules them out) and a
    # normal impression gives way to theirs. Per-label logit thresholds chosen by the trainer on validation and
    # written here (`model_core.training.calibration.grounding_thresholds`): max F1, except that the four critical
    # findings share one budget: validation studies given a false critical statement ≤ grounding_critical_false_share.
    grounded_findings: bool = False
    grounding_logit_thresholds: list[float] | None = None
    grounding_critical_false_share: float = 0.015

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> "ModelConfig":
        return _build(cls, raw, "model.")


@dataclass
class StageConfig:
    epochs: int = 1
    lr: float = 1e-3


@dataclass
class LoraConfig:
    enabled: bool = False              # LoRA adapters on the LM in stage 2 (7B-class LMs with ZeRO-3)
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


@dataclass
class TrainConfig:
    seed: int = 0
    batch_size: int = 16
    grad_accum_steps: int = 1
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    # auto | fp32 | bf16 | fp16  (auto: bf16 on a bf16 GPU, fp16 on other GPUs, fp32 on CPU)
    precision: str = "auto"
    deepspeed: str | None = "configs/deepspeed/zero2.json"   # None = plain PyTorch
    cache_features: bool = True        # compute frozen-encoder features once for stages 1-2
    # On-disk cache of a frozen (vision.freeze) encoder's features, keyed by weights, image bytes, size and pooling:
    # a second run reads them instead of encoding again. None = keep them in memory only.
    feature_cache: str | None = "runs/features"
    max_report_tokens: int = 96
    uncertain_policy: str = "ones"
    lora: LoraConfig = field(default_factory=LoraConfig)
    # Stage 0 trains what has no pretrained weights: the encoder (+ detection head) on the 14 labels,
    # and a from-scratch LM on the training reports. Skipped for parts loaded with from_pretrained.
    stage0_encoder: StageConfig = field(default_factory=lambda: StageConfig(epochs=10, lr=1e-3))
    stage0_lm: StageConfig = field(default_factory=lambda: StageConfig(epochs=10, lr=1e-3))
    stage1: StageConfig = field(default_factory=lambda: StageConfig(epochs=5, lr=1e-3))
    stage2: StageConfig = field(default_factory=lambda: StageConfig(epochs=10, lr=2e-5))


@dataclass
class GenerationConfig:
    num_beams: int = 4
    max_new_tokens: int = 96
    min_new_tokens: int = 0
    no_repeat_ngram_size: int = 3
    repetition_penalty: float = 1.0
    length_penalty: float = 1.0


@dataclass
class GateConfig:
    operating_point_sensitivity: float = 0.98   # critical-finding thresholds reach this sensitivity on validation
    critical_sensitivity_min: float = 0.98      # gate: test sensitivity (CI lower bound) must be > this
    hallucination_rate_max: float = 0.03
    specificity_floor: float = 0.60
    gate_on_ci_lower_bound: bool = True         # gate on the conservative end of each 95 % CI
    min_positives: int = 10                      # fewer test positives for a critical finding → fail closed
                                                 # (0 = findings without positives are not gated: development only)


SERVING_BACKENDS = ("auto", "onnxruntime", "torch", "triton")


@dataclass
class ServingConfig:
    """The report service (`rrg serve`, serving.app). Checked on construction: a bad value names its key."""
    host: str = "127.0.0.1"
    port: int = 8080
    backend: str = "auto"               # auto (ONNX Runtime over the pipeline's export; refused without one) |
                                        # onnxruntime | torch | triton (a Triton Inference Server at triton_url)
    precision: str = "fp32"             # ONNX Runtime decoder: fp32 | int8. FP32 by default: its reports are
                                        # token-identical to the torch model the gate evaluated; the INT8 one
                                        # changes some (docs/serving.md)
    allow_export_at_startup: bool = False  # development only: export to ONNX at startup when the model has none
    workers: int | None = None          # batches run at once (None: one per CPU core, at most 4)
    threads: int | None = None          # intra-op threads per batch (None: CPU cores / workers, at least 1)
    triton_url: str | None = None       # e.g. 127.0.0.1:8000 (HTTP) for backend=triton
    triton_model: str = "rrg_report"
    max_batch: int = 8                  # dynamic batching: at most 8 studies per batch, waiting at most 100 ms
    max_wait_ms: float = 100.0
    max_queue: int = 64                 # studies waiting for the model; beyond this: 429 + Retry-After
    request_timeout_s: float = 120.0
    max_upload_bytes: int = 64 * 1024 * 1024
    max_files: int = 8
    decode_budget_bytes: int = 1024 * 1024 * 1024  # images being decoded at once, estimated from their headers;
                                                   # beyond it 503 + Retry-After (docs/serving.md, Limits)
    pacs_url: str | None = None         # DICOMweb root of the PACS (default: $RRG_PACS_URL)
    pacs_timeout_s: float = 5.0
    report_store: str = "runs/serving/reports.sqlite3"   # SQLite file of generated reports; ":memory:" = this
                                                         # process only
    report_retention_days: float = 30.0  # reports older than this are deleted from the store
    audit_log: str = "runs/serving/audit.jsonl"          # append-only JSONL (no PHI)
    log_predictions: bool = True        # a PHI-free record per report in the prediction log (monitoring.log_url)
    validated_pool: str | None = "runs/serving/validated"  # model inputs kept for radiologist sign-off (None: not)

    def __post_init__(self):
        problems = []
        if self.backend not in SERVING_BACKENDS:
            problems.append(f"serving.backend must be one of {', '.join(SERVING_BACKENDS)}, got {self.backend!r}")
        if self.precision not in ("int8", "fp32"):
            problems.append(f"serving.precision must be int8 or fp32, got {self.precision!r}")
        if self.backend == "triton" and not self.triton_url:
            problems.append("serving.triton_url is required with serving.backend=triton")
        if not 0 < self.port < 65536:
            problems.append(f"serving.port must be 1-65535, got {self.port}")
        for key in ("max_batch", "max_queue", "max_upload_bytes", "max_files", "decode_budget_bytes"):
            if getattr(self, key) < 1:
                problems.append(f"serving.{key} must be ≥ 1, got {getattr(self, key)}")
        for key in ("threads", "workers"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                problems.append(f"serving.{key} must be ≥ 1 or null, got {getattr(self, key)}")
        for key in ("max_wait_ms",):
            if getattr(self, key) < 0:
                problems.append(f"serving.{key} must be ≥ 0, got {getattr(self, key)}")
        for key in ("request_timeout_s", "pacs_timeout_s", "report_retention_days"):
            if getattr(self, key) <= 0:
                problems.append(f"serving.{key} must be > 0, got {getattr(self, key)}")
        if problems:
            raise ConfigError("; ".join(problems))


@dataclass
class MonitoringConfig:
    """The monitoring wing (monitoring/): prediction log, drift tests, the seed's alert thresholds, the retrain
    trigger. Checked on construction: a bad value names its key."""
    log_url: str = "runs/serving/predictions.sqlite3"   # SQLite path or SQLAlchemy URL (PostgreSQL in production)
    retention_days: float = 90.0          # prediction-log rows older than this are purged
    window_days: float = 7.0              # the current window: predictions of the last N days
    min_studies: int = 50                 # fewer studies in a window → "insufficient data", never an alarm
    max_reference: int = 2000             # reference studies kept with a model (embeddings, for MMD)
    pca_components: int = 32              # embeddings are reduced to this many dimensions before MMD
    alpha: float = 0.01                   # MMD: drift when the permutation p-value is below this
    permutations: int = 1000              # ≥ 1,000 so that p < 0.01 is resolvable
    label_alpha: float = 0.05             # label drift: family-wise, Bonferroni across the 14 findings
    cusum_finding: str = "Pneumothorax"   # Bernoulli CUSUM on this finding's predicted rate
    cusum_rate_ratio: float = 2.0         # the rate change the CUSUM is tuned to (×2 up, ×1/2 down)
    cusum_threshold: float = 4.0          # h: alarm when the CUSUM statistic exceeds it
    sensitivity_page_below: float = 0.95  # critical-finding sensitivity on validated studies < this → page
    min_validated_positives: int = 10     # fewer validated positives of a finding → its sensitivity is not judged
    p99_latency_scale_up_s: float = 30.0  # P99 latency above this → scale-up signal
    hallucination_pause_above: float = 0.05  # share of reports asserting findings the detection head does not
                                             # confirm above this → pause automated reports
    concept_drift_points: float = 5.0     # a critical finding's F1 this many points below reference → retrain
    concept_window_days: float = 7.0      # concept drift: weekly rolling window over validated studies
    cooldown_hours: float = 72.0          # no new retrain within this long of the last one
    state_dir: str = "runs/monitoring"    # trigger ledger (idempotency keys, last trigger) and its lock
    alertmanager_url: str | None = None   # Alertmanager /api/v2/alerts (None: alerts are written to state_dir only)
    service_url: str | None = None        # the report service: the pause switch (token: $RRG_MONITOR_TOKEN, scope
                                          # service.admin); None: the pause signal is written to state_dir only
    kfp_host: str | None = None           # a KFP API server: retrain there; None: locally through kfp.local

    def __post_init__(self):
        problems = []
        for key in ("retention_days", "window_days", "concept_window_days", "p99_latency_scale_up_s",
                    "cusum_rate_ratio", "cusum_threshold", "concept_drift_points"):
            if getattr(self, key) <= 0:
                problems.append(f"monitoring.{key} must be > 0, got {getattr(self, key)}")
        for key in ("alpha", "label_alpha"):
            if not 0 < getattr(self, key) < 1:
                problems.append(f"monitoring.{key} must be in (0, 1), got {getattr(self, key)}")
        for key in ("sensitivity_page_below", "hallucination_pause_above"):
            if not 0 <= getattr(self, key) <= 1:
                problems.append(f"monitoring.{key} must be in [0, 1], got {getattr(self, key)}")
        for key in ("min_studies", "max_reference", "pca_components", "min_validated_positives"):
            if getattr(self, key) < 1:
                problems.append(f"monitoring.{key} must be ≥ 1, got {getattr(self, key)}")
        if self.permutations < 1000:
            problems.append(f"monitoring.permutations must be ≥ 1000 (p < 0.01 must be resolvable), "
                            f"got {self.permutations}")
        if self.cusum_rate_ratio == 1:
            problems.append("monitoring.cusum_rate_ratio must differ from 1")
        if self.cooldown_hours < 0:
            problems.append(f"monitoring.cooldown_hours must be ≥ 0, got {self.cooldown_hours}")
        if problems:
            raise ConfigError("; ".join(problems))


@dataclass
class RolloutConfig:
    """The safe rollout (registry.rollout, serving.model_swap / shadow, monitoring.ab): challenger → shadow → A/B →
    champion, with a blue-green watch and automatic rollback. Checked on construction: a bad value names its key."""
    margin_ce_f1: float = 0.02            # champion-vs-challenger non-inferiority margins (paired bootstrap CI of
    margin_bleu4: float = 0.01            # challenger − champion must stay above −margin)
    mcnemar_alpha: float = 0.05           # critical-finding correctness: challenger significantly worse → fail
    n_boot: int = 1000
    shadow_share: float = 1.0             # share of requests mirrored to the shadow model (off the response path)
    shadow_window_hours: float = 48.0     # the seed's shadow period
    ab_share: float = 0.10                # studies assigned to the challenger (sticky: hash of UID + salt)
    ab_salt: str = "rrg-ab-1"             # a new experiment gets a new salt (a new random assignment)
    promote_alpha: float = 0.01           # promote only when a metric improves at p < this (Bonferroni-adjusted)
    power: float = 0.8                    # for the sample sizes printed before a test
    effect_rating: float = 0.2            # effects worth detecting: radiologist rating (points on 1–5),
    effect_edit_distance: float = 2.0     # words edited,
    effect_sensitivity: float = 0.05      # critical-finding sensitivity (absolute),
    effect_turnaround_ms: float = 500.0   # turnaround time
    watch_window_hours: float = 2.0       # blue-green: the previous champion stays warm this long after promotion
    watch_poll_s: float = 30.0            # how often the watch (and serving's alias watcher) looks
    rollback_review_rate_increase: float = 0.10   # watched limits: review-flag rate up by more than this,
    rollback_p99_latency_s: float = 30.0          # P99 latency above this,
    rollback_p99_latency_ratio: float = 2.0       # or above this many times the previous champion's, or any
                                                  # monitoring alert → roll back

    def __post_init__(self):
        problems = []
        for key in ("margin_ce_f1", "margin_bleu4", "rollback_review_rate_increase"):
            if not 0 <= getattr(self, key) < 1:
                problems.append(f"rollout.{key} must be in [0, 1), got {getattr(self, key)}")
        for key in ("mcnemar_alpha", "promote_alpha", "power"):
            if not 0 < getattr(self, key) < 1:
                problems.append(f"rollout.{key} must be in (0, 1), got {getattr(self, key)}")
        for key in ("shadow_share", "ab_share"):
            if not 0 < getattr(self, key) <= 1:
                problems.append(f"rollout.{key} must be in (0, 1], got {getattr(self, key)}")
        for key in ("shadow_window_hours", "watch_window_hours", "watch_poll_s", "effect_rating",
                    "effect_edit_distance", "effect_sensitivity", "effect_turnaround_ms", "rollback_p99_latency_s",
                    "rollback_p99_latency_ratio"):
            if getattr(self, key) <= 0:
                problems.append(f"rollout.{key} must be > 0, got {getattr(self, key)}")
        if self.n_boot < 100:
            problems.append(f"rollout.n_boot must be ≥ 100, got {self.n_boot}")
        if not self.ab_salt:
            problems.append("rollout.ab_salt must not be empty")
        if problems:
            raise ConfigError("; ".join(problems))


@dataclass
class Config:
    name: str = "default"
    data: DataConfig = field(default_factory=DataConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    monitoring: MonitoringConfig = field(default_factory=MonitoringConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


REPO_ROOT = Path(__file__).resolve().parent.parent


def resolve_path(path: str | os.PathLike) -> Path:
    """Config paths are relative to the repository root, so commands work from any directory."""
    p = Path(path)
    return p if p.is_absolute() else REPO_ROOT / p


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> Config:
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path} must hold a mapping at top level")
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is not a section")
        node[leaf] = yaml.safe_load(value)
    return _build(Config, raw, "")


def build_section(cls, raw: dict, prefix: str = ""):
    """A config dataclass from a (possibly partial) dict, with the same checks as `load_config`."""
    return _build(cls, raw, prefix)


def _build(cls, raw: dict, prefix: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(prefix + k for k in unknown)}")
    kwargs = {}
    for name, value in raw.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _check(value, hint, prefix + name)
    return cls(**kwargs)


def _check(value, hint, key: str):
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _check(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"config key {key}: {value!r} is not a valid {hint}")
    if hint is type(None):
        if value is None:
            return None
        raise ConfigError(f"config key {key}: expected null, got {value!r}")
    if origin is list:
        (item_type,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"config key {key}: expected a list, got {value!r}")
        return [_check(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        # PyYAML (YAML 1.1) reads "1e-3" as a string; accept scientific notation.
        try:
            return float(value)
        except ValueError:
            pass
    if hint in (int, float) and isinstance(value, bool) or not isinstance(value, hint):
        raise ConfigError(f"config key {key}: expected {hint.__name__}, got {value!r}")
    return value
