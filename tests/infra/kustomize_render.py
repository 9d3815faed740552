"""A small kustomize renderer for deploy/k8s, so the manifests can be checked where no kubectl exists.

It does what deploy/k8s uses and refuses the rest (a kustomization field it does not know is an error, so a
new feature cannot be silently ignored): `resources` (files and directories), `images` (newName/newTag) and
`patches` given by `path` (strategic-merge patches; lists of objects with a `name` merge by name, other lists
are replaced, as Kubernetes' merge keys for containers, env, volumes do). tests/infra/test_k8s.py compares
its output with `kubectl kustomize` where kubectl is installed.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

KNOWN_FIELDS = {"apiVersion", "kind", "resources", "images", "patches"}
POD_SPEC_PATHS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}


def object_key(obj: dict) -> tuple[str, str | None, str]:
    return obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"]


def load_documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def render(directory: str | Path) -> list[dict]:
    """The objects `kubectl kustomize DIRECTORY` would print (order aside)."""
    directory = Path(directory)
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KNOWN_FIELDS
    if unknown:
        raise ValueError(f"{directory}/kustomization.yaml uses fields this renderer does not know: {sorted(unknown)}")
    objects: list[dict] = []
    for entry in kustomization.get("resources", []):
        target = directory / entry
        objects.extend(render(target) if target.is_dir() else load_documents(target))
    by_key = {object_key(o): o for o in objects}
    if len(by_key) != len(objects):
        raise ValueError(f"{directory}: two resources with the same kind, namespace and name")
    for patch_entry in kustomization.get("patches", []):
        if set(patch_entry) != {"path"}:
            raise ValueError(f"{directory}: only `patches: - path: FILE` is supported")
        for patch in load_documents(directory / patch_entry["path"]):
            key = object_key(patch)
            if key not in by_key:
                raise ValueError(f"{directory}/{patch_entry['path']}: no resource {key} to patch")
            merged = strategic_merge(by_key[key], patch)
            objects[objects.index(by_key[key])] = merged
            by_key[key] = merged
    for image in kustomization.get("images", []):
        for obj in objects:
            for container in containers(obj):
                set_image(container, image)
    return objects


def strategic_merge(base: dict, patch: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(key, str) and key.startswith("$"):
            raise ValueError(f"patch directive {key} is not supported")
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = strategic_merge(merged[key], value)
        elif isinstance(value, list) and isinstance(merged.get(key), list) and _named(value) and _named(merged[key]):
            merged[key] = _merge_named(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _named(items: list) -> bool:
    return bool(items) and all(isinstance(i, dict) and "name" in i for i in items)


def _merge_named(base: list[dict], patch: list[dict]) -> list[dict]:
    merged = [copy.deepcopy(i) for i in base]
    index = {item["name"]: n for n, item in enumerate(merged)}
    for item in patch:
        if item["name"] in index:
            merged[index[item["name"]]] = strategic_merge(merged[index[item["name"]]], item)
        else:
            merged.append(copy.deepcopy(item))
    return merged


def containers(obj: dict) -> list[dict]:
    """The containers (and init containers) of a workload's pod template; [] for other kinds."""
    if obj["kind"] not in POD_SPEC_PATHS:
        return []
    spec = obj["spec"]["template"]["spec"]
    return spec.get("containers", []) + spec.get("initContainers", [])


def set_image(container: dict, image: dict) -> None:
    name, tag = container["image"], None
    if ":" in name.rsplit("/", 1)[-1]:
        name, tag = name.rsplit(":", 1)
    if name != image["name"]:
        return
    name = image.get("newName", name)
    tag = image.get("newTag", tag)
    container["image"] = f"{name}:{tag}" if tag else name
