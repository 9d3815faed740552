"""The tiny model exported once per test run (tests/tiny_exports.py)."""

from tiny_exports import exported, model_dir, torch_model  # noqa: F401 — fixtures
