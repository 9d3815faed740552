"""The auditors' page in a real browser (headless Chromium): log in with a packet.read token, read the list, a gate
result, the PCCP verdict and the signature status, download a packet and verify it, see a tampered one refused."""

import hashlib
import time

from auditors_env import AUDITOR_TOKEN
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from model_core.signing import development_key_id
from regulatory.archive import verify_packet


def _wait_for_download(folder, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [p for p in folder.iterdir() if p.suffix == ".zip"]
        if done and not any(p.suffix == ".crdownload" for p in folder.iterdir()):
            return done[0]
        time.sleep(0.1)
    raise AssertionError(f"no packet downloaded within {timeout} s: {sorted(p.name for p in folder.iterdir())}")


def _arrive(browser, path_end: str) -> None:
    """Wait until the browser has navigated to a URL ending in path_end (a form submit returns before that)."""
    WebDriverWait(browser, 60).until(lambda b: b.current_url.endswith(path_end) and
                                     b.execute_script("return document.readyState") == "complete")


def _text(browser, css: str) -> str:
    return browser.find_element(By.CSS_SELECTOR, css).text


def test_an_auditor_reads_the_versions_and_downloads_a_verified_packet(browser, auditors_url, registry_packets,
                                                                      tmp_path_factory):
    v = registry_packets["versions"]
    browser.get(f"{auditors_url}/versions")
    assert browser.current_url.endswith("/login")                        # no session: sent to the login form
    browser.find_element(By.ID, "token").send_keys("not-a-valid-token-but-long-enough")
    browser.find_element(By.ID, "login").click()
    WebDriverWait(browser, 30).until(expected_conditions.presence_of_element_located((By.ID, "login-error")))
    assert "not accepted" in _text(browser, "#login-error")
    browser.find_element(By.ID, "token").send_keys(AUDITOR_TOKEN)
    browser.find_element(By.ID, "login").click()
    _arrive(browser, "/versions")

    rows = browser.find_elements(By.CSS_SELECTOR, "#versions tbody tr")
    assert [r.get_attribute("id") for r in rows] == [f"version-{n}" for n in
                                                     sorted(v.values(), key=int, reverse=True)]
    good = f"#version-{v['within']}"
    assert _text(browser, f"{good} .gate") == "PASSED" and _text(browser, f"{good} .pccp") == "within the PCCP"
    assert _text(browser, f"{good} .signature").startswith("valid") and "DEVELOPMENT key" in _text(
        browser, f"{good} .signature")
    bad = f"#version-{v['rejected']}"
    assert _text(browser, f"{bad} .gate") == "FAILED" and _text(browser, f"{bad} .pccp") == "outside the PCCP"
    tampered = f"#version-{v['tampered']}"
    assert _text(browser, f"{tampered} .signature") == "FAILED VERIFICATION"
    assert not browser.find_elements(By.CSS_SELECTOR, f"{tampered} a.download")   # never offered for download
    screenshot = tmp_path_factory.getbasetemp() / "auditors-page.png"
    browser.save_screenshot(str(screenshot))
    print(f"screenshot of the auditors' page: {screenshot}")

    browser.find_element(By.LINK_TEXT, v["within"]).click()
    _arrive(browser, f"/versions/{v['within']}")
    assert _text(browser, "#gate-decision") == "PASSED (promote)"
    assert _text(browser, "#pccp-verdict") == "within the PCCP"
    assert "valid Ed25519 signature" in _text(browser, "#signature-status")
    assert development_key_id() in _text(browser, "#signature-status")
    expected = hashlib.sha256(registry_packets["packets"]["within"].read_bytes()).hexdigest()
    assert _text(browser, "#packet-sha256") == expected
    checks = browser.find_elements(By.CSS_SELECTOR, "#gate-checks tbody tr")
    assert len(checks) == 9 and all(r.text.endswith("pass") for r in checks)   # 4 × (sensitivity, specificity) + 1
    browser.save_screenshot(str(tmp_path_factory.getbasetemp() / "auditors-version.png"))

    browser.find_element(By.ID, "download").click()
    saved = _wait_for_download(browser.downloads)
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == expected
    assert verify_packet(saved)["signature"]["key_id"] == development_key_id()

    browser.get(f"{auditors_url}/versions/{v['tampered']}")
    assert "FAILED VERIFICATION" in _text(browser, "#signature-status")
    assert "signature" in _text(browser, "#problems")
    browser.get(f"{auditors_url}/versions/{v['tampered']}/packet")
    assert "failed verification" in _text(browser, "#message")

    browser.get(f"{auditors_url}/versions")
    browser.find_element(By.ID, "logout").click()
    _arrive(browser, "/login")
    browser.get(f"{auditors_url}/versions")
    assert browser.current_url.endswith("/login")
