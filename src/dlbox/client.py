"""The CLI's side of the dlbox service: HTTP over the local Unix socket, starting the service
in the background when none answers (as SkyPilot's CLI does with its API server); or, when
DLBOX_URL and DLBOX_TOKEN are set, a team server's HTTP API.
"""

from __future__ import annotations

import getpass
import os
import subprocess
import sys
import time

import httpx

from dlbox import config
from dlbox.errors import DlboxError, NotFound, UsageError

START_TIMEOUT = 30.0


def remote() -> str | None:
    """The team server's URL when the CLI should use one (DLBOX_URL)."""
    return os.environ.get("DLBOX_URL") or None


def _remote_client(url: str) -> httpx.Client:
    token = os.environ.get("DLBOX_TOKEN")
    if not token:
        raise UsageError("DLBOX_TOKEN: set it to your API token to use the server at DLBOX_URL")
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"DLBOX_URL: {url!r} must start with http:// or https://")
    return httpx.Client(base_url=url.rstrip("/"), timeout=httpx.Timeout(30.0, read=None),
                        headers={"Authorization": f"Bearer {token}"})


def _client() -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(config.socket_path())), base_url="http://dlbox",
                        timeout=httpx.Timeout(30.0, read=None), headers={"X-Dlbox-User": getpass.getuser()})


def _answers(client: httpx.Client) -> bool:
    try:
        return client.get("/api/health", timeout=3).status_code == 200
    except httpx.TransportError:
        return False


def ensure_service() -> httpx.Client:
    if remote():
        return _remote_client(remote())
    client = _client()
    if _answers(client):
        return client
    log = config.home() / "service" / "service.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        subprocess.Popen([sys.executable, "-m", "dlbox", "service"], stdin=subprocess.DEVNULL, stdout=out,
                         stderr=out, start_new_session=True, env=os.environ.copy())
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if _answers(client):
            return client
        time.sleep(0.1)
    tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
    raise DlboxError(f"the dlbox service did not start within {START_TIMEOUT:.0f}s: {tail[0]} (log: {log})")


def call(method: str, path: str, **kwargs):
    client = ensure_service()
    response = client.request(method, path, **kwargs)
    return _result(response)


def _result(response: httpx.Response):
    if response.status_code < 400:
        return response.json()
    try:
        error = response.json()["error"]
    except (ValueError, KeyError):
        raise DlboxError(f"the dlbox service answered {response.status_code}") from None
    if response.status_code == 404:
        raise NotFound(error["message"])
    if response.status_code == 401:
        raise DlboxError(f"{error['message']} (check DLBOX_TOKEN)", code="unauthorized")
    if response.status_code in (400, 422):
        raise UsageError(error["message"], code=error.get("code", "invalid"))
    raise DlboxError(error["message"], code=error.get("code", "failed"))


def stream(path: str, params: dict | None = None):
    client = ensure_service()
    with client.stream("GET", path, params=params) as response:
        if response.status_code >= 400:
            response.read()
            _result(response)
        yield from response.iter_bytes()
