"""A workspace's read-only root (CIS 5.13): the image cannot be changed from inside, while the
user's own state (HOME: pip installs, shell and Jupyter files) lives in a kept volume that
survives stop/start and a recreation, and `dlbox verify --workspace` names what was installed."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import tarfile
import urllib.request
import zipfile

import pytest

WHEEL = "tinypkg-0.1-py3-none-any.whl"


def tiny_wheel() -> bytes:
    """A pure-Python wheel made here: the machine has no index to fetch one from."""
    files = {"tinypkg/__init__.py": b"VERSION = '0.1'\n",
             "tinypkg-0.1.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tinypkg\nVersion: 0.1\n",
             "tinypkg-0.1.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                            b"Tag: py3-none-any\n"}
    record = "".join(f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
                     f"{len(data)}\n" for path, data in files.items()) + "tinypkg-0.1.dist-info/RECORD,,\n"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as wheel:
        for path, data in {**files, "tinypkg-0.1.dist-info/RECORD": record.encode()}.items():
            wheel.writestr(path, data)
    return out.getvalue()


@pytest.fixture(scope="module")
def ssh_key(tmp_path_factory):
    key = tmp_path_factory.mktemp("rootfs-key") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


@pytest.fixture(scope="module")
def ws(dlbox, jupyter_image, run_id, ssh_key, docker_client):
    name = f"t{run_id}-rofs"
    up = dlbox.json("up", name, "--image", jupyter_image["image"], "--ssh", "--ssh-key", f"{ssh_key}.pub")
    yield up
    dlbox("rm", name, "--purge-data", check=False)


def sh(dlbox, ws: dict, script: str, check: bool = True) -> subprocess.CompletedProcess:
    return dlbox("exec", ws["name"], "--", "sh", "-c", script, check=check)


def test_the_image_cannot_be_written_but_the_users_places_can(dlbox, ws, docker_client):
    for path in ("/usr/evil", "/etc/x", "/opt/venv/evil"):
        result = sh(dlbox, ws, f"touch {path}", check=False)
        assert result.returncode != 0 and "Read-only file system" in result.stderr, (path, result.stderr)
    # the service files' volume is root's: the user can read the scripts, not change them
    result = sh(dlbox, ws, "touch /etc/dlbox-ws/x; echo x >> /etc/dlbox-ws/start.sh", check=False)
    assert result.returncode != 0 and "Permission denied" in result.stderr
    assert sh(dlbox, ws, "touch /workspace/ok $HOME/ok /tmp/ok && echo $HOME").stdout.strip().startswith("/home/")
    attrs = docker_client.api.inspect_container(ws["container_id"])
    assert attrs["HostConfig"]["ReadonlyRootfs"] is True
    ca = next((e.split("=", 1)[1] for e in attrs["Config"]["Env"] if e.startswith("SSL_CERT_FILE=")), None)
    if ca:  # the image's CA bundle under /etc/dlbox is not hidden by the service files' volume
        sh(dlbox, ws, f"test -r {ca}")


def test_a_users_pip_install_survives_and_is_reported(dlbox, ws, docker_client, ssh_key):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = tiny_wheel()
        info = tarfile.TarInfo(WHEEL)
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
    docker_client.api.put_archive(ws["container_id"], "/workspace", buf.getvalue())  # a volume: allowed
    assert dlbox.json("verify", "--workspace", ws["name"])["ok"] is True  # nothing installed yet
    installed = dlbox("exec", ws["name"], "--", "pip", "install", "--no-index", f"/workspace/{WHEEL}", check=False)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    where = dlbox("exec", ws["name"], "--", "python", "-c", "import tinypkg; print(tinypkg.__file__)").stdout
    assert where.startswith("/home/") and "/.local/" in where

    dlbox("stop", ws["name"])
    dlbox("start", ws["name"])
    dlbox("exec", ws["name"], "--", "python", "-c", "import tinypkg")
    result = dlbox("verify", "--workspace", ws["name"], "--json", check=False)
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["workspace"] == ws["name"]
    assert [(p["name"], p["version"], p["locked"]) for p in report["packages"]] == [("tinypkg", "0.1", None)]
    assert "tinypkg==0.1" in dlbox("verify", "--workspace", ws["name"], check=False).stdout
    # SSH sessions get the same environment (sshd's SetEnv), so the user's packages are found there too
    login = subprocess.run(
        ["ssh", "-i", str(ssh_key), "-p", str(ws["ssh"]["port"]), "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
         f"{ws['ssh']['user']}@127.0.0.1", "python -c 'import tinypkg; print(tinypkg.VERSION)'"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert login.stdout.strip() == "0.1", login.stderr
    # token rotation writes into the service files' volume of a running read-only container
    rotated = dlbox.json("token", ws["name"], "--rotate")
    port = ws["jupyter"]["port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={rotated['token']}", timeout=10) as r:
        assert r.status == 200


def test_home_is_kept_by_rm_and_purged_with_the_data(dlbox, ws, jupyter_image, docker_client):
    name = ws["name"]
    home = f"dlbox-ws-{name}-home"
    labels = docker_client.api.inspect_volume(home)["Labels"]
    assert labels["dlbox.owner"] == "local" and labels["dlbox.workspace"] == name
    services = [m["Name"] for m in docker_client.api.inspect_container(ws["container_id"])["Mounts"]
                if m["Destination"] == "/etc/dlbox-ws"]
    assert "kept in volumes" in dlbox("rm", name).stdout
    assert docker_client.api.inspect_volume(home)  # kept, as /workspace's is
    assert not docker_client.api.volumes(filters={"name": services[0]}).get("Volumes")  # went with the container
    dlbox("up", name, "--image", jupyter_image["image"])
    dlbox("exec", name, "--", "python", "-c", "import tinypkg")  # the recreated workspace has the user's install
    dlbox("rm", name, "--purge-data")
    left = {v["Name"] for v in docker_client.api.volumes().get("Volumes") or []}
    assert home not in left and f"dlbox-ws-{name}-data" not in left
