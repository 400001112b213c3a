"""What several engine test modules share (a plain module, not tests): polling until something holds,
and a model server's client: one keep-alive REST connection, steady traffic, latency percentiles.

Imported as `from helpers import ...`: pytest puts tests/engine/ on sys.path for the modules in it."""

from __future__ import annotations

import http.client
import json
import statistics
import threading
import time


def until(predicate, timeout: float = 60.0, what: str = "condition", every: float = 0.2):
    """Call `predicate` every `every` s until it returns something true (returned); AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


class Rest:
    """One keep-alive connection, like a real client."""

    def __init__(self, url: str):
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)

    def __call__(self, method: str, path: str, body=None, raw: bytes | None = None) -> tuple[int, dict]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        try:
            self.conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
            response = self.conn.getresponse()
            text = response.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            raise
        return response.status, json.loads(text) if text[:1] in (b"{", b"[") else {"text": text.decode()}


class Traffic:
    """A client sending predicts of `instances` to `path` without pause; counts failures and keeps
    (time, latency, version) per request. `answers`: version -> the predictions it gives for `instances`."""

    def __init__(self, url: str, path: str, instances: list, answers: dict):
        self.rest, self.path, self.instances, self.answers = Rest(url), path, instances, answers
        self.stop, self.failed, self.samples = threading.Event(), [], []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            started = time.perf_counter()
            try:
                status, body = self.rest("POST", self.path, {"instances": self.instances})
            except (OSError, http.client.HTTPException) as exc:
                self.failed.append(repr(exc))
                continue
            took = time.perf_counter() - started
            version = next((v for v, y in self.answers.items() if body.get("predictions") == y), None)
            if status != 200 or version is None:
                self.failed.append((status, body))
            self.samples.append((time.monotonic(), took, version))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(10)


def ms(values) -> str:
    """Latencies (seconds) as "p50 .. ms, p99 .. ms, n=N"."""
    values = sorted(values)
    if not values:
        return "n=0"
    return (f"p50 {statistics.median(values) * 1000:.2f} ms, p99 {values[int(len(values) * 0.99)] * 1000:.2f} ms, "
            f"n={len(values)}")
