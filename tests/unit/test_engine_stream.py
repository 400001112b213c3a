"""engine.stream_logs' pure parts: Docker's multiplexed frames, and which engine address it uses; the
async log stream's and the event stream's errors, through the one translator."""

from __future__ import annotations

import asyncio
import json

import pytest

from dlbox.engine import api as engine
from dlbox.errors import DlboxError


def frame(stream: int, payload: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload


@pytest.mark.parametrize("size", [1, 3, 7, 8, 9, 4096, 1 << 20])
def test_frames_give_the_payloads_in_order_however_the_chunks_fall(size):
    data = frame(1, b"out\n") + frame(2, b"err\n") + frame(1, b"") + frame(1, b"x" * 70_000)
    frames = engine.Frames()
    out = b"".join(frames.feed(data[i:i + size]) for i in range(0, len(data), size))
    assert out == b"out\nerr\n" + b"x" * 70_000


def test_a_frame_is_streamed_before_it_is_complete():
    frames = engine.Frames()
    assert frames.feed(frame(1, b"x" * 10)[:12]) == b"xxxx"
    assert frames.feed(b"x" * 6) == b"x" * 6


@pytest.mark.parametrize("host, base", [("unix:///var/run/docker.sock", "http://docker"),
                                        ("tcp://127.0.0.1:2375", "http://127.0.0.1:2375")])
def test_the_async_client_follows_docker_host(monkeypatch, host, base):
    monkeypatch.setenv("DOCKER_HOST", host)
    monkeypatch.delenv("DOCKER_TLS_VERIFY", raising=False)
    client = engine._async_client(timeout=None)
    assert str(client.base_url).rstrip("/") == base
    assert client.timeout.read is None  # a quiet job's follower waits as long as it stays quiet


def test_an_unknown_docker_host_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "ssh://somewhere")
    with pytest.raises(DlboxError, match="DOCKER_HOST"):
        engine._async_client(timeout=None)


# --- the streams' errors go through the one translator ------------------------------------------------
# A real HTTP server on a Unix socket stands in for the engine: the real SDK and httpx talk to it.


class StubEngine:
    """Answers each path (API version prefix dropped) with a fixed (status, JSON body); /version as an engine."""

    def __init__(self, path, answers: dict[str, tuple[int, object]]):
        import http.server
        import re
        import socketserver
        import threading

        routes = {"/version": (200, {"ApiVersion": "1.45", "Version": "27.0.0", "MinAPIVersion": "1.24"}), **answers}
        self.asked: list[str] = []
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the http.server name
                where = re.sub(r"^/v[0-9.]+", "", self.path.split("?")[0])
                stub.asked.append(where)
                status, body = routes.get(where, (404, {"message": f"page not found: {where}"}))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

            def get_request(self):
                request, _ = super().get_request()
                return request, ("stub", 0)  # BaseHTTPRequestHandler wants a (host, port)

        self.server = Server(str(path), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub_engine(tmp_path, monkeypatch):
    made = []

    def start(answers):
        sock = tmp_path / "engine.sock"
        monkeypatch.setenv("DOCKER_HOST", f"unix://{sock}")
        engine.client.cache_clear()
        made.append(StubEngine(sock, answers))
        return made[-1]

    yield start
    for stub in made:
        stub.close()
    engine.client.cache_clear()


async def read_all(container: str) -> bytes:
    return b"".join([chunk async for chunk in engine.stream_logs(container)])


@pytest.mark.parametrize("status, code", [(400, "invalid"), (404, "not_found"), (409, "engine_conflict"),
                                          (500, "engine_error")])
def test_the_async_log_stream_translates_the_engines_answers(stub_engine, status, code):
    stub_engine({"/containers/c1/json": (status, {"message": "the engine's\nwords"})})
    with pytest.raises(DlboxError) as caught:
        asyncio.run(read_all("c1"))
    assert caught.value.code == code
    assert caught.value.message == "cannot read the logs of container 'c1': the engine's words"


def test_the_async_log_stream_translates_a_refused_log_request(stub_engine):
    stub = stub_engine({"/containers/c1/json": (200, {"Config": {"Tty": True}}),
                        "/containers/c1/logs": (500, {"message": "log driver failed"})})
    with pytest.raises(DlboxError) as caught:
        asyncio.run(read_all("c1"))
    assert (caught.value.code, caught.value.message) == (
        "engine_error", "cannot read the logs of container 'c1': log driver failed")
    assert stub.asked == ["/containers/c1/json", "/containers/c1/logs"]


def test_the_async_log_stream_without_an_engine_is_engine_unavailable(no_engine):
    with pytest.raises(DlboxError) as caught:
        asyncio.run(read_all("c1"))
    assert caught.value.code == "engine_unavailable" and no_engine in caught.value.message


def test_the_event_stream_without_an_engine_says_why_and_retries(no_engine):
    events = engine.container_events(["dlbox.managed=true"], retry=0.01)
    try:
        first, second = next(events), next(events)
    finally:
        events.close()
    for gone in (first, second):  # it keeps trying
        assert gone["action"] == "disconnected" and gone["error"]["code"] == "engine_unavailable"
        assert no_engine in gone["error"]["message"]


def test_the_event_stream_retries_an_engine_failure_with_its_code(stub_engine):
    stub_engine({"/events": (500, {"message": "events backend down"})})
    events = engine.container_events(["dlbox.managed=true"], retry=0.01)
    try:
        gone = next(events)
    finally:
        events.close()
    assert gone == {"action": "disconnected", "id": None, "labels": {},
                    "error": {"code": "engine_error", "message": "the engine's event stream failed: events backend down"}}


def test_the_event_stream_raises_a_refusal_that_asking_again_cannot_change(stub_engine):
    stub = stub_engine({"/events": (400, {"message": "invalid filter 'label'"})})
    events = engine.container_events(["dlbox.managed=true"], retry=0.01)
    with pytest.raises(DlboxError) as caught:
        next(events)
    assert caught.value.code == "invalid" and caught.value.message.endswith(": invalid filter 'label'")
    assert stub.asked.count("/events") == 1


# --- inspect answers that are not one thing ----------------------------------------------------------


def test_a_name_the_engine_reads_as_its_list_route_is_no_such_thing(stub_engine):
    """The SDK puts "/" into the path as it is: /images///json, which dockerd answers as /images/json."""
    listing = [{"Id": "sha256:aa"}, {"Id": "sha256:bb"}]
    stub_engine({"/images///json": (200, listing), "/containers///json": (200, listing),
                 "/networks//": (200, listing), "/volumes/v1": (200, {"Name": "v1", "Labels": {"k": "v"}}),
                 "/containers/c1/json": (200, {"Id": "c1", "Config": {}})})
    with pytest.raises(DlboxError) as caught:
        engine.image_attrs("/")
    assert caught.value.code == "not_found"
    assert engine.container_attrs("/") is None and engine.network_attrs("/") is None
    assert engine.container_attrs("c1") == {"Id": "c1", "Config": {}}  # one thing stays itself
    assert engine.volume_labels("v1") == {"k": "v"} and engine.volume_exists("v1")
