"""A pipeline end to end on the real engine and service, with a tiny project (plain Python, no TF):
the first commit passes its gates and becomes the champion; a worse commit is rejected (exit 3) with the
reason in its report, and the champion stays. Every stage runs the commit, not the working tree.
Then: the service SIGKILLed during train (the pipeline finishes, no stage runs twice); GitHub's signed push
webhook on a team server (bad signatures run nothing, a right one runs that commit); a failing test stage
(no training); a gate on a metric the evaluation never wrote ("metric not found").
All use the session's small image's environment, so every build stage is a cache hit."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
from pathlib import Path

import httpx

from helpers import until

TRAIN = '''\
import json, os
import dlbox_metrics

import time
epochs = int(dlbox_metrics.params().get("epochs", "1"))
time.sleep(float(dlbox_metrics.params().get("sleep", "0")))  # time for a test to kill the service
for epoch in range(epochs):
    dlbox_metrics.log("loss", 1.0 / (epoch + 1), step=epoch)
    dlbox_metrics.log("accuracy", 0.5 + 0.08 * epoch, step=epoch)
model = os.path.join(dlbox_metrics.artifacts_dir(), "model")
os.makedirs(model, exist_ok=True)
with open(os.path.join(model, "weights.json"), "w") as f:
    json.dump({"epochs": epochs}, f)
print("trained", epochs, "epochs")
'''

EVALUATE = '''\
import json, os
import dlbox_metrics

with open(os.path.join(os.environ["DLBOX_INPUT_DIR"], "model", "weights.json")) as f:
    epochs = json.load(f)["epochs"]
right = min(10, 4 + epochs)  # of 10: more epochs, more right
labels = [i % 3 for i in range(10)]
predictions = [l if i < right else (l + 1) % 3 for i, l in enumerate(labels)]
dlbox_metrics.log("accuracy", right / 10)
with open(os.path.join(dlbox_metrics.artifacts_dir(), "predictions.json"), "w") as f:
    json.dump({"labels": labels, "predictions": predictions}, f)
print("accuracy", right / 10)
'''

TEST = '''\
import os
import dlbox_metrics

cases = ["<testcase classname='model' name='test_shapes'/>", "<testcase classname='model' name='test_params'/>"]
with open(os.path.join(dlbox_metrics.artifacts_dir(), "junit.xml"), "w") as f:
    f.write("<testsuites><testsuite name='unit'>" + "".join(cases) + "</testsuite></testsuites>")
'''


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), "-c", "user.email=ann@example.com", "-c", "user.name=Ann",
                           *args], check=True, capture_output=True, text=True).stdout.strip()


FAILING_TEST = TEST.replace("name='test_params'/>", "name='test_params'><failure message='bad shape'/></testcase>") \
    + "raise SystemExit(1)\n"

GATE = "    accuracy: {min: 0.5, min_delta: {absolute: 0.0}}\n"


def spec(name: str, model: str, epochs: int, *, sleep: int = 0, gate: str = GATE) -> str:
    return (f"name: {name}\nbase:\n  debian: bullseye\npip:\n  - six==1.16.0\n"
            "pipeline:\n"
            "  test: {command: python test_model.py}\n"
            f"  train: {{command: python train.py, params: {{epochs: '{epochs}', sleep: '{sleep}'}}}}\n"
            "  evaluate: {command: python evaluate.py}\n"
            "  gate:\n" + gate +
            f"  register: {{model: {model}, format: files}}\n")


def env_name(small_image) -> str:
    """The small image's spec name: the same environment, so a pipeline's build is cached."""
    return small_image["image"].split("/", 1)[1].split(":", 1)[0]


def make_project(root: Path, small_image, spec_text: str, *, test: str = TEST) -> str:
    """A git project with the pipeline's scripts, committed; its commit SHA."""
    root.mkdir()
    (root / "dlbox.yaml").write_text(spec_text)
    shutil.copy(small_image["lock_file"], root / "dlbox.lock")
    (root / "train.py").write_text(TRAIN)
    (root / "evaluate.py").write_text(EVALUATE)
    (root / "test_model.py").write_text(test)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "the project")
    return git(root, "rev-parse", "HEAD")


