"""Workspaces against the real engine, with real clients: urllib for Jupyter, OpenSSH for SSH."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest


def http_status(url: str, headers: dict | None = None) -> int:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def base_url(ws: dict) -> str:
    return f"http://127.0.0.1:{ws['jupyter']['port']}"


@pytest.fixture(scope="module")
def ssh_key(tmp_path_factory) -> Path:
    key = tmp_path_factory.mktemp("keys") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


def ssh(key: Path, ws: dict, *command: str, user: str | None = None, extra: list[str] = (), timeout: float = 60):
    return subprocess.run(
        ["ssh", "-i", str(key), "-p", str(ws["ssh"]["port"]), "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
         "-o", "ConnectTimeout=10", *extra, f"{user or ws['ssh']['user']}@127.0.0.1", *command],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def ws(dlbox, tf_image, ssh_key, run_id, tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    data.chmod(0o755)  # readable by the workspace user, as a shared data directory would be
    (data / "input.csv").write_text("x,y\n1,2\n")
    name = f"t{run_id}-main"
    up = dlbox.json("up", name, "--image", tf_image["image"], "--ssh", "--ssh-key", f"{ssh_key}.pub",
                    "--mount", f"{data}:/data:ro", "--memory", "1g", "--cpus", "1", "--shm-size", "256m")
    yield up
    dlbox("rm", name, "--purge-data", check=False)


def test_up_json_shape(ws, tf_image):
    assert ws["state"] == "running"
    assert ws["image_id"] == tf_image["id"]
    assert set(ws) >= {"name", "state", "image", "image_id", "container_id", "jupyter", "ssh", "mounts", "resources"}
    assert set(ws["jupyter"]) == {"url", "token", "port"}
    assert ws["jupyter"]["url"].endswith(f"?token={ws['jupyter']['token']}")
    assert ws["ssh"] == {"host": "127.0.0.1", "port": ws["ssh"]["port"], "user": "dl"}
    assert ws["mounts"][0]["target"] == "/data" and ws["mounts"][0]["read_only"] is True
    assert ws["resources"]["memory"] == "1g" and ws["resources"]["cpus"] == 1 and ws["resources"]["shm_size"] == "256m"


def test_token_is_strong_and_required(ws):
    import base64

    token = ws["jupyter"]["token"]
    assert len(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))) * 8 >= 192
    url = base_url(ws)
    assert http_status(f"{url}/api/status?token={token}") == 200
    assert http_status(f"{url}/api/status", {"Authorization": f"token {token}"}) == 200
    assert http_status(f"{url}/api/status") == 403
    assert http_status(f"{url}/api/status?token=wrong{token[5:]}") == 403
    assert http_status(f"{url}/api/contents") == 403
    assert http_status(f"{url}/tree") in (302, 403)  # to the login page, never the content


def test_token_never_appears_in_ls_logs_or_engine_config(dlbox, ws, docker_client):
    token = ws["jupyter"]["token"]
    assert token not in dlbox("ls", "--json").stdout
    assert token not in dlbox("ls").stdout
    assert token not in dlbox("logs", ws["name"]).stdout
    attrs = docker_client.api.inspect_container(ws["container_id"])
    assert token not in json.dumps(attrs["Config"]) and token not in json.dumps(attrs["HostConfig"])


def test_secrets_are_stored_owner_only(ws, test_env):
    directory = Path(test_env["DLBOX_HOME"]) / "workspaces" / ws["name"]
    assert directory.stat().st_mode & 0o777 == 0o700
    for path in directory.iterdir():
        assert path.stat().st_mode & 0o077 == 0, path


def test_hardened_defaults_in_the_engine(ws, docker_client):
    attrs = docker_client.api.inspect_container(ws["container_id"])
    host = attrs["HostConfig"]
    assert attrs["Config"]["User"] == "1000:1000"  # numeric uid:gid: never the root group
    assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd")
    assert "no-new-privileges" in host["SecurityOpt"]
    assert host["Privileged"] is False
    assert host["Memory"] == 1024**3 and host["MemorySwap"] == 1024**3
    assert host["NanoCpus"] == 10**9 and host["PidsLimit"] == 4096 and host["ShmSize"] == 256 * 1024**2
    for bindings in host["PortBindings"].values():
        assert all(b["HostIp"] == "127.0.0.1" for b in bindings)
    assert not any("docker.sock" in (m.get("Source") or "") for m in attrs["Mounts"])
    # and inside: not root, no capabilities, no way up
    result = docker_client.containers.get(ws["container_id"]).exec_run(
        ["sh", "-c", "id -u; grep CapEff /proc/self/status; grep NoNewPrivs /proc/self/status"])
    lines = result.output.decode().split()
    assert lines[0] == "1000" and "0000000000000000" in lines and lines[-1] == "1"


def test_ssh_key_login_runs_tensorflow(ws, ssh_key):
    result = ssh(ssh_key, ws, "python", "-c", "'import tensorflow as tf; print(tf.__version__)'", timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("2.9.3")


def test_ssh_refuses_root_passwords_and_other_keys(ws, ssh_key, tmp_path):
    root = ssh(ssh_key, ws, "true", user="root")
    assert root.returncode == 255 and "Permission denied" in root.stderr
    password = ssh(ssh_key, ws, "true", extra=["-o", "PreferredAuthentications=password,keyboard-interactive",
                                                "-o", "PubkeyAuthentication=no"])
    assert password.returncode == 255 and "Permission denied (publickey)" in password.stderr
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    stranger = ssh(other, ws, "true")
    assert stranger.returncode == 255 and "Permission denied" in stranger.stderr


def test_nohup_training_survives_the_ssh_client_leaving(ws, ssh_key, dlbox):
    script = ("nohup python -c 'import time; time.sleep(6); open(\"/workspace/trained\", \"w\").write(\"done\")' "
              "> /workspace/train.log 2>&1 &")
    started = ssh(ssh_key, ws, script)
    assert started.returncode == 0, started.stderr
    time.sleep(9)  # the client is long gone
    assert dlbox("exec", ws["name"], "--", "cat", "/workspace/trained").stdout == "done"


def test_ssh_config_lets_plain_ssh_connect_with_a_pinned_host_key(dlbox, ws, ssh_key, tmp_path):
    info = dlbox.json("ssh-config")
    host = f"dlbox-{ws['name']}"
    assert host in info["hosts"]
    config = Path(info["config"]).read_text()
    assert "StrictHostKeyChecking yes" in config
    # the key of this test is not where ssh looks by default: add it, as a user's own config would
    wrapper = tmp_path / "config"
    wrapper.write_text(f"Host {host}\n    IdentityFile {ssh_key}\n\nInclude {info['config']}\n")
    result = subprocess.run(["ssh", "-F", str(wrapper), "-o", "BatchMode=yes", host, "echo", "hello"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hello"


def test_dlbox_ssh_and_open(dlbox, ws, ssh_key):
    result = dlbox("ssh", ws["name"], "echo", "over-ssh", timeout=60)
    assert result.stdout.strip() == "over-ssh"
    url = dlbox("open", ws["name"]).stdout.strip()
    token = dlbox("token", ws["name"]).stdout.strip()
    assert url == f"{base_url(ws)}/?token={token}"
    assert http_status(f"{base_url(ws)}/api/status?token={token}") == 200


def test_exec_returns_the_command_exit_code(dlbox, ws):
    assert dlbox("exec", ws["name"], "--", "python", "-c", "print(6 * 7)").stdout.strip() == "42"
    failed = dlbox("exec", ws["name"], "--", "sh", "-c", "exit 3", check=False)
    assert failed.returncode == 3


def test_mounts_are_there_and_read_only(dlbox, ws):
    assert dlbox("exec", ws["name"], "--", "cat", "/data/input.csv").stdout == "x,y\n1,2\n"
    denied = dlbox("exec", ws["name"], "--", "touch", "/data/new", check=False)
    assert denied.returncode != 0


def test_rotate_token_refuses_the_old_one(dlbox, ws):
    old = ws["jupyter"]["token"]
    rotated = dlbox.json("token", ws["name"], "--rotate")
    new = rotated["token"]
    assert new != old and rotated["rotated"] is True
    url = base_url(ws)
    assert http_status(f"{url}/api/status?token={new}") == 200
    assert http_status(f"{url}/api/status?token={old}") == 403
    assert dlbox("token", ws["name"]).stdout.strip() == new


def test_stop_then_start_keeps_url_and_token(dlbox, ws):
    token = dlbox("token", ws["name"]).stdout.strip()
    stopped = dlbox.json("stop", ws["name"])
    assert stopped["state"] == "exited"
    started = dlbox.json("start", ws["name"])
    assert started["jupyter"]["port"] == ws["jupyter"]["port"] and started["ssh"]["port"] == ws["ssh"]["port"]
    assert started["jupyter"]["url"] == f"{base_url(ws)}/"  # the token is kept but not printed here
    assert token not in dlbox("start", ws["name"]).stdout
    assert dlbox("token", ws["name"]).stdout.strip() == token
    assert http_status(f"{base_url(ws)}/api/status?token={token}") == 200


def test_memory_limit_kills_inside_and_is_reported(dlbox, ws, tf_image, run_id):
    other = dlbox.json("up", f"t{run_id}-bystander", "--image", tf_image["image"], "--no-jupyter")
    try:
        hog = dlbox("exec", ws["name"], "--", "python", "-c", "x = bytearray(1536 * 1024 * 1024); print('survived')",
                    check=False)
        assert hog.returncode == 137 and "survived" not in hog.stdout
        rows = {r["name"]: r for r in dlbox.json("ls")}
        assert rows[ws["name"]]["state"] == "running"  # the workspace lives on, only the hog died
        assert rows[ws["name"]]["oom"]["kills"] >= 1
        assert rows[ws["name"]]["oom"]["last"] is not None
        assert rows[other["name"]]["state"] == "running" and rows[other["name"]]["oom"]["kills"] == 0
    finally:
        dlbox("rm", other["name"], "--purge-data", check=False)


def test_data_survives_rm_and_up_until_purged(dlbox, tf_image, run_id, docker_client):
    name = f"t{run_id}-data"
    dlbox.json("up", name, "--image", tf_image["image"], "--no-jupyter")
    dlbox("exec", name, "--", "sh", "-c", "echo precious > /workspace/notes.txt")
    assert "kept in volume" in dlbox("rm", name).stdout
    again = dlbox.json("up", name, "--image", tf_image["image"], "--no-jupyter")
    assert dlbox("exec", name, "--", "cat", "/workspace/notes.txt").stdout == "precious\n"
    dlbox("rm", name, "--purge-data")
    with pytest.raises(Exception):
        docker_client.volumes.get(f"dlbox-ws-{name}-data")
    assert again["state"] == "running"


def test_start_refuses_a_mount_whose_source_is_gone(dlbox, tf_image, run_id, tmp_path):
    """The engine would make an empty root-owned folder in its place and start as if all were well."""
    name = f"t{run_id}-gone"
    data = tmp_path / "data"
    data.mkdir()
    dlbox.json("up", name, "--image", tf_image["image"], "--no-jupyter", "--mount", f"{data}:/data:ro")
    try:
        dlbox("stop", name)
        data.rmdir()
        result = dlbox("start", name, check=False)
        assert result.returncode == 1 and "no longer exists" in result.stderr and result.stderr.count("\n") == 1
        assert not data.exists()
        assert {r["name"]: r for r in dlbox.json("ls")}[name]["state"] != "running"
    finally:
        dlbox("rm", name, "--purge-data", check=False)


def test_gpu_holders_of_other_users_are_not_named(tf_image, docker_client, labelled, run_id):
    """What a gpu_busy message may say to whom (the GPU itself cannot be had here: no nvidia runtime)."""
    from dlbox.engine import gpus
    from dlbox.workspaces import manage as workspaces

    holders = [({"dlbox.workspace": f"t{run_id}-bobs-secret-project", "dlbox.owner": "bob", "dlbox.gpus": "0"}),
               ({"dlbox.job": f"t{run_id}job", "dlbox.owner": "bob", "dlbox.gpus": "1"}),
               ({"dlbox.workspace": f"t{run_id}-alices", "dlbox.owner": "alice", "dlbox.gpus": "2"})]
    made = [docker_client.containers.run(tf_image["image"], ["sleep", "60"], labels={**labelled, **labels},
                                         detach=True) for labels in holders]
    try:
        ours = lambda held: {k: v for k, v in held.items() if run_id in k or "another" in k}  # noqa: E731
        as_alice = ours(workspaces._held_gpus("alice"))
        assert as_alice[f"t{run_id}-alices"] == ["2"]
        assert "0" in as_alice["another user's workspace"] and "1" in as_alice["another user's job"]
        assert not any("bob" in k for k in as_alice)
        as_owner = ours(workspaces._held_gpus())  # the machine's owner (local mode) sees every name
        assert as_owner[f"t{run_id}-bobs-secret-project"] == ["0"] and as_owner[f"t{run_id}job"] == ["1"]
        with pytest.raises(gpus.DlboxError, match="another user's workspace") as busy:
            gpus.allocate(["0"], available=["0", "1", "2"], held=as_alice)
        assert "bobs-secret-project" not in busy.value.message
    finally:
        for container in made:
            container.remove(force=True)


def test_ten_parallel_ups_get_distinct_ports(dlbox, tf_image, run_id):
    names = [f"t{run_id}-p{i}" for i in range(10)]
    try:
        with concurrent.futures.ThreadPoolExecutor(10) as pool:
            results = list(pool.map(lambda n: dlbox("up", n, "--image", tf_image["image"], "--json", check=False),
                                    names))
        assert all(r.returncode == 0 for r in results), [r.stderr for r in results if r.returncode]
        ports = [json.loads(r.stdout)["jupyter"]["port"] for r in results]
        assert len(set(ports)) == 10
        for r in results:
            up = json.loads(r.stdout)
            assert http_status(f"{base_url(up)}/api/status?token={up['jupyter']['token']}") == 200
    finally:
        with concurrent.futures.ThreadPoolExecutor(10) as pool:
            list(pool.map(lambda n: dlbox("rm", n, "--purge-data", check=False), names))


def leftovers(docker_client, name: str) -> list:
    found = docker_client.containers.list(all=True, filters={"name": f"dlbox-ws-{name}"})
    return found + [v for v in docker_client.volumes.list() if v.name in (f"dlbox-ws-{name}-data", f"dlbox-ws-{name}-home")]


def test_bad_requests_fail_clearly_and_leave_nothing(dlbox, tf_image, run_id, docker_client, ws, tmp_path):
    name = f"t{run_id}-bad"
    image = ["--image", tf_image["image"]]
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    cases = [
        (["up", ws["name"], *image], 1, f"workspace {ws['name']} already exists"),
        (["up", name, *image, "--jupyter-port", str(busy.getsockname()[1])], 1,
         f"--jupyter-port: 127.0.0.1:{busy.getsockname()[1]} is already in use"),
        (["up", name, *image, "--mount", f"{tmp_path}/nope:/data"], 2, "--mount: source"),
        (["up", name, *image, "--mount", "/var/run/docker.sock:/sock"], 2, "may not be mounted"),
        (["up", name, *image, "--memory", "100000g"], 2, "--memory: 100000g is more than this machine has"),
        (["up", name, *image, "--cpus", "512"], 2, "--cpus: 512 is more than this machine has"),
        (["up", name, *image, "--memory", "lots"], 2, "--memory: 'lots' is not a size"),
        (["up", name, *image, "--gpus", "all"], 1, "--gpus: the engine has no GPU runtime"),
        (["up", name, *image, "--ssh", "--ssh-key", f"{tmp_path}/none.pub"], 2, "--ssh-key:"),
        (["up", "Bad Name", *image], 2, "NAME: 'Bad Name' must be lowercase"),
        (["up", name, "--image", "dlbox/none:1"], 1, "no image 'dlbox/none:1'"),
    ]
    try:
        for args, code, message in cases:
            result = dlbox(*args, check=False)
            assert result.returncode == code, (args, result.stderr)
            assert message in result.stderr, (args, result.stderr)
            assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
            assert leftovers(docker_client, name) == [], args
    finally:
        busy.close()


def test_unknown_workspace_is_a_clear_error(dlbox):
    for command in (["stop", "nope"], ["start", "nope"], ["rm", "nope"], ["logs", "nope"], ["token", "nope"]):
        result = dlbox(*command, check=False)
        assert result.returncode == 1
        assert result.stderr.strip() == "error: no workspace 'nope' (see `dlbox ls`)"
