"""A real MLflow server holding three registered versions with packets, the auditors' page served by uvicorn on
127.0.0.1, and a headless Chromium (Debian's, driven through Debian's chromedriver by selenium).

Versions: 1 passed the real release gate and is within the PCCP (champion); 2 failed the gate (rejected, outside
the PCCP); 3 carries a consistently tampered packet (packet.json and its SHA256SUMS line changed together), which
only the signature catches. The packets are the regulatory tests' hand-made inputs (tests/regulatory/
packet_inputs.py), signed with a development key of this test session.

Chromium: when `chromium` or `chromedriver` is missing, scripts/install_chromium.sh runs first; if that fails the
tests fail with its output (they never skip). RRG_CHROMIUM / RRG_CHROMEDRIVER override the Debian binaries.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from auditors_env import AUDITOR_TOKEN, MODEL, READER_TOKEN

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "regulatory"))   # the regulatory tests' inputs
from packet_inputs import make_inputs, read_zip, real_gate, rewrite_zip, strong_metrics  # noqa: E402

from auditors.app import create_app  # noqa: E402
from model_core.evaluation.gate_record import RECORD_DIR, write_gate_record  # noqa: E402
from model_core.signing import load_signer  # noqa: E402
from registry import models, tracking  # noqa: E402
from regulatory import build_packet  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = REPO / "scripts" / "install_chromium.sh"


def _register(uri: str, folder: Path, packet: Path, gate: dict) -> str:
    run_id = tracking.start_run(uri, run_name=folder.name)
    model_dir = folder / "model"
    model_dir.mkdir()
    (model_dir / "weights.txt").write_text("tiny model stand-in")   # the page reads no model file: a stand-in
    tracking.log_artifacts(uri, run_id, model_dir, "model")
    # registration trusts the signed gate decision, not the dict: the run carries one (the session's key)
    metrics = folder / "metrics.json"
    metrics.write_text("{}")
    record = write_gate_record(gate, model_dir, folder / RECORD_DIR, load_signer(), metrics_file=metrics)
    tracking.log_artifacts(uri, run_id, record.parent, RECORD_DIR)
    tracking.log_artifacts(uri, run_id, packet, "packet")
    tracking.end_run(uri, run_id)
    return models.register(uri, run_id, f"runs:/{run_id}/model", MODEL, gate)["version"]


def _tamper(packet: Path, out: Path) -> Path:
    """packet.json changed (a byte appended: still valid JSON) and its SHA256SUMS line rewritten to match: only the
    signature can tell."""
    files = read_zip(packet)
    document = files["packet.json"] + b" "
    sums = b"".join(hashlib.sha256(document).hexdigest().encode() + line[64:] if line.endswith(b"  packet.json\n")
                    else line for line in files["SHA256SUMS"].splitlines(keepends=True))
    out.mkdir(parents=True)
    target = out / packet.name
    rewrite_zip(packet, target, {"packet.json": document, "SHA256SUMS": sums})
    return target


@pytest.fixture(scope="session")
def registry_packets(tmp_path_factory, session_keys) -> dict:
    root = tmp_path_factory.mktemp("auditors")
    with tracking.MlflowServer(root / "mlflow") as server:
        strong, weak = strong_metrics(), make_inputs(False).metrics
        passed, failed = real_gate(strong), real_gate(weak)
        good = build_packet(make_inputs(True, metrics=strong, gate=passed), root / "good")
        bad = build_packet(make_inputs(False, model_version="0.1.1+bad", gate=failed), root / "bad")
        tampered = _tamper(build_packet(make_inputs(True, model_version="0.1.2+tampered", metrics=strong,
                                                    gate=passed), root / "t"), root / "tampered")
        versions = {"within": _register(server.uri, root / "good", good, passed),
                    "rejected": _register(server.uri, root / "bad", bad, failed),
                    "tampered": _register(server.uri, root / "t", tampered, passed)}
        yield {"uri": server.uri, "versions": versions, "packets": {"within": good, "rejected": bad,
                                                                     "tampered": tampered}}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def auditors_url(registry_packets) -> str:
    """The page served by uvicorn on 127.0.0.1 (a thread of the test process, so it trusts the session's key)."""
    app = create_app(registry_packets["uri"], MODEL, tokens=f"{AUDITOR_TOKEN},{READER_TOKEN}:report.read")
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=_free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the auditors' page did not start within 30 s", pytrace=False)
        time.sleep(0.05)
    yield f"http://127.0.0.1:{server.config.port}"
    server.should_exit = True
    thread.join(timeout=10)


def _binaries() -> tuple[str | None, str | None]:
    return (os.environ.get("RRG_CHROMIUM") or shutil.which("chromium"),
            os.environ.get("RRG_CHROMEDRIVER") or shutil.which("chromedriver"))


def _ensure_chromium() -> tuple[str, str]:
    chromium, driver = _binaries()
    if chromium and driver:
        return chromium, driver
    try:
        done = subprocess.run(["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=900)
        output, rc = (done.stdout + done.stderr)[-3000:], done.returncode
    except (OSError, subprocess.TimeoutExpired) as exc:
        output, rc = str(exc), None
    chromium, driver = _binaries()
    if not (chromium and driver):
        pytest.fail(f"the auditors' page test needs Chromium and chromedriver, and running "
                    f"{INSTALL_SCRIPT.relative_to(REPO)} did not provide them (exit {rc}):\n{output}", pytrace=False)
    return chromium, driver


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    """Headless Chromium driven by selenium through the SYSTEM chromedriver (selenium-manager never runs)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = _ensure_chromium()
    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1400,1000", "--no-first-run", "--disable-extensions"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(60)
    # headless Chromium saves downloads only when told where, through the DevTools protocol
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    yield driver
    driver.quit()
