"""Workspace secrets on the host: Jupyter tokens and SSH host keys, readable only by their owner.

Files live in $DLBOX_HOME/workspaces/NAME/ (directory 0700, files 0600). Nothing here is
logged or listed; only `dlbox up` and `dlbox token` print a token, once.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

from dlbox import config
from dlbox.errors import DlboxError

TOKEN_BYTES = 32  # 256 bits


def directory(name: str) -> Path:
    return config.home() / "workspaces" / name


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def save(name: str, record: dict) -> None:
    _write(directory(name) / "secrets.json", json.dumps(record).encode())


STOP_NOTE = "stopped.json"


def note_stop(name: str, note: dict) -> None:
    """Why dlbox stopped the workspace (idle stop), beside its secrets (0600 too, gone with `rm`)."""
    _write(directory(name) / STOP_NOTE, json.dumps(note).encode())


def stop_note(name: str) -> dict | None:
    try:
        return json.loads((directory(name) / STOP_NOTE).read_text())
    except (OSError, ValueError):
        return None


def clear_stop(name: str) -> None:
    (directory(name) / STOP_NOTE).unlink(missing_ok=True)


def load(name: str) -> dict:
    path = directory(name) / "secrets.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}


def host_key(name: str) -> tuple[bytes, str]:
    """The workspace's SSH host key (private, public); made once, kept until `rm`."""
    key = directory(name) / "ssh_host_ed25519_key"
    if not key.exists():
        if shutil.which("ssh-keygen") is None:
            raise DlboxError("--ssh needs ssh-keygen on this host (apt-get install openssh-client)")
        key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        made = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"dlbox-{name}", "-f", str(key)],
                              capture_output=True, text=True)
        if made.returncode != 0:
            raise DlboxError(f"ssh-keygen could not make a host key: {made.stderr.strip()[-200:]}")
        key.with_suffix(".pub").chmod(0o600)  # nothing in the vault is for others, public or not
    return key.read_bytes(), key.with_suffix(".pub").read_text().strip()


def forget(name: str) -> None:
    shutil.rmtree(directory(name), ignore_errors=True)
