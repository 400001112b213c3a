"""Jobs run the code they record: code snapshots on the real engine, locally and on a team server."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

TRAIN = "import helper\nprint('version', helper.VERSION)\n"


def code_dirs(home: Path) -> set[str]:
    root = home / "code"
    return {p.name for p in root.iterdir() if not p.name.startswith(".")} if root.is_dir() else set()


@pytest.fixture(scope="module")
def project(tmp_path_factory, git_project) -> Path:
    root = tmp_path_factory.mktemp("snap-project")
    root.chmod(0o755)
    (root / "train.py").write_text(TRAIN)
    (root / "helper.py").write_text("VERSION = 1\n")
    (root / ".gitignore").write_text("data/\n")
    return git_project(root)


def test_the_project_runs_its_own_uncommitted_code_and_reproduce_runs_it_again(dlbox, small_image, project,
                                                                               test_env, tmp_path):
    (project / "helper.py").write_text("VERSION = 2\n")  # edited, not committed: this is what runs
    (project / "data").mkdir(exist_ok=True)
    (project / "data" / "ignored.bin").write_bytes(b"\0" * 1000)
    first = dlbox.json("run", "--image", small_image["image"], "--", "python3", "train.py", cwd=project)
    assert dlbox.json("wait", first["id"], "--timeout", "120")["exit_code"] == 0, dlbox("logs", first["id"]).stdout
    assert dlbox("logs", first["id"]).stdout == "version 2\n"
    record = dlbox.json("runs", "show", first["id"])
    assert record["git_dirty"] is True and "+VERSION = 2" in record["git_diff"]
    assert record["code"]["files"] == 3 and record["code"]["dest"] == "/workspace/code"  # data/ is ignored
    assert record["workdir"] == "/workspace/code"
    shown = dlbox("runs", "show", first["id"]).stdout
    assert f"code          {record['code']['hash']} (3 files" in shown

    exported = tmp_path / "exported"
    dlbox("runs", "export-code", first["id"], str(exported))
    assert (exported / "helper.py").read_text() == "VERSION = 2\n" and not (exported / "data").exists()

    (project / "helper.py").write_text("VERSION = 3\n")  # the folder moves on
    second = dlbox.json("run", "--image", small_image["image"], "--", "python3", "train.py", cwd=project)
    dlbox("wait", second["id"], "--timeout", "120")
    assert dlbox("logs", second["id"]).stdout == "version 3\n"
    diff = dlbox.json("runs", "diff", first["id"], second["id"])
    assert diff["files"] == [{"path": "helper.py", "change": "modified"}]
    assert "-VERSION = 2\n+VERSION = 3" in dlbox("runs", "diff", first["id"], second["id"], "--code").stdout

    again = dlbox("reproduce", first["id"], cwd=project)
    assert "recorded code snapshot" in again.stdout and "not the folder's current state" in again.stdout
    job_id = again.stdout.split()[1]
    dlbox("wait", job_id, "--timeout", "120")
    assert dlbox("logs", job_id).stdout == "version 2\n"

    moved = tmp_path / "gone"
    shutil.move(str(project), moved)  # the project folder is gone altogether
    try:
        gone = dlbox.json("reproduce", first["id"], cwd=tmp_path)
        dlbox("wait", gone["id"], "--timeout", "120")
        assert dlbox("logs", gone["id"]).stdout == "version 2\n"
    finally:
        shutil.move(str(moved), project)

    from dlbox import snapshots

    stored = Path(test_env["DLBOX_HOME"]) / "code" / record["code"]["hash"]
    snapshots.remove(stored)  # as if it were deleted
    refused = dlbox("reproduce", first["id"], check=False)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
    assert "its code snapshot" in refused.stderr and "was deleted" in refused.stderr


def test_the_job_cannot_write_its_code(dlbox, small_image, tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    submitted = dlbox.json("run", "--image", small_image["image"], "--", "sh", "-c",
                           "touch a.py 2>/dev/null && echo wrote || echo read-only; id -u; stat -c %u a.py",
                           cwd=tmp_path)
    dlbox("wait", submitted["id"], "--timeout", "120")
    lines = dlbox("logs", submitted["id"]).stdout.split()
    assert lines[0] == "read-only" and lines[1] != lines[2]  # not the job's own files either


def test_the_same_tree_twice_stores_one_snapshot(dlbox, small_image, tmp_path, test_env):
    home = Path(test_env["DLBOX_HOME"])
    (tmp_path / "x.py").write_text("print('same')\n")
    before = code_dirs(home)
    for _ in range(2):
        submitted = dlbox.json("run", "--image", small_image["image"], "--", "true", cwd=tmp_path)
    assert len(code_dirs(home) - before) == 1
    assert "already stored" in dlbox("run", "--image", small_image["image"], "--", "true", cwd=tmp_path).stdout
    nothing = dlbox.json("run", "--image", small_image["image"], "--no-code", "--", "true", cwd=tmp_path)
    assert nothing["code"] is None
    dlbox("wait", submitted["id"])


def test_a_300_mb_folder_is_refused_before_queueing(dlbox, small_image, tmp_path):
    (tmp_path / "train.py").write_text("")
    (tmp_path / "checkpoints").mkdir()
    with open(tmp_path / "checkpoints" / "model.bin", "wb") as f:
        f.truncate(300 * 1024**2)  # sparse: no disk is spent
    before = {j["id"] for j in dlbox.json("jobs", "--all")}
    refused = dlbox("run", "--image", small_image["image"], "--", "true", cwd=tmp_path, check=False)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "over the limit of 200.0 MB" in refused.stderr and "checkpoints/ (300.0 MB" in refused.stderr
    assert {j["id"] for j in dlbox.json("jobs", "--all")} == before  # nothing was queued


def test_a_symlink_to_etc_is_refused_by_name(dlbox, small_image, tmp_path):
    (tmp_path / "train.py").write_text("")
    (tmp_path / "config").symlink_to("/etc")
    refused = dlbox("run", "--image", small_image["image"], "--", "true", cwd=tmp_path, check=False)
    assert refused.returncode == 2 and "config -> /etc" in refused.stderr and "Traceback" not in refused.stderr


# --- on a team server -----------------------------------------------------------------------------------


class CountingProxy:
    """A TCP proxy to the server that counts the bytes clients send through it."""

    def __init__(self, port: int):
        self.target = port
        self.sent = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            client, _ = self.listener.accept()
            upstream = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src, dst, count):
        try:
            while data := src.recv(65536):
                if count:
                    self.sent += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def test_on_the_server_uploads_are_once_and_private(test_env, tmp_path_factory, start_server, small_image):
    import httpx

    home = tmp_path_factory.mktemp("snap-server-home")
    env = {**test_env, "DLBOX_HOME": str(home)}
    with start_server(env) as url:
        tokens = {}
        for name in ("ann", "ben"):
            out = subprocess.run([sys.executable, "-m", "dlbox", "users", "add", name, "--json"], env=env,
                                 capture_output=True, text=True, check=True)
            tokens[name] = json.loads(out.stdout)["token"]
        proxy = CountingProxy(int(url.rsplit(":", 1)[1]))
        project = tmp_path_factory.mktemp("snap-remote")
        (project / "train.py").write_text("print('remote code')\n")
        (project / "weights.bin").write_bytes(os.urandom(512 * 1024))

        def cli(user, *args):
            user_env = {**test_env, "DLBOX_URL": f"http://127.0.0.1:{proxy.port}", "DLBOX_TOKEN": tokens[user]}
            user_env.pop("DLBOX_HOME")
            return subprocess.run([sys.executable, "-m", "dlbox", *args], env=user_env, cwd=project,
                                  capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL, check=True)

        first = json.loads(cli("ann", "run", "--image", small_image["image"], "--json", "--",
                               "python3", "train.py").stdout)
        assert proxy.sent > 512 * 1024  # the snapshot went
        cli("ann", "wait", first["id"], "--timeout", "120")
        assert cli("ann", "logs", first["id"]).stdout == "remote code\n"
        snapshot = first["code"]["hash"]

        before = proxy.sent
        cli("ann", "run", "--image", small_image["image"], "--json", "--", "true")
        assert proxy.sent - before < 16 * 1024  # the unchanged tree: a question and a job request, no upload

        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {tokens['ben']}"}) as ben:
            assert ben.get(f"/api/snapshots/{snapshot}").status_code == 404
            assert ben.get(f"/api/snapshots/{snapshot}/tar").status_code == 404
            refused = ben.post("/api/jobs", json={"image": small_image["image"], "command": ["true"],
                                                  "code_hash": snapshot})
            assert refused.status_code == 404
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {tokens['ann']}"}) as ann:
            assert ann.get(f"/api/snapshots/{snapshot}").json()["files"] == 2
