"""The pipeline build stage's scan gate: the `pipeline.scan` spec key and its errors, the verdict line
naming the findings, the gate on real offline advisories (the image's lock read at the engine's edge),
and a non-admin's pipeline refused an advisory source of its own."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dlbox.errors import UsageError
from dlbox.spec import model

ADVISORIES = str(Path(__file__).resolve().parents[1] / "data" / "advisories" / "osv")
SPEC = ("name: demo\nbase:\n  debian: bullseye\npipeline:\n  train: {command: python train.py}\n"
        "  evaluate: {command: python evaluate.py}\n")
VULNERABLE = {"image": "dlbox/demo:latest", "id": "sha256:" + "cd" * 32, "python": [("urllib3", "2.6.3"), ("six", "1.16.0")],
              "os": []}


def test_scan_key_defaults_to_high_and_takes_a_source():
    assert model.parse(SPEC + "  scan: {}\n", source="dlbox.yaml").pipeline.scan.fail_on == "high"
    scan = model.parse(SPEC + f"  scan: {{fail_on: critical, advisories: {ADVISORIES}}}\n", source="dlbox.yaml")
    assert (scan.pipeline.scan.fail_on, scan.pipeline.scan.advisories) == ("critical", ADVISORIES)
    assert model.parse(SPEC, source="dlbox.yaml").pipeline.scan is None


@pytest.mark.parametrize("text, message", [
    ("  scan: {fail_on: severe}\n", "pipeline.scan.fail_on: must be 'low', 'medium', 'high' or 'critical'"),
    ("  scan: {fail_on: high, ignore: all}\n", "pipeline.scan.ignore: unknown key; allowed here: fail_on, advisories"),
    ("  scan: {advisories: ''}\n", "pipeline.scan.advisories: '' is not an OSV folder or zip, or an OSV API URL"),
    ("  scan: high\n", "pipeline.scan:"),
])
def test_a_bad_scan_key_is_named(text, message):
    with pytest.raises(UsageError) as caught:
        model.parse(SPEC + text, source="dlbox.yaml")
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_the_scan_key_leaves_the_environment_hash_alone():
    plain = model.parse(SPEC, source="x").environment_hash()
    assert model.parse(SPEC + "  scan: {fail_on: low}\n", source="x").environment_hash() == plain


def test_the_verdict_names_each_finding_at_or_above_the_level():
    from dlbox.supply import scan

    high = scan.scan_facts(VULNERABLE, advisories=ADVISORIES, fail_on="high")
    text = scan.gate_text(high)
    assert high["gate"]["failed"] and text.startswith("scan failed: 2 advisories at or above high: ")
    assert "GHSA-mf9v-mfxr-j63j (urllib3 2.6.3, high)" in text and "GHSA-qccp-gfcp-xxvc (urllib3 2.6.3, high)" in text
    critical = scan.scan_facts(VULNERABLE, advisories=ADVISORIES, fail_on="critical")
    assert not critical["gate"]["failed"]
    assert scan.gate_text(critical).startswith("scan passed: no advisory at or above critical (2 below;")
    assert scan.gate_text(high, most=1).count("GHSA-") == 1 and " and 1 more " in scan.gate_text(high, most=1)


def test_the_build_stage_gate_fails_on_the_image_and_keeps_the_scan(tmp_path, monkeypatch):
    from dlbox.pipelines import driver
    from dlbox.supply import scan

    monkeypatch.setenv("DLBOX_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(scan, "image_facts", lambda ref: VULNERABLE | {"image": ref})  # the lock, read from the image
    gate = model.parse(SPEC + f"  scan: {{advisories: {ADVISORIES}}}\n", source="x").pipeline.scan
    built = {"id": VULNERABLE["id"], "image": "dlbox/demo:latest", "lock_hash": "l", "tags": []}
    (tmp_path / "home").mkdir()
    ok, outcome = driver.Driver._scan_gate("p1", gate, built, driver.LogProgress("p1"))
    assert not ok and outcome["reason"].startswith("scan failed: 2 advisories at or above high: GHSA-")
    assert outcome["id"] == VULNERABLE["id"] and outcome["scan"]["counts"]["high"] == 2
    assert scan.stored(VULNERABLE["id"])["gate"]["failed"]  # kept with the image: inspect shows it
    assert "scan failed" in driver.log_path("p1", "build").read_text()
    passing = gate.model_copy(update={"fail_on": "critical"})
    ok, outcome = driver.Driver._scan_gate("p1", passing, built, driver.LogProgress("p1"))
    assert ok and "reason" not in outcome and outcome["scan"]["fail_on"] == "critical"


def test_a_users_pipeline_may_not_name_the_servers_advisory_source(tmp_path, monkeypatch, no_engine):
    import subprocess

    from dlbox import snapshots
    from dlbox.jobs import runner as jobs
    from dlbox.pipelines import driver, source
    from dlbox.pipelines.state import STAGES
    from dlbox.server import accounts
    from dlbox.store.db import Pipeline, Store

    monkeypatch.setenv("DLBOX_HOME", str(tmp_path / "home"))
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "dlbox.yaml").write_text(SPEC + "  scan: {advisories: /etc}\n")
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "x"]):
        subprocess.run(["git", "-C", str(repo), "-c", "user.email=a@b.c", "-c", "user.name=A", *args], check=True)
    store = Store(f"sqlite:///{tmp_path}/d.db")
    accounts.add_user(store, "ann", admin=False)
    snap, commit = source.snapshot(repo, "HEAD", tmp_path / "tree")
    snapshots.store(snap)
    store.add_pipeline(Pipeline(id="p1", user="ann", state="queued", code_hash=snap.hash, trigger="cli",
                                git_commit=commit.sha, cancel_requested=False, submitted_at=time.time()), list(STAGES))
    driver.Driver(store, jobs.Capacity(cpus=2, memory=None, gpus=[])).run_once()
    build = store.stages("p1")[0]
    assert build.state == "failed" and build.reason.startswith("pipeline.scan.advisories: only an admin may choose")


def test_inspect_shows_the_kept_verdict_counts_when_and_source(tmp_path, monkeypatch):
    from click.testing import CliRunner

    import click

    from dlbox.cli import images
    from dlbox.supply import scan

    monkeypatch.setenv("DLBOX_HOME", str(tmp_path / "home"))
    lock = {"base": {"ref": "b", "rootfs_sha256": "r"}, "python": {"version": "3.9.2", "packages": []},
            "os": {"packages": []}}
    data = {"ref": "dlbox/demo:latest", "id": VULNERABLE["id"], "lock_hash": "l", "spec_hash": "s",
            "git_commit": None, "created": "c", "size": 1, "lock": lock}
    show = click.command()(lambda: images.image_text(data | {"scan": scan.summary(scan.stored(VULNERABLE["id"]))}))
    assert "not scanned yet (dlbox scan dlbox/demo:latest)" in CliRunner().invoke(show).output
    result = scan.scan_facts(VULNERABLE, advisories=ADVISORIES, fail_on="high")
    scan.keep(result)
    text = CliRunner().invoke(show).output
    assert f"scan        {result['scanned_at']}: 2 advisories (2 high); 0 OS packages with a security update" in text
    assert f"advisories from {ADVISORIES}" in text and "fail-on high: failed (2 at or above)" in text
