"""Attack: a job of one user opens another user's workspace ports, or the dlbox server's port.

One `dlbox server` on 0.0.0.0 (its own home) with real users alice and bob. Alice has a real
workspace with listeners on 8888 (Jupyter's port) and 2222 (sshd's); alice's own job reaches
them, bob's job does not; no job reaches the server's port, which the host itself reaches on the
same address. No container of this run is on the default bridge (CIS 5.30).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from urllib.parse import urlparse

import httpx
import pytest

PORTS = (8888, 2222)

LISTENER = """
import socket, threading
def serve(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(16)
    while True:
        conn, _ = s.accept(); conn.sendall(b"hello"); conn.close()
for port in (8888, 2222):
    threading.Thread(target=serve, args=(port,)).start()
"""

# Tries each target; prints one JSON object: "host:port" -> "open" or the error's type.
PROBE = """
import json, socket, struct, sys
targets = json.loads(sys.argv[1])
with open("/proc/net/route") as f:  # the gateway: the host, as this container sees it
    gateway = next(socket.inet_ntoa(struct.pack("<L", int(l.split()[2], 16)))
                   for l in f.read().splitlines()[1:] if l.split()[1] == "00000000")
result = {"gateway": gateway}
for host, port in targets:
    host = gateway if host == "GATEWAY" else host
    try:
        with socket.create_connection((host, port), timeout=3):
            result[f"{host}:{port}"] = "open"
    except OSError as exc:
        result[f"{host}:{port}"] = type(exc).__name__
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def team(test_env, tmp_path_factory, start_server):
    env = {**test_env, "DLBOX_HOME": str(tmp_path_factory.mktemp("net-home"))}
    with start_server(env, "--host", "0.0.0.0") as url:
        tokens = {}
        for name in ("alice", "bob"):
            out = subprocess.run([sys.executable, "-m", "dlbox", "users", "add", name, "--json"], env=env,
                                 capture_output=True, text=True, check=True)
            tokens[name] = json.loads(out.stdout)["token"]
        yield {"url": url, "port": urlparse(url).port, "home": env["DLBOX_HOME"],
               "as": lambda user: httpx.Client(base_url=url, timeout=120,
                                               headers={"Authorization": f"Bearer {tokens[user]}"})}


@pytest.fixture(scope="module")
def alice_workspace(team, small_image, run_id, docker_client):
    """Alice's workspace container, listening on 8888 and 2222 on all its addresses."""
    alice = team["as"]("alice")
    made = alice.post("/api/workspaces", json={"name": f"t{run_id}-net-a", "image": small_image["image"]})
    assert made.status_code == 201, made.text
    container = docker_client.containers.get(f"dlbox-ws-t{run_id}-net-a")
    container.exec_run(["python", "-c", LISTENER], detach=True)
    deadline = time.monotonic() + 30
    while container.exec_run(["python", "-c", "import socket; socket.create_connection(('127.0.0.1', 2222), 1)"]
                             ).exit_code != 0:
        assert time.monotonic() < deadline, "the listener in alice's workspace did not start"
        time.sleep(0.3)
    container.reload()
    yield container
    alice.delete(f"/api/workspaces/t{run_id}-net-a", params={"purge_data": True})


def probe(team, user: str, image: str, targets: list) -> dict:
    """Run PROBE as `user`'s job; its result."""
    client = team["as"](user)
    job = client.post("/api/jobs", json={"image": image, "command": ["python", "-c", PROBE, json.dumps(targets)]})
    assert job.status_code == 201, job.text
    job_id = job.json()["id"]
    deadline = time.monotonic() + 120
    while (state := client.get(f"/api/jobs/{job_id}").json()["state"]) not in ("succeeded", "failed"):
        assert time.monotonic() < deadline, f"probe job {job_id} is still {state}"
        time.sleep(0.3)
    logs = client.get(f"/api/jobs/{job_id}/logs").text
    assert state == "succeeded", logs
    return json.loads(logs.strip().splitlines()[-1])


def test_another_users_job_cannot_reach_a_workspace_nor_the_server(team, alice_workspace, small_image):
    (network, settings), = alice_workspace.attrs["NetworkSettings"]["Networks"].items()
    ip = settings["IPAddress"]
    assert ip and network != "bridge"
    server = ["GATEWAY", team["port"]]
    targets = [[ip, 8888], [ip, 2222], [alice_workspace.name, 8888], server]

    own = probe(team, "alice", small_image["image"], targets)  # the control: the same connects, as alice
    assert own[f"{ip}:8888"] == own[f"{ip}:2222"] == own[f"{alice_workspace.name}:8888"] == "open", own

    attack = probe(team, "bob", small_image["image"], targets)
    assert attack[f"{ip}:8888"] in ("TimeoutError", "timeout"), attack  # Docker drops between bridges
    assert attack[f"{ip}:2222"] in ("TimeoutError", "timeout"), attack
    assert attack[f"{alice_workspace.name}:8888"] == "gaierror", attack  # bob's network has no such name

    # the server listens on every address, the gateways too: the host reaches it there ...
    for result in (own, attack):
        with socket.create_connection((result["gateway"], team["port"]), timeout=3):
            pass
    # ... and no container does, alice's or bob's (the firewall resets it at once)
    assert own[f"{own['gateway']}:{team['port']}"] == "ConnectionRefusedError", own
    assert attack[f"{attack['gateway']}:{team['port']}"] == "ConnectionRefusedError", attack
    assert own["gateway"] != attack["gateway"]  # two networks


def test_no_container_is_on_the_default_bridge(team, alice_workspace, small_image, docker_client, run_id):
    bob = team["as"]("bob")
    job = bob.post("/api/jobs", json={"image": small_image["image"], "command": ["sleep", "300"]}).json()
    try:
        deadline = time.monotonic() + 60
        while bob.get(f"/api/jobs/{job['id']}").json()["state"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.3)
        containers = docker_client.containers.list(all=True, filters={"label": f"dlbox.test-run={run_id}"})
        kinds = {c.labels.get("dlbox.kind") for c in containers}
        assert {"workspace", "job"} <= kinds, kinds
        for container in containers:
            networks = container.attrs["NetworkSettings"]["Networks"]
            assert "bridge" not in networks, (container.name, networks)
        job_container = docker_client.containers.get(f"dlbox-job-{job['id']}")
        (network, _), = job_container.attrs["NetworkSettings"]["Networks"].items()
        labels = docker_client.networks.get(network).attrs["Labels"]
        assert labels["dlbox.owner"] == "bob" and labels["dlbox.test-run"] == run_id
        assert labels["dlbox.home"] == job_container.labels["dlbox.home"]
    finally:
        bob.post(f"/api/jobs/{job['id']}/cancel")


def test_a_second_server_on_the_same_port_does_not_open_the_first(team, test_env, tmp_path, small_image):
    env = {**test_env, "DLBOX_HOME": str(tmp_path / "second-home")}
    second = subprocess.run([sys.executable, "-m", "dlbox", "server", "--host", "0.0.0.0", "--port", str(team["port"])],
                            env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert second.returncode != 0  # the port is taken; it added its own rule and removed only that
    server = ["GATEWAY", team["port"]]
    attack = probe(team, "bob", small_image["image"], [server])
    assert attack[f"{attack['gateway']}:{team['port']}"] == "ConnectionRefusedError", attack


def test_the_admin_can_let_containers_reach_a_server(team, test_env, tmp_path, start_server, small_image):
    (tmp_path / "open-home").mkdir()
    env = {**test_env, "DLBOX_HOME": str(tmp_path / "open-home")}
    with start_server(env, "--host", "0.0.0.0", "--allow-containers") as url:
        port = urlparse(url).port
        reached = probe(team, "bob", small_image["image"], [["GATEWAY", port], ["GATEWAY", team["port"]]])
    assert reached[f"{reached['gateway']}:{port}"] == "open", reached
    assert reached[f"{reached['gateway']}:{team['port']}"] == "ConnectionRefusedError", reached


def test_a_workspace_from_before_leaves_the_default_bridge_on_start(team, alice_workspace, docker_client):
    """Last in the module: it stops alice's workspace (and its listeners)."""
    (own, _), = alice_workspace.attrs["NetworkSettings"]["Networks"].items()
    alice = team["as"]("alice")
    name = alice_workspace.name.removeprefix("dlbox-ws-")
    assert alice.post(f"/api/workspaces/{name}/stop").status_code == 200
    docker_client.networks.get(own).disconnect(alice_workspace.name)  # as dlbox made workspaces before
    docker_client.networks.get("bridge").connect(alice_workspace.name)
    assert alice.post(f"/api/workspaces/{name}/start").json()["state"] == "running"
    alice_workspace.reload()
    assert list(alice_workspace.attrs["NetworkSettings"]["Networks"]) == [own]


def test_removing_a_user_removes_their_network(team, test_env, small_image, docker_client, monkeypatch):
    """Docker's address pools hold about 30 networks: a removed user's must not keep one."""
    from dlbox import config
    from dlbox.containers import networks

    env = {**test_env, "DLBOX_HOME": team["home"]}
    out = subprocess.run([sys.executable, "-m", "dlbox", "users", "add", "carol", "--json"], env=env,
                         capture_output=True, text=True, check=True)
    carol = httpx.Client(base_url=team["url"], timeout=120,
                         headers={"Authorization": f"Bearer {json.loads(out.stdout)['token']}"})
    job = carol.post("/api/jobs", json={"image": small_image["image"], "command": ["true"]})
    assert job.status_code == 201, job.text
    deadline = time.monotonic() + 120
    while carol.get(f"/api/jobs/{job.json()['id']}").json()["state"] != "succeeded":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    monkeypatch.setenv("DLBOX_HOME", team["home"])
    name = networks.for_owner("carol", config.home_id()).name
    assert docker_client.networks.list(names=[name]), "carol's job ran on a network of her own"
    removed = subprocess.run([sys.executable, "-m", "dlbox", "users", "rm", "carol"], env=env,
                             capture_output=True, text=True)
    assert removed.returncode == 0, removed.stderr
    assert docker_client.networks.list(names=[name]) == []
