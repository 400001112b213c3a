"""A real dockerd restart, twice. With live-restore (what scripts/host-setup.sh configures) a
workspace and a running job go on through it untouched. Without it the engine stops every
container: the workspace comes back by its restart policy, with its token, and the job the engine
stopped is reported lost, saying why, never "failed with 137".

This module runs last (tests/engine/conftest.py): it takes the engine away for seconds, and the
engine is left as it was found, with its own command line, whatever happens.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import until

DOCKERD_LOG = Path("/var/log/dlbox-dockerd.log")


def dockerd() -> tuple[int, list[str]]:
    """The pid and command line of this machine's dockerd, which this test may restart."""
    if os.geteuid() != 0 or os.environ.get("DOCKER_HOST", "unix://").split("://")[0] not in ("unix", ""):
        pytest.skip("restarting the engine needs root and the local dockerd")
    found = [p for p in subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True, text=True).stdout.split()
             if not ended(int(p))]
    if len(found) != 1:
        pytest.skip(f"expected one local dockerd process, found {len(found)}")
    pid = int(found[0])
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    return pid, [a.decode() for a in argv]


def engine_answers() -> bool:
    return subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True,
                          timeout=10).returncode == 0


def ended(pid: int) -> bool:
    """Has process `pid` ended? A dockerd this test started is its child: reap it, or it stays a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not ours: init reaps it
        pass
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def restart_engine(argv: list[str]) -> None:
    """SIGTERM dockerd, wait for it to end, start `argv` in its own session, wait until it answers."""
    pid, _ = dockerd()
    os.kill(pid, signal.SIGTERM)
    until(lambda: ended(pid), 90, "dockerd to stop")
    with DOCKERD_LOG.open("ab") as log:
        subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                         start_new_session=True)
    until(engine_answers, 90, "dockerd to answer again")


def with_config(argv: list[str], path: Path) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--config-file":
            skip = True
        elif not arg.startswith("--config-file="):
            out.append(arg)
    return [*out, "--config-file", str(path)]


def jupyter_status(ws: dict) -> int | None:
    import urllib.error
    import urllib.request

    url = f"http://127.0.0.1:{ws['jupyter']['port']}/api/status"
    request = urllib.request.Request(url, headers={"Authorization": f"token {ws['jupyter']['token']}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def job_state(dlbox, job_id: str) -> dict:
    return {j["id"]: j for j in dlbox.json("jobs", "--all")}[job_id]


@pytest.fixture(scope="module")
def engine_argv():
    _, argv = dockerd()
    yield argv
    if not engine_answers() or dockerd()[1] != argv:  # leave the engine as it was found
        restart_engine(argv)


@pytest.fixture(scope="module")
def workspace(dlbox, tf_image, run_id, engine_argv):
    name = f"t{run_id}-restart"
    up = dlbox.json("up", name, "--image", tf_image["image"], "--memory", "1g", "--cpus", "1")
    until(lambda: jupyter_status(up) == 200, 120, "Jupyter to answer")
    yield up
    dlbox("rm", name, "--purge-data", check=False)


def started_at(docker_client, ws: dict) -> str:
    return docker_client.api.inspect_container(ws["container_id"])["State"]["StartedAt"]


def test_with_live_restore_a_workspace_and_a_job_run_through_a_restart(dlbox, docker_client, small_image,
                                                                       workspace, engine_argv):
    assert docker_client.info()["LiveRestoreEnabled"], "the engine runs without live-restore (host-setup sets it)"
    before = started_at(docker_client, workspace)
    job_id = dlbox.json("run", "--no-code", "--image", small_image["image"], "--", "sh", "-c",
                        "sleep 12; echo after-the-restart")["id"]
    until(lambda: job_state(dlbox, job_id)["state"] == "running", 60, "the job to run")

    restart_engine(engine_argv)

    assert started_at(docker_client, workspace) == before  # not restarted: it ran on
    until(lambda: jupyter_status(workspace) == 200, 30, "Jupyter after the restart")
    waited = json.loads(dlbox("wait", job_id, "--json", "--timeout", "120", check=False).stdout)
    assert waited["state"] == "succeeded" and waited["exit_code"] == 0, waited
    assert "after-the-restart" in dlbox("logs", job_id).stdout


def test_without_live_restore_the_workspace_comes_back_and_the_job_is_lost_saying_why(
        dlbox, docker_client, small_image, workspace, engine_argv, tmp_path):
    config = json.loads(Path("/etc/docker/daemon.json").read_text()) if Path("/etc/docker/daemon.json").exists() \
        else {}
    plain = tmp_path / "daemon.json"
    plain.write_text(json.dumps({**config, "live-restore": False}))
    job_id = dlbox.json("run", "--no-code", "--image", small_image["image"], "--", "sleep", "300")["id"]
    until(lambda: job_state(dlbox, job_id)["state"] == "running", 60, "the job to run")
    before = started_at(docker_client, workspace)
    try:
        restart_engine(with_config(engine_argv, plain))
        assert not docker_client.info()["LiveRestoreEnabled"]
        waited = json.loads(dlbox("wait", job_id, "--json", "--timeout", "120", check=False).stdout)
        assert waited["state"] == "lost", waited
        assert "restart of the container engine" in waited["reason"], waited
        # the restart policy brought the workspace back: a new start, the same token
        until(lambda: started_at(docker_client, workspace) != before, 60, "the workspace to be started again")
        until(lambda: jupyter_status(workspace) == 200, 120, "Jupyter after the restart")
        assert {w["name"]: w["state"] for w in dlbox.json("ls")}[workspace["name"]] == "running"
    finally:
        restart_engine(engine_argv)
    assert docker_client.info()["LiveRestoreEnabled"]
