"""Where the infra tests find things, and small helpers over rendered manifests (shared by tests/infra; a
module of its own because `from conftest import` is ambiguous with several conftest.py files on sys.path)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TERRAFORM = REPO / "infra" / "terraform"
K8S = REPO / "deploy" / "k8s"
ENVIRONMENTS = ("staging", "prod")
INFRA_VENV = Path(os.environ.get("INFRA_VENV", REPO / ".venv-infra"))
HERE = Path(__file__).resolve().parent


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def find(objects: list[dict], kind: str, name: str | None = None, namespace: str | None = None) -> list[dict]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
            and (namespace is None or o["metadata"].get("namespace") == namespace)]


def one(objects: list[dict], kind: str, name: str | None = None, namespace: str | None = None) -> dict:
    found = find(objects, kind, name, namespace)
    assert len(found) == 1, f"expected one {kind} {name or ''} in {namespace or 'any namespace'}, found {len(found)}"
    return found[0]
