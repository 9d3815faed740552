"""Bearer-token parsing, authentication and route classification, exactly (issue 12, item 5: mutants accepting
`Basic <valid token>`, dropping comma-continued scope lists and leaving unknown /api paths open survived).
The token list itself is parsed by `model_core.tokens` (module tokens), which these tests reach through
`parse_tokens`. Run by benchmarks/mutation_safety.py (modules auth, tokens, classify)."""

from __future__ import annotations

import hashlib

import pytest

from model_core.tokens import TokenSpecError, parse_token_spec
from serving.auth import (
    DEFAULT_SCOPES,
    AuthConfigError,
    Authenticator,
    Principal,
    load_tokens,
    may_access,
    parse_tokens,
    sha256_hex,
    token_id,
)
from serving.middleware import classify

TOK_A, TOK_B, TOK_C = "tokA-0123456789abcdef", "tokB-0123456789abcdef", "tokC-0123456789abcdef"


def _scopes(parsed: dict, token: str) -> set[str]:
    return set(parsed[hashlib.sha256(token.encode()).hexdigest()].scopes)


def test_token_ids_are_the_first_16_hex_digits_of_the_sha256():
    digest = hashlib.sha256(TOK_A.encode()).hexdigest()
    assert sha256_hex(TOK_A) == digest and token_id(TOK_A) == digest[:16]
    assert parse_tokens(TOK_A) == {digest: Principal(digest[:16], frozenset(DEFAULT_SCOPES))}


def test_a_comma_continued_scope_list_belongs_to_the_token_before_it():
    parsed = parse_tokens(f"{TOK_A}:report.write,report.read,{TOK_B}:report.read")
    assert len(parsed) == 2
    assert _scopes(parsed, TOK_A) == {"report.write", "report.read"}
    assert _scopes(parsed, TOK_B) == {"report.read"}


def test_plus_separated_scopes_spaces_and_empty_entries():
    parsed = parse_tokens(f" {TOK_A}:report.read+service.admin , ,{TOK_B} ,{TOK_C}:report.feedback,service.admin")
    assert _scopes(parsed, TOK_A) == {"report.read", "service.admin"}
    assert _scopes(parsed, TOK_B) == {"report.write", "report.read", "report.feedback"}   # never service.admin
    assert _scopes(parsed, TOK_C) == {"report.feedback", "service.admin"}


def test_a_scope_after_a_bare_token_is_refused_not_granted():
    with pytest.raises(AuthConfigError) as err:
        parse_tokens(f"{TOK_A},report.read")
    assert str(err.value) == ("RRG_API_TOKENS entry 2: a token must be 16-512 characters of [A-Za-z0-9._~-]; "
                              "'report.read' is a scope name with no token before it")


def test_a_scope_with_nothing_before_it_is_refused():
    with pytest.raises(AuthConfigError, match=r"^RRG_API_TOKENS entry 1: a token must be 16-512 characters of "
                                              r"\[A-Za-z0-9\._~-\]; 'service\.admin' is a scope name"):
        parse_tokens("service.admin")


def test_a_short_or_malformed_token_is_refused_by_position_without_echoing_it():
    with pytest.raises(AuthConfigError) as err:
        parse_tokens(f"{TOK_A},,short-secret:report.read")
    assert str(err.value) == "RRG_API_TOKENS entry 3: a token must be 16-512 characters of [A-Za-z0-9._~-]"


@pytest.mark.parametrize("length, ok", [(15, False), (16, True), (512, True), (513, False)])
def test_token_length_bounds(length, ok):
    if ok:
        assert len(parse_tokens("t" * length)) == 1
    else:
        with pytest.raises(AuthConfigError, match="entry 1: a token must be 16-512 characters"):
            parse_tokens("t" * length)


def test_an_unknown_scope_is_named():
    with pytest.raises(AuthConfigError) as err:
        parse_tokens(f"{TOK_A}:report.read,{TOK_B}:report.read+report.delete")
    assert str(err.value) == ("RRG_API_TOKENS entry 2: unknown scope(s); known: ['report.feedback', 'report.read', "
                              "'report.write', 'service.admin']")


