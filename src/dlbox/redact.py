"""What counts as a secret in a run record, and how it is hidden. Pure; used by every listing.

A value is hidden whole when its name looks secret (PASS, KEY, TOKEN, SECRET, CREDENTIAL, PRIVATE, in
any case, anywhere in the name). In any other value, the credentials of a URL are hidden
(`postgresql://u:pw@h/db` -> `postgresql://u:***@h/db`, `https://tok@h` -> `https://***@h`).
"""

from __future__ import annotations

import re

MARK = "***"
SECRET_NAME = re.compile(r"PASS|KEY|TOKEN|SECRET|CREDENTIAL|PRIVATE", re.IGNORECASE)
# scheme://userinfo@ : the userinfo runs to the last '@' before the host (a password may hold '@'),
# and an authority never holds '/', '?', '#' or white space
URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#\s]*)@")


def is_secret_name(name: str) -> bool:
    return bool(SECRET_NAME.search(name))


def text(value: str) -> str:
    """`value` with the credentials of every URL in it hidden."""
    return URL_USERINFO.sub(_hide_userinfo, value) if "@" in value else value


def _hide_userinfo(match: re.Match) -> str:
    user, colon, _password = match["userinfo"].partition(":")
    return f"{match['scheme']}{user}:{MARK}@" if colon else f"{match['scheme']}{MARK}@"


def mapping(values: dict | None) -> dict:
    """Params or env as shown: secret-looking names hidden whole, URL credentials hidden elsewhere."""
    return {k: (MARK if is_secret_name(str(k)) else text(v) if isinstance(v, str) else v)
            for k, v in (values or {}).items()}


def words(args: list | None) -> list:
    """A command as shown: URL credentials hidden in each word."""
    return [text(a) if isinstance(a, str) else a for a in (args or [])]

