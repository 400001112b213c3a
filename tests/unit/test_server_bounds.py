"""The service's bounds without an engine: body sizes against a real uvicorn, request fields, pages.

The body-size attacks run against the real HTTP stack (uvicorn in its own process, whose memory
we read from /proc): a TestClient would hand the body over in memory and prove nothing.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dlbox.jobs import submit as job_submit
from dlbox.server import deps
from dlbox.server import errors as http_errors
from dlbox.server import accounts
from dlbox.server import app as service
from dlbox.store.db import Job, Store

SERVER = textwrap.dedent("""
    import sys, uvicorn
    from dlbox.jobs import runner as jobs
    from dlbox.server import app as service
    from dlbox.store.db import Store
    store = Store(sys.argv[1])
    loop = service.Loop(store, capacity=jobs.Capacity(cpus=2, memory=None, gpus=[]))
    app = service.create_app(store, loop, mode="server")
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
""")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """A real uvicorn serving create_app(mode="server"), in its own process: (port, pid)."""
    home = tmp_path_factory.mktemp("bounds-home")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {"DLBOX_HOME": str(home), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(service.__file__).parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", SERVER, f"sqlite:///{home}/t.db", str(port)], env=env,
                            stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
    yield port, proc.pid
    proc.terminate()
    proc.wait(10)


def attack(port: int, head: bytes, chunks, *, budget: float = 5.0) -> tuple[bytes, float]:
    """Send `head`, then the chunks until the server answers or cuts us off: (answer, seconds to it)."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=budget) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        answer = b""
        for chunk in chunks:
            try:
                answer += sock.recv(65536)
            except BlockingIOError:
                pass
            except OSError:
                break
            if answer:
                break
            try:
                sock.sendall(chunk)
            except BlockingIOError:  # the server reads no more: wait for its answer instead
                break
            except OSError:
                break
        sock.settimeout(budget)
        try:
            while not complete(answer) and (more := sock.recv(65536)):
                answer += more
        except (ConnectionResetError, TimeoutError):
            pass
        return answer, time.monotonic() - start


