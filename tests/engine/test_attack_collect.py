"""Attacks through what a job leaves behind, on the real engine: the service (root) must never follow,
block on or swallow whole anything the job (or a host user with the job's uid) planted."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from helpers import until

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def limited(dlbox, test_env, tmp_path_factory, stop_service):
    """A dlbox home of its own whose service has small collection limits."""
    home = tmp_path_factory.mktemp("collect-home")
    env = {**test_env, "DLBOX_HOME": str(home), "DLBOX_LOG_LIMIT": "1m", "DLBOX_METRIC_LINES": "1000",
           "DLBOX_ARTIFACT_LIMIT": "1m"}
    yield type(dlbox)(env)
    stop_service(home)


def run(dlbox, image, script: str, timeout: int = 120) -> dict:
    submitted = dlbox.json("run", "--image", image, "--", "sh", "-c", script)
    dlbox("wait", submitted["id"], "--timeout", str(timeout), check=False)
    return dlbox.json("runs", "show", submitted["id"])


def home_of(dlbox) -> Path:
    return Path(dlbox.env["DLBOX_HOME"])


def test_a_job_cannot_write_a_host_file_through_its_log(limited, small_image, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("ORIGINAL\n")
    victim.chmod(0o600)
    record = run(limited, small_image["image"], f"ln -sf {victim} /dlbox/run/output.log; echo PWNED-LINE")
    assert record["state"] == "succeeded"
    assert victim.read_text() == "ORIGINAL\n"
    assert "PWNED-LINE" in limited("logs", record["id"]).stdout
    log = home_of(limited) / "runs" / record["id"] / "output.log"
    assert not log.is_symlink() and log.stat().st_uid == os.geteuid()


@pytest.mark.parametrize("plant", ["ln -s /dev/zero /dlbox/run/metrics.jsonl", "mkfifo /dlbox/run/metrics.jsonl",
                                   "ln -s /etc/shadow /dlbox/run/metrics.jsonl"])
def test_planted_metrics_are_skipped_not_read_forever(limited, small_image, plant):
    started = time.monotonic()
    record = run(limited, small_image["image"], plant, timeout=60)
    assert record["state"] == "succeeded", record["reason"]
    assert time.monotonic() - started < 30
    assert record["metric_history"] == []
    assert [n.split(":")[0] for n in record["notes"]] == ["metrics.jsonl"]


def test_an_artifacts_link_to_etc_lists_nothing_of_the_host(limited, small_image):
    record = run(limited, small_image["image"], "rm -rf /dlbox/run/artifacts && ln -s /etc /dlbox/run/artifacts")
    assert record["artifacts"] == [] and record["artifact_links"] == []
    assert record["notes"] == ["artifacts: is a link or not a folder (not followed)"]
    kept = home_of(limited) / "runs" / record["id"] / "artifacts"
    assert not kept.exists() or list(kept.iterdir()) == []


def test_links_inside_artifacts_are_recorded_not_copied(limited, small_image):
    script = ("cd /dlbox/run/artifacts && echo real > real.txt && ln -s /etc/shadow shadow && ln -s / root "
              "&& mkfifo pipe && mkdir -p deep/er && echo x > deep/er/x.txt")
    record = run(limited, small_image["image"], script)
    assert record["artifacts"] == ["deep/er/x.txt", "real.txt"]
    assert record["artifact_links"] == [{"path": "root", "target": "/"}, {"path": "shadow", "target": "/etc/shadow"}]
    assert record["notes"] == ["artifacts/pipe: not a regular file, folder or link (skipped)"]
    kept = home_of(limited) / "runs" / record["id"] / "artifacts"
    assert sorted(str(p.relative_to(kept)) for p in kept.rglob("*")) == ["deep", "deep/er", "deep/er/x.txt",
                                                                          "real.txt"]
    assert not any(p.is_symlink() for p in kept.rglob("*"))
    assert (kept / "real.txt").read_text() == "real\n"


def test_a_host_user_with_the_jobs_uid_cannot_plant_links(limited, small_image):
    submitted = limited.json("run", "--image", small_image["image"], "--", "sleep", "30")
    until(lambda: limited.json("runs", "show", submitted["id"])["state"] == "running")
    job_dir = home_of(limited) / "runs" / submitted["id"] / "job"
    as_uid_1000 = ["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups"]
    planted = subprocess.run([*as_uid_1000, "ln", "-sf", "/etc/shadow", str(job_dir / "metrics.jsonl")],
                             capture_output=True, text=True)
    assert planted.returncode != 0 and "Permission denied" in planted.stderr
    listed = subprocess.run([*as_uid_1000, "ls", str(job_dir)], capture_output=True, text=True)
    assert listed.returncode != 0
    limited("cancel", submitted["id"])
    assert limited.json("wait", submitted["id"], "--timeout", "60", check=False)["state"] == "cancelled"


def test_bad_metric_lines_are_skipped_with_a_warning(limited, small_image):
    lines = [r'{"name": "loss", "value": 1.0, "step": 0}', r'{"name": "loss", "value": NaN, "step": 1}',
             r'{"name": "loss", "value": Infinity, "step": 2}', r'{"name": "loss", "value": 1, "step": 18446744073709551616}',
             r'{"name": "loss", "value": 1, "step": [1]}', r'{"name": "loss", "value": 1, "step": "4"}',
             r'{"name": "\377\376", "value": 1, "step": 5}', r'{"name": "loss", "value": 0.25, "step": 9000000000}']
    script = "printf '" + r"\n".join(lines) + r"\n' > /dlbox/run/metrics.jsonl"
    record = run(limited, small_image["image"], script)
    assert record["state"] == "succeeded", record["reason"]
    assert record["metric_history"] == [{"step": 0, "name": "loss", "value": 1.0},
                                        {"step": 9000000000, "name": "loss", "value": 0.25}]
    assert [n.split(":")[0] for n in record["notes"]] == [f"metrics.jsonl line {i}" for i in range(2, 8)]


def test_log_and_artifacts_past_their_limits_are_cut_with_the_reason(limited, small_image):
    script = ("head -c 3000000 /dev/zero | tr '\\0' 'a'; echo; "
              "head -c 2000000 /dev/zero > /dlbox/run/artifacts/big.bin")
    record = run(limited, small_image["image"], script)
    assert record["state"] == "succeeded"
    log = home_of(limited) / "runs" / record["id"] / "output.log"
    assert log.stat().st_size < 1024**2 + 100 and log.read_bytes().endswith(b"[dlbox: log truncated at 1m]\n")
    assert record["artifact_bytes"] == 1024**2
    assert record["notes"] == ["log: truncated at 1m (the log limit)",
                               "artifacts: stopped at 1m (the artifact limit); artifacts/big.bin is cut short and "
                               "the rest is not kept"]


def test_a_huge_log_is_streamed_not_held_in_memory(dlbox, small_image, test_env):
    """64 MiB of output: the service's peak memory must not grow by anything like it."""
    def peak_kb() -> int:
        pid = int((Path(test_env["DLBOX_HOME"]) / "service" / "pid").read_text())
        status = Path(f"/proc/{pid}/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1])

    dlbox("jobs")  # the service is up
    before = peak_kb()
    record = run(dlbox, small_image["image"], "head -c 67108864 /dev/zero | tr '\\0' 'x' | fold -w 1000", timeout=300)
    assert record["state"] == "succeeded"
    assert (Path(test_env["DLBOX_HOME"]) / "runs" / record["id"] / "output.log").stat().st_size > 64 * 1024**2
    assert peak_kb() - before < 32 * 1024, "collecting a 64 MiB log raised the service's peak memory by 32 MiB+"


def test_a_cancel_whose_stop_fails_is_retried(dlbox, test_env, small_image, tmp_path, stop_service):
    """The engine answers the first stops with an error: the cancel must be tried again, not forgotten."""
    from test_engine_events import Proxy

    home = tmp_path / "stop-home"
    home.mkdir()
    proxy = Proxy(tmp_path / "engine.sock")
    mine = type(dlbox)({**test_env, "DLBOX_HOME": str(home), "DOCKER_HOST": f"unix://{tmp_path / 'engine.sock'}"})
    try:
        submitted = mine.json("run", "--image", small_image["image"], "--", "sleep", "600")
        until(lambda: mine.json("runs", "show", submitted["id"])["state"] == "running")
        proxy.fail = b"/stop"
        mine("cancel", submitted["id"])
        until(lambda: proxy.requests.count(b"/stop") >= 2, timeout=20)  # refused, then asked again
        assert mine.json("runs", "show", submitted["id"])["state"] == "running"
        proxy.fail = None
        assert mine.json("wait", submitted["id"], "--timeout", "60", check=False)["state"] == "cancelled"
    finally:
        stop_service(home)


def test_a_finish_that_fails_is_retried_with_a_back_off_then_lost(dlbox, test_env, small_image, tmp_path,
                                                                 stop_service):
    """The run folders on a 1 MiB disk: the log cannot be saved. The job must not stay running (holding
    capacity) nor be copied again every second; it ends lost, with the reason."""
    home = tmp_path / "full-home"
    (home / "runs").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(home / "runs")], check=True)
    full = type(dlbox)({**test_env, "DLBOX_HOME": str(home)})
    try:
        submitted = full.json("run", "--image", small_image["image"], "--", "sh", "-c",
                              "head -c 3000000 /dev/zero | tr '\\0' 'a'")
        seen = until(lambda: {j["id"]: j for j in full.json("jobs", "--all")}[submitted["id"]]["state"]
                     in ("finishing", "lost") and time.monotonic(), timeout=120)
        assert {j["id"]: j for j in full.json("jobs")}[submitted["id"]]["state"] == "finishing"
        second = full.json("run", "--image", small_image["image"], "--cpus", "2", "--", "true")  # capacity is free
        assert full.json("wait", second["id"], "--timeout", "60", check=False)["state"] == "succeeded"
        assert {j["id"]: j for j in full.json("jobs")}[submitted["id"]]["state"] == "finishing"
        ended = full.json("wait", submitted["id"], "--timeout", "90", check=False)
        assert time.monotonic() - seen >= 12, "retried faster than the back-off (1, 2, 4, 8 s)"
        assert ended["state"] == "lost"
        assert "could not be collected after 5 attempts" in ended["reason"]
        assert "No space left on device" in ended["reason"]
    finally:
        stop_service(home)
        time.sleep(1)
        subprocess.run(["umount", "-l", str(home / "runs")], check=False)


