"""Who may read which report (issue 12): per-site tenancy. A token may name its site; a report keeps the site of
the token that created it; a token of another site gets the 404 of an unknown report (never a 403, which would
confirm that the report exists). Tokens without sites are a single-site deployment: they read every report."""

import pytest
from fastapi.testclient import TestClient
from test_api import STUDY, body, make_app

from serving.auth import DEFAULT_SCOPES, AuthConfigError, may_access, parse_tokens
from serving.auth import Principal as ApiPrincipal

WRITER_A = "writer-site-a-0123456789abcdef"
READER_A = "reader-site-a-0123456789abcdef"
READER_B = "reader-site-b-0123456789abcdef"
FEEDBACK_B = "feedback-site-b-0123456789abc"
TOKENS = (f"{WRITER_A}:report.write:site=ward-a,report.read,{READER_A}:report.read:site=ward-a,"
          f"{READER_B}:report.read:site=ward-b,{FEEDBACK_B}:report.feedback:site=ward-b")
FORMS = ("", "/text", "/fhir", "/heatmaps/pneumothorax")


def _bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def site_a_report(tmp_path_factory):
    """A client of a two-site service and the id of a report created by a ward-a token."""
    with TestClient(make_app(tmp_path_factory.mktemp("tenancy"), tokens=TOKENS)) as client:
        r = client.post(f"/api/v1/studies/{STUDY}/report", json=body(), headers=_bearer(WRITER_A))
        assert r.status_code == 200, r.text
        yield client, r.json()["report_id"]


@pytest.mark.parametrize("token", [READER_A, WRITER_A])
def test_a_token_of_the_reports_site_reads_it(site_a_report, token):
    client, report_id = site_a_report
    for form in FORMS[:3]:
        assert client.get(f"/api/v1/reports/{report_id}{form}", headers=_bearer(token)).status_code == 200


@pytest.mark.parametrize("form", FORMS)
def test_a_token_of_another_site_gets_the_404_of_an_unknown_report(site_a_report, form):
    client, report_id = site_a_report
    other = client.get(f"/api/v1/reports/{report_id}{form}", headers=_bearer(READER_B))
    unknown = client.get(f"/api/v1/reports/00000000-0000-0000-0000-000000000000{form}", headers=_bearer(READER_B))
    assert other.status_code == unknown.status_code == 404
    assert other.json() == unknown.json()                         # nothing tells "exists elsewhere" from "unknown"


def test_another_sites_sign_off_is_refused_as_unknown(site_a_report):
    client, report_id = site_a_report
    r = client.post(f"/api/v1/reports/{report_id}/feedback", headers=_bearer(FEEDBACK_B),
                    json={"final_report": "FINDINGS: Normal. IMPRESSION: Normal.", "rating": 4, "outcome": "edited"})
    assert r.status_code == 404, r.text


def test_tokens_without_sites_are_one_site_and_read_every_report():
    table = parse_tokens(f"{WRITER_A}:report.write,{READER_A}:report.read")
    assert {p.site for p in table.values()} == {None}
    reader = next(p for p in table.values() if p.scopes == {"report.read"})
    assert may_access(reader, None) and may_access(reader, "ward-a")
    assert may_access(None, "ward-a")                      # a service without tokens (development only)


def test_a_token_with_a_site_sees_only_its_sites_reports():
    ward_a = ApiPrincipal("id", frozenset({"report.read"}), "ward-a")
    assert may_access(ward_a, "ward-a")
    assert not may_access(ward_a, "ward-b")
    assert not may_access(ward_a, None)                    # a report made without a site is not ward-a's


def test_the_site_follows_the_scopes_and_survives_scope_continuation():
    table = parse_tokens(f"{WRITER_A}:report.write:site=ward-a,report.read,{READER_B}::site=ward-b")
    by_site = {p.site: p for p in table.values()}
    assert by_site["ward-a"].scopes == {"report.write", "report.read"}
    assert by_site["ward-b"].scopes == set(DEFAULT_SCOPES)       # `TOKEN::site=…` keeps the default scopes


@pytest.mark.parametrize("spec, message", [
    (f"{WRITER_A}:report.write:site=ward-a,{READER_B}:report.read", "entry 2: names no site while others do"),
    (f"{WRITER_A}:report.write:site=", "entry 1: after the scopes only `:site=<site>`"),
    (f"{WRITER_A}:report.write:ward=a", "entry 1: after the scopes only `:site=<site>`"),
    (f"{WRITER_A}:report.write:site=a b", "entry 1: after the scopes only `:site=<site>`"),
    (f"{WRITER_A}:report.rd", "entry 1: unknown scope"),
])
def test_a_malformed_site_or_a_mixed_deployment_is_refused_without_echoing_the_token(spec, message):
    with pytest.raises(AuthConfigError, match=message) as info:
        parse_tokens(spec)
    assert WRITER_A not in str(info.value) and READER_B not in str(info.value)