def test_sites_bind_tokens_and_a_continued_scope_keeps_the_site():
    parsed = parse_tokens(f"{TOK_A}:report.read:site=ward-3,report.write,{TOK_B}::site=ward_4.b")
    digest_a, digest_b = sha256_hex(TOK_A), sha256_hex(TOK_B)
    assert parsed[digest_a] == Principal(token_id(TOK_A), frozenset({"report.read", "report.write"}), "ward-3")
    assert parsed[digest_b] == Principal(token_id(TOK_B), frozenset(DEFAULT_SCOPES), "ward_4.b")


@pytest.mark.parametrize("spec, message", [
    (f"{TOK_A}:report.read:site=w1,{TOK_B}:report.read",
     "RRG_API_TOKENS entry 2: names no site while others do; in a multi-site deployment every token names its "
     "site (one without would read every site's reports)"),
    (f"{TOK_A}:report.read:place=w1", "RRG_API_TOKENS entry 1: after the scopes only `:site=<site>` may follow "
                                      "(1-64 characters of [A-Za-z0-9._-])"),
    (f"{TOK_A}:report.read:site=", "RRG_API_TOKENS entry 1: after the scopes only `:site=<site>` may follow "
                                   "(1-64 characters of [A-Za-z0-9._-])"),
    (f"{TOK_A}:report.read:site={'w' * 65}", "RRG_API_TOKENS entry 1: after the scopes only `:site=<site>` may "
                                            "follow (1-64 characters of [A-Za-z0-9._-])"),
])
def test_malformed_or_partial_sites_are_refused(spec, message):
    with pytest.raises(AuthConfigError) as err:
        parse_tokens(spec)
    assert str(err.value) == message


def test_a_64_character_site_is_accepted():
    assert parse_tokens(f"{TOK_A}:report.read:site={'w' * 64}")[sha256_hex(TOK_A)].site == "w" * 64


@pytest.mark.parametrize("principal_site, report_site, allowed", [
    (None, "ward-3", True), (None, None, True), ("ward-3", "ward-3", True), ("ward-3", "ward-4", False),
    ("ward-3", None, False)])
def test_may_access_by_site(principal_site, report_site, allowed):
    assert may_access(Principal("id", frozenset({"report.read"}), principal_site), report_site) is allowed
    assert may_access(None, report_site) is True


def test_load_tokens_from_a_mapping_the_environment_or_a_spec(monkeypatch):
    parsed = load_tokens({TOK_A: ["report.read", "service.admin"], TOK_B: []})
    assert _scopes(parsed, TOK_A) == {"report.read", "service.admin"}
    assert _scopes(parsed, TOK_B) == set(DEFAULT_SCOPES)
    monkeypatch.setenv("RRG_API_TOKENS", f"{TOK_C}:report.write")
    assert _scopes(load_tokens(None), TOK_C) == {"report.write"}
    monkeypatch.delenv("RRG_API_TOKENS")
    assert load_tokens(None) == {}
    assert _scopes(load_tokens(f"{TOK_B}:report.read"), TOK_B) == {"report.read"}


@pytest.fixture()
def auth() -> Authenticator:
    return Authenticator(parse_tokens(f"{TOK_A}:report.read"))


@pytest.mark.parametrize("header", [f"Bearer {TOK_A}", f"bearer {TOK_A}", f"BEARER {TOK_A}", f"Bearer  {TOK_A} "])
def test_a_valid_bearer_token_authenticates(auth, header):
    assert auth.authenticate(header) == Principal(token_id(TOK_A), frozenset({"report.read"}))


@pytest.mark.parametrize("header", [None, "", f"Basic {TOK_A}", f"Token {TOK_A}", f"Bearer{TOK_A}", "Bearer ",
                                    "Bearer    ", f"{TOK_A}", f"Bearer {TOK_B}", f"Bearer {TOK_A}x"])
