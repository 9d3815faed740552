"""Fixtures of the infra tests: the names file (infra/terraform/names.json), and runners for the
tools in `.venv-infra` (scripts/install_infra_tools.sh): checkov, python-hcl2, kubernetes-validate.

Those tools live in a venv of their own (checkov's pins clash with the project's). Without it the tests that
need them skip, saying how to install it, unless CI is set: then they fail, because CI must run them.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from infra_layout import ENVIRONMENTS, HERE, INFRA_VENV, K8S, REPO, TERRAFORM, in_ci
from kustomize_render import render


@pytest.fixture(scope="session")
def infra_venv() -> Path:
    """The tool venv; skip (or fail under CI) when it is missing."""
    if (INFRA_VENV / "bin" / "python").exists():
        return INFRA_VENV
    message = (f"{INFRA_VENV.name} is missing: run `bash scripts/install_infra_tools.sh` "
               "(checkov, python-hcl2, kubernetes-validate)")
    if in_ci():
        pytest.fail(f"{message}; CI is set, so these checks must run")
    pytest.skip(message)


@pytest.fixture(scope="session")
def names() -> dict:
    return json.loads((TERRAFORM / "names.json").read_text())


@pytest.fixture(scope="session")
def tf_files() -> list[Path]:
    return sorted(p for p in TERRAFORM.rglob("*.tf") if ".terraform" not in p.parts)


@pytest.fixture(scope="session")
def hcl(infra_venv, tf_files) -> dict[str, dict]:
    """Every .tf and terraform.tfvars file under infra/terraform, parsed by python-hcl2: {repo-relative path: dict}."""
    files = tf_files + sorted(TERRAFORM.glob("envs/*/terraform.tfvars"))
    result = subprocess.run(
        [str(infra_venv / "bin" / "python"), str(HERE / "hcl_parse.py"), *map(str, files)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(infra_venv / "python-hcl2")})
    assert result.returncode == 0, f"hcl_parse.py failed: {result.stderr[-2000:]}"
    out = json.loads(result.stdout)
    assert not out["errors"], f"python-hcl2 cannot parse: {out['errors']}"
    return {str(Path(path).relative_to(REPO)): parsed for path, parsed in out["parsed"].items()}


@pytest.fixture(scope="session")
def tfvars(hcl) -> dict[str, dict]:
    """terraform.tfvars of each environment."""
    return {env: hcl[f"infra/terraform/envs/{env}/terraform.tfvars"] for env in ENVIRONMENTS}


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict]]:
    """The objects of the base and of each overlay, rendered by tests/infra/kustomize_render.py."""
    out = {"base": render(K8S / "base")}
    out.update({env: render(K8S / "overlays" / env) for env in ENVIRONMENTS})
    return out
