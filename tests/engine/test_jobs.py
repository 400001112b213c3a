"""Detached jobs, the queue, the service's recovery and run records, on the real engine."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers import until

ROOT = Path(__file__).resolve().parents[2]


def job(dlbox, job_id):
    return {j["id"]: j for j in dlbox.json("jobs", "--all")}[job_id]


@pytest.fixture(scope="module")
def digits_project(tmp_path_factory, git_project) -> Path:
    project = tmp_path_factory.mktemp("digits")
    project.chmod(0o755)  # the job runs as the image's user, who must be able to read the code
    shutil.copy(ROOT / "examples" / "digits" / "train.py", project / "train.py")
    (project / "train.py").chmod(0o644)
    return git_project(project)


@pytest.fixture(scope="module")
def digits_run(dlbox, tf_image, digits_project):
    submitted = dlbox.json("run", "--image", tf_image["image"], "--mount", f"{digits_project}:/code:ro",
                           "--param", "epochs=3", "--", "python", "/code/train.py", cwd=digits_project)
    waited = dlbox("wait", submitted["id"], "--json", "--timeout", "600", check=False)
    return submitted, json.loads(waited.stdout), waited.returncode


def test_run_returns_at_once_and_the_job_succeeds(digits_run):
    submitted, waited, code = digits_run
    assert submitted["state"] in ("queued", "starting", "running")
    assert waited == {"id": submitted["id"], "state": "succeeded", "exit_code": 0, "reason": "exit code 0"}
    assert code == 0


def test_run_record_holds_image_lock_commit_params_metrics_artifacts(dlbox, digits_run, tf_image, digits_project):
    record = dlbox.json("runs", "show", digits_run[0]["id"])
    head = subprocess.run(["git", "-C", str(digits_project), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    assert record["image_id"] == tf_image["id"]
    assert record["lock_hash"] == tf_image["lock_hash"]
    assert record["git_commit"] == head and record["git_dirty"] is False
    assert record["params"] == {"epochs": "3"}
    assert record["command"] == ["python", "/code/train.py"]
    assert {"loss", "accuracy", "val_accuracy", "test_accuracy"} <= set(record["metrics"])
    assert record["metrics"]["test_accuracy"] > 0.8
    assert [m["step"] for m in record["metric_history"] if m["name"] == "loss"] == [0, 1, 2]
    assert "model/saved_model.pb" in record["artifacts"]
    assert record["peak_memory"] and record["peak_memory"] > 10 * 1024**2
    assert record["started_at"] and record["ended_at"] and record["exit_code"] == 0
    assert record["env"]["DLBOX_RUN_DIR"] == "/dlbox/run"
    assert json.loads(record["lock"])["lock_hash"] == tf_image["lock_hash"]


def test_logs_are_kept_after_the_container_is_gone(dlbox, digits_run, docker_client):
    job_id = digits_run[0]["id"]
    assert docker_client.containers.list(all=True, filters={"label": f"dlbox.job={job_id}"}) == []
    output = dlbox("logs", job_id).stdout
    assert "Epoch 1/3" in output.splitlines()[:5]  # from the start (TF's CPU notice may come first)
    assert "test accuracy" in output and "saved the model" in output


def test_secret_looking_env_is_redacted_in_records(dlbox, small_image):
    submitted = dlbox.json("run", "--image", small_image["image"], "--param", "api_token=hunter2", "--", "true")
    dlbox("wait", submitted["id"])
    record = dlbox.json("runs", "show", submitted["id"])
    assert record["env"]["DLBOX_PARAM_API_TOKEN"] == "***"


def test_logs_follow_shows_the_whole_output_from_the_first_line(dlbox, small_image):
    script = "for i in 1 2 3 4 5; do echo line $i; sleep 0.6; done"
    submitted = dlbox.json("run", "--image", small_image["image"], "--", "sh", "-c", script)
    until(lambda: job(dlbox, submitted["id"])["state"] == "running")
    time.sleep(1.5)  # the first lines are already written when we start following
    followed = dlbox("logs", "-f", submitted["id"], timeout=60).stdout
    assert followed.splitlines() == [f"line {i}" for i in range(1, 6)]


def test_exit_code_of_a_failing_job(dlbox, small_image):
    submitted = dlbox.json("run", "--image", small_image["image"], "--", "sh", "-c", "echo oops >&2; exit 3")
    waited = dlbox("wait", submitted["id"], "--json", check=False)
    assert waited.returncode == 3
    assert json.loads(waited.stdout)["state"] == "failed" and "exit code 3" in json.loads(waited.stdout)["reason"]
    assert "oops" in dlbox("logs", submitted["id"]).stdout


def test_cancel_ends_a_running_job(dlbox, small_image):
    submitted = dlbox.json("run", "--image", small_image["image"], "--", "sleep", "600")
    until(lambda: job(dlbox, submitted["id"])["state"] == "running")
    started = time.monotonic()
    dlbox("cancel", submitted["id"])
    waited = json.loads(dlbox("wait", submitted["id"], "--json", check=False).stdout)
    assert waited["state"] == "cancelled"
    assert time.monotonic() - started < 30  # SIGTERM, then SIGKILL after the 10 s grace


def test_job_past_its_memory_limit_ends_oom_killed(dlbox, small_image):
    submitted = dlbox.json("run", "--image", small_image["image"], "--memory", "64m", "--",
                           "python", "-c", "x = bytearray(512 * 1024 * 1024)")
    waited = json.loads(dlbox("wait", submitted["id"], "--json", check=False).stdout)
    assert waited["state"] == "oom-killed"
    assert "out of memory" in waited["reason"]


def test_queue_starts_the_third_job_when_capacity_frees(dlbox, small_image):
    ids = [dlbox.json("run", "--image", small_image["image"], "--cpus", "1", "--", "sleep", "5")["id"]
           for _ in range(3)]
    states = until(lambda: (lambda s: s if s[:2] == ["running", "running"] else None)(
        [job(dlbox, i)["state"] for i in ids]))
    assert states[2] == "queued"  # no room: two CPUs, both taken
    for i in ids:
        dlbox("wait", i, "--timeout", "120")
    first, second, third = (job(dlbox, i) for i in ids)
    assert third["started_at"] >= min(first["ended_at"], second["ended_at"])


def test_service_killed_mid_job_recovers_state_and_logs(dlbox, small_image, test_env, docker_client):
    script = "echo start; sleep 6; echo end; exit 7"
    submitted = dlbox.json("run", "--image", small_image["image"], "--", "sh", "-c", script)
    until(lambda: job(dlbox, submitted["id"])["state"] == "running")
    pid = int((Path(test_env["DLBOX_HOME"]) / "service" / "pid").read_text())
    os.kill(pid, signal.SIGKILL)
    time.sleep(9)  # the job ends while no service watches it
    assert docker_client.containers.get(f"dlbox-job-{submitted['id']}").status == "exited"
    waited = dlbox("wait", submitted["id"], "--json", check=False)  # starts a new service
    assert json.loads(waited.stdout)["state"] == "failed" and waited.returncode == 7
    assert dlbox("logs", submitted["id"]).stdout.splitlines() == ["start", "end"]
    assert docker_client.containers.list(all=True, filters={"label": f"dlbox.job={submitted['id']}"}) == []
    new_pid = int((Path(test_env["DLBOX_HOME"]) / "service" / "pid").read_text())
    assert new_pid != pid


def test_runs_diff_names_params_and_metrics(dlbox, small_image):
    a = dlbox.json("run", "--image", small_image["image"], "--param", "lr=0.1", "--", "true")["id"]
    b = dlbox.json("run", "--image", small_image["image"], "--param", "lr=0.2", "--", "true")["id"]
    dlbox("wait", a)
    dlbox("wait", b)
    result = dlbox.json("runs", "diff", a, b)
    assert result["params"] == [{"name": "lr", "a": "0.1", "b": "0.2"}]
    assert result["image"] == [] and result["packages"] == []
    assert "params:\n  lr: 0.1 -> 0.2" in dlbox("runs", "diff", a, b).stdout


def test_reproduce_rebuilds_a_deleted_image_from_the_lock(dlbox, docker_client, run_id, tmp_path):
    """On an image of its own: deleting the shared small image would break whichever test comes next."""
    (tmp_path / "dlbox.yaml").write_text(f"name: t{run_id}-repro\nbase:\n  debian: bullseye\npip:\n  - six==1.16.0\n")
    image = dlbox.json("build", cwd=tmp_path)
    original = dlbox.json("run", "--image", image["image"], "--param", "seed=1", "--",
                          "python", "-c", "import six; print('six', six.__version__)")["id"]
    dlbox("wait", original)
    for tag in docker_client.images.get(image["id"]).tags:
        docker_client.images.remove(tag, force=True)
    with pytest.raises(Exception):
        docker_client.images.get(image["id"])
    again = dlbox("reproduce", original, "--json")
    assert "rebuilding it from the run's lock" in again.stderr and "its lock hash matches" in again.stderr
    job_id = json.loads(again.stdout)["id"]
    dlbox("wait", job_id, "--timeout", "300")
    first, second = dlbox.json("runs", "show", original), dlbox.json("runs", "show", job_id)
    assert second["lock_hash"] == first["lock_hash"] and second["image_id"] != first["image_id"]
    assert second["params"] == first["params"] and second["command"] == first["command"]
    assert second["reproduces"] == original
    assert dlbox("logs", job_id).stdout == "six 1.16.0\n"


def test_run_with_a_spec_file(dlbox, small_image, run_id, tmp_path):
    """`dlbox run SPEC [OPTIONS] -- CMD`: SPEC picks the image (already built: no rebuild), and
    the command is exactly what follows `--`, options included."""
    (tmp_path / "dlbox.yaml").write_text(f"name: t{run_id}-jobs\nbase:\n  debian: bullseye\npip:\n  - six==1.16.0\n")
    submitted = dlbox.json("run", "--name", "from-spec", str(tmp_path / "dlbox.yaml"), "--cpus", "1", "--",
                           "python3", "-c", "import sys, six; print(six.__version__, sys.argv[1:])", "--cpus", "3")
    assert submitted["image"] == small_image["image"] and submitted["name"] == "from-spec"
    assert submitted["command"][-2:] == ["--cpus", "3"]
    assert dlbox.json("wait", submitted["id"])["exit_code"] == 0
    assert dlbox("logs", submitted["id"]).stdout == "1.16.0 ['--cpus', '3']\n"


def test_bad_job_requests(dlbox, small_image):
    cases = [
        (["run", "--image", small_image["image"]], 2, "usage: dlbox run"),
        (["run", "--image", small_image["image"], "--cpus", "64", "--", "true"], 2, "--cpus: 64 can never fit"),
        (["run", "--image", small_image["image"], "--param", "novalue", "--", "true"], 2, "--param: 'novalue'"),
        (["run", "--image", "dlbox/none:1", "--", "true"], 1, "no image 'dlbox/none:1'"),
        (["wait", "ffffffffffff"], 1, "no job 'ffffffffffff'"),
        (["runs", "show", "ffffffffffff"], 1, "no job 'ffffffffffff'"),
    ]
    for args, code, message in cases:
        result = dlbox(*args, check=False)
        assert result.returncode == code, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert result.stderr.count("\n") == 1


def test_another_homes_job_containers_are_left_alone(dlbox, small_image, docker_client, labelled):
    """Two dlbox services on one engine: each cleans up only containers of its own home."""
    stranger = docker_client.containers.create(
        small_image["image"], ["sleep", "60"],  # by tag: the reproduce test rebuilt the image
        labels={**labelled, "dlbox.kind": "job", "dlbox.job": "0123456789ab", "dlbox.home": "someone-else"})
    try:
        submitted = dlbox.json("run", "--image", small_image["image"], "--", "true")  # makes the loop pass
        dlbox("wait", submitted["id"])
        time.sleep(2.5)
        stranger.reload()  # raises if the service removed it
    finally:
        stranger.remove(force=True)


def test_reproduce_refuses_when_the_rebuilt_lock_differs(dlbox, tmp_path, run_id, test_env, docker_client):
    """A run whose kept lock names an OS package version its rebuild cannot give: refused, nothing runs."""
    import sqlite3

    from dlbox.build import lock as locks

    project = tmp_path / "drift"
    project.mkdir()
    (project / "dlbox.yaml").write_text(f"name: t{run_id}-drift\nbase:\n  debian: bullseye\npip:\n  - six==1.16.0\n")
    image = dlbox.json("build", cwd=project)
    original = dlbox.json("run", "--image", image["image"], "--", "true")["id"]
    dlbox("wait", original)
    record = dlbox.json("runs", "show", original)
    # The run claims one base package at a version the rebuild will not install: the kept lock and the
    # recorded hash agree with each other, so only the rebuilt lock can tell.
    data = json.loads(record["lock"])
    data.pop("lock_hash")
    bumped = data["os"]["packages"][0]
    bumped["version"] += "+tampered"
    drifted = locks.parse_text(json.dumps(data), source="test")
    with sqlite3.connect(Path(test_env["DLBOX_HOME"]) / "dlbox.db") as db:
        db.execute("UPDATE jobs SET lock_text = ?, lock_hash = ? WHERE id = ?",
                   (drifted.to_json(), drifted.hash, original))
    for tag in docker_client.images.get(image["id"]).tags:
        docker_client.images.remove(tag, force=True)
    jobs_before = dlbox.json("jobs", "--all")

    result = dlbox("reproduce", original, check=False)

    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: run {original}: the rebuilt image does not match the run's lock "
                           f"{drifted.hash[:12]}"), result.stderr
    assert bumped["name"] in last and last.endswith("refusing to run it")
    assert "its lock hash matches" not in result.stderr
    assert dlbox.json("jobs", "--all") == jobs_before  # no job was submitted
    assert docker_client.images.list(filters={"label": f"dlbox.lock-hash={drifted.hash}"}) == []


def test_reproduce_refuses_a_kept_lock_that_is_not_the_recorded_one(dlbox, small_image, test_env):
    """The kept lock text and the recorded lock hash disagree: refused before any build."""
    import sqlite3

    original = dlbox.json("run", "--image", small_image["image"], "--", "true")["id"]
    dlbox("wait", original)
    with sqlite3.connect(Path(test_env["DLBOX_HOME"]) / "dlbox.db") as db:
        db.execute("UPDATE jobs SET lock_hash = ?, image_id = ? WHERE id = ?",
                   ("0" * 64, "sha256:" + "0" * 64, original))
    result = dlbox("reproduce", original, check=False)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith("not the recorded 000000000000; refusing to rebuild from it")
    assert "building" not in result.stderr
