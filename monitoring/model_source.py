"""Which model to monitor: a model directory, or the registry's `models:/NAME@ALIAS` / `models:/NAME/VERSION`.

    model_dir, version = resolve_model("models:/rrg-report-generator@champion", cache_dir)

The version string is the one serving writes into the prediction log for a registry model ("NAME/VERSION"), so a
cycle reads exactly that model's predictions. The registry layout is `registry.models.log_model`'s (the pyfunc's
`artifacts/model_dir`); serving resolves the same URIs for itself (monitoring and serving never import each other).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from model_core.artifacts import MODEL_CARD
from model_core.data.manifest import DataError

_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


def resolve_model(source: str, cache_dir: str | os.PathLike) -> tuple[Path, str | None]:
    """(model directory, version as serving logs it; None for a plain directory: any version)."""
    text = str(source)
    if not text.startswith("models:/"):
        model_dir = Path(text)
        if not (model_dir / MODEL_CARD).is_file():
            raise DataError(f"{model_dir} is not a complete model directory (no {MODEL_CARD})")
        return model_dir, None
    # mlflow only for registry sources.
    import mlflow

    match = _MODELS_URI.match(text)
    if not match:
        raise DataError("a registry model must look like models:/NAME@ALIAS or models:/NAME/VERSION")
    client = mlflow.MlflowClient()
    mv = (client.get_model_version_by_alias(match["name"], match["alias"]) if match["alias"]
          else client.get_model_version(match["name"], match["version"]))
    target = Path(cache_dir) / f"{re.sub(r'[^A-Za-z0-9._-]', '_', match['name'])}-v{mv.version}"
    if not (target / ".complete").is_file():
        mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{match['name']}/{mv.version}",
                                            dst_path=str(target))
        (target / ".complete").write_text(json.dumps({"version": mv.version}))
    cards = sorted(target.rglob(MODEL_CARD), key=lambda p: ("model_dir" not in p.parts, len(p.parts)))
    if not cards:
        raise DataError(f"registry version {match['name']}/{mv.version} holds no model directory")
    return cards[0].parent, f"{match['name']}/{mv.version}"
