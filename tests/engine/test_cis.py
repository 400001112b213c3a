"""CIS Docker Benchmark section 5 on real containers: a workspace (Jupyter and SSH) and a running job.

Every container-runtime rule is evaluated from `docker inspect`, the engine's info and the
container's processes (dlbox.cis); the only warnings allowed are the documented exceptions below.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from dlbox.engine import cis

# Warnings that are so by design, each with its reason (docs/architecture.md, "Container floor").
WORKSPACE_EXCEPTIONS = {
    "5.7": "sshd by the article's design: run by the workspace user on 2222, key-only, that user only",
    "5.12": "a workspace without --cpus keeps the engine's default CPU weight: a lower one would slow "
            "interactive work under load; with --cpus the quota bounds it",
}
JOB_EXCEPTIONS = {
    "5.27": "a job's health is its exit code, which the reconciler records; Healthcheck NONE also turns off "
            "any the image has",
}
# 5.30 (docker0) is checked on its own below: per-user networks are another part of issue 10.
SEPARATE = {"5.30": "checked in test_containers_are_not_on_the_default_bridge"}


@pytest.fixture(scope="module")
def engine_info(docker_client):
    return docker_client.api.info()


def processes(docker_client, container_id: str) -> list[str]:
    top = docker_client.api.top(container_id, ps_args="-eo pid,args")  # the engine needs the PID column
    column = top["Titles"].index("COMMAND")
    return [row[column] for row in top["Processes"]]


@pytest.fixture(scope="module")
def workspace(dlbox, jupyter_image, run_id, tmp_path_factory, docker_client):
    key = tmp_path_factory.mktemp("cis-key") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    name = f"t{run_id}-cis"
    up = dlbox.json("up", name, "--image", jupyter_image["image"], "--ssh", "--ssh-key", f"{key}.pub")
    yield up
    dlbox("rm", name, "--purge-data", check=False)


@pytest.fixture(scope="module")
def job(dlbox, jupyter_image, docker_client):
    submitted = dlbox.json("run", "--image", jupyter_image["image"], "--", "sleep", "300")
    deadline = time.monotonic() + 60
    while {j["id"]: j for j in dlbox.json("jobs", "--all")}[submitted["id"]]["state"] != "running":
        assert time.monotonic() < deadline, "the job did not start"
        time.sleep(0.3)
    yield docker_client.api.inspect_container(f"dlbox-job-{submitted['id']}")
    dlbox("cancel", submitted["id"], check=False)
    dlbox("wait", submitted["id"], "--timeout", "60", check=False)  # the service removes it; not the cleanup too


def report(findings: list[cis.Finding]) -> str:
    return json.dumps([f.__dict__ for f in findings], indent=1)


def test_a_workspace_passes_section_5(workspace, docker_client, engine_info):
    attrs = docker_client.api.inspect_container(workspace["container_id"])
    findings = cis.check(attrs, engine_info, processes(docker_client, attrs["Id"]))
    assert len({f.rule for f in findings}) == 29  # 5.1-5.22, 5.25-5.28, 5.30-5.32
    assert cis.warnings(findings, WORKSPACE_EXCEPTIONS | SEPARATE) == [], report(findings)
    by_rule = {f.rule: f for f in findings}
    assert by_rule["5.7"].status == cis.WARN  # the exception is real: sshd does run there
    assert by_rule["5.13"].status == cis.PASS  # a read-only root (issue 10)
    assert by_rule["5.27"].status == cis.PASS and by_rule["5.15"].detail == "on-failure:5"


def test_a_job_passes_section_5(job, docker_client, engine_info):
    findings = cis.check(job, engine_info, processes(docker_client, job["Id"]))
    assert cis.warnings(findings, JOB_EXCEPTIONS | SEPARATE) == [], report(findings)
    by_rule = {f.rule: f for f in findings}
    assert by_rule["5.7"].status == by_rule["5.13"].status == cis.PASS
    assert by_rule["5.27"].status == cis.WARN and job["Config"]["Healthcheck"]["Test"] == ["NONE"]


def test_the_workspace_healthcheck_reports_healthy(dlbox, workspace, docker_client):
    deadline = time.monotonic() + 150  # the first check runs one interval (15 s) after the start
    while (health := docker_client.api.inspect_container(workspace["container_id"])["State"]["Health"])[
            "Status"] != "healthy":
        assert health["Status"] == "starting" and time.monotonic() < deadline, health
        time.sleep(1)
    assert {r["name"]: r for r in dlbox.json("ls")}[workspace["name"]]["health"] == "healthy"


def test_the_apparmor_exception_holds_only_where_the_kernel_has_none(engine_info, workspace, docker_client):
    attrs = docker_client.api.inspect_container(workspace["container_id"])
    apparmor = {f.rule: f for f in cis.check(attrs, engine_info)}["5.2"]
    has_apparmor = any("apparmor" in o for o in engine_info.get("SecurityOptions") or [])
    assert apparmor.status == (cis.PASS if has_apparmor else cis.NA), apparmor


def test_containers_are_not_on_the_default_bridge(workspace, job, docker_client, engine_info):
    """CIS 5.30: passes once per-user networks (issue 10, another part) put containers on their own."""
    attrs = docker_client.api.inspect_container(workspace["container_id"])
    for container in (attrs, job):
        finding = {f.rule: f for f in cis.check(container, engine_info)}["5.30"]
        assert finding.status == cis.PASS, f"{container['Name']}: {finding.detail}"
