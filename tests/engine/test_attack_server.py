"""Attacks on the team server's bounds, against a real `dlbox server` and the real engine.

Log followers: 100 clients follow a quiet running job; the server must keep answering (a
follower holds no worker thread), refuse followers past the per-user cap, and hand every
follower the rest of the output when the job prints and ends.
"""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

USERS = 5  # the per-user cap is 20 followers: five users follow 20 each
FOLLOWERS = 100


@pytest.fixture(scope="module")
def team(test_env, tmp_path_factory, start_server):
    home = tmp_path_factory.mktemp("bounds-home")
    env = {**test_env, "DLBOX_HOME": str(home)}
    with start_server(env) as url:
        tokens = []
        for i in range(USERS):  # admins: they all see the one job
            out = subprocess.run([sys.executable, "-m", "dlbox", "users", "add", f"follower{i}", "--admin", "--json"],
                                 env=env, capture_output=True, text=True, check=True)
            tokens.append(json.loads(out.stdout)["token"])
        yield {"url": url, "tokens": tokens, "home": home}


def rss_kib(pid: int) -> int:
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmRSS:"))
    return int(line.split()[1])


def test_a_600_mib_anonymous_post_to_the_server_is_refused_cheaply(team):
    pid = int((team["home"] / "service" / "pid").read_text())
    before = rss_kib(pid)
    parts = urlsplit(team["url"])
    start = time.monotonic()
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(b"POST /api/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % (600 * 1024 * 1024))
        try:
            for _ in range(64):  # 4 MiB of the body, as far as the server lets us
                sock.sendall(b"{" * 65536)
        except OSError:
            pass
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert time.monotonic() - start < 5
    assert rss_kib(pid) - before < 10 * 1024


def test_100_followers_of_a_quiet_job_hold_no_threads_and_get_the_rest(team, small_image):
    url, tokens = team["url"], team["tokens"]
    owner = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {tokens[0]}"}, timeout=120)
    submitted = owner.post("/api/jobs", json={"image": small_image["image"], "cpus": 0.5, "command": [
        "sh", "-c", "echo first; sleep 40; echo second; echo third"]})
    assert submitted.status_code == 201, submitted.text
    job = submitted.json()["id"]
    deadline = time.monotonic() + 120
    while b"first" not in owner.get(f"/api/jobs/{job}/logs").content:
        assert time.monotonic() < deadline, owner.get(f"/api/jobs/{job}").json()
        time.sleep(0.3)

    async def scenario() -> tuple[list[bytes], list[float], httpx.Response]:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        clients = [httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {t}"}, limits=limits,
                                     timeout=httpx.Timeout(10, read=120)) for t in tokens]
        got = [b""] * FOLLOWERS

        async def follow(i: int) -> None:
            async with clients[i % USERS].stream("GET", f"/api/jobs/{job}/logs", params={"follow": "true"}) as r:
                assert r.status_code == 200, await r.aread()
                async for chunk in r.aiter_bytes():
                    got[i] += chunk

        async def until_first(tasks: list, what: list[int]) -> None:
            until = time.monotonic() + 20
            while not all(b"first" in got[i] for i in what):
                assert time.monotonic() < until, f"{sum(b'first' in got[i] for i in what)} followers got the first line"
                assert not any(t.done() for t in tasks), [t.exception() for t in tasks if t.done()][:1]
                await asyncio.sleep(0.1)

        # followers who go away give their place back: user 0 fills its cap, leaves, and fills it again below
        leaving = [asyncio.create_task(follow(i)) for i in range(0, FOLLOWERS, USERS)]
        await until_first(leaving, list(range(0, FOLLOWERS, USERS)))
        for t in leaving:
            t.cancel()
        await asyncio.gather(*leaving, return_exceptions=True)
        got[:] = [b""] * FOLLOWERS
        await asyncio.sleep(1)

        tasks = [asyncio.create_task(follow(i)) for i in range(FOLLOWERS)]
        await until_first(tasks, list(range(FOLLOWERS)))
        one_more = await clients[0].get(f"/api/jobs/{job}/logs", params={"follow": "true"}, timeout=10)
        took = []
        for _ in range(9):
            start = time.perf_counter()
            health = await clients[1].get("/api/health")
            took.append(time.perf_counter() - start)
            assert health.status_code == 200
            await asyncio.sleep(0.2)
        assert not any(t.done() for t in tasks), "a follower ended while the job was quiet"
        await asyncio.wait_for(asyncio.gather(*tasks), 120)
        for c in clients:
            await c.aclose()
        return got, took, one_more

    got, took, one_more = asyncio.run(scenario())
    assert one_more.status_code == 429, one_more.text
    assert one_more.json()["error"]["code"] == "too_many_followers"
    print(f"/api/health with {FOLLOWERS} followers: median {statistics.median(took) * 1000:.1f} ms, "
          f"max {max(took) * 1000:.1f} ms")
    assert statistics.median(took) < 0.1, took
    assert all(g == b"first\nsecond\nthird\n" for g in got), {g for g in got}
    assert owner.get(f"/api/jobs/{job}").json()["state"] == "succeeded"
    # a finished job: its saved log, from the file
    assert owner.get(f"/api/jobs/{job}/logs", params={"follow": True}).content == b"first\nsecond\nthird\n"