def complete(answer: bytes) -> bool:
    head, sep, body = answer.partition(b"\r\n\r\n")
    length = [line.split(b":")[1] for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:")]
    return bool(sep) and bool(length) and len(body) >= int(length[0])


def test_a_600_mib_anonymous_post_is_refused_before_it_is_read(live):
    port, pid = live
    before = rss_kib(pid)
    head = (b"POST /api/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (600 * 1024 * 1024))
    answer, took = attack(port, head, (b"x" * 65536 for _ in range(512)))  # 32 MiB of it, if it let us
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"code":"too_large"' in answer.replace(b" ", b"")
    assert took < 2
    assert rss_kib(pid) - before < 10 * 1024, "the server's memory grew"


def test_a_chunked_body_is_cut_off_at_the_limit(live):
    port, pid = live
    before = rss_kib(pid)
    head = (b"POST /api/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
    answer, took = attack(port, head, (chunk for _ in range(600 * 16)))  # 600 MiB if never cut off
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert took < 5
    assert rss_kib(pid) - before < 10 * 1024, "the server's memory grew"


def test_a_bad_content_length_is_refused(live):
    port, _ = live
    answer, _ = attack(port, b"POST /api/users HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", [])
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]


# --- bounded fields, through the app itself ------------------------------------------------------


@pytest.fixture()
def api(tmp_path, monkeypatch, app_of):
    from fastapi.testclient import TestClient

    monkeypatch.setenv("DLBOX_HOME", str(tmp_path))
    store = Store(f"sqlite:///{tmp_path}/t.db")
    app = app_of(store, mode="server")
    accounts.add_user(store, "ann", admin=True)
    token = accounts.create_token(store, "ann")[1]
    return TestClient(app, headers={"Authorization": f"Bearer {token}"}), store


def refused(response, field: str) -> str:
    assert response.status_code == 422, response.text
    message = response.json()["error"]["message"]
    assert message.startswith(field), message
    assert len(message) < 200, "the error echoes what was sent"
    return message


JOB = {"image": "img", "command": ["true"]}


@pytest.mark.parametrize("body, field", [
    (JOB | {"command": ["x"] * 5000}, "command"),
    (JOB | {"command": ["x" * 200_000]}, "command.0"),
    (JOB | {"command": ["x" * 100_000] * 3}, "command"),
    (JOB | {"params": {f"k{i}": "v" for i in range(300)}}, "params"),
    (JOB | {"params": {"k" * 10_000: "v"}}, "params.kkkk"),
    (JOB | {"params": {"k": "v" * 10_000}}, "params.k"),
    (JOB | {"params": {"": "v"}}, "params"),
    (JOB | {"mounts": ["/data:/data"] * 33}, "mounts"),
    (JOB | {"mounts": ["/" * 5000]}, "mounts.0"),
    (JOB | {"name": "n" * 129}, "name"),
    (JOB | {"git_diff": "d" * (job_submit.GIT_DIFF + 1)}, "git_diff"),
    (JOB | {"workdir": "/" * 5000}, "workdir"),
    (JOB | {"image": "i" * 300}, "image"),
])
def test_a_job_request_has_bounds_and_the_error_names_the_field(api, body, field):
    client, store = api
    refused(client.post("/api/jobs", json=body), field)
    assert store.jobs() == []


def test_a_git_diff_near_its_bound_passes_the_body_limit(api):
    client, _ = api
    answer = client.post("/api/jobs", json=JOB | {"git_diff": "d" * (job_submit.GIT_DIFF - 10), "name": "n" * 129})
    refused(answer, "name")  # read and checked field by field: not refused as too large


def test_other_routes_keep_the_small_limit(api):
    client, _ = api
    answer = client.post("/api/tokens", content=b'{"name": "' + b"x" * (2 * 1024 * 1024) + b'"}',
                         headers={"Content-Type": "application/json"})
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "too_large"


@pytest.mark.parametrize("path, body, field", [
    ("/api/users", {"name": "u" * 33}, "name"),
    ("/api/users", {"name": "u", "quota": {"workspaces": 10**30}}, "quota.workspaces"),
    ("/api/users", {"name": "u", "quota": {"cpus": 1e300}}, "quota.cpus"),
    ("/api/tokens", {"name": "t" * 65}, "name"),
    ("/api/tokens", {"expires": "9" * 17}, "expires"),
    ("/api/workspaces", {"name": "w", "mounts": ["/" * 5000]}, "mounts.0"),
    ("/api/workspaces", {"name": "w" * 42}, "name"),
])
def test_account_and_workspace_bodies_have_bounds(api, path, body, field):
    client, _ = api
    refused(client.post(path, json=body), field)


# --- pages ---------------------------------------------------------------------------------------


def walk(client, path: str, **params) -> list[list]:
    """Every page of a list, by its Link headers."""
    pages = []
    answer = client.get(path, params=params)
    while True:
        assert answer.status_code == 200, answer.text
        pages.append(answer.json())
        link = answer.headers.get("link")
        if not link:
            return pages
        assert link.endswith('>; rel="next"')
        answer = client.get(link[1:link.index(">")])


def add_jobs(store: Store, n: int, user: str = "ann") -> list[str]:
    now = time.time()
    ids = [f"{i:012x}" for i in range(n)]
    for i, job_id in enumerate(ids):
        store.add_job(Job(id=job_id, user=user, state="succeeded", command=["true"], params={}, env={},
                          image_ref="img", image_id="sha256:00", submitted_at=now - n + i))
    return ids  # oldest first


def test_jobs_and_runs_come_in_pages_that_cover_everything_once(api):
    client, store = api
    ids = add_jobs(store, 250)
    pages = walk(client, "/api/jobs", all=True)
    assert [len(p) for p in pages] == [100, 100, 50]
    assert [j["id"] for j in pages[0]] == ids[150:]  # the newest page first, each page oldest first
    assert sorted(j["id"] for p in pages for j in p) == ids
    runs = walk(client, "/api/runs", limit=100)
    assert [len(p) for p in runs] == [100, 100, 50]
    assert [r["id"] for p in runs for r in p] == ids[::-1]  # newest first throughout
    assert client.get("/api/jobs").json() == []  # none active
    assert len(client.get("/api/runs").json()) == 250  # `dlbox runs` keeps its default of 1000


def test_users_and_tokens_come_in_pages(api):
    client, store = api
    for i in range(120):
        accounts.add_user(store, f"u{i:03d}")
    for _ in range(104):
        accounts.create_token(store, "ann")
    users = walk(client, "/api/users", limit=50)
    assert [len(p) for p in users] == [50, 50, 21]
    assert [u["name"] for p in users for u in p] == sorted(u.name for u in store.users())
    tokens = walk(client, "/api/tokens")
    assert [len(p) for p in tokens] == [100, 5]
    assert len({t["id"] for p in tokens for t in p}) == 105


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "offset=-1", "limit=many"])
def test_a_page_out_of_bounds_is_refused_naming_the_parameter(api, query):
    client, _ = api
    for path in ("/api/jobs", "/api/users", "/api/tokens", "/api/workspaces"):
        answer = client.get(f"{path}?{query}")
        assert answer.status_code == 422, (path, answer.text)
        assert answer.json()["error"]["message"].startswith("query." + query.split("=")[0])


