"""The one bearer-token list format (model_core.tokens), as serving.auth and auditors.tokens read it."""

import pytest

from model_core.tokens import TokenSpecError, parse_token_spec, token_digest, token_id

TOKEN_A = "token-a-0123456789abcdef"
TOKEN_B = "token-b-0123456789abcdef"
SCOPES = ("report.write", "report.read")


def test_entries_keep_their_position_scopes_and_site():
    entries = parse_token_spec(f" {TOKEN_A}:report.write,report.read , ,{TOKEN_B}::site=ward-3", "ENV",
                               known_scopes=SCOPES, allow_site=True)
    assert [(e.position, e.token, set(e.scopes), e.site) for e in entries] == [
        (1, TOKEN_A, {"report.write", "report.read"}, None), (4, TOKEN_B, set(), "ward-3")]


def test_without_known_scopes_a_scope_is_a_dotted_name_and_there_is_no_continuation():
    (entry,) = parse_token_spec(f"{TOKEN_A}:packet.read+report.read", "ENV")
    assert entry.scopes == {"packet.read", "report.read"}
    with pytest.raises(TokenSpecError, match="ENV entry 2: a token must be 16-512"):
        parse_token_spec(f"{TOKEN_A}:packet.read,report.read", "ENV")


@pytest.mark.parametrize("spec, message", [
    ("short-token:report.read", "entry 1: a token must be 16-512"),
    ("report.read", "entry 1: a token must be 16-512 .*'report.read' is a scope name with no token before it"),
    (f"{TOKEN_A}:{TOKEN_B}", "entry 1: unknown scope"),
    (f"{TOKEN_A}:report.read:site={TOKEN_B}!", "entry 1: after the scopes only `:site=<site>`"),
])
def test_errors_name_the_entry_by_position_never_the_token(spec, message):
    with pytest.raises(TokenSpecError, match=message) as info:
        parse_token_spec(spec, "ENV", known_scopes=SCOPES, allow_site=True)
    assert TOKEN_A not in str(info.value) and TOKEN_B not in str(info.value)


class CallersError(ValueError):
    """A caller's own error class (AuthConfigError, TokenConfigError)."""


def test_a_site_where_sites_are_not_used_is_refused_with_the_callers_error():
    with pytest.raises(CallersError, match="ENV entry 1: sites are not used"):
        parse_token_spec(f"{TOKEN_A}:packet.read:site=ward-3", "ENV", error=CallersError)


def test_a_token_is_named_by_the_first_16_hex_of_its_digest():
    assert token_id(TOKEN_A) == token_digest(TOKEN_A)[:16] and len(token_digest(TOKEN_A)) == 64
