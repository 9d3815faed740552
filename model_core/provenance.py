"""Software provenance, recorded once: at training time, into the model card.

Everything downstream (export report, MLflow params, the 510(k) packet) reads `model_card["provenance"]`
instead of sampling its own environment, so a packet built later, or inside a container without the
git checkout, still names the software that produced the model.
"""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

from model_core import __version__

PROJECT_DISTRIBUTION = "radiology-report-generator"
# Packages whose versions decide what the model computes or how it is measured.
RECORDED_PACKAGES = ("torch", "transformers", "tokenizers", "numpy", "scipy", "scikit-learn", "pandas", "Pillow",
                     "deepspeed", "peft", "onnx", "onnxruntime", "onnxscript", "pycocoevalcap", "reportlab",
                     "Jinja2", "PyYAML")
_SOURCE_ROOT = Path(__file__).resolve().parents[1]


def package_version(name: str) -> str:
    """Installed version of a distribution, or "not installed"."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git(*args: str) -> str | None:
    try:
        result = subprocess.run(["git", *args], cwd=_SOURCE_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def collect_provenance(packages: tuple[str, ...] = RECORDED_PACKAGES) -> dict:
    """{python, model_core, git_commit, git_dirty, packages: {name: version}} of the running environment.

    git_commit is "unknown" (and git_dirty None) outside a git checkout.
    """
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain") if commit else None
    return {
        "python": platform.python_version(),
        "model_core": __version__,
        "git_commit": commit or "unknown",
        "git_dirty": None if status is None else bool(status),
        "packages": {name: package_version(name) for name in packages},
    }


def version_string(provenance: dict) -> str:
    """'0.1.0+abc1234' (project version plus short commit) from a provenance record."""
    commit = provenance.get("git_commit") or "unknown"
    return provenance["model_core"] if commit == "unknown" else f"{provenance['model_core']}+{commit[:7]}"
