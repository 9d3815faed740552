"""The two packets most tests read (one of a candidate that passed the release gate, one of a rejected one), and a
signing key of the test session's own: the development key lives in a temporary folder, no configured key or
trusted key of the machine leaks in."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from packet_inputs import make_inputs

from model_core import signing
from regulatory import build_packet

_SIGNING_ENV = (signing.ENV_KEY, signing.ENV_KEY_FILE, signing.ENV_TRUSTED, signing.ENV_KEYS_DIR)


@pytest.fixture(scope="session", autouse=True)
def session_keys(tmp_path_factory):
    """$RRG_KEYS_DIR → a temporary folder (its development key signs the packets); configured keys unset."""
    saved = {name: os.environ.pop(name, None) for name in _SIGNING_ENV}
    os.environ[signing.ENV_KEYS_DIR] = str(tmp_path_factory.mktemp("keys"))
    yield
    for name, value in saved.items():
        os.environ.pop(name, None)
        if value is not None:
            os.environ[name] = value


@pytest.fixture(scope="session")
def packets(tmp_path_factory, session_keys) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("packets")
    return {"pass": build_packet(make_inputs(True), out / "pass"),
            "fail": build_packet(make_inputs(False), out / "fail")}
