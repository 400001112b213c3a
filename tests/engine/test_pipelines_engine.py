"""A pipeline end to end on the real engine and service, with a tiny project (plain Python, no TF):
the first commit passes its gates and becomes the champion; a worse commit is rejected (exit 3) with the
reason in its report, and the champion stays. Every stage runs the commit, not the working tree."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

TRAIN = '''\
import json, os
import dlbox_metrics

epochs = int(dlbox_metrics.params().get("epochs", "1"))
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


def spec(name: str, model: str, epochs: int) -> str:
    return (f"name: {name}\nbase:\n  debian: bullseye\npip:\n  - six==1.16.0\n"
            "pipeline:\n"
            "  test: {command: python test_model.py}\n"
            f"  train: {{command: python train.py, params: {{epochs: '{epochs}'}}}}\n"
            "  evaluate: {command: python evaluate.py}\n"
            "  gate:\n"
            "    accuracy: {min: 0.5, min_delta: {absolute: 0.0}}\n"
            f"  register: {{model: {model}, format: files}}\n")


def is_png(path: Path) -> bool:
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return False
    width, height = struct.unpack(">II", data[16:24])
    return width > 100 and height > 100 and data.rstrip(b"\0")[-8:-4] == b"IEND"


def test_a_good_commit_becomes_champion_and_a_worse_one_is_rejected(dlbox, small_image, tmp_path, run_id):
    project = tmp_path / "digits"
    project.mkdir()
    model = f"digits-{run_id}"
    name = small_image["image"].split("/", 1)[1].split(":", 1)[0]  # the same environment: its build is cached
    (project / "dlbox.yaml").write_text(spec(name, model, epochs=5))
    shutil.copy(small_image["lock_file"], project / "dlbox.lock")
    (project / "train.py").write_text(TRAIN)
    (project / "evaluate.py").write_text(EVALUATE)
    (project / "test_model.py").write_text(TEST)
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "five epochs")
    first_sha = git(project, "rev-parse", "HEAD")

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
