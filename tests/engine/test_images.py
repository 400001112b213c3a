"""Bases, builds, locks and verify against the real engine."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

SPEC = """\
name: {name}
base:
  debian: bullseye
apt:
  - tree
pip:
  - six==1.16.0
code:
  src: src
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory, run_id, git_project) -> Path:
    """A git project with a small spec and some code."""
    root = tmp_path_factory.mktemp("project")
    (root / "src").mkdir()
    (root / "src" / "train.py").write_text("print('training')\n")
    (root / "dlbox.yaml").write_text(SPEC.format(name=f"t{run_id}-small"))
    return git_project(root)


@pytest.fixture(scope="module")
def first_build(dlbox, project):
    result = dlbox("build", "--json", cwd=project)
    return json.loads(result.stdout), result.stderr


def test_first_build_bootstraps_a_base_and_records_its_digest(first_build, docker_client, run_id):
    built, progress = first_build
    assert "bootstrapping Debian bullseye" in progress
    bases = docker_client.images.list(name=f"dlbox-test-{run_id}/debian-bullseye")
    assert len(bases) == 1
    digest = bases[0].labels["dlbox.base.rootfs-sha256"]
    assert len(digest) == 64 and int(digest, 16) >= 0
    lock = json.loads(Path(built["lock_file"]).read_text())
    assert lock["base"] == {"ref": bases[0].tags[0], "rootfs_sha256": digest}


def test_build_json_names_image_id_lock(first_build, project, run_id):
    built, _ = first_build
    assert built["image"] == f"dlbox/t{run_id}-small:latest"
    assert built["id"].startswith("sha256:") and len(built["id"]) == 71
    assert Path(built["lock_file"]).resolve() == project / "dlbox.lock"
    assert f"dlbox/t{run_id}-small:{built['lock_hash'][:12]}" in built["tags"]


def test_lock_holds_exact_versions_hashes_and_os_packages(first_build):
    built, _ = first_build
    lock = json.loads(Path(built["lock_file"]).read_text())
    assert lock["lock_hash"] == built["lock_hash"]
    python = {p["name"]: p for p in lock["python"]["packages"]}
    assert python["six"]["version"] == "1.16.0"
    assert python["six"]["hashes"] and python["six"]["hashes"][0].startswith("sha256:")
    assert lock["python"]["version"].startswith("3.9.")
    os_packages = {p["name"]: p["version"] for p in lock["os"]["packages"]}
    assert "tree" in os_packages and "python3" in os_packages


