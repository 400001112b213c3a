"""The CLI's side of the dlbox service: HTTP over the local Unix socket, starting the service
in the background when none answers (as SkyPilot's CLI does with its API server); or, when
DLBOX_URL and DLBOX_TOKEN are set, a team server's HTTP API.

Start-up cost matters here: every `dlbox run` pays it before its request leaves (benchmark 6).
Plain JSON calls to the local service therefore speak HTTP/1.1 over the socket directly;
importing http.client (it pulls in the email package) cost ~25 ms of the CLI's ~0.1 s, httpx
~0.2 s. The remote server and streamed answers (`logs -f`) still go through http.client.
"""

from __future__ import annotations

import json as jsonlib
import os
import socket

from dlbox import config, errors
from dlbox.errors import DlboxError, NotFound, UsageError

START_TIMEOUT = 30.0
CONNECT_TIMEOUT = 30.0


def _unix_connection():
    """An http.client connection over the service's socket (for streams)."""
    import http.client

    class UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = _service_socket()
            self.sock.settimeout(None)  # answers may stream for as long as a job runs (logs -f)

    return UnixConnection("dlbox", timeout=CONNECT_TIMEOUT)


def _open(path: str) -> socket.socket:
    """A socket connected to a listening service; OSError if none listens."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(CONNECT_TIMEOUT)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        raise
    return sock


def remote() -> str | None:
    return config.remote_url()


def _remote(url: str):
    """(connection, path prefix, auth header) for the server at DLBOX_URL."""
    import http.client
    from urllib.parse import urlsplit

    token = os.environ.get("DLBOX_TOKEN")
    if not token:
        raise UsageError("DLBOX_TOKEN: set it to your API token to use the server at DLBOX_URL")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"DLBOX_URL: {url!r} must be http(s)://HOST[:PORT]")
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=CONNECT_TIMEOUT,
                                           context=_tls_context())
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=CONNECT_TIMEOUT)
    return conn, parts.path.rstrip("/"), {"Authorization": f"Bearer {token}"}


def _tls_context():
    """Verify the server against the system's CAs, plus DLBOX_SERVER_CA (a PEM file) for a private CA."""
    import ssl

    context = ssl.create_default_context()
    ca = os.environ.get("DLBOX_SERVER_CA")
    if ca:
        try:
            context.load_verify_locations(cafile=ca)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"DLBOX_SERVER_CA: {ca!r} is not a readable PEM CA certificate "
                             f"({getattr(exc, 'reason', None) or exc.strerror or exc})") from None
    return context


def _service_socket() -> socket.socket:
    """A socket to the local service, started first if nothing listens."""
    path = str(config.socket_path())
    try:
        return _open(path)
    except OSError:
        return _start_service(path)


def _start_service(path: str) -> socket.socket:
    import subprocess
    import sys
    import time

    log = config.home() / "service" / "service.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        subprocess.Popen([sys.executable, "-m", "dlbox", "service"], stdin=subprocess.DEVNULL, stdout=out,
                         stderr=out, start_new_session=True, env=os.environ.copy())
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            return _open(path)
        except OSError:
            time.sleep(0.1)
    tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
    raise DlboxError(f"the dlbox service did not start within {START_TIMEOUT:.0f}s: {tail[0]} (log: {log})")


_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/-._~")


def _request(method: str, path: str, json, params: dict | None, data: bytes | None = None,
             content_type: str | None = None) -> tuple[str, bytes | None, dict]:
    """(path with query, body, headers) of one request. Names from the user go into paths: quoted,
    so a space or a line break is a name the service refuses, never a header of its own."""
    if not _PLAIN.issuperset(path):
        from urllib.parse import quote

        path = quote(path, safe="/")
    if params:
        from urllib.parse import urlencode

        path += "?" + urlencode({k: str(v).lower() if isinstance(v, bool) else v for k, v in params.items()
                                 if v is not None})
    body = jsonlib.dumps(json).encode() if json is not None else data
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = content_type or "application/json"
    if not remote():
        import getpass

        headers["X-Dlbox-User"] = getpass.getuser()
    return path, body, headers


