"""The two packets most tests read (one of a candidate that passed the release gate, one of a rejected one), signed
with the session's own development key (tests/signing_keys.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from packet_inputs import make_inputs

from regulatory import build_packet


@pytest.fixture(scope="session")
def packets(tmp_path_factory, session_keys) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("packets")
    return {"pass": build_packet(make_inputs(True), out / "pass"),
            "fail": build_packet(make_inputs(False), out / "fail")}
