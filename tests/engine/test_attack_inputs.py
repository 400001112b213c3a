"""Attacks through what users hand the server: mount sources, names, kept volumes, the Host they use.

One `dlbox server` (its own home, --mount-root, --workspace-host 0.0.0.0) serves the module; admin,
alice and bob are real users made with `dlbox users add`. Each test performs the attack against the
real engine and checks that the damage did not happen.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

SECRET = "HOST-SECRET-7f3a"


@dataclass
class Server:
    url: str
    env: dict
    tokens: dict[str, str]
    root: Path

    def as_(self, user: str, headers: dict | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120,
                            headers={"Authorization": f"Bearer {self.tokens[user]}", **(headers or {})})

    def users_add(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "dlbox", "users", *args], env=self.env, capture_output=True,
                              text=True, timeout=60, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def server(test_env, tmp_path_factory, start_server):
    home = tmp_path_factory.mktemp("inputs-home")
    root = tmp_path_factory.mktemp("inputs-root")  # root's, 0700: only root can change what is below
    for user in ("alice", "bob"):
        (root / user).mkdir(mode=0o755)
    env = {**test_env, "DLBOX_HOME": str(home), "DLBOX_MOUNT_ROOTS": str(root)}
    with start_server(env, "--workspace-host", "0.0.0.0") as url:
        made = Server(url=url, env=env, tokens={}, root=root)
        for name, flags in (("admin", ["--admin"]), ("alice", []), ("bob", [])):
            out = made.users_add("add", name, *flags, "--json")
            assert out.returncode == 0, out.stderr
            made.tokens[name] = json.loads(out.stdout)["token"]
        yield made


@pytest.fixture(scope="module")
def host_side(tmp_path_factory) -> Path:
    """Stands for the host's / : a folder outside every mount root with a marker no job may read."""
    place = tmp_path_factory.mktemp("host-side")
    (place / "marker").write_text(SECRET + "\n")
    return place


def wait_job(client: httpx.Client, job_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "cancelled", "lost"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.3)


def job_body(image: str, mount: str, **kw) -> dict:
    return {"image": image, "command": ["cat", "/data/marker"], "mounts": [mount], "cpus": 0.5, **kw}


# --- names -------------------------------------------------------------------------------------------


def test_users_add_refuses_reserved_and_retired_names(server):
    for name in ("root", "local"):
        refused = server.users_add("add", name)
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.strip() == f"error: NAME: '{name}' is reserved (local, root are); choose another"
    assert server.users_add("add", "eve").returncode == 0
    assert server.users_add("rm", "eve").returncode == 0
    again = server.users_add("add", "eve")
    assert again.returncode == 1 and "retired" in again.stderr and "Traceback" not in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    listed = json.loads(server.users_add("ls", "--json").stdout)
    assert "eve" not in [u["name"] for u in listed]


# --- mounts ------------------------------------------------------------------------------------------


def test_a_source_below_a_user_writable_folder_is_refused(server, small_image, docker_client, run_id):
    """A workspace (uid 1000) with alice/shared mounted rw can make shared/sub, and can later swap it."""
    shared = server.root / "alice" / "shared"
    (shared / "sub").mkdir(parents=True)
    (shared / "marker").write_text("shared data\n")
    os.chown(shared, 1000, 1000)
    alice = server.as_("alice")
    refused = alice.post("/api/jobs", json=job_body(small_image["image"], f"{shared}/sub:/data:ro"))
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "mount_refused"
    assert "could be swapped" in refused.json()["error"]["message"]
    name = f"t{run_id}-subws"
    ws = alice.post("/api/workspaces", json={"name": name, "image": small_image["image"],
                                             "mounts": [f"{shared}/sub:/data"]})
    assert ws.status_code == 403 and ws.json()["error"]["code"] == "mount_refused"
    assert docker_client.containers.list(all=True, filters={"name": f"dlbox-ws-{name}"}) == []
    assert docker_client.volumes.list(filters={"name": f"dlbox-ws-{name}-data"}) == []
    ok = alice.post("/api/jobs", json=job_body(small_image["image"], f"{shared}:/data:ro"))
    assert ok.status_code == 201, ok.text  # the user-writable folder itself: its parent is root's alone
    assert wait_job(alice, ok.json()["id"])["state"] == "succeeded"
    assert alice.get(f"/api/jobs/{ok.json()['id']}/logs").text == "shared data\n"


