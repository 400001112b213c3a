"""The engine's side of an image registry: log in (credentials kept where docker keeps them), push,
pull by digest.

Credentials live in the engine's usual credential store, as `docker login` leaves them: the
credential helper that ~/.docker/config.json names (credsStore / credHelpers), else base64 in
its "auths" (the file 0600). $DOCKER_CONFIG moves the folder, as it does for docker. A password
is never printed, logged or put in an error: registry errors are mapped to one line of our own.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

from dlbox.engine.api import _explanation, client, translated
from dlbox.errors import DlboxError, NotFound

HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:]+\])(?::[0-9]{1,5})?")


def config_path() -> Path:
    folder = os.environ.get("DOCKER_CONFIG") or str(Path.home() / ".docker")
    return Path(folder) / "config.json"


def _read_config() -> dict:
    path = config_path()
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError) as exc:
        raise DlboxError(f"cannot read the credential store {path}: {type(exc).__name__}") from None


def _helper(config: dict, host: str) -> str | None:
    return (config.get("credHelpers") or {}).get(host) or config.get("credsStore")


def credentials(host: str) -> dict | None:
    """{"username", "password"} kept for registry `host`, or None."""
    from docker import auth

    config = _read_config()
    if not config:
        return None
    try:
        found = auth.load_config(config_dict=config).resolve_authconfig(host)
    except Exception:  # noqa: BLE001 - a broken helper: say which, never what it returned
        raise DlboxError(f"the credential helper {_helper(config, host)!r} failed for {host}",
                         code="registry_auth") from None
    if not found or not found.get("username"):
        return None
    return {"username": found["username"], "password": found.get("password") or ""}


def _store(host: str, username: str, password: str) -> None:
    """Keep the credentials as docker does: the helper when the config names one, else "auths"."""
    config = _read_config()
    helper = _helper(config, host)
    if helper:
        from docker.credentials import Store
        from docker.credentials.errors import StoreError

        try:
            Store(helper).store(server=host, username=username, secret=password)
        except StoreError:
            raise DlboxError(f"the credential helper docker-credential-{helper} could not store them",
                             code="failed") from None
        return
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    config.setdefault("auths", {})[host] = {"auth": token}
    path = config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.dlbox-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(config, out, indent="\t")
    os.replace(tmp, path)  # never a half-written store
    os.chmod(path, 0o600)


def check_host(host: str) -> str:
    if not HOST.fullmatch(host or "") or "." not in host and ":" not in host and host != "localhost":
        raise DlboxError(f"{host!r} is not a registry address (HOST[:PORT], e.g. registry.example.com:5000)",
                         code="invalid")
    return host


def refusal(host: str, explanation: str) -> DlboxError:
    """Our one line for what the engine said the registry did: never its words about credentials."""
    text = explanation.lower()
    if any(word in text for word in ("unauthorized", "authentication required", "no basic auth", "401",
                                     "incorrect username or password", "denied")):
        return DlboxError(f"registry {host} refused the credentials (wrong username or password, or none "
                          f"kept: `dlbox login {host}`)", code="registry_auth")
    if "x509" in text or "certificate" in text:
        return DlboxError(f"registry {host}'s TLS certificate is not trusted by the engine (put its CA in "
                          f"/etc/docker/certs.d/{host}/ca.crt)", code="registry_unavailable")
    if any(word in text for word in ("manifest unknown", "not found", "name unknown", "does not exist")):
        return NotFound(f"registry {host} has no such image: {_short(explanation)}")
    if any(word in text for word in ("connection refused", "no such host", "timeout", "dial tcp", "eof",
                                     "connection reset", "server gave http response")):
        return DlboxError(f"registry {host} does not answer: {_short(explanation)}", code="registry_unavailable")
    return DlboxError(f"registry {host}: {_short(explanation)}", code="registry_unavailable")


def _short(text: str) -> str:
    return " ".join(text.split())[:200]


@translated("login failed")
def login(host: str, username: str, password: str) -> dict:
    """Check the credentials with the registry (through the engine, as `docker login` does), then keep them."""
    from docker.errors import APIError

    check_host(host)
    if not username or not password:
        raise DlboxError("--username and a password are both needed", code="invalid")
    try:
        client().api.login(username=username, password=password, registry=host, reauth=True)
    except APIError as exc:
        raise refusal(host, _explanation(exc)) from None
    _store(host, username, password)
    return {"registry": host, "username": username, "store": _helper(_read_config(), host) or str(config_path())}


def _auth(host: str) -> dict | None:
    found = credentials(host)
    return {**found, "serveraddress": host} if found else None


def _follow(stream, host: str, on_line: Callable[[str], None]) -> dict:
    """Read a push or pull stream to its end; the last "aux" it carried (a push's digest)."""
    aux: dict = {}
    for chunk in stream:
        if "error" in chunk:
            raise refusal(host, (chunk.get("errorDetail") or {}).get("message") or chunk["error"])
        if "aux" in chunk:
            aux = chunk["aux"]
        if chunk.get("status") and not chunk.get("progressDetail"):
            on_line(f"{chunk.get('id', '')} {chunk['status']}".strip())
    return aux


@translated("push failed")
def push(image: str, repository: str, tag: str, *, on_line: Callable[[str], None] = lambda line: None) -> str:
    """Tag `image` as repository:tag and push it; the manifest digest the registry gave it."""
    from docker.errors import APIError

    host = repository.split("/", 1)[0]
    api = client().api
    api.tag(image, repository, tag, force=True)
    try:
        aux = _follow(api.push(repository, tag=tag, stream=True, decode=True, auth_config=_auth(host)), host, on_line)
    except APIError as exc:
        raise refusal(host, _explanation(exc)) from None
    digest = aux.get("Digest")
    if not digest:
        raise DlboxError(f"registry {host} did not report the pushed digest", code="registry_unavailable")
    return digest


@translated("pull failed")
def pull(repository: str, digest: str, *, on_line: Callable[[str], None] = lambda line: None) -> dict:
    """Pull repository@digest; the image's attrs."""
    from docker.errors import APIError

    from dlbox.engine.api import image_attrs

    host = repository.split("/", 1)[0]
    try:
        _follow(client().api.pull(repository, tag=digest, stream=True, decode=True, auth_config=_auth(host)),
                host, on_line)
    except APIError as exc:
        raise refusal(host, _explanation(exc)) from None
    return image_attrs(f"{repository}@{digest}")

