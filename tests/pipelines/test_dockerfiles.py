"""No Docker engine here: the Dockerfiles are checked for what they copy and pin, not built."""

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.cuda"])
def test_dockerfile_copies_existing_paths_and_pins_torch(name):
    text = (ROOT / "docker" / name).read_text()
    copied = re.findall(r"^COPY\s+(.+?)\s+\S+\s*$", text, flags=re.MULTILINE)
    assert copied
    for sources in copied:
        for src in sources.split():
            assert (ROOT / src).exists(), f"{name} copies {src}, which does not exist"
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_pin = next(d for d in deps if d.startswith("torch=="))
    assert torch_pin in text
    packages = {p.split("*")[0] for p in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
                ["packages"]["find"]["include"]}
    for package in packages:
        assert f"COPY {package} " in text, f"{name} does not copy the {package} package"
