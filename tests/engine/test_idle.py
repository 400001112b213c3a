"""A lean Jupyter start and idle stop, against the real engine with real clients (urllib and a
websocket for Jupyter's kernels, OpenSSH for SSH)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

IDLE = 20  # seconds: the workspaces' --idle-stop here
# `import jupyter_server.serverapp` against a bare `python -c pass`, in the same container, in CPU
# seconds of each child (wait4's rusage, interleaved, the least of each): a ratio, which a loaded
# machine moves far less than wall time. Measured here: 21-24x lean (0.41 s), 88-95x with jsonschema
# 4.25's rfc3987-syntax back (1.5-1.6 s CPU; 1.7-4.2 s wall).
IMPORT_BUDGET = 45.0
RATIO = """\
import os, sys
def cpu(code):
    pid = os.spawnv(os.P_NOWAIT, sys.executable, [sys.executable, "-c", code])
    usage = os.wait4(pid, 0)[2]
    return usage.ru_utime + usage.ru_stime
bare, heavy = [], []
for _ in range(4):
    heavy.append(cpu("import jupyter_server.serverapp"))
    bare += [cpu("pass") for _ in range(5)]
print(min(heavy), min(bare))
"""


def import_ratio(docker_client, image: str, setup: str = "", volumes: dict | None = None) -> tuple[float, float]:
    out = docker_client.containers.run(image, ["sh", "-c", f"{setup}python -c '{RATIO}'"], entrypoint=[],
                                       network_mode="none", remove=True, volumes=volumes or {})
    heavy, bare = map(float, out.decode().split()[-2:])
    return heavy, bare


def test_jupyter_import_stays_within_its_budget_and_the_old_pins_break_it(tf_image, docker_client, tmp_path):
    heavy, bare = import_ratio(docker_client, tf_image["id"])
    print(f"lean: import jupyter_server.serverapp {heavy:.3f} s CPU, python -c pass {bare:.3f} s, {heavy / bare:.1f}x")
    assert heavy / bare <= IMPORT_BUDGET, f"{heavy:.2f} s is {heavy / bare:.0f}x a bare start (budget {IMPORT_BUDGET}x)"
    # put rfc3987-syntax back as jsonschema 4.25 brings it, offline: wheels fetched on the host, mounted read-only
    wheels = tmp_path / "wheels"
    got = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels),
                          "rfc3987-syntax==1.1.0", "lark==1.3.1", "jsonschema==4.25.1"], capture_output=True, text=True)
    if got.returncode != 0:
        pytest.skip(f"no package index to fetch rfc3987-syntax from: {got.stderr.strip()[-200:]}")
    heavy, bare = import_ratio(docker_client, tf_image["id"], "pip install -q --no-index --no-deps /wheels/*.whl && ",
                               {str(wheels): {"bind": "/wheels", "mode": "ro"}})
    print(f"with rfc3987-syntax: {heavy:.3f} s CPU, {bare:.3f} s, {heavy / bare:.1f}x")
    assert heavy / bare > IMPORT_BUDGET, "the budget no longer catches rfc3987-syntax's grammar build"


# --- idle stop ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def key(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("idle-keys") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def ssh_args(key: Path, ws: dict) -> list[str]:
    return ["ssh", "-i", str(key), "-p", str(ws["ssh"]["port"]), "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            "-o", "ConnectTimeout=10", f"{ws['ssh']['user']}@127.0.0.1"]


def api(ws: dict, path: str, method: str = "GET", body: dict | None = None):
    request = urllib.request.Request(f"http://127.0.0.1:{ws['jupyter']['port']}{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"token {ws['jupyter']['token']}"})
    with urllib.request.urlopen(request, timeout=20) as response:
        return json.loads(response.read())


def run_in_kernel(ws: dict, code: str) -> None:
    """Start a kernel and have it execute `code` (through Jupyter's websocket, as a notebook does);
    returns once the kernel says it is busy, and closes the socket."""
    from websockets.sync.client import connect

    kernel = api(ws, "/api/kernels", "POST", {"name": "python3"})
    url = f"ws://127.0.0.1:{ws['jupyter']['port']}/api/kernels/{kernel['id']}/channels"
    with connect(url, additional_headers={"Authorization": f"token {ws['jupyter']['token']}"},
                 open_timeout=30) as sock:
        msg_id, session = uuid.uuid4().hex, uuid.uuid4().hex
        sock.send(json.dumps({
            "header": {"msg_id": msg_id, "username": "test", "session": session, "msg_type": "execute_request",
                       "version": "5.3", "date": ""},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True}}))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            msg = json.loads(sock.recv(timeout=60))
            if (msg.get("msg_type") == "status" and msg["content"].get("execution_state") == "busy"
                    and msg["parent_header"].get("msg_id") == msg_id):
                return
    raise AssertionError("the kernel never said it was busy")


def state(docker_client, ws: dict) -> str:
    return docker_client.api.inspect_container(ws["container_id"])["State"]["Status"]


@pytest.fixture(scope="module")
def idle_set(dlbox, tf_image, key, run_id, docker_client):
    """Four workspaces with --idle-stop 20s, up at once: a kernel sleeping in a cell (busy, no CPU), a
    nohup'd training started over SSH (CPU, nothing else), an open SSH session, and a quiet one."""
    names = {kind: f"t{run_id}-idle-{kind}" for kind in ("kernel", "nohup", "session", "quiet")}
    made, sessions = {}, []
    train = ("nohup python -c 'import time\nt = time.time()\nwhile time.time() - t < 600: pass' "
             "> /workspace/train.log 2>&1 &")
    try:
        for kind, name in names.items():  # each one's activity starts as soon as it is up
            started = time.monotonic()
            ws = made[kind] = dlbox.json("up", name, "--image", tf_image["image"], "--ssh", "--ssh-key",
                                         f"{key}.pub", "--idle-stop", f"{IDLE}s", "--memory", "1g", "--cpus", "1")
            ws["up_at"] = time.monotonic()
            ws["up_s"] = ws["up_at"] - started
            if kind == "kernel":
                run_in_kernel(ws, "import time\ntime.sleep(600)")  # busy without using CPU
            elif kind == "nohup":
                done = subprocess.run(ssh_args(key, ws) + [train], capture_output=True, text=True, timeout=60,
                                      stdin=subprocess.DEVNULL)
                assert done.returncode == 0, done.stderr  # the client is gone; only the training runs on
            elif kind == "session":
                sessions.append(subprocess.Popen(ssh_args(key, ws) + ["sleep", "600"], stdin=subprocess.DEVNULL,
                                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            else:
                dlbox("exec", name, "--", "sh", "-c", "echo kept > /workspace/data.txt")
        yield made
    finally:
        for proc in sessions:
            proc.kill()
        for name in names.values():
            dlbox("rm", name, "--purge-data", check=False)


def test_a_quiet_workspace_is_stopped_on_time_and_comes_back_the_same(idle_set, dlbox, docker_client):
    ws = idle_set["quiet"]
    while time.monotonic() < ws["up_at"] + IDLE - 2:
        assert state(docker_client, ws) == "running", "stopped before its idle time"
        time.sleep(1)
    deadline = ws["up_at"] + IDLE + 40  # the service's start, a sample every 4 s, a pass every 3 s, a stop
    while state(docker_client, ws) == "running":
        assert time.monotonic() < deadline, "a quiet workspace was not stopped"
        time.sleep(1)
    print(f"quiet workspace stopped {time.monotonic() - ws['up_at']:.1f} s after up (idle stop {IDLE} s)")
    inspected = docker_client.api.inspect_container(ws["container_id"])  # stopped, never removed
    assert inspected["State"]["Status"] == "exited" and inspected["HostConfig"]["RestartPolicy"]["Name"] == "no"
    row = next(r for r in dlbox.json("ls") if r["name"] == ws["name"])
    assert row["stopped"]["reason"] == "idle" and row["stopped"]["text"].startswith("stopped: idle for ")
    assert f"stopped: idle for {row['stopped']['text'].split()[-1]}" in dlbox("ls").stdout
    back = dlbox.json("start", ws["name"])
    assert back["jupyter"]["url"] == ws["jupyter"]["url"].split("?")[0] and back["stopped"] is None
    assert dlbox("token", ws["name"]).stdout.strip() == ws["jupyter"]["token"]
    assert api(ws, "/api/status")["started"]  # the same token opens the same URL
    assert dlbox("exec", ws["name"], "--", "cat", "/workspace/data.txt").stdout.strip() == "kept"


@pytest.mark.parametrize("kind", ["kernel", "nohup", "session"])
def test_busy_workspaces_stay_up_past_their_idle_time(idle_set, docker_client, kind):
    ws = idle_set[kind]
    end = max(idle_set["quiet"]["up_at"], ws["up_at"]) + IDLE + 30  # past the time the quiet one stopped
    while time.monotonic() < end:
        assert state(docker_client, ws) == "running", f"the {kind} workspace was stopped while busy"
        time.sleep(2)
