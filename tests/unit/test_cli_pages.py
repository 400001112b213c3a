"""--limit/--offset on every list command: a bad value is one usage line naming the flag (exit 2, nothing
asked), and a good one pages the API's list. The paging is shown through the real CLI (a subprocess)
against a real team server (uvicorn on a TCP port, its own database, no engine)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from dlbox.server import accounts
from dlbox.store.db import Job, Store

LISTS = [["jobs"], ["runs"], ["ls"], ["images"], ["models"], ["models", "ls"], ["models", "history", "digits"],
         ["deployments", "ls"], ["pipeline", "ls"], ["users", "ls"], ["tokens", "ls"]]
BAD = [("--limit", "0"), ("--limit", "-3"), ("--limit", "100001"), ("--limit", "ten"), ("--offset", "-1"),
       ("--offset", "1.5"), ("--offset", "99999999999")]


def dlbox_main(monkeypatch, capsys, args: list[str]) -> tuple[int, str, str]:
    """The CLI's own entry (parsing and error reporting as `dlbox` does), in this process."""
    from dlbox.cli.main import main

    monkeypatch.setattr(sys, "argv", ["dlbox", *args])
    try:
        main()
        code = 0
    except SystemExit as ended:
        code = ended.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("command", LISTS, ids=" ".join)
def test_every_list_command_refuses_a_bad_page_on_one_line_naming_the_flag(command, monkeypatch, capsys):
    from dlbox.cli import client

    asked = []
    monkeypatch.setattr(client, "call", lambda *a, **k: asked.append(a))  # nothing may be asked
    for flag, value in BAD:
        code, out, err = dlbox_main(monkeypatch, capsys, [*command, flag, value])
        assert code == 2 and out == "", (command, flag, value)
        assert err.count("\n") == 1 and err.startswith("error: ") and f"'{flag}'" in err, err
        assert "Traceback" not in err
    assert asked == []


@pytest.mark.parametrize("command", LISTS, ids=" ".join)
def test_every_list_command_sends_its_page_to_the_api(command, monkeypatch, capsys):
    from dlbox.cli import client

    monkeypatch.setenv("DLBOX_URL", "http://dlbox.invalid:8700")  # every list goes through the API
    monkeypatch.setenv("DLBOX_TOKEN", "dlb_test")
    asked = []
    monkeypatch.setattr(client, "call", lambda method, path, **k: asked.append((method, path, k)) or [])
    code, _, _ = dlbox_main(monkeypatch, capsys, [*command, "--limit", "7", "--offset", "21", "--json"])
    assert code == 0
    [(method, _path, kwargs)] = asked
    assert method == "GET" and kwargs["params"]["limit"] == 7 and kwargs["params"]["offset"] == 21


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def team(tmp_path, app_of, no_engine):
    """A team server on a TCP port: an admin, 23 more users (24 in all) and 53 finished jobs."""
    import uvicorn

    store = Store(f"sqlite:///{tmp_path}/team.db")
    accounts.add_user(store, "boss", admin=True)
    token = accounts.create_token(store, "boss")[1]
    for i in range(23):
        accounts.add_user(store, f"u{i:02d}")
    now = time.time()
    jobs = [f"{i:012x}" for i in range(53)]
    for i, job_id in enumerate(jobs):
        store.add_job(Job(id=job_id, user=f"u{i % 23:02d}", state="succeeded", command=["true"], params={}, env={},
                          image_ref="img", image_id="sha256:00", submitted_at=now - 53 + i))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app_of(store, mode="server"), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    env = {**os.environ, "DLBOX_URL": f"http://127.0.0.1:{port}", "DLBOX_TOKEN": token}
    env.pop("DLBOX_HOME", None)
    yield env, jobs, sorted(u.name for u in store.users())
    server.should_exit = True
    thread.join(10)


def cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dlbox", *args], env=env, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


def pages(env: dict, command: list[str], limit: int) -> list[list[dict]]:
    """Every page of a list, walked with --offset until a short page."""
    got = []
    while True:
        done = cli(env, *command, "--limit", str(limit), "--offset", str(limit * len(got)), "--json")
        assert done.returncode == 0, done.stderr
        got.append(json.loads(done.stdout))
        if len(got[-1]) < limit:
            return got


def test_53_jobs_and_24_users_page_through_the_real_cli_and_server(team):
    env, jobs, users = team
    walked = pages(env, ["jobs", "--all"], 20)
    assert [len(p) for p in walked] == [20, 20, 13]
    assert [j["id"] for j in walked[0]] == jobs[33:]  # the newest 20 first, each page oldest first
    assert sorted(j["id"] for p in walked for j in p) == jobs  # every job once
    runs = pages(env, ["runs"], 25)
    assert [len(p) for p in runs] == [25, 25, 3] and [r["id"] for p in runs for r in p] == jobs[::-1]
    walked = pages(env, ["users", "ls"], 10)
    assert [len(p) for p in walked] == [10, 10, 4] and [u["name"] for p in walked for u in p] == users

    text = cli(env, "users", "ls", "--limit", "10", "--offset", "10")
    assert text.returncode == 0 and text.stdout.count("\n") == 11  # the header and ten rows
    assert text.stderr == "(rows 11-20 shown; --offset 20 for the next page)\n"
    last = cli(env, "users", "ls", "--limit", "10", "--offset", "20")
    assert last.stdout.count("\n") == 5 and last.stderr == ""
    assert json.loads(cli(env, "jobs", "--all", "--offset", "53", "--json").stdout) == []
    refused = cli(env, "jobs", "--limit", "1001")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "'--limit'" in refused.stderr
