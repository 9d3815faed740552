"""The code's shape, checked by the tools that own the rules: `lint-imports` for the import contracts in
pyproject.toml ([tool.importlinter]: which package may import which, the model_core wing order) and
`ruff check .` for the lint rules ([tool.ruff]). Both run from the interpreter's own bin/ (the dev extras)."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _run(tool: str, *args: str) -> subprocess.CompletedProcess:
    exe = BIN / tool
    if not exe.exists():
        pytest.fail(f"{tool} is not installed next to {sys.executable}: pip install -e '.[dev]'")
    return subprocess.run([str(exe), *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_import_contracts_are_kept():
    result = _run("lint-imports", "--no-cache")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_project_package_is_under_the_import_contracts():
    # import-linter stops on a root package that does not exist, so a new package (monitoring) is listed by
    # hand when it appears; this test is the reminder.
    listed = set(PYPROJECT["tool"]["importlinter"]["root_packages"])
    packages = {p.split("*")[0] for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]}
    present = {name for name in packages | {"monitoring"} if (ROOT / name / "__init__.py").is_file()}
    assert present <= listed, f"add {sorted(present - listed)} to [tool.importlinter] root_packages and contracts"
    assert listed <= present, f"{sorted(listed - present)} listed in [tool.importlinter] but missing"


def test_model_core_wings_are_all_in_the_layers_contract():
    # `exhaustive = true` makes lint-imports fail on a model_core module that no layer names; this keeps the
    # option from being dropped quietly.
    layers = [c for c in PYPROJECT["tool"]["importlinter"]["contracts"] if c["type"] == "layers"]
    assert [c["containers"] for c in layers] == [["model_core"]] and layers[0]["exhaustive"] is True


def test_ruff_check_passes():
    result = _run("ruff", "check", "--no-cache", "--output-format", "concise", ".")
    assert result.returncode == 0, result.stdout + result.stderr