def test_a_symlink_swapped_in_while_jobs_are_submitted_never_reaches_one(server, small_image, host_side):
    """A thread flips race/x between a real folder and a symlink to the host side while jobs mounting it are
    submitted; none may ever show the host side's marker."""
    race = server.root / "alice" / "race"
    (race / "x").mkdir(parents=True)
    (race / "x" / "marker").write_text("user data\n")
    os.chown(race, 1000, 1000)  # alice's workspace could do all of this
    stop = threading.Event()

    def flip():
        while not stop.is_set():
            os.rename(race / "x", race / "x.real")
            os.symlink(host_side, race / "x")
            time.sleep(0.002)
            os.unlink(race / "x")
            os.rename(race / "x.real", race / "x")
            time.sleep(0.002)

    flipper = threading.Thread(target=flip, daemon=True)
    flipper.start()
    alice = server.as_("alice")
    try:  # flipping goes on until every accepted job has ended: the window is at its start, not its submit
        answers = [alice.post("/api/jobs", json=job_body(small_image["image"], f"{race}/x:/data:ro"))
                   for _ in range(40)]
        started = [a.json()["id"] for a in answers if a.status_code == 201]
        ended = [wait_job(alice, job_id) for job_id in started]
    finally:
        stop.set()
        flipper.join()
    outputs = [alice.get(f"/api/jobs/{job['id']}/logs").text for job in ended]
    assert not any(SECRET in out for out in outputs), [job["state"] for job in ended]
    assert started == [], "a source whose parent a user can write must be refused outright"
    assert {(a.status_code, a.json()["error"]["code"]) for a in answers} == {(403, "mount_refused")}


def test_a_folder_opened_up_while_a_job_waits_is_refused_at_start(server, small_image, host_side):
    """Checked fine at submit; then a parent becomes user-writable (say an admin's chmod) while the job is
    queued: the start checks again and refuses, before the engine mounts anything."""
    parent = server.root / "alice" / "later"
    (parent / "x").mkdir(parents=True)
    (parent / "x" / "marker").write_text("user data\n")
    alice = server.as_("alice")
    blocker = alice.post("/api/jobs", json={"image": small_image["image"], "cpus": 2,
                                            "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 120 & wait"]})
    assert blocker.status_code == 201, blocker.text
    deadline = time.monotonic() + 60
    while alice.get(f"/api/jobs/{blocker.json()['id']}").json()["state"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    queued = alice.post("/api/jobs", json=job_body(small_image["image"], f"{parent}/x:/data:ro"))
    assert queued.status_code == 201, queued.text
    assert alice.get(f"/api/jobs/{queued.json()['id']}").json()["state"] == "queued"
    os.chmod(parent, 0o777)  # now anyone could swap x for a symlink to the host side
    alice.post(f"/api/jobs/{blocker.json()['id']}/cancel")
    job = wait_job(alice, queued.json()["id"])
    assert job["state"] == "failed" and "could be swapped" in job["reason"], job
    assert SECRET not in alice.get(f"/api/jobs/{job['id']}/logs").text


def test_bob_cannot_mount_below_alices_root(server, small_image):
    (server.root / "alice" / "data").mkdir()
    (server.root / "alice" / "data" / "marker").write_text("alice's\n")
    bob = server.as_("bob")
    for source in (server.root / "alice" / "data", server.root / "alice", server.root):
        refused = bob.post("/api/jobs", json=job_body(small_image["image"], f"{source}:/data:ro"))
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"] == {
            "code": "mount_refused", "message": f"--mount: {source} is outside your mount roots: {server.root}/bob"}
    admin = server.as_("admin")  # admins see every user's roots
    ok = admin.post("/api/jobs", json=job_body(small_image["image"], f"{server.root}/alice/data:/data:ro"))
    assert ok.status_code == 201 and wait_job(admin, ok.json()["id"])["state"] == "succeeded"


# --- volumes -----------------------------------------------------------------------------------------