def pipeline_jobs(dlbox, pipeline_id: str) -> dict[str, list[str]]:
    """stage -> the ids of every job the service holds for that stage of this pipeline (by job name)."""
    found: dict[str, list[str]] = {}
    for job in dlbox.json("jobs", "--all", "--limit", "1000"):
        prefix = f"pipeline-{pipeline_id}-"
        if (job.get("name") or "").startswith(prefix):
            found.setdefault(job["name"][len(prefix):], []).append(job["id"])
    return found


def is_png(path: Path) -> bool:
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return False
    width, height = struct.unpack(">II", data[16:24])
    return width > 100 and height > 100 and data.rstrip(b"\0")[-8:-4] == b"IEND"


def test_a_good_commit_becomes_champion_and_a_worse_one_is_rejected(dlbox, small_image, tmp_path, run_id):
    project = tmp_path / "digits"
    model = f"digits-{run_id}"
    name = env_name(small_image)
    first_sha = make_project(project, small_image, spec(name, model, epochs=5))

    good = dlbox("pipeline", "run", "--follow", cwd=project, check=False, timeout=900)
    assert good.returncode == 0, good.stdout[-3000:] + good.stderr[-3000:]
    first = dlbox.json("pipeline", "ls")[-1]
    shown = dlbox.json("pipeline", "show", first["id"])
    assert shown["state"] == "promoted" and shown["git_commit"] == first_sha and shown["author"].startswith("Ann")
    states = {s["name"]: s["state"] for s in shown["stages"]}
    assert states == {"build": "succeeded", "test": "succeeded", "train": "succeeded", "evaluate": "succeeded",
                      "gate": "succeeded", "register": "succeeded", "deploy": "skipped", "report": "succeeded"}
    stage = {s["name"]: s for s in shown["stages"]}
    assert stage["test"]["result"]["junit"]["tests"] == 2
    assert stage["deploy"]["reason"] == "skipped: no deployment follows this model"
    assert all(len(stage[n]["runs"]) == 1 for n in ("test", "train", "evaluate"))
    assert shown["verdict"]["passed"] and shown["verdict"]["champion"] is None  # the first run
    champion = dlbox.json("models", "show", f"{model}@champion")
    assert champion["version"] == 1 and champion["verdict"] == "blessed" and champion["metrics"]["accuracy"] == 0.9

    report = dlbox.json("pipeline", "report", first["id"])
    folder = Path(report["folder"])
    for png in ("curves.png", "confusion.png"):
        assert is_png(folder / png), png
    markdown = Path(report["md"]).read_text()
    assert markdown.startswith(f"## dlbox pipeline {first['id']}: promoted\n\n{model}:1 is the champion")
    assert "| accuracy | 0.9 | — |" in markdown and "No champion yet (first run): change gates skipped." in markdown
    assert first_sha[:12] in markdown and "2 tests: 2 passed" in markdown
    assert "<img src=\"curves.png\"" in Path(report["html"]).read_text()

    # a worse commit (fewer epochs); the working tree's uncommitted train.py must not be what runs
    (project / "dlbox.yaml").write_text(spec(name, model, epochs=1))
    git(project, "commit", "-qam", "one epoch")
    (project / "train.py").write_text("raise SystemExit('the working tree ran, not the commit')\n")
    worse = dlbox("pipeline", "run", "--follow", cwd=project, check=False, timeout=900)
    assert worse.returncode == 3, worse.stdout[-3000:] + worse.stderr[-3000:]
    second = dlbox.json("pipeline", "ls")[-1]
    shown = dlbox.json("pipeline", "show", second["id"])
    assert shown["state"] == "rejected" and "accuracy" in shown["reason"]
    assert shown["champion_version"] == 1 and shown["model_version"] == 2
    assert {s["name"]: s["state"] for s in shown["stages"]}["deploy"] == "skipped"
    assert dlbox.json("models", "show", f"{model}@champion")["version"] == 1  # unchanged
    rejected = dlbox.json("models", "show", f"{model}:2")
    assert rejected["verdict"] == "rejected" and rejected["metrics"]["accuracy"] == 0.5
    markdown = Path(dlbox.json("pipeline", "report", second["id"])["md"]).read_text()
    assert markdown.startswith(f"## dlbox pipeline {second['id']}: rejected\n\nrejected by the gate: accuracy: change -0.4")
    assert "**Verdict: rejected**" in markdown and "| accuracy | 0.5 | 0.9 | -0.4 | -44.44% | FAIL |" in markdown
    assert "Champion: " in markdown
    logs = dlbox("pipeline", "logs", second["id"], "--stage", "train").stdout
    assert "trained 1 epochs" in logs


