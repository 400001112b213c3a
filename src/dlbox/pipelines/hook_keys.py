"""Webhook secrets that the database never holds.

A project's secret is HMAC-SHA256(key, project name + salt): the key is a random 0600 file,
$DLBOX_HOME/secrets/hook.key (made on first use), and the salt is random per project and is
what the database's `secret` column keeps ("hmac1:<hex>"). A dump of the database alone gives
no secret; rotating (`dlbox hooks project` again) draws a new salt. A row from before this
(a plain secret in the column) still verifies until it is rotated.

Losing hook.key changes every project's secret: re-run `dlbox hooks project` for each.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

from dlbox import config
from dlbox.errors import DlboxError

PREFIX = "hmac1:"
KEY_BYTES = 32


def _key_path():
    return config.home() / "secrets" / "hook.key"


def key() -> bytes:
    """The server's webhook key, made (0600, in a 0700 folder) the first time; never followed through a link."""
    path = _key_path()
    path.parent.mkdir(mode=0o700, exist_ok=True)
    os.chmod(path.parent, 0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        pass
    else:  # the first: a racing second process waits for the whole key below
        try:
            os.write(fd, secrets.token_bytes(KEY_BYTES))
        finally:
            os.close(fd)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise DlboxError(f"the webhook key {path} cannot be read ({exc.strerror})") from None
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
        data = os.read(fd, KEY_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) != KEY_BYTES:
        raise DlboxError(f"the webhook key {path} is damaged (not {KEY_BYTES} bytes); remove it and re-run "
                         f"`dlbox hooks project` for each project")
    return data


def new_salt() -> str:
    """What the database stores for a new or rotated project."""
    return PREFIX + secrets.token_hex(16)


def secret_of(name: str, stored: str) -> str:
    """The project's webhook secret (hex) from its stored salt; a legacy row's column is the secret itself."""
    if not stored.startswith(PREFIX):
        return stored
    return hmac.new(key(), f"{name}\n{stored}".encode(), hashlib.sha256).hexdigest()
