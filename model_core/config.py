"""The one config tree: typed dataclasses, loaded from YAML, overridable from the command line.

    cfg = load_config("configs/demo.yaml", overrides=["baseline.epochs=2", "data.image_size=64"])

Every section is a dataclass; unknown keys and wrongly typed values are errors that name the key,
so a typo in a YAML file never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key."""


@dataclass
class DataConfig:
    root: str = "data/iu_xray"          # images root; relative paths are resolved from the repo root
    manifest: str | None = None         # default: <root>/manifest.csv
    views: list[str] = field(default_factory=lambda: ["Frontal"])
    image_size: int = 512
    limit_studies: int | None = None    # keep only the first N studies of each split (tests, smoke runs)


@dataclass
class BaselineConfig:
    image_size: int = 128
    epochs: int = 8
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    seed: int = 0


@dataclass
class EvalConfig:
    n_bootstrap: int = 1000
    seed: int = 0
    section: str = "findings"           # reference section for BLEU/ROUGE (R2Gen convention: findings)


@dataclass
class Config:
    name: str = "default"
    data: DataConfig = field(default_factory=DataConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


REPO_ROOT = Path(__file__).resolve().parent.parent


def resolve_path(path: str | os.PathLike) -> Path:
    """Config paths are relative to the repository root, so commands work from any directory."""
    p = Path(path)
    return p if p.is_absolute() else REPO_ROOT / p


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> Config:
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path} must hold a mapping at top level")
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is not a section")
        node[leaf] = yaml.safe_load(value)
    return _build(Config, raw, "")


def _build(cls, raw: dict, prefix: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(prefix + k for k in unknown)}")
    kwargs = {}
    for name, value in raw.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _check(value, hint, prefix + name)
    return cls(**kwargs)


def _check(value, hint, key: str):
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _check(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"config key {key}: {value!r} is not a valid {hint}")
    if hint is type(None):
        if value is None:
            return None
        raise ConfigError(f"config key {key}: expected null, got {value!r}")
    if origin is list:
        (item_type,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"config key {key}: expected a list, got {value!r}")
        return [_check(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        # PyYAML (YAML 1.1) reads "1e-3" as a string; accept scientific notation.
        try:
            return float(value)
        except ValueError:
            pass
    if hint in (int, float) and isinstance(value, bool) or not isinstance(value, hint):
        raise ConfigError(f"config key {key}: expected {hint.__name__}, got {value!r}")
    return value