def wait_done(show, pipeline_id: str, timeout: float = 600) -> dict:
    """Poll `show(id)` until the pipeline has its verdict (an exit code)."""
    return until(lambda: (lambda p: p if p.get("exit_code") is not None else None)(show(pipeline_id)), timeout,
                 f"pipeline {pipeline_id} to end", every=2)


def test_a_service_killed_during_train_finishes_the_pipeline_with_no_stage_run_twice(dlbox, small_image, tmp_path,
                                                                                    run_id, test_env):
    project = tmp_path / "killed"
    model = f"killed-{run_id}"
    make_project(project, small_image, spec(env_name(small_image), model, epochs=3, sleep=12))
    submitted = dlbox.json("pipeline", "run", cwd=project)
    show = lambda pid: dlbox.json("pipeline", "show", pid)  # noqa: E731

    def training():
        stage = {s["name"]: s for s in show(submitted["id"])["stages"]}["train"]
        if stage["state"] != "running" or not stage["runs"]:
            return None
        job = dlbox.json("runs", "show", stage["runs"][0])
        return job if job["state"] == "running" else None

    train_job = until(training, 300, "the train job to run", every=1.0)
    pid_file = Path(test_env["DLBOX_HOME"]) / "service" / "pid"
    killed = int(pid_file.read_text())
    os.kill(killed, signal.SIGKILL)
    until(lambda: not Path(f"/proc/{killed}").exists() or "zombie" in Path(f"/proc/{killed}/status").read_text()
          .lower(), 10, "the service to die", every=0.1)

    # the first call starts a new service; on a loaded machine its start may outlast one CLI's 30 s wait
    until(lambda: dlbox("jobs", "--json", check=False, timeout=120).returncode == 0, 300, "a new service",
          every=1.0)
    done = wait_done(show, submitted["id"])
    assert int(pid_file.read_text()) != killed
    assert done["state"] == "promoted", done
    for stage in done["stages"]:
        assert stage["attempts"] == 1, stage
    runs = {s["name"]: s["runs"] for s in done["stages"]}
    assert runs["train"] == [train_job["id"]]  # the new service watched the recorded job
    made = pipeline_jobs(dlbox, submitted["id"])
    assert made == {name: runs[name] for name in ("test", "train", "evaluate")}
    assert all(len(ids) == 1 for ids in made.values())
    logs = dlbox("pipeline", "logs", submitted["id"], "--stage", "train").stdout
    assert logs.count("trained 3 epochs") == 1 and logs.count("submitted run") == 1
    assert dlbox.json("models", "show", f"{model}@champion")["version"] == 1


