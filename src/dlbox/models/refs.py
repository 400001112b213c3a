"""Model references, parsed without asking anything: `NAME`, `NAME:3`, `NAME@champion`, each
optionally `OWNER/` first (a model an admin shared from another user's namespace)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from dlbox.errors import UsageError

NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
ALIAS = re.compile(r"[a-z][a-z0-9_-]{0,63}")  # starts with a letter: never mistaken for a version
OWNER = re.compile(r"[a-z_][a-z0-9_-]{0,63}")
VERSION = re.compile(r"[1-9][0-9]{0,9}")
MAX_VERSION = 2**31 - 1
FORM = "NAME, NAME:VERSION or NAME@ALIAS (e.g. digits, digits:3, digits@champion)"


@dataclass(frozen=True)
class Ref:
    name: str
    version: int | None = None
    alias: str | None = None
    owner: str | None = None  # None: the caller's own namespace

    def __str__(self) -> str:
        text = f"{self.owner}/{self.name}" if self.owner else self.name
        if self.version is not None:
            return f"{text}:{self.version}"
        return f"{text}@{self.alias}" if self.alias else text


def check_name(name: str, what: str = "model name") -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise UsageError(f"{what} {_show(name)} is not valid: lowercase letters, digits, '_' and '-', "
                         "starting with a letter or digit, at most 64")
    return name


def check_alias(alias: str) -> str:
    if not isinstance(alias, str) or not ALIAS.fullmatch(alias):
        raise UsageError(f"alias {_show(alias)} is not valid: lowercase letters, digits, '_' and '-', "
                         "starting with a letter, at most 64")
    return alias


def check_version(text: str | int) -> int:
    raw = str(text)
    if not VERSION.fullmatch(raw) or int(raw) > MAX_VERSION:
        raise UsageError(f"version {_show(raw)} is not valid: a whole number from 1 (no leading zeros)")
    return int(raw)


def resolve(text: str) -> Ref:
    """Parse a reference. Every malformed one is a UsageError of one line saying what is expected."""
    if not isinstance(text, str) or not text:
        raise UsageError(f"an empty model reference: give {FORM}")
    if len(text) > 200 or not text.isprintable() or any(c.isspace() for c in text):
        raise UsageError(f"model reference {_show(text)} is not valid: give {FORM}")
    if text.count(":") + text.count("@") > 1:
        raise UsageError(f"model reference {_show(text)} has more than one ':' or '@': give {FORM}")
    owner = None
    rest = text
    if "/" in text:
        owner, _, rest = text.partition("/")
        if not OWNER.fullmatch(owner) or "/" in rest:
            raise UsageError(f"model reference {_show(text)}: the owner before '/' is not a user name")
    if ":" in rest:
        name, _, version = rest.partition(":")
        return Ref(name=check_name(name), version=check_version(version), owner=owner)
    if "@" in rest:
        name, _, alias = rest.partition("@")
        return Ref(name=check_name(name), alias=check_alias(alias), owner=owner)
    return Ref(name=check_name(rest), owner=owner)


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