def test_anything_else_does_not(auth, header):
    assert auth.authenticate(header) is None


@pytest.mark.parametrize("path, template, scope", [
    ("/api/v1/studies/s1/report", "/api/v1/studies/{study_id}/report", "report.write"),
    ("/api/v1/studies/s1/report:upload", "/api/v1/studies/{study_id}/report:upload", "report.write"),
    ("/api/v1/reports/r1", "/api/v1/reports/{report_id}", "report.read"),
    ("/api/v1/reports/r1/fhir", "/api/v1/reports/{report_id}/fhir", "report.read"),
    ("/api/v1/reports/r1/text", "/api/v1/reports/{report_id}/text", "report.read"),
    ("/api/v1/reports/r1/heatmaps/Fracture", "/api/v1/reports/{report_id}/heatmaps/{finding}", "report.read"),
    ("/api/v1/reports/r1/feedback", "/api/v1/reports/{report_id}/feedback", "report.feedback"),
    ("/api/v1/admin/automation", "/api/v1/admin/automation", "service.admin"),
    ("/healthz", "/healthz", None), ("/readyz", "/readyz", None), ("/metrics", "/metrics", None),
    ("/openapi.json", "/openapi.json", None), ("/docs", "/docs", None), ("/redoc", "/redoc", None),
    ("/docs/oauth2-redirect", "/docs/oauth2-redirect", None),
    # unknown paths under the API need a token (report.read), everything else is "other"
    ("/api/v1/reports", "other-api", "report.read"), ("/api/v1/reports/r1/unknown", "other-api", "report.read"),
    ("/api/v1/studies/a/b/report", "other-api", "report.read"), ("/api/v1/admin/automation/x", "other-api",
                                                                  "report.read"),
    ("/api/v1/reports/r1/heatmaps/a/b", "other-api", "report.read"), ("/api/v1", "other-api", "report.read"),
    ("/api/v1/studies/s1/report:uploadx", "other-api", "report.read"),
    ("/api/v2/reports/r1", "other-api", "report.read"), ("/api", "other-api", "report.read"),
    ("/apix", "other", None),
    ("/healthz/x", "other", None), ("/", "other", None), ("/favicon.ico", "other", None),
])
def test_classify(path, template, scope):
    assert classify(path) == (template, scope)


def test_a_continued_entry_keeps_its_position_for_later_messages():
    with pytest.raises(AuthConfigError) as err:
        parse_tokens(f"{TOK_A}:report.read,report.write,{TOK_B}:report.read:site=w1")
    assert str(err.value).startswith("RRG_API_TOKENS entry 1: names no site while others do")


# The auditors' page reads its tokens with the same parser: free scope names, no sites (model_core.tokens).

def test_without_known_scopes_a_scope_is_any_dotted_name_and_nothing_continues():
    entries = parse_token_spec(f"{TOK_A}:packet.read+audit.view,{TOK_B}", "RRG_AUDITOR_TOKENS")
    assert [(e.position, e.token, set(e.scopes), e.site) for e in entries] == [
        (1, TOK_A, {"packet.read", "audit.view"}, None), (2, TOK_B, set(), None)]
    with pytest.raises(TokenSpecError) as err:
        parse_token_spec(f"{TOK_A}:packet.read+Packet", "RRG_AUDITOR_TOKENS")
    assert str(err.value) == "RRG_AUDITOR_TOKENS entry 1: scopes are names like packet.read, joined with +"


def test_sites_are_refused_where_the_service_has_none():
    with pytest.raises(TokenSpecError) as err:
        parse_token_spec(f"{TOK_A}:packet.read:site=w1", "RRG_AUDITOR_TOKENS")
    assert str(err.value) == ("RRG_AUDITOR_TOKENS entry 1: sites are not used by this service (write TOKEN or "
                              "TOKEN:scope+scope)")
