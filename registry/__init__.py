"""MLflow tracking and model registry (promotion past the clinical safety gates)."""
