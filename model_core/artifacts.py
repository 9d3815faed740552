"""Every file name of the model directory, the export directory, the baseline directory and the
evaluation output, and the ONNX input/output names: one table, used by the writers and the readers alike.

A model directory (written and read by `model_core.modeling.model_dir`, for `model_core.training`):
    model_card.json   written last: a directory with one is complete
    model.pt, model_config.json, config.json, detection.json, history.json, tokenizer/, encoder_config/, lm_config/,
    sbom.cdx.json (the training environment, model_core.sbom),
    reference_stats.npz + reference_stats.json (the monitoring reference, model_core.modeling.reference),
    checkpoints/last.pt (training checkpoints)
An export directory (written by `model_core.export`, read by `model_core.runtime` and serving):
    vision.onnx, decoder.onnx, decoder.int8.onnx, embed_tokens.npy, export_config.json, export_report.json
A baseline directory (`model_core.evaluation.baseline.train_baseline`): model.pt, baseline.json
An evaluation directory (`model_core.evaluation`): metrics.json, predictions.jsonl, per_finding_f1.png,
    calibration.png, and baseline/eval/ (the baseline's metrics.json and predictions.jsonl)
A clinical-evidence directory (the pipeline's clinical_evidence step): errors/ (`error_analysis.run_error_analysis`),
    bias/ (`bias_audit.run_bias_audit`), drift_check.json (the drift monitor on held-out reference studies)
"""

from __future__ import annotations

# --------------------------------------------------------------------------- model directory
MODEL_CARD = "model_card.json"
MODEL_WEIGHTS = "model.pt"
MODEL_CONFIG = "model_config.json"
RUN_CONFIG = "config.json"
DETECTION = "detection.json"
HISTORY = "history.json"
TOKENIZER_DIR = "tokenizer"
ENCODER_CONFIG_DIR = "encoder_config"
LM_CONFIG_DIR = "lm_config"
MODEL_DIR_FILES = (MODEL_CARD, MODEL_CONFIG, MODEL_WEIGHTS, TOKENIZER_DIR, ENCODER_CONFIG_DIR, LM_CONFIG_DIR)
SBOM = "sbom.cdx.json"   # CycloneDX SBOM of the training environment (model_core.sbom.write_sbom)
CHECKPOINTS_DIR = "checkpoints"   # per-epoch training checkpoints (what `resume` continues from)
REFERENCE_STATS = "reference_stats.npz"      # monitoring reference: embeddings, PCA, probabilities, labels
REFERENCE_SUMMARY = "reference_stats.json"   # its summary: prevalences, per-finding F1/sensitivity, sizes
LAST_CHECKPOINT = "last.pt"

# --------------------------------------------------------------------------- export directory
VISION_ONNX = "vision.onnx"
DECODER_ONNX = "decoder.onnx"
DECODER_INT8_ONNX = "decoder.int8.onnx"
EMBED_TOKENS = "embed_tokens.npy"
EXPORT_CONFIG = "export_config.json"
EXPORT_REPORT = "export_report.json"
PAST_PREFIX = "past"          # KV-cache inputs: past_key_{layer} / past_value_{layer}
PRESENT_PREFIX = "present"    # KV-cache outputs


def past_names(num_layers: int, prefix: str = PAST_PREFIX) -> list[str]:
    """KV-cache tensor names in the ONNX decoder: [f"{prefix}_key_0", f"{prefix}_value_0", ...]."""
    return [f"{prefix}_{kind}_{i}" for i in range(num_layers) for kind in ("key", "value")]


# --------------------------------------------------------------------------- baseline directory
BASELINE_WEIGHTS = "model.pt"
BASELINE_SUMMARY = "baseline.json"

# --------------------------------------------------------------------------- evaluation output
METRICS = "metrics.json"
PREDICTIONS = "predictions.jsonl"
PER_FINDING_F1_PLOT = "per_finding_f1.png"
CALIBRATION_PLOT = "calibration.png"
BASELINE_EVAL_DIR = "baseline/eval"   # the candidate's evaluation holds the baseline's beside it (metrics.json, ...)

# --------------------------------------------------------------------------- clinical evidence
EVIDENCE_ERRORS_DIR = "errors"
EVIDENCE_BIAS_DIR = "bias"
DRIFT_CHECK = "drift_check.json"            # the monitor's MMD test on in-distribution held-out studies
ERROR_ANALYSIS = "error_analysis.json"      # per study, with study ids (internal: MLflow, never the packet)
ERROR_SUMMARY = "error_summary.json"        # aggregates only (packet)
CONFUSION_PLOT = "error_confusion_critical.png"
PREVALENCE_PLOT = "error_rate_vs_prevalence.png"
EXAMPLES_PLOT = "error_examples.png"        # patient images with heatmaps (internal: MLflow, never the packet)
QUALITY_PLOT = "error_vs_image_quality.png"
BIAS_AUDIT = "bias_audit.json"              # counts and rates per subgroup, no study id (packet)
BIAS_PLOT = "bias_audit_sensitivity.png"
