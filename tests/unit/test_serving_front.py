"""The front of a deployment's replicas (dlbox_serving.py --front's REST half), for real: the program's own
Pool and handler on a local port, in front of small HTTP servers standing in for replicas (each answers
/healthz and a predict with its own name). No engine: what is tested is the front's routing, failover and
generation switch, not the model server."""

from __future__ import annotations

import http.client
import importlib.util
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

import pytest


@pytest.fixture(scope="module")
def program():
    path = resources.files("dlbox.serving").joinpath("files/dlbox_serving.py")
    spec = importlib.util.spec_from_file_location("dlbox_serving_front_test", str(path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Replica:
    """A stand-in replica on a free port; `ready` says what /healthz answers."""

    def __init__(self, name: str, ready: bool = True):
        self.name, self.ready = name, ready
        replica = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                self.reply(200 if replica.ready else 503, {"status": "ok" if replica.ready else "loading"})

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.reply(200, {"predictions": [[1.0]], "replica": replica.name})

            def reply(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def entry(self) -> dict:
        return {"host": "127.0.0.1", "rest": self.port, "grpc": 0}

    def kill(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def front(program):
    pool = program.Pool()
    server = ThreadingHTTPServer(("127.0.0.1", 0), program.make_front_handler(pool))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stop = threading.Event()

    def probe():
        while not stop.wait(0.05):
            pool.check()

    threading.Thread(target=probe, daemon=True).start()
    yield pool, server.server_address[1]
    stop.set()
    server.shutdown()
    server.server_close()


def call(port: int, conn: list) -> tuple[int, dict]:
    if not conn:
        conn.append(http.client.HTTPConnection("127.0.0.1", port, timeout=10))
    try:
        conn[0].request("POST", "/v1/models/m:predict", body=b'{"instances": [[1]]}',
                        headers={"Content-Type": "application/json"})
        response = conn[0].getresponse()
        return response.status, json.loads(response.read())
    except (OSError, http.client.HTTPException):
        conn.pop().close()
        raise


def wait(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    raise AssertionError("timed out")


def test_requests_spread_over_replicas_and_a_dead_one_loses_none(front):
    pool, port = front
    a, b = Replica("a"), Replica("b")
    pool.apply({"generation": 1, "backends": [a.entry(), b.entry()]})
    wait(lambda: pool.status()[1]["ready"] == 2)
    seen, failed, stop = {}, [], threading.Event()

    def traffic():
        conn = []
        while not stop.is_set():
            try:
                status, body = call(port, conn)
            except (OSError, http.client.HTTPException) as exc:
                failed.append(repr(exc))
                continue
            if status != 200:
                failed.append((status, body))
            else:
                seen[body["replica"]] = seen.get(body["replica"], 0) + 1

    threads = [threading.Thread(target=traffic) for _ in range(3)]
    for t in threads:
        t.start()
    wait(lambda: seen.get("a", 0) > 20 and seen.get("b", 0) > 20)
    a.kill()  # connections to it break mid-traffic: each request goes on to b
    before = seen.get("b", 0)
    wait(lambda: seen.get("b", 0) > before + 100)
    stop.set()
    for t in threads:
        t.join(10)
    assert failed == []
    assert pool.status()[1]["ready"] == 1
    b.kill()
    status, body = call(port, [])
    assert status == 503 and "error" in body  # no replica at all: TF Serving's unavailable, said in one line


def test_a_new_generation_gets_traffic_only_once_all_of_it_is_ready(front):
    pool, port = front
    old, new1, new2 = Replica("old"), Replica("new1", ready=False), Replica("new2", ready=False)
    pool.apply({"generation": 1, "backends": [old.entry()]})
    wait(lambda: pool.status()[1]["ready"] == 1)
    pool.apply({"generation": 2, "backends": [new1.entry(), new2.entry()],
                "previous": {"generation": 1, "backends": [old.entry()]}})
    new1.ready = True  # half of the new generation ready: still the old one
    time.sleep(0.3)
    assert {call(port, [])[1]["replica"] for _ in range(10)} == {"old"}
    state = pool.status()[1]
    assert (state["generation"], state["pending"]) == (1, 2)
    new2.ready = True
    wait(lambda: pool.status()[1]["generation"] == 2)
    assert {call(port, [])[1]["replica"] for _ in range(10)} <= {"new1", "new2"}
    assert pool.status()[1]["draining"] == 0 and pool.status()[1]["pending"] is None
    status, body = http_get(port, "/healthz")
    assert status == 200 and body["generation"] == 2 and body["replicas"] == 2
    for r in (old, new1, new2):
        r.kill()


def test_a_front_started_mid_move_serves_the_previous_generation_meanwhile(program):
    pool = program.Pool()
    old, new = Replica("old"), Replica("new", ready=False)
    pool.apply({"generation": 3, "backends": [new.entry()], "previous": {"generation": 2, "backends": [old.entry()]}})
    assert pool.status()[1]["generation"] == 2 and pool.status()[1]["pending"] == 3
    chosen = pool.pick([])
    assert chosen.rest == old.port
    pool.done(chosen)
    for r in (old, new):
        r.kill()


def http_get(port: int, path: str) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_the_backends_file_is_followed_and_a_malformed_one_is_kept_out(program, tmp_path):
    pool, wake = program.Pool(), threading.Event()
    a = Replica("a")
    path = tmp_path / "backends.json"
    path.write_text(json.dumps({"generation": 1, "backends": [a.entry()]}))
    threading.Thread(target=program.watch, args=(pool, str(path), wake), daemon=True).start()
    wait(lambda: pool.status()[1]["ready"] == 1)
    path.write_text('{"backends": []}')  # no generation: the last good file stays
    wake.set()
    time.sleep(0.5)
    assert pool.status()[1]["generation"] == 1 and pool.status()[1]["ready"] == 1
    a.kill()

