"""The CLI's HTTP/1.1 exchange over a Unix socket, against a real uvicorn server."""

import asyncio
import socket
import threading
import time

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from dlbox.cli import client
from dlbox.errors import NotFound, UsageError


async def echo(request: Request):
    return JSONResponse({"method": request.method, "path": request.url.path, "query": dict(request.query_params),
                         "user": request.headers.get("x-dlbox-user"), "body": (await request.body()).decode()})


async def chunked(_request: Request):
    async def parts():
        for piece in (b'{"a": ', b'"' + b"x" * 5000 + b'"', b"}"):
            yield piece
            await asyncio.sleep(0.01)
    return StreamingResponse(parts(), media_type="application/json")


async def missing(_request: Request):
    return JSONResponse({"error": {"code": "not_found", "message": "no job 42"}}, status_code=404)


async def invalid(_request: Request):
    return JSONResponse({"error": {"code": "invalid", "message": "cpus: must be more than 0"}}, status_code=422)


async def big(_request: Request):
    return JSONResponse({"rows": ["r" * 100] * 5000})


async def named(request: Request):
    return JSONResponse({"name": request.path_params["name"], "evil": request.headers.get("x-evil")})


APP = Starlette(routes=[Route("/echo", echo, methods=["GET", "POST"]), Route("/named/{name}", named), Route("/chunked", chunked),
                        Route("/missing", missing), Route("/invalid", invalid, methods=["POST"]), Route("/big", big)])


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    path = tmp_path_factory.mktemp("svc") / "dlbox.sock"
    server = uvicorn.Server(uvicorn.Config(APP, uds=str(path), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield path
    server.should_exit = True
    thread.join(10)


def ask(path, method, target, body=None, headers=None):
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(str(path))
    try:
        return client._exchange(sock, method, target, body, headers or {})
    finally:
        sock.close()


def test_json_round_trip(service):
    status, data = ask(service, "POST", "/echo?x=1", b'{"k": "v"}', {"Content-Type": "application/json",
                                                                      "X-Dlbox-User": "alice"})
    assert status == 200
    assert client._result(status, data) == {"method": "POST", "path": "/echo", "query": {"x": "1"},
                                            "user": "alice", "body": '{"k": "v"}'}


def test_chunked_and_large_answers(service):
    status, data = ask(service, "GET", "/chunked")
    assert status == 200 and client._result(status, data) == {"a": "x" * 5000}
    status, data = ask(service, "GET", "/big")
    assert client._result(status, data)["rows"] == ["r" * 100] * 5000


def test_errors_keep_their_kind(service):
    with pytest.raises(NotFound, match="no job 42"):
        client._result(*ask(service, "GET", "/missing"))
    with pytest.raises(UsageError, match="cpus: must be more than 0"):
        client._result(*ask(service, "POST", "/invalid", b"{}"))


@pytest.fixture
def local_home(service, monkeypatch, tmp_path):
    """A dlbox home whose service socket is the test server's: client.call goes there."""
    home = tmp_path / "home"
    (home / "service").mkdir(parents=True)
    (home / "service" / "dlbox.sock").symlink_to(service)
    monkeypatch.setenv("DLBOX_HOME", str(home))
    monkeypatch.delenv("DLBOX_URL", raising=False)


def test_call_goes_through_the_configured_socket(local_home):
    got = client.call("GET", "/echo", params={"all": True, "skip": None})
    assert got["query"] == {"all": "true"} and got["user"]


def test_names_in_paths_are_quoted_never_headers(local_home):
    for name in ("a b", "x\r\nX-Evil: 1", "dé", "50%"):
        assert client.call("GET", f"/named/{name}") == {"name": name, "evil": None}


def test_cut_or_malformed_chunks_are_errors():
    assert client._unchunk(b"3;ext=1\r\nabc\r\n0\r\nTrailer: x\r\n\r\n") == b"abc"
    for data, message in ((b"5\r\nab", "cut short"), (b"zz\r\nab\r\n", "malformed"), (b"3\r\nabc\r\n", "cut short")):
        with pytest.raises(ValueError, match=message):
            client._unchunk(data)


def test_not_http_is_a_clear_error(tmp_path):
    path = tmp_path / "s.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen()

    def answer():
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(b"SSH-2.0-nope\r\n")
        conn.close()

    threading.Thread(target=answer, daemon=True).start()
    with pytest.raises(ValueError, match="not an HTTP answer"):
        ask(path, "GET", "/")
    listener.close()
