"""The engine's container events, and the service's loop waking on them, against the real engine."""

from __future__ import annotations

import queue
import socket
import threading
import time
import uuid
from pathlib import Path

from dlbox.jobs import loop as job_loop
from dlbox.jobs import submit as job_submit
from dlbox.engine import api as engine
from dlbox.jobs import runner as jobs
from dlbox.server import app as service
from dlbox.jobs.state import JobState
from dlbox.store.db import Store

from helpers import until


class Proxy:
    """A Unix socket forwarding to the engine's; drop() cuts every connection, as an engine restart would,
    while `refuse` is set new connections are closed at once, as if the engine were down, and while
    `fail` is set requests whose first line holds it get the engine's 500 answer shape."""

    def __init__(self, path: Path, target: str = "/var/run/docker.sock"):
        self.path, self.target = str(path), target
        self.conns: list[socket.socket] = []
        self.requests = b""
        self.refuse = False
        self.fail: bytes | None = None
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(self.path)
        self.listener.listen()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            client, _ = self.listener.accept()
            if self.refuse:
                client.close()
                continue
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(self.target)
            self.conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, outgoing: bool) -> None:
        try:
            while data := source.recv(65536):
                if outgoing:
                    self.requests += data
                    if self.fail and self.fail in data.split(b"\r\n", 1)[0]:
                        body = b'{"message": "injected by the test proxy"}'
                        source.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
                                       b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                        continue
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def drop(self) -> None:
        self.requests = b""
        for conn in self.conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.conns = []


def next_event(events: queue.Queue, want, timeout: float = 20.0, seen: list | None = None) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        event = events.get(timeout=max(0.01, deadline - time.monotonic()))
        if seen is not None:
            seen.append(event)
        if want(event):
            return event


def test_container_events_yields_dies_and_survives_a_dropped_connection(small_image, docker_client, labelled,
                                                                        tmp_path, monkeypatch):
    mark = f"dlbox.test-events={uuid.uuid4().hex[:8]}"
    proxy = Proxy(tmp_path / "engine.sock")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{proxy.path}")
    events: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [events.put(e) for e in engine.container_events([mark], retry=0.2)],
                     daemon=True).start()
    run_labels = {**labelled, mark.split("=")[0]: mark.split("=")[1]}

    until(lambda: b"/events" in proxy.requests, 20, "the event stream to open", every=0.05)
    assert next_event(events, lambda e: True)["action"] == "connected"
    first = docker_client.containers.run(small_image["image"], ["true"], labels=run_labels, detach=True)
    assert next_event(events, lambda e: e["id"] == first.id)["action"] == "die"
    unlabelled = docker_client.containers.run(small_image["image"], ["true"], labels=labelled, detach=True)

    unlabelled.wait(timeout=20)

    proxy.drop()  # the engine goes away mid-stream
    seen: list[dict] = []
    next_event(events, lambda e: e["action"] == "reconnected", seen=seen)
    assert "disconnected" in [e["action"] for e in seen]
    second = docker_client.containers.run(small_image["image"], ["true"], labels=run_labels, detach=True)
    assert next_event(events, lambda e: e["id"] == second.id, seen=seen)["action"] == "die"  # after reconnecting
    assert unlabelled.id not in {e["id"] for e in seen}  # filtered by label
    for c in (first, unlabelled, second):
        c.remove(force=True)


def test_the_loop_finishes_a_job_when_its_container_dies_not_a_period_later(small_image, tmp_path, monkeypatch,
                                                                            run_id):
    monkeypatch.setenv("DLBOX_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DLBOX_LABELS", f"dlbox.test-run={run_id}")
    monkeypatch.setattr(job_loop, "LOOP_PERIOD", 600.0)  # only a wake can make it look again
    store = Store()
    loop = service.Loop(store, jobs.Capacity(cpus=2, memory=None, gpus=[]))
    loop.start()
    try:
        request = job_submit.JobRequest(image=small_image["image"], command=["sleep", "2"])
        job = job_submit.build_job(request, "local", loop.reconciler.capacity)
        store.add_job(job)
        loop.wake()  # as a submit does
        until(lambda: store.get_job(job.id).state == JobState.RUNNING.value, 20, "the job to run", every=0.05)
        ended = until(lambda: JobState(store.get_job(job.id).state).is_finished() and store.get_job(job.id), 15,
                      "the job to be finished", every=0.05)
        assert ended.state == JobState.SUCCEEDED.value
        assert ended.ended_at - ended.started_at < 2 + 3  # the die event woke the loop
    finally:
        loop.stop()


def test_health_says_whether_the_loop_follows_the_engine_events(tmp_path, monkeypatch, run_id):
    from fastapi.testclient import TestClient

    engine.client()  # the loop's own engine calls stay on the real engine (the client is made once)
    proxy = Proxy(tmp_path / "engine.sock")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{proxy.path}")  # the event stream's own connection goes here
    monkeypatch.setenv("DLBOX_HOME", str(tmp_path / "home"))
    store = Store()
    loop = service.Loop(store, jobs.Capacity(cpus=2, memory=None, gpus=[]))
    api = TestClient(service.create_app(store, loop))
    loop.start()
    try:
        def events():
            return api.get("/api/health").json()["engine_events"]

        until(lambda: events() == "following", 20, "the loop to follow the events", every=0.05)
        proxy.refuse = True  # the engine goes away and stays away
        proxy.drop()
        until(lambda: events() == "reconnecting", 20, "health to say the events are lost", every=0.05)
        proxy.refuse = False
        until(lambda: events() == "following", 60, "the loop to follow the events again", every=0.05)
    finally:
        loop.stop()