def test_a_kept_volume_is_adopted_only_by_its_owner(server, small_image, docker_client, labelled, run_id, dlbox):
    bob, alice = server.as_("bob"), server.as_("alice")
    unowned = f"t{run_id}-unowned"
    docker_client.volumes.create(f"dlbox-ws-{unowned}-data", labels=labelled)  # as a kept volume of old
    alices = f"t{run_id}-alices"
    docker_client.volumes.create(f"dlbox-ws-{alices}-data", labels={**labelled, "dlbox.owner": "alice"})
    try:
        for name, whose in ((unowned, "records no owner"), (alices, "belongs to another user")):
            taken = bob.post("/api/workspaces", json={"name": name, "image": small_image["image"]})
            assert taken.status_code == 409, taken.text
            assert taken.json()["error"]["message"].startswith(f"workspace name {name} is taken: its kept volume "
                                                               f"dlbox-ws-{name}-data {whose}")
            assert docker_client.containers.list(all=True, filters={"name": f"dlbox-ws-{name}"}) == []
        mine = alice.post("/api/workspaces", json={"name": alices, "image": small_image["image"]})
        assert mine.status_code == 201, mine.text
        assert alice.delete(f"/api/workspaces/{alices}", params={"purge_data": True}).status_code == 200
    finally:
        for name in (unowned, alices):
            for volume in docker_client.volumes.list(filters={"name": f"dlbox-ws-{name}-data"}):
                volume.remove(force=True)
    local = f"t{run_id}-localvol"  # the local CLI's volumes record their owner too
    dlbox.json("up", local, "--image", small_image["image"])
    try:
        labels = docker_client.volumes.get(f"dlbox-ws-{local}-data").attrs["Labels"]
        assert labels["dlbox.owner"] == "local"
    finally:
        dlbox("rm", local, "--purge-data")


# --- URLs --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def jupyter_image(dlbox, tmp_path_factory, run_id) -> dict:
    project = tmp_path_factory.mktemp("inputs-jupyter")
    (project / "dlbox.yaml").write_text(f"name: t{run_id}-jup\nbase:\n  debian: bullseye\n"
                                        "pip:\n  - jupyter_server==2.14.2\nservices: [jupyter]\n")
    return dlbox.json("build", cwd=project)


def machine_address() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("10.255.255.255", 9))  # no packet is sent: this only picks the outgoing interface
        address = probe.getsockname()[0]
    if address.startswith("127."):
        pytest.fail("this machine has no address but loopback to reach a workspace by", pytrace=False)
    return address


def test_a_remote_user_gets_a_jupyter_url_that_reaches_the_workspace(server, jupyter_image, run_id):
    """Alice reached the server as http://<machine address>:PORT; her Jupyter URL names that address, never
    127.0.0.1, and answers there (the workspace publishes on 0.0.0.0)."""
    address = machine_address()
    port = server.url.rsplit(":", 1)[1]
    alice = server.as_("alice", headers={"Host": f"{address}:{port}"})
    name = f"t{run_id}-remote"
    made = alice.post("/api/workspaces", json={"name": name, "image": jupyter_image["image"]})
    assert made.status_code == 201, made.text
    try:
        url = made.json()["jupyter"]["url"]
        assert url.startswith(f"http://{address}:") and "127.0.0.1" not in url
        with urllib.request.urlopen(url.replace("/?token=", "/api/status?token="), timeout=10) as answer:
            assert answer.status == 200
        listed = {w["name"]: w for w in alice.get("/api/workspaces").json()}
        assert listed[name]["jupyter"]["url"].startswith(f"http://{address}:")
        env = {**server.env, "DLBOX_URL": server.url, "DLBOX_TOKEN": server.tokens["alice"]}
        env.pop("DLBOX_HOME")
        ls = subprocess.run([sys.executable, "-m", "dlbox", "ls", "--json"], env=env, capture_output=True, text=True,
                            timeout=60, check=True)
        shown = {w["name"]: w for w in json.loads(ls.stdout)}[name]["jupyter"]["url"]
        assert shown.startswith(f"http://{address}:")
        other = alice.get(f"/api/workspaces/{name}", headers={"Host": "elsewhere.example"})
        assert other.json()["jupyter"]["url"].startswith(f"http://{address}:")  # fixed when it was made
    finally:
        alice.delete(f"/api/workspaces/{name}", params={"purge_data": True})