def test_image_is_labelled_and_holds_the_code(first_build, docker_client, project):
    built, _ = first_build
    image = docker_client.images.get(built["id"])
    labels = image.labels
    head = subprocess.run(["git", "-C", str(project), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert labels["dlbox.lock-hash"] == built["lock_hash"]
    assert labels["dlbox.git-commit"] == head.strip()
    assert labels["dlbox.git-dirty"] == "false"  # the lock is written next to the spec after the label is made
    assert labels["dlbox.version"] and len(labels["dlbox.spec-hash"]) == 64
    out = docker_client.containers.run(built["id"], ["cat", "/opt/code/train.py"], remove=True)
    assert out == b"print('training')\n"
    user = docker_client.containers.run(built["id"], ["id", "-un"], remove=True)
    assert user == b"dl\n"


def test_images_and_inspect_json(dlbox, first_build):
    built, _ = first_build
    listed = {row["id"]: row for row in dlbox.json("images")}
    row = listed[built["id"]]
    assert row["ref"] == built["image"]
    assert row["lock_hash"] == built["lock_hash"]
    assert row["size"] > 10_000_000 and row["created"].endswith("Z")
    shown = dlbox.json("inspect", built["image"])
    assert shown["id"] == built["id"]
    assert shown["lock"]["lock_hash"] == built["lock_hash"]
    assert any(p["name"] == "six" for p in shown["lock"]["python"]["packages"])


def test_rebuild_from_lock_gives_identical_lock_hash(dlbox, first_build, project):
    built, _ = first_build
    dry = dlbox("build", "--dry-run", cwd=project).stdout
    assert "--require-hashes" in dry and "tree=" in dry  # the lock, not the spec, drives this build
    again = dlbox("build", "--no-cache", "--json", cwd=project)
    rebuilt = json.loads(again.stdout)
    assert "from dlbox.lock" in again.stderr
    assert rebuilt["lock_hash"] == built["lock_hash"]


def test_code_change_rebuild_reuses_dependency_layers(dlbox, first_build, project):
    (project / "src" / "train.py").write_text("print('training v2')\n")
    result = dlbox("build", "--json", cwd=project)
    out = result.stderr.splitlines()
    pip_step = next(i for i, line in enumerate(out) if "RUN pip install" in line)
    assert "Using cache" in out[pip_step + 1]
    code_step = next(i for i, line in enumerate(out) if "COPY --chown" in line and "code/" in line)
    assert "Using cache" not in out[code_step + 1]
    assert json.loads(result.stdout)["lock_hash"] == first_build[0]["lock_hash"]


def test_ca_bundle_is_trusted_but_never_printed(dlbox, first_build, project, docker_client):
    bundle = Path("/etc/ssl/certs/ca-certificates.crt").read_text()
    body_lines = [line for line in bundle.splitlines() if line and not line.startswith("-----")]
    result = dlbox("build", "--no-cache", cwd=project)
    shown = result.stdout + result.stderr
    assert not any(line in shown for line in body_lines[:200])
    # the image trusts it: pip inside the image can reach the index (used by the drift test too)
    env = docker_client.images.get(first_build[0]["image"]).attrs["Config"]["Env"]
    assert "PIP_CERT=/etc/dlbox/ca-bundle.crt" in env


def test_verify_passes_then_catches_a_package_added_after_the_build(dlbox, first_build, docker_client, labelled):
    built, _ = first_build
    ok = dlbox("verify", built["image"], "--json")
    assert json.loads(ok.stdout)["ok"] is True and ok.returncode == 0
    # add a package the lock does not know about, the way a hand-edited image would
    container = docker_client.containers.run(built["image"], ["pip", "install", "-q", "tomli==2.0.1"],
                                             detach=True, labels=labelled)
    assert container.wait()["StatusCode"] == 0, container.logs()
    drifted = container.commit(repository=f"{built['image'].split(':')[0]}", tag="drifted")
    container.remove()
    result = dlbox("verify", drifted.id, "--json", check=False)
    report = json.loads(result.stdout)
    assert result.returncode == 1
    assert report["ok"] is False
    assert {"kind": "python", "name": "tomli", "locked": None, "found": "2.0.1"} in report["drift"]
    text = dlbox("verify", drifted.id, check=False)
    assert "tomli: locked -, found 2.0.1" in text.stdout


def test_changing_the_spec_resolves_again(dlbox, first_build, project):
    spec = project / "dlbox.yaml"
    original = spec.read_text()
    try:
        spec.write_text(original.replace("six==1.16.0", "six==1.15.0"))
        result = dlbox("build", "--json", cwd=project)
        assert "older version of the spec" in result.stderr
        lock = json.loads((project / "dlbox.lock").read_text())
        assert {p["name"]: p["version"] for p in lock["python"]["packages"]}["six"] == "1.15.0"
        assert json.loads(result.stdout)["lock_hash"] != first_build[0]["lock_hash"]
    finally:
        spec.write_text(original)


def test_unknown_image_is_a_one_line_error(dlbox):
    result = dlbox("inspect", "dlbox/no-such-image:1", check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == "error: no image 'dlbox/no-such-image:1' in the engine (see `dlbox images`)"


def test_other_dlbox_objects_survive_the_test_cleanup(docker_client, first_build, run_id):
    """Cleanup by label touches only this run's objects."""
    from dlbox.engine import api as engine

    other = docker_client.containers.create(first_build[0]["id"], ["true"],
                                            labels={"dlbox.managed": "true", "dlbox.test-run": "someone-else"})
    mine = docker_client.containers.create(first_build[0]["id"], ["true"],
                                           labels={"dlbox.managed": "true", "dlbox.test-run": f"{run_id}-probe"})
    try:
        removed = engine.remove_labelled(f"dlbox.test-run={run_id}-probe")
        assert removed["containers"] == 1
        other.reload()  # still there
        with pytest.raises(Exception):
            mine.reload()
    finally:
        other.remove(force=True)


def test_progress_is_a_live_status_on_a_terminal_and_plain_lines_otherwise(dlbox, first_build, project, test_env):
    import shlex
    import sys

    plain = dlbox("build", cwd=project).stderr
    assert "\x1b[" not in plain and any(line.startswith("> building dlbox/") for line in plain.splitlines())
    command = shlex.join([sys.executable, "-m", "dlbox", "build"])
    env = {k: v for k, v in test_env.items() if k != "NO_COLOR"} | {"TERM": "xterm"}
    tty = subprocess.run(["script", "-qec", command, "/dev/null"], cwd=project, env=env, capture_output=True,
                         text=True, timeout=600)
    assert tty.returncode == 0, tty.stdout[-2000:]
    assert "\x1b[" in tty.stdout and "built dlbox/" in tty.stdout  # Rich drew a status line


def test_an_unchanged_rebuild_tags_the_same_image_and_starts_no_helper(dlbox, first_build, project, docker_client,
                                                                         run_id, labelled):
    """The engine's cache gives the same image ID: its packages are not read again in a helper container,
    nor is another labelled image committed. An image derived from the build (carrying its labels) is never
    what the rebuild tags."""
    import time

    git = ["git", "-C", str(project), "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "everything", "--allow-empty"], check=True)
    first = json.loads(dlbox("build", "--json", cwd=project).stdout)
    container = docker_client.containers.create(first["id"], ["true"], labels=labelled)
    derived = container.commit(repository=first["image"].split(":")[0], tag="derived", changes="ENV X=1")
    container.remove()
    assert derived.labels["dlbox.lock-hash"] == first["lock_hash"]  # it looks like a dlbox image

    started = time.time_ns()  # the engine's events count whole seconds: the earlier steps' are cut by timeNano
    again = dlbox("build", "--json", cwd=project)
    since, until = started // 10**9 - 1, time.time_ns() // 10**9 + 1
    rebuilt = json.loads(again.stdout)
    assert rebuilt["id"] == first["id"] != derived.id
    assert rebuilt["lock_hash"] == first["lock_hash"]
    assert "whose packages an earlier build read" in again.stderr
    created = [e for e in docker_client.events(since=since, until=until, decode=True,
                                               filters={"type": "container", "event": "create",
                                                        "label": f"dlbox.test-run={run_id}"})
               if e["timeNano"] >= started]
    assert created == []  # neither the package reader nor the relabel's container
    assert docker_client.images.get(f"{first['image']}").id == first["id"]
