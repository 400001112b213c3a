"""Pipelines through the team server's API with no engine: the signed push webhook (wrong or missing
signature: 401 and nothing recorded), submitting, who sees what, cancel, the dashboard's pages; the driver
on a pipeline that fails at its first stage; the post-commit hook."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dlbox.pipelines import webhook
from dlbox.server import accounts
from dlbox.store.db import Store

SPEC = ("name: demo\nbase:\n  debian: bullseye\npipeline:\n  train: {command: python train.py}\n"
        "  evaluate: {command: python evaluate.py}\n  gate:\n    accuracy: {min: 0.5}\n")


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), "-c", "user.email=ann@example.com", "-c", "user.name=Ann", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture()
def repo(tmp_path) -> Path:
    root = tmp_path / "clone"
    root.mkdir()
    (root / "dlbox.yaml").write_text(SPEC)
    (root / "train.py").write_text("print('hi')\n")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "first")
    return root


@pytest.fixture()
def server(tmp_path, monkeypatch, app_of, no_engine):
    from fastapi.testclient import TestClient

    monkeypatch.setenv("DLBOX_HOME", str(tmp_path / "home"))
    store = Store(f"sqlite:///{tmp_path}/t.db")
    app = app_of(store, mode="server")
    tokens = {}
    for name, admin in (("ann", False), ("bob", False), ("boss", True)):
        accounts.add_user(store, name, admin=admin)
        tokens[name] = {"Authorization": f"Bearer {accounts.create_token(store, name)[1]}"}
    return TestClient(app, base_url="http://dash.test", follow_redirects=False), tokens, store


def push(sha: str, name: str = "team/demo") -> bytes:
    return json.dumps({"ref": "refs/heads/main", "after": sha, "repository": {"full_name": name}}).encode()


def test_only_a_correctly_signed_push_records_a_pipeline(server, repo):
    client, tokens, store = server
    assert client.post("/api/hooks/projects", json={"name": "team/demo", "repo": str(repo), "owner": "ann"},
                       headers=tokens["ann"]).status_code == 403  # admins only
    made = client.post("/api/hooks/projects", json={"name": "team/demo", "repo": str(repo), "owner": "ann"},
                       headers=tokens["boss"])
    assert made.status_code == 201
    secret = made.json()["secret"].encode()
    sha = git(repo, "rev-parse", "HEAD")
    body = push(sha)
    for headers in ({}, {"X-Hub-Signature-256": "sha256=" + "0" * 64},
                    {"X-Hub-Signature-256": webhook.sign(b"wrong", body)},
                    {"X-Hub-Signature-256": webhook.sign(secret, body + b" ")}):
        answer = client.post("/api/hooks/git", content=body, headers=headers)
        assert answer.status_code == 401 and answer.json()["error"]["code"] == "unauthorized"
    other = push(sha, name="team/other")  # an unknown repository: the same 401
    assert client.post("/api/hooks/git", content=other,
                       headers={"X-Hub-Signature-256": webhook.sign(secret, other)}).status_code == 401
    assert store.pipelines() == []  # nothing ran
    answer = client.post("/api/hooks/git", content=body, headers={"X-Hub-Signature-256": webhook.sign(secret, body),
                                                                   "X-GitHub-Event": "push"})
    assert answer.status_code == 200 and answer.json()["ran"] is True
    [pipeline] = store.pipelines()
    assert (pipeline.user, pipeline.git_commit, pipeline.trigger, pipeline.state) == ("ann", sha, "webhook", "queued")
    assert pipeline.author.startswith("Ann") and pipeline.message == "first"
    assert [s.state for s in store.stages(pipeline.id)] == ["pending"] * 8
    deleted = json.dumps({"after": "0" * 40, "repository": {"full_name": "team/demo"}}).encode()
    answer = client.post("/api/hooks/git", content=deleted, headers={"X-Hub-Signature-256": webhook.sign(secret, deleted)})
    assert answer.status_code == 200 and answer.json()["ran"] is False and len(store.pipelines()) == 1

    # ann sees her pipeline, bob does not; the snapshot is ann's on this server
    shown = client.get(f"/api/pipelines/{pipeline.id}", headers=tokens["ann"]).json()
    assert shown["state"] == "queued" and [s["name"] for s in shown["stages"]][0] == "build"
    assert client.get(f"/api/pipelines/{pipeline.id}", headers=tokens["bob"]).status_code == 404
    assert client.get("/api/pipelines", headers=tokens["bob"]).json() == []
    assert client.post("/api/pipelines", json={"code_hash": pipeline.code_hash},
                       headers=tokens["bob"]).status_code == 404  # knowing a hash proves nothing
    again = client.post("/api/pipelines", json={"code_hash": pipeline.code_hash, "ref": "main"}, headers=tokens["ann"])
    assert again.status_code == 201 and again.json()["model"] == "demo"
    assert client.get(f"/api/pipelines/{pipeline.id}/logs", params={"stage": "nope"},
                      headers=tokens["ann"]).status_code == 400
    assert client.get(f"/api/pipelines/{pipeline.id}/report/passwd", headers=tokens["ann"]).status_code == 404
    cancelled = client.post(f"/api/pipelines/{pipeline.id}/cancel", headers=tokens["ann"]).json()
    assert cancelled["cancel_requested"] is True

    # the dashboard lists it with its stages for its owner only
    assert client.post("/login", data={"token": tokens["ann"]["Authorization"][7:]},
                       headers={"Origin": "http://dash.test"}).status_code == 303
    page = client.get("/pipelines")
    assert page.status_code == 200 and f"/pipelines/{pipeline.id}" in page.text and "state-pending" in page.text
    assert 'http-equiv="refresh"' in page.text  # live while one runs
    assert client.get(f"/pipelines/{pipeline.id}").status_code == 200


def test_a_projects_webhook_secret_is_derived_never_stored(server, repo, tmp_path):
    import sqlite3
    import stat

    client, tokens, store = server
    made = client.post("/api/hooks/projects", json={"name": "team/demo", "repo": str(repo)}, headers=tokens["boss"])
    secret = made.json()["secret"]
    assert made.status_code == 201 and len(secret) == 64
    db = tmp_path / "t.db"
    with sqlite3.connect(db) as raw:  # what a stolen database file gives: its rows and its bytes
        dump = "\n".join(raw.iterdump())
        [stored] = raw.execute("SELECT secret FROM hook_projects").fetchone()
    assert secret not in dump and secret.encode() not in db.read_bytes() and stored.startswith("hmac1:")
    key = tmp_path / "home" / "secrets" / "hook.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    assert secret.encode() not in key.read_bytes()

    body = push(git(repo, "rev-parse", "HEAD"))
    signed = lambda s: {"X-Hub-Signature-256": webhook.sign(s.encode(), body)}  # noqa: E731
    assert client.post("/api/hooks/git", content=body, headers=signed(stored)).status_code == 401  # the salt is no key
    assert client.post("/api/hooks/git", content=body, headers=signed(secret)).json()["ran"] is True

    # rotating (adding the project again) draws a new salt: the old secret stops working
    rotated = client.post("/api/hooks/projects", json={"name": "team/demo", "repo": str(repo)},
                          headers=tokens["boss"]).json()["secret"]
    assert rotated != secret
    assert client.post("/api/hooks/git", content=body, headers=signed(secret)).status_code == 401
    assert client.post("/api/hooks/git", content=body, headers=signed(rotated)).status_code == 200
    # listings and the project's answer after creation never show it
    assert rotated not in client.get("/api/pipelines", headers=tokens["boss"]).text

    # another server's key (another home) derives another secret from the same salt
    from dlbox.pipelines import hook_keys

    assert hook_keys.secret_of("team/demo", stored) == secret
    key.write_bytes(b"x" * 32)
    assert hook_keys.secret_of("team/demo", stored) != secret


def test_a_legacy_plain_secret_row_still_verifies_until_rotated(server, repo):
    client, tokens, store = server
    from dlbox.store.db import HookProject

    store.add_hook_project(HookProject(name="team/demo", owner="ann", repo=str(repo), secret="legacy" * 8,
                                       created_at=time.time()))
    body = push(git(repo, "rev-parse", "HEAD"))
    answer = client.post("/api/hooks/git", content=body,
                         headers={"X-Hub-Signature-256": webhook.sign(b"legacy" * 8, body)})
    assert answer.status_code == 200 and answer.json()["ran"] is True


def test_a_commit_without_a_pipeline_section_is_refused_on_one_line(server, repo):
    client, tokens, store = server
    (repo / "dlbox.yaml").write_text(SPEC.replace("pipeline:", "pipelin:"))
    git(repo, "commit", "-qam", "typo")
    secret = client.post("/api/hooks/projects", json={"name": "team/demo", "repo": str(repo)},
                         headers=tokens["boss"]).json()["secret"].encode()
    body = push(git(repo, "rev-parse", "HEAD"))
    answer = client.post("/api/hooks/git", content=body, headers={"X-Hub-Signature-256": webhook.sign(secret, body)})
    assert answer.status_code == 400
    message = answer.json()["error"]["message"]
    assert "dlbox.yaml:4: pipelin: unknown key; did you mean `pipeline`?" in message
    assert store.pipelines() == []


def test_the_driver_fails_a_pipeline_at_its_first_stage_with_the_reason_and_still_reports(tmp_path, monkeypatch,
                                                                                         repo):
    """A pipeline whose commit lost its pipeline: section after it was recorded: build fails, every later
    stage but the report is skipped, and the pipeline ends failed naming the stage and the reason."""
    from dlbox import snapshots
    from dlbox.jobs import runner as jobs
    from dlbox.pipelines import driver, source
    from dlbox.pipelines.state import STAGES
    from dlbox.store.db import Pipeline

    monkeypatch.setenv("DLBOX_HOME", str(tmp_path / "home"))
    store = Store(f"sqlite:///{tmp_path}/d.db")
    (repo / "dlbox.yaml").write_text("name: demo\nbase:\n  debian: bullseye\n")
    git(repo, "commit", "-qam", "no pipeline")
    snap, commit = source.snapshot(repo, "HEAD", tmp_path / "tree")
    snapshots.store(snap)
    store.add_pipeline(Pipeline(id="p1", user="local", state="queued", code_hash=snap.hash, trigger="cli",
                                git_commit=commit.sha, cancel_requested=False, submitted_at=time.time()), list(STAGES))
    driver.Driver(store, jobs.Capacity(cpus=2, memory=None, gpus=[])).run_once()
    done = store.get_pipeline("p1")
    assert done.state == "failed" and done.reason == "build: the commit's dlbox.yaml has no pipeline: section"
    states = {s.name: s.state for s in store.stages("p1")}
    assert states == {"build": "failed", **{n: "skipped" for n in STAGES[1:-1]}, "report": "succeeded"}
    markdown = (tmp_path / "home" / "pipelines" / "p1" / "report" / "report.md").read_text()
    assert "## dlbox pipeline p1: failed" in markdown and "| build | failed |" in markdown
    assert "No metrics were evaluated." in markdown


def test_hooks_install_writes_a_background_post_commit_hook_and_keeps_a_foreign_one(repo, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src"), "DLBOX_HOME": str(tmp_path / "h")}
    run = lambda *args: subprocess.run([sys.executable, "-m", "dlbox", "hooks", "install", *args], cwd=repo, env=env,  # noqa: E731
                                       capture_output=True, text=True)
    hook = repo / ".git" / "hooks" / "post-commit"
    hook.parent.mkdir(exist_ok=True)
    hook.write_text("#!/bin/sh\necho mine\n")
    refused = run()
    assert refused.returncode == 2 and "is not dlbox's; --force replaces it" in refused.stderr
    assert hook.read_text() == "#!/bin/sh\necho mine\n"
    assert run("--force").returncode == 0
    text = hook.read_text()
    assert os.access(hook, os.X_OK) and "nohup " in text and "pipeline run --ref \"$commit\" --trigger hook" in text
    assert text.rstrip().endswith("exit 0") and "&\n" in text  # in the background: the commit never waits
    assert subprocess.run(["sh", "-n", str(hook)]).returncode == 0
    assert run().returncode == 0  # its own hook is replaced without --force


def test_a_restarted_service_watches_the_recorded_job_and_never_submits_it_again(tmp_path, monkeypatch, repo,
                                                                               no_engine):
    """A new Driver (a new service process) finds train running with its job recorded: it submits nothing,
    and moves on once that job ends. A build an earlier process was running is built again, counted."""
    from dlbox import snapshots
    from dlbox.jobs import runner as jobs
    from dlbox.jobs.state import JobState
    from dlbox.pipelines import driver, source
    from dlbox.pipelines.state import STAGES
    from dlbox.store.db import Job, Pipeline

    monkeypatch.setenv("DLBOX_HOME", str(tmp_path / "home"))
    store = Store(f"sqlite:///{tmp_path}/r.db")
    snap, commit = source.snapshot(repo, "HEAD", tmp_path / "tree")
    snapshots.store(snap)
    store.add_pipeline(Pipeline(id="p1", user="local", state="running", code_hash=snap.hash, trigger="cli",
                                image_id="sha256:" + "1" * 64, cancel_requested=False, submitted_at=time.time()),
                       list(STAGES))
    for name in ("build", "test"):
        store.stage_transition("p1", name, "running")
        store.stage_transition("p1", name, "succeeded")
    store.stage_transition("p1", "train", "running")
    job = Job(id="j1", user="local", state="queued", command=["python", "train.py"], params={}, env={},
              image_ref="x", image_id="sha256:" + "1" * 64, submitted_at=time.time())
    assert store.start_stage_job("p1", "train", job)
    capacity = jobs.Capacity(cpus=2, memory=None, gpus=[])
    driver.Driver(store, capacity).run_once()  # "after a restart"
    assert [j.id for j in store.jobs()] == ["j1"] and store.stages("p1")[2].state == "running"
    for state in (JobState.STARTING, JobState.RUNNING, JobState.SUCCEEDED):
        store.transition("j1", state)
    driver.Driver(store, capacity).run_once()
    stages = {s.name: s for s in store.stages("p1")}
    assert stages["train"].state == "succeeded" and stages["train"].job_ids == ["j1"]
    # evaluate's submit asks the engine (the image), which is not there: it fails, no job is half-made
    assert stages["evaluate"].state == "failed" and "engine" in stages["evaluate"].reason.lower()
    assert [j.id for j in store.jobs()] == ["j1"]

    store.add_pipeline(Pipeline(id="p2", user="local", state="running", code_hash=snap.hash, trigger="cli",
                                cancel_requested=False, submitted_at=time.time() - 60), list(STAGES))
    store.stage_transition("p2", "build", "running")
    later = driver.Driver(store, capacity)
    later.since = time.time() + 1  # this process began after that build started
    later.run_once()
    later.builds["p2"].join(30)
    assert store.stages("p2")[0].attempts == 2
    assert "the service restarted during the build" in driver.log_path("p2", "build").read_text()


def _recorded(store, tmp_path, repo, pipeline_id: str, done: tuple[str, ...]):
    from dlbox import snapshots
    from dlbox.pipelines import source
    from dlbox.pipelines.state import STAGES
    from dlbox.store.db import Pipeline

    snap, _ = source.snapshot(repo, "HEAD", tmp_path / f"tree-{pipeline_id}")
    snapshots.store(snap)
    store.add_pipeline(Pipeline(id=pipeline_id, user="local", state="running", code_hash=snap.hash, trigger="cli",
                                image_id="sha256:" + "1" * 64, cancel_requested=False, submitted_at=time.time()),
                       list(STAGES))
    for name in done:
        store.stage_transition(pipeline_id, name, "running")
        store.stage_transition(pipeline_id, name, "succeeded")


def test_a_failed_test_stage_stops_the_pipeline_before_training(tmp_path, monkeypatch, repo):
    from dlbox.jobs import runner as jobs
    from dlbox.jobs.state import JobState
    from dlbox.pipelines import driver
    from dlbox.store.db import Job

    monkeypatch.setenv("DLBOX_HOME", str(tmp_path / "home"))
    store = Store(f"sqlite:///{tmp_path}/f.db")
    (repo / "dlbox.yaml").write_text(SPEC.replace("pipeline:\n", "pipeline:\n  test: {command: python t.py}\n"))
    git(repo, "commit", "-qam", "with tests")
    _recorded(store, tmp_path, repo, "p1", ("build",))
    store.stage_transition("p1", "test", "running")
    store.start_stage_job("p1", "test", Job(id="t1", user="local", state="queued", command=["python", "t.py"],
                                            params={}, env={}, image_ref="x", image_id="sha256:1",
                                            submitted_at=time.time()))
    for state in (JobState.STARTING, JobState.RUNNING):
        store.transition("t1", state)
    store.transition("t1", JobState.FAILED, exit_code=1, reason="exit code 1")
    driver.Driver(store, jobs.Capacity(cpus=2, memory=None, gpus=[])).run_once()
    done = store.get_pipeline("p1")
    assert done.state == "failed" and done.reason.startswith("test: run t1 failed: exit code 1")
    states = {s.name: s.state for s in store.stages("p1")}
    assert states["train"] == "skipped" and states["report"] == "succeeded"
    assert [j.id for j in store.jobs()] == ["t1"]  # no training job was submitted


def test_cancelling_cancels_the_running_job_then_the_pipeline(tmp_path, monkeypatch, repo):
    from dlbox.jobs import runner as jobs
    from dlbox.jobs.state import JobState
    from dlbox.pipelines import driver
    from dlbox.store.db import Job

    monkeypatch.setenv("DLBOX_HOME", str(tmp_path / "home"))
    store = Store(f"sqlite:///{tmp_path}/c.db")
    _recorded(store, tmp_path, repo, "p1", ("build", "test"))
    store.stage_transition("p1", "train", "running")
    store.start_stage_job("p1", "train", Job(id="j1", user="local", state="queued", command=["x"], params={}, env={},
                                             image_ref="x", image_id="sha256:1", submitted_at=time.time()))
    store.update_pipeline("p1", cancel_requested=True)
    run = driver.Driver(store, jobs.Capacity(cpus=2, memory=None, gpus=[]))
    run.run_once()
    assert store.get_job("j1").cancel_requested and store.get_pipeline("p1").state == "running"  # waits for the job
    store.transition("j1", JobState.CANCELLED, reason="cancelled while queued")
    run.run_once()
    assert store.get_pipeline("p1").state == "cancelled"
    assert {s.name: s.state for s in store.stages("p1")}["evaluate"] == "cancelled"


def test_the_hook_key_is_never_read_through_a_link_and_a_damaged_one_is_said(_own_home, tmp_path):
    from dlbox.errors import DlboxError
    from dlbox.pipelines import hook_keys

    planted = tmp_path / "planted"
    planted.write_bytes(b"k" * 32)  # a key the attacker knows
    (_own_home / "secrets").mkdir(parents=True)
    (_own_home / "secrets" / "hook.key").symlink_to(planted)
    with pytest.raises(DlboxError, match="cannot be read"):
        hook_keys.secret_of("team/demo", hook_keys.new_salt())
    (_own_home / "secrets" / "hook.key").unlink()
    (_own_home / "secrets" / "hook.key").write_bytes(b"short")
    with pytest.raises(DlboxError, match="damaged"):
        hook_keys.secret_of("team/demo", hook_keys.new_salt())