def call(method: str, path: str, *, json=None, params: dict | None = None, data: bytes | None = None,
         content_type: str | None = None, raw: bool = False):
    """One request (a JSON body, or `data` of `content_type`): the decoded answer (raw: its bytes),
    or a DlboxError that says what went wrong."""
    target, body, headers = _request(method, path, json, params, data, content_type)
    if remote():
        with _send_remote(method, target, body, headers) as response:
            return _result(response.status, response.read(), raw)
    sock = _service_socket()
    try:
        status, answer = _exchange(sock, method, target, body, headers)
    except (OSError, ValueError) as exc:
        raise DlboxError(f"the dlbox service failed to answer {method} {path}: {exc}") from None
    finally:
        sock.close()
    return _result(status, answer, raw)


def _exchange(sock: socket.socket, method: str, target: str, body: bytes | None, headers: dict) -> tuple[int, bytes]:
    """Send one HTTP/1.1 request and read the whole answer: (status, body). ValueError if malformed."""
    head = [f"{method} {target} HTTP/1.1", "Host: dlbox", "Connection: close",
            f"Content-Length: {len(body or b'')}", *(f"{k}: {v}" for k, v in headers.items())]
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + (body or b""))
    sock.settimeout(None)  # some answers wait on the engine (an image build, a workspace start)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    raw_head, sep, data = b"".join(chunks).partition(b"\r\n\r\n")
    lines = raw_head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if not sep or len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ValueError("not an HTTP answer")
    fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if fields.get("transfer-encoding", "").lower() == "chunked":
        data = _unchunk(data)
    elif "content-length" in fields:
        length = int(fields["content-length"]) if fields["content-length"].isdigit() else -1
        if not 0 <= length <= len(data):
            raise ValueError("the answer was cut short")
        data = data[:length]
    return int(parts[1]), data


def _unchunk(data: bytes) -> bytes:
    """A chunked body (RFC 9112 7.1), extensions and trailers ignored."""
    out, at = [], 0
    while True:
        end = data.find(b"\r\n", at)
        try:
            size = int(data[at:end].split(b";")[0], 16) if end >= 0 else -1
        except ValueError:
            raise ValueError("malformed chunked answer") from None
        if size < 0 or end + 2 + size + 2 > len(data):
            raise ValueError("the answer was cut short")
        if size == 0:
            return b"".join(out)
        out.append(data[end + 2:end + 2 + size])
        at = end + 2 + size + 2


def _send_remote(method: str, target: str, body: bytes | None, headers: dict):
    import http.client

    conn, prefix, auth = _remote(remote())
    try:
        conn.request(method, prefix + target, body=body, headers={**headers, **auth})
        return conn.getresponse()
    except (OSError, http.client.HTTPException) as exc:
        hint = " (set DLBOX_SERVER_CA to the CA that signed its certificate)" \
            if "CERTIFICATE_VERIFY_FAILED" in str(exc) else ""
        raise DlboxError(f"the server at {remote()} failed to answer {method} {target.split('?')[0]}: {exc}{hint}") \
            from None


def _result(status: int, data: bytes, raw: bool = False):
    if status < 400:
        return data if raw else jsonlib.loads(data)
    try:
        error = jsonlib.loads(data)["error"]
    except (ValueError, KeyError, TypeError):
        raise DlboxError(f"the dlbox service answered {status}") from None
    if status == 404:
        raise NotFound(error["message"], code=errors.known(error.get("code"), "not_found"))
    if status == 401:
        raise DlboxError(f"{error['message']} (check DLBOX_TOKEN)", code="unauthorized")
    if status in (400, 422):
        raise UsageError(error["message"], code=errors.known(error.get("code"), "invalid"))
    raise DlboxError(error["message"], code=errors.known(error.get("code")))  # a newer server's code: "failed"


def stream(path: str, params: dict | None = None):
    """The answer's body as it comes (logs -f), through http.client."""
    import http.client

    target, body, headers = _request("GET", path, None, params)
    if remote():
        response = _send_remote("GET", target, body, headers)
    else:
        conn = _unix_connection()
        try:
            conn.request("GET", target, headers=headers)
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            raise DlboxError(f"the dlbox service failed to answer GET {path}: {exc}") from None
    with response:
        if response.status >= 400:
            _result(response.status, response.read())
        while chunk := response.read1(65536):
            yield chunk