def test_the_signed_push_webhook_runs_that_commit_and_bad_signatures_run_nothing(test_env, tmp_path,
                                                                                 tmp_path_factory, start_server,
                                                                                 small_image, run_id):
    home = tmp_path_factory.mktemp("hook-server-home")
    env = {**test_env, "DLBOX_HOME": str(home)}
    clone = tmp_path / "clone"
    model = f"hooked-{run_id}"
    name = env_name(small_image)
    pushed = make_project(clone, small_image, spec(name, model, epochs=5))
    (clone / "dlbox.yaml").write_text(spec(name, model, epochs=1))  # a later commit: not the one pushed
    git(clone, "commit", "-qam", "one epoch")
    repo = f"team/hooked-{run_id}"
    with start_server(env) as url:
        made = subprocess.run([sys.executable, "-m", "dlbox", "users", "add", "boss", "--admin", "--json"], env=env,
                              capture_output=True, text=True, check=True)
        admin = {"Authorization": f"Bearer {json.loads(made.stdout)['token']}"}
        cli_env = {**test_env, "DLBOX_URL": url, "DLBOX_TOKEN": admin["Authorization"].split()[1]}
        cli_env.pop("DLBOX_HOME")
        registered = subprocess.run([sys.executable, "-m", "dlbox", "hooks", "project", repo, "--repo", str(clone),
                                     "--json"], env=cli_env, capture_output=True, text=True, check=True)
        secret = json.loads(registered.stdout)["secret"].encode()
        body = json.dumps({"ref": "refs/heads/main", "after": pushed, "repository": {"full_name": repo},
                           "head_commit": {"id": pushed}}).encode()
        digest = hmac.new(secret, body, hashlib.sha256).hexdigest()
        other = body.replace(b'"refs/heads/main"', b'"refs/heads/evil"')
        bad = {
            "missing header": (body, None),
            "empty header": (body, ""),
            "wrong key": (body, "sha256=" + hmac.new(b"not the secret", body, hashlib.sha256).hexdigest()),
            "tampered body": (other, f"sha256={digest}"),
            "sha1 prefix": (body, "sha1=" + hmac.new(secret, body, hashlib.sha1).hexdigest()),
            "sha1 prefix, sha256 digest": (body, f"sha1={digest}"),
            "no prefix": (body, digest),
            "truncated": (body, f"sha256={digest[:-2]}"),
            "upper-case prefix": (body, f"SHA256={digest}"),
            "zeros": (body, "sha256=" + "0" * 64),
        }
        snapshots = home / "code"  # the server's code snapshots
        before = sorted(p.name for p in snapshots.iterdir()) if snapshots.exists() else []
        with httpx.Client(base_url=url, timeout=60) as client:
            for what, (content, signature) in bad.items():
                headers = {"X-GitHub-Event": "push", "Content-Type": "application/json"}
                if signature is not None:
                    headers["X-Hub-Signature-256"] = signature
                answer = client.post("/api/hooks/git", content=content, headers=headers)
                assert answer.status_code == 401, (what, answer.status_code, answer.text)
                assert answer.json()["error"]["code"] == "unauthorized", what
            assert client.get("/api/pipelines", headers=admin).json() == []  # nothing ran
            assert client.get("/api/jobs", headers=admin, params={"all": "true"}).json() == []
            after = sorted(p.name for p in snapshots.iterdir()) if snapshots.exists() else []
            assert after == before  # not even the commit's code was taken

            answer = client.post("/api/hooks/git", content=body, headers={
                "X-GitHub-Event": "push", "Content-Type": "application/json", "X-Hub-Signature-256": f"sha256={digest}"})
            assert answer.status_code == 200, answer.text
            ran = answer.json()
            assert ran["ran"] is True and ran["commit"] == pushed
            done = wait_done(lambda pid: client.get(f"/api/pipelines/{pid}", headers=admin).json(), ran["pipeline"])
            assert done["state"] == "promoted", done
            assert done["git_commit"] == pushed and done["trigger"] == "webhook"
            assert [p["id"] for p in client.get("/api/pipelines", headers=admin).json()] == [ran["pipeline"]]
            champion = client.get(f"/api/models/{model}/aliases/champion", headers=admin)
            assert champion.status_code == 200, champion.text
            assert champion.json()["metrics"]["accuracy"] == 0.9  # five epochs: the pushed commit, not HEAD
            logs = client.get(f"/api/pipelines/{ran['pipeline']}/logs", headers=admin, params={"stage": "train"})
            assert "trained 5 epochs" in logs.text


def test_a_failing_test_stage_stops_the_pipeline_before_training(dlbox, small_image, tmp_path, run_id):
    project = tmp_path / "untested"
    model = f"untested-{run_id}"
    make_project(project, small_image, spec(env_name(small_image), model, epochs=2), test=FAILING_TEST)
    followed = dlbox("pipeline", "run", "--follow", cwd=project, check=False, timeout=600)
    assert followed.returncode == 1, followed.stdout[-3000:] + followed.stderr[-3000:]  # 1: failed (documented)
    pipeline_id = dlbox.json("pipeline", "ls")[-1]["id"]
    shown = dlbox.json("pipeline", "show", pipeline_id)
    assert shown["state"] == "failed" and shown["reason"].startswith("test: "), shown["reason"]
    assert "1 failed" in shown["reason"]
    stage = {s["name"]: s for s in shown["stages"]}
    assert stage["test"]["state"] == "failed" and stage["test"]["result"]["junit"]["failures"] == 1
    for later in ("train", "evaluate", "gate", "register", "deploy"):
        assert stage[later]["state"] == "skipped" and stage[later]["runs"] == [], later
        assert stage[later]["reason"] == "not run: test failed"
    assert stage["report"]["state"] == "succeeded"
    assert pipeline_jobs(dlbox, pipeline_id) == {"test": stage["test"]["runs"]}  # no train job was made
    missing = dlbox("models", "show", f"{model}@champion", check=False)
    assert missing.returncode != 0  # nothing registered
    assert "**Verdict" not in Path(dlbox.json("pipeline", "report", pipeline_id)["md"]).read_text()


