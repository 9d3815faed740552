"""The auditors' page over HTTP (the uvicorn server of conftest): who may read what, what a download is, what the
page never shows; the token table; `rrg auditors` without tokens."""

import hashlib
from urllib.parse import quote

import httpx
import pytest
from auditors_env import AUDITOR_TOKEN, READER_TOKEN
from packet_inputs import CANARIES

from auditors.tokens import PACKET_READ, Gatekeeper, TokenConfigError, parse_tokens
from regulatory.archive import verify_packet
from rrg.cli import main

BEARER = {"Authorization": f"Bearer {AUDITOR_TOKEN}"}


def test_only_packet_read_tokens_see_the_page(auditors_url):
    assert httpx.get(f"{auditors_url}/healthz").text == "ok"
    anonymous = httpx.get(f"{auditors_url}/versions")
    assert anonymous.status_code == 401 and "packet.read" in anonymous.headers["www-authenticate"]
    browser_like = httpx.get(f"{auditors_url}/versions", headers={"Accept": "text/html"})
    assert browser_like.status_code == 303 and browser_like.headers["location"] == "/login"
    assert httpx.get(f"{auditors_url}/versions", headers={"Authorization": "Bearer wrong-token-0123456789"}
                     ).status_code == 401
    reader = httpx.get(f"{auditors_url}/versions", headers={"Authorization": f"Bearer {READER_TOKEN}"})
    assert reader.status_code == 403 and "packet.read" in reader.text
    page = httpx.get(f"{auditors_url}/versions", headers=BEARER)
    assert page.status_code == 200
    assert "script-src" not in page.headers["content-security-policy"] and "default-src 'none'" in \
        page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store" and "<script" not in page.text


def test_download_is_the_registered_packet_and_verifies(auditors_url, registry_packets):
    v = registry_packets["versions"]
    got = httpx.get(f"{auditors_url}/versions/{v['rejected']}/packet", headers=BEARER)
    assert got.status_code == 200 and got.headers["content-type"] == "application/zip"
    local = registry_packets["packets"]["rejected"]
    assert hashlib.sha256(got.content).hexdigest() == hashlib.sha256(local.read_bytes()).hexdigest()
    assert got.headers["content-disposition"] == f"attachment; filename*=UTF-8''{quote(local.name)}"
    refused = httpx.get(f"{auditors_url}/versions/{v['tampered']}/packet", headers=BEARER)
    assert refused.status_code == 409 and "signature" in refused.text
    assert verify_packet(local)["decision"] == "reject"


def test_unknown_versions_are_404_without_echo(auditors_url):
    for path in ("/versions/999", "/versions/<b>x</b>", "/versions/999/packet"):
        answer = httpx.get(f"{auditors_url}{path}", headers=BEARER)
        assert answer.status_code == 404 and "<b>x</b>" not in answer.text


def test_pages_hold_no_report_text_or_identifiers(auditors_url, registry_packets):
    pages = [httpx.get(f"{auditors_url}/versions", headers=BEARER).text] + [
        httpx.get(f"{auditors_url}/versions/{n}", headers=BEARER).text for n in registry_packets["versions"].values()]
    for text in pages:
        assert not any(canary in text for canary in CANARIES) and "<img" not in text


def test_token_table_and_sessions():
    table = parse_tokens(f"{AUDITOR_TOKEN},{READER_TOKEN}:report.read+packet.read")
    assert all(PACKET_READ in p.scopes for p in table.values())
    assert AUDITOR_TOKEN not in repr(table)                       # only digests are kept
    with pytest.raises(TokenConfigError, match="entry 1: a token must be 16-512") as info:
        parse_tokens("short:packet.read")
    assert "short" not in str(info.value)
    with pytest.raises(TokenConfigError, match="entry 2: scopes"):
        parse_tokens(f"{AUDITOR_TOKEN},{READER_TOKEN}:Not A Scope")
    gate = Gatekeeper(parse_tokens(AUDITOR_TOKEN), session_seconds=0)
    session = gate.open_session(gate.check_token(AUDITOR_TOKEN))
    assert gate.principal(session=session) is None                # expired at once
    assert gate.principal(bearer=AUDITOR_TOKEN).may_read_packets


def test_rrg_auditors_refuses_to_start_without_tokens(monkeypatch, capsys):
    monkeypatch.delenv("RRG_AUDITOR_TOKENS", raising=False)
    assert main(["auditors", "--tracking-uri", "http://127.0.0.1:9"]) == 2
    assert "error: no auditor tokens configured" in capsys.readouterr().err
