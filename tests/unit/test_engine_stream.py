"""engine.stream_logs' pure parts: Docker's multiplexed frames, and which engine address it uses."""

from __future__ import annotations

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
