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


def _torch_index(text: str) -> str:
    return re.search(r"download\.pytorch\.org/whl/(\w+) torch==", text).group(1)


def test_the_two_images_differ_only_where_the_hardware_does():
    """The CPU image (every step but train) and the CUDA image (train): the same project, installed the same way;
    torch from the CPU index there and from the CUDA index of the base image's CUDA version here."""
    cpu, cuda = ((ROOT / "docker" / name).read_text() for name in ("Dockerfile.cpu", "Dockerfile.cuda"))
    copies = [re.findall(r"^COPY .+$", text, flags=re.MULTILINE) for text in (cpu, cuda)]
    assert copies[0] == copies[1]
    assert _torch_index(cpu) == "cpu"
    major, minor = re.search(r"^FROM nvidia/cuda:(\d+)\.(\d+)\.\d+-\S+$", cuda, flags=re.MULTILINE).groups()
    assert _torch_index(cuda) == f"cu{major}{minor}"
    assert "TORCH_EXTENSIONS_DIR=/tmp/" in cuda          # DeepSpeed's JIT ops, built as user 1000 without a home
    for text in (cpu, cuda):
        # the project with its production prediction-log driver (the `postgres` extra: psycopg)
        assert "pip install '.[postgres]'" in text and re.search(r"^USER 1000$", text, flags=re.MULTILINE)