def test_a_gate_on_a_metric_the_evaluation_never_wrote_fails_with_metric_not_found(dlbox, small_image, tmp_path,
                                                                                    run_id):
    project = tmp_path / "ungated"
    model = f"ungated-{run_id}"
    gate = "    accuracy: {min: 0.5}\n    f1_score: {min: 0.5}\n"
    make_project(project, small_image, spec(env_name(small_image), model, epochs=5, gate=gate))
    followed = dlbox("pipeline", "run", "--follow", cwd=project, check=False, timeout=600)
    assert followed.returncode == 3, followed.stdout[-3000:] + followed.stderr[-3000:]  # rejected by the gate
    pipeline_id = dlbox.json("pipeline", "ls")[-1]["id"]
    shown = dlbox.json("pipeline", "show", pipeline_id)
    assert shown["state"] == "rejected"
    assert shown["reason"] == "rejected by the gate: f1_score: metric not found"
    verdict = {m["name"]: m for m in shown["verdict"]["metrics"]}
    assert verdict["accuracy"]["passed"] and not verdict["f1_score"]["passed"]
    assert verdict["f1_score"]["checks"] == [{"kind": "found", "passed": False, "message": "metric not found"}]
    text = dlbox("pipeline", "show", pipeline_id).stdout
    assert "FAIL f1_score: metric not found" in text
    assert dlbox.json("models", "show", f"{model}:1")["verdict"] == "rejected"
    assert dlbox("models", "show", f"{model}@champion", check=False).returncode != 0
    assert "metric not found" in Path(dlbox.json("pipeline", "report", pipeline_id)["md"]).read_text()


ADVISORIES = Path(__file__).resolve().parents[1] / "data" / "advisories" / "osv"


def test_a_failing_scan_stops_the_pipeline_at_build(dlbox, tmp_path, run_id):
    """urllib3 2.6.3 has two high advisories in the offline snapshot (GHSA-mf9v-mfxr-j63j, GHSA-qccp-gfcp-xxvc,
    fixed in 2.7.0): with `scan: {fail_on: high}` the build stage fails naming them, nothing later runs but the
    report, and the scan is kept with the image."""
    project = tmp_path / "vulnerable"
    project.mkdir()
    (project / "dlbox.yaml").write_text(
        f"name: t{run_id}-vuln\nbase:\n  debian: bullseye\npip:\n  - urllib3==2.6.3\n"
        "pipeline:\n"
        f"  scan: {{fail_on: high, advisories: '{ADVISORIES}'}}\n"
        "  train: {command: python -c 'print(1)'}\n"
        "  evaluate: {command: python -c 'print(1)'}\n")
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "pin a vulnerable urllib3")

    done = dlbox("pipeline", "run", "--follow", cwd=project, check=False, timeout=900)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    shown = dlbox.json("pipeline", "show", dlbox.json("pipeline", "ls")[-1]["id"])
    stage = {s["name"]: s for s in shown["stages"]}
    assert shown["state"] == "failed" and shown["reason"].startswith("build: scan failed: 2 advisories at or above high")
    for advisory in ("GHSA-mf9v-mfxr-j63j (urllib3 2.6.3, high)", "GHSA-qccp-gfcp-xxvc (urllib3 2.6.3, high)"):
        assert advisory in stage["build"]["reason"]
    assert {n: s["state"] for n, s in stage.items()} == {
        "build": "failed", "test": "skipped", "train": "skipped", "evaluate": "skipped", "gate": "skipped",
        "register": "skipped", "deploy": "skipped", "report": "succeeded"}
    assert stage["build"]["result"]["scan"]["counts"]["high"] == 2
    inspected = dlbox.json("inspect", stage["build"]["result"]["id"])
    assert inspected["scan"]["ids"] == ["GHSA-mf9v-mfxr-j63j", "GHSA-qccp-gfcp-xxvc"]
    assert inspected["scan"]["advisories"] == str(ADVISORIES)
