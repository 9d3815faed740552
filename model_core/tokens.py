"""Bearer-token lists from the environment, parsed one way for every service that reads one (the report API's
$RRG_API_TOKENS in serving.auth, the auditors' page's $RRG_AUDITOR_TOKENS in auditors.tokens).

    <token>[:<scope>[+<scope>…][:site=<site>]],<token>…

- entries are comma-separated; blanks around an entry are ignored;
- a token is 16-512 characters of [A-Za-z0-9._~-] (`python -c "import secrets; print(secrets.token_urlsafe(32))"`);
- scopes follow the first `:`, joined with `+`; none written: the caller's default scopes;
- with `known_scopes`, a scope must be one of them, and an entry that is exactly a scope name continues the scope
  list of the token before it (`tokA:report.write,report.read` gives tokA both); without, a scope is a name like
  `packet.read`;
- `:site=<site>` (1-64 of [A-Za-z0-9._-]) binds the token to a site, where the caller allows sites
  (`TOKEN::site=ward-3` keeps the default scopes).

Only a token's SHA-256 is kept (`token_digest`); logs name a token by `token_id` (the first 16 hex digits of it).
Error messages name an entry by its position, never its text (an entry may hold a token).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection
from dataclasses import dataclass

TOKEN_RE = re.compile(r"^[A-Za-z0-9._~\-]{16,512}$")
SCOPE_RE = re.compile(r"^[a-z]+\.[a-z]+$")
SITE_RE = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")


class TokenSpecError(ValueError):
    """A token list is malformed; the message names the variable and the entry by position, and says why."""


@dataclass(frozen=True)
class TokenEntry:
    position: int               # 1-based place of the entry in the list (for messages)
    token: str
    scopes: frozenset[str]      # as written; empty: the caller's defaults
    site: str | None


def token_digest(token: str) -> str:
    """SHA-256 hex of a token: what a token table is keyed by."""
    return hashlib.sha256(token.encode()).hexdigest()


def token_id(token: str) -> str:
    """How logs and audit records name a token: the first 16 hex digits of its SHA-256."""
    return token_digest(token)[:16]


def parse_token_spec(spec: str, env_name: str, *, known_scopes: Collection[str] | None = None,
                     allow_site: bool = False, error: type[ValueError] = TokenSpecError) -> list[TokenEntry]:
    """A token list (module docstring) → its entries in order. Raises `error` (a ValueError subclass the caller
    names) naming `env_name` and the entry's position."""
    entries: list[TokenEntry] = []
    for position, raw in enumerate((item.strip() for item in spec.split(",")), start=1):
        if not raw:
            continue
        if known_scopes is not None and raw in known_scopes and entries and entries[-1].scopes:
            last = entries[-1]                  # a scope continuing the previous token's list
            entries[-1] = TokenEntry(last.position, last.token, last.scopes | {raw}, last.site)
            continue
        token, _, rest = raw.partition(":")
        scope_text, _, site_text = rest.partition(":")
        where = f"{env_name} entry {position}"
        if not TOKEN_RE.match(token):
            hint = (f"; {raw!r} is a scope name with no token before it"
                    if known_scopes is not None and raw in known_scopes else "")
            raise error(f"{where}: a token must be 16-512 characters of [A-Za-z0-9._~-]{hint}")
        scopes = frozenset(s.strip() for s in scope_text.split("+")) if scope_text else frozenset()
        if known_scopes is not None:
            if scopes - set(known_scopes):
                raise error(f"{where}: unknown scope(s); known: {sorted(known_scopes)}")
        elif not all(SCOPE_RE.match(s) for s in scopes):
            raise error(f"{where}: scopes are names like packet.read, joined with +")
        entries.append(TokenEntry(position, token, scopes, _site(site_text, where, allow_site, error)))
    return entries


def _site(text: str, where: str, allow_site: bool, error: type[ValueError]) -> str | None:
    if not text:
        return None
    if not allow_site:
        raise error(f"{where}: sites are not used by this service (write TOKEN or TOKEN:scope+scope)")
    key, _, site = text.partition("=")
    if key != "site" or not SITE_RE.match(site):
        raise error(f"{where}: after the scopes only `:site=<site>` may follow (1-64 characters of "
                    "[A-Za-z0-9._-])")
    return site
