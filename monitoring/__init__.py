"""Monitoring: watches the served model through the prediction log and closes the MLOps loop.

    reference stats (saved with the model) + prediction log (written by serving)
        ─► detectors (MMD data drift, label drift + CUSUM, concept drift) ─► alerts (page, scale-up, pause)
        ─► policy (pure: none / alert / retrain) ─► trigger (cooldown, no overlap, idempotency) ─► training pipeline

Imports only model_core; serving and monitoring meet only in `model_core.prediction_log`.
"""
