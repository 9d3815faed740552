"""Evaluation: metrics, the evaluation job, the template baseline and the clinical safety gates."""