def test_artifacts_count_against_the_users_storage_quota_on_the_server(test_env, small_image, tmp_path, start_server):
    import json
    import sys

    import httpx

    (tmp_path / "server-home").mkdir()
    env = {**test_env, "DLBOX_HOME": str(tmp_path / "server-home")}
    with start_server(env) as url:
        added = subprocess.run([sys.executable, "-m", "dlbox", "users", "add", "carol", "--storage", "300k", "--json"],
                               env=env, capture_output=True, text=True, check=True)
        carol = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {json.loads(added.stdout)['token']}"},
                             timeout=60)

        def artifact_job(size: int) -> dict:
            job = carol.post("/api/jobs", json={"image": small_image["image"], "command": [
                "sh", "-c", f"head -c {size} /dev/zero > /dlbox/run/artifacts/blob"]})
            assert job.status_code == 201, job.text
            until(lambda: carol.get(f"/api/jobs/{job.json()['id']}").json()["state"] == "succeeded", timeout=120)
            return carol.get(f"/api/runs/{job.json()['id']}").json()

        first, second = artifact_job(200 * 1024), artifact_job(200 * 1024)
    assert first["artifact_bytes"] == 200 * 1024 and first["notes"] == []
    assert second["artifact_bytes"] == 100 * 1024
    assert second["notes"] == ["artifacts: stopped at 100k (quota storage: carol may keep 300k); artifacts/blob is "
                               "cut short and the rest is not kept"]