def test_the_dashboard_tables_have_a_next_page_link(api):
    client, store = api
    ids = add_jobs(store, 130)
    token = client.headers.pop("Authorization").removeprefix("Bearer ")
    client.cookies.set(deps.COOKIE, deps.new_session(client.app.state.ctx, token))
    for page in ("/jobs", "/runs"):
        first = client.get(page)
        assert first.status_code == 200
        assert 'href="?offset=100" rel="next"' in first.text
        assert ids[-1] in first.text and ids[0] not in first.text
        second = client.get(page, params={"offset": 100})
        assert ids[0] in second.text and ids[-1] not in second.text and 'rel="next"' not in second.text


def test_followers_are_capped_per_user_and_in_all_and_given_back_once():
    followers = deps.Followers(per_user=2, total=3)
    a1, a2 = followers.take("ann"), followers.take("ann")
    with pytest.raises(deps.TooMany, match="ann already follows 2"):
        followers.take("ann")
    b1 = followers.take("bob")
    with pytest.raises(deps.TooMany, match="already serves 3"):
        followers.take("cid")
    a1()
    a1()  # a second release of the same follower gives nothing back
    followers.take("cid")
    with pytest.raises(deps.TooMany):
        followers.take("ann")
    a2(), b1()
    assert followers.held == {"cid": 1}
    assert http_errors.STATUS["too_many_followers"] == 429


def test_workspaces_come_in_pages_and_each_page_is_cached_apart(api):
    from dlbox.store.db import Workspace

    client, store = api
    for i in range(130):
        store.put_workspace(Workspace(name=f"w{i:03d}", owner="ann", state="running", cpus=None, memory=None, gpus=0,
                                      info={"name": f"w{i:03d}"}, created_at=time.time(), updated_at=time.time()))
    pages = walk(client, "/api/workspaces")
    assert [len(p) for p in pages] == [100, 30]
    assert [w["name"] for p in pages for w in p] == [f"w{i:03d}" for i in range(130)]
    store.remove_workspace("w129")  # a change shows at once, on the page it is on
    assert [w["name"] for w in client.get("/api/workspaces", params={"offset": 100}).json()][-1] == "w128"


def test_both_doors_of_one_service_share_quota_locks_and_follower_caps(tmp_path):
    """A user could otherwise pass a quota twice, once through each door, or follow 2x the cap."""
    from dlbox.jobs import runner as jobs

    store = Store(f"sqlite:///{tmp_path}/t.db")
    loop = service.Loop(store, capacity=jobs.Capacity(cpus=2, memory=None, gpus=[]))
    local, team = service.doors(store, loop, server=True)
    assert local.state.ctx.mode == "local" and team.state.ctx.mode == "server"
    assert local.state.ctx.user_lock("ann") is team.state.ctx.user_lock("ann")
    release = team.state.ctx.followers.take("ann")
    assert local.state.ctx.followers.held == {"ann": 1}
    release()
    assert service.doors(store, loop, server=False)[1] is None


def test_a_body_key_with_a_line_break_stays_on_one_line_of_the_error():
    """The key is the client's text: unquoted, a newline in it would split (or forge) the error line."""
    message = http_errors.invalid_message([{"loc": ("body", "params", "a\nerror: forged"), "msg": "bad\nvalue"}])
    assert "\n" not in message and message.startswith("params.'a\\nerror: forged': bad value")


def test_the_jobs_page_shows_the_queue_while_the_engine_does_not_answer(api, no_engine):
    """The queue is the store's; only the image choices need the engine."""
    client, store = api
    ids = add_jobs(store, 3)
    token = client.headers.pop("Authorization").removeprefix("Bearer ")
    client.cookies.set(deps.COOKIE, deps.new_session(client.app.state.ctx, token))
    page = client.get("/jobs")
    assert page.status_code == 200 and ids[-1] in page.text
    assert f"images cannot be listed: no Docker Engine answers at {no_engine}" in page.text


def test_rotating_a_workspace_token_reaches_its_route_not_the_stop_start_action(tmp_path, no_engine):
    """POST /api/workspaces/NAME/token once matched /workspaces/{name}/{action} first: 'no action token'."""
    from fastapi.testclient import TestClient

    from dlbox.jobs import runner as jobs
    from dlbox.store.db import Workspace

    store = Store(f"sqlite:///{tmp_path}/t.db")
    now = time.time()
    store.put_workspace(Workspace(name="x", owner="local", state="running", cpus=None, memory=None, gpus=0,
                                  info={"name": "x"}, created_at=now, updated_at=now))
    client = TestClient(service.create_app(store, service.Loop(store, capacity=jobs.Capacity(cpus=2, memory=None,
                                                                                              gpus=[]))))
    answer = client.post("/api/workspaces/x/token")
    assert answer.json()["error"]["code"] == "engine_unavailable", answer.text  # it got as far as the engine
    assert client.post("/api/workspaces/x/pause").json()["error"]["message"].startswith("no action 'pause'")
