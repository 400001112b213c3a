"""The CLI's side of the dlbox service: HTTP over the local Unix socket, starting the service
in the background when none answers (as SkyPilot's CLI does with its API server); or, when
DLBOX_URL and DLBOX_TOKEN are set, a team server's HTTP API.

Plain http.client, not httpx: importing httpx alone costs ~0.2 s, which every `dlbox run`
paid before its request left (benchmark 6).
"""

from __future__ import annotations

import getpass
import http.client
import json as jsonlib
import os
import socket
import subprocess
import sys
import time
from urllib.parse import urlencode, urlsplit

from dlbox import config
from dlbox.errors import DlboxError, NotFound, UsageError

START_TIMEOUT = 30.0
CONNECT_TIMEOUT = 30.0


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str):
        super().__init__("dlbox", timeout=CONNECT_TIMEOUT)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        sock.settimeout(None)  # answers may stream for as long as a job runs (logs -f)
        self.sock = sock


def remote() -> str | None:
    return config.remote_url()


def _remote(url: str) -> tuple[http.client.HTTPConnection, str, dict]:
    """(connection, path prefix, auth header) for the server at DLBOX_URL."""
    token = os.environ.get("DLBOX_TOKEN")
    if not token:
        raise UsageError("DLBOX_TOKEN: set it to your API token to use the server at DLBOX_URL")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"DLBOX_URL: {url!r} must be http(s)://HOST[:PORT]")
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = kind(parts.hostname, parts.port, timeout=CONNECT_TIMEOUT)
    return conn, parts.path.rstrip("/"), {"Authorization": f"Bearer {token}"}


def _connect() -> _UnixConnection:
    """A connection to a listening service; OSError if none listens."""
    conn = _UnixConnection(str(config.socket_path()))
    conn.connect()
    return conn


def _start_service() -> _UnixConnection:
    log = config.home() / "service" / "service.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        subprocess.Popen([sys.executable, "-m", "dlbox", "service"], stdin=subprocess.DEVNULL, stdout=out,
                         stderr=out, start_new_session=True, env=os.environ.copy())
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            return _connect()
        except OSError:
            time.sleep(0.1)
    tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
    raise DlboxError(f"the dlbox service did not start within {START_TIMEOUT:.0f}s: {tail[0]} (log: {log})")


def _send(method: str, path: str, *, json=None, params: dict | None = None) -> http.client.HTTPResponse:
    """Send one request, starting the service first if nothing listens (then nothing was sent)."""
    if remote():
        conn, prefix, headers = _remote(remote())
        path = prefix + path
        where = f"the server at {remote()}"
    else:
        try:
            conn = _connect()
        except OSError:
            conn = _start_service()
        headers, where = {"X-Dlbox-User": getpass.getuser()}, "the dlbox service"
    if params:
        path += "?" + urlencode({k: str(v).lower() if isinstance(v, bool) else v for k, v in params.items()
                                 if v is not None})
    body = jsonlib.dumps(json).encode() if json is not None else None
    headers["Accept"] = "application/json"
    if body is not None:
        headers["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=body, headers=headers)
        return conn.getresponse()
    except (OSError, http.client.HTTPException) as exc:
        raise DlboxError(f"{where} failed to answer {method} {path.split('?')[0]}: {exc}") from None


def call(method: str, path: str, **kwargs):
    response = _send(method, path, **kwargs)
    with response:
        return _result(response.status, response.read())


def _result(status: int, data: bytes):
    if status < 400:
        return jsonlib.loads(data)
    try:
        error = jsonlib.loads(data)["error"]
    except (ValueError, KeyError, TypeError):
        raise DlboxError(f"the dlbox service answered {status}") from None
    if status == 404:
        raise NotFound(error["message"])
    if status == 401:
        raise DlboxError(f"{error['message']} (check DLBOX_TOKEN)", code="unauthorized")
    if status in (400, 422):
        raise UsageError(error["message"], code=error.get("code", "invalid"))
    raise DlboxError(error["message"], code=error.get("code", "failed"))


def stream(path: str, params: dict | None = None):
    response = _send("GET", path, params=params)
    with response:
        if response.status >= 400:
            _result(response.status, response.read())
        while chunk := response.read1(65536):
            yield chunk
