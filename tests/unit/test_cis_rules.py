"""dlbox.cis: each rule reads the inspect data it names (fabricated here; tests/engine/test_cis.py reads real ones)."""

from __future__ import annotations

import copy

import pytest

from dlbox.engine import cis

INFO = {"SecurityOptions": ["name=seccomp,profile=default"], "Swarm": {"LocalNodeState": "inactive"}}
GOOD = {
    "Config": {"Healthcheck": {"Test": ["CMD", "/bin/true"]}, "User": "1000:1000"},
    "HostConfig": {"CapDrop": ["ALL"], "CapAdd": None, "Privileged": False, "NetworkMode": "dlbox-alice",
                   "Memory": 1 << 30, "NanoCpus": 10**9, "ReadonlyRootfs": True,
                   "PortBindings": {"8888/tcp": [{"HostIp": "127.0.0.1", "HostPort": "49153"}]},
                   "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 5}, "PidMode": "", "IpcMode": "private",
                   "UTSMode": "", "UsernsMode": "", "SecurityOpt": ["no-new-privileges"], "PidsLimit": 4096,
                   "Devices": [], "CgroupParent": ""},
    "Mounts": [{"Type": "volume", "Source": "/var/lib/docker/volumes/x/_data", "Destination": "/workspace",
                "Propagation": ""}],
    "NetworkSettings": {"Networks": {"dlbox-alice": {}}},
}


def statuses(attrs, info=INFO, processes=()):
    return {f.rule: f.status for f in cis.check(attrs, info, list(processes))}


def test_a_hardened_container_has_no_warnings():
    found = statuses(GOOD)
    assert [r for r, s in found.items() if s == cis.WARN] == []
    assert found["5.2"] == found["5.3"] == cis.NA and found["5.9"] == found["5.19"] == cis.MANUAL


def changed(path: str, value):
    attrs = copy.deepcopy(GOOD)
    *parents, key = path.split(".")
    target = attrs
    for part in parents:
        target = target[part]
    target[key] = value
    return attrs


@pytest.mark.parametrize("rule, path, value", [
    ("5.4", "HostConfig.CapAdd", ["NET_ADMIN"]),
    ("5.4", "HostConfig.CapDrop", []),
    ("5.5", "HostConfig.Privileged", True),
    ("5.6", "Mounts", [{"Type": "bind", "Source": "/etc/ssl", "Destination": "/x"}]),
    ("5.8", "HostConfig.PortBindings", {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "80"}]}),
    ("5.10", "HostConfig.NetworkMode", "host"),
    ("5.11", "HostConfig.Memory", 0),
    ("5.12", "HostConfig.NanoCpus", 0),
    ("5.13", "HostConfig.ReadonlyRootfs", False),
    ("5.14", "HostConfig.PortBindings", {"8888/tcp": [{"HostIp": "0.0.0.0", "HostPort": "49153"}]}),
    ("5.15", "HostConfig.RestartPolicy", {"Name": "always", "MaximumRetryCount": 0}),
    ("5.16", "HostConfig.PidMode", "host"),
    ("5.17", "HostConfig.IpcMode", "host"),
    ("5.18", "HostConfig.Devices", [{"PathOnHost": "/dev/sda"}]),
    ("5.20", "Mounts", [{"Type": "bind", "Source": "/srv", "Destination": "/srv", "Propagation": "rshared"}]),
    ("5.21", "HostConfig.UTSMode", "host"),
    ("5.22", "HostConfig.SecurityOpt", ["no-new-privileges", "seccomp=unconfined"]),
    ("5.25", "HostConfig.CgroupParent", "/"),
    ("5.26", "HostConfig.SecurityOpt", []),
    ("5.27", "Config.Healthcheck", {"Test": ["NONE"]}),
    ("5.28", "HostConfig.PidsLimit", 0),
    ("5.30", "NetworkSettings.Networks", {"bridge": {}}),
    ("5.31", "HostConfig.UsernsMode", "host"),
    ("5.32", "Mounts", [{"Type": "bind", "Source": "/run/docker.sock", "Destination": "/var/run/docker.sock"}]),
])
def test_each_rule_warns_on_its_own_violation(rule, path, value):
    found = statuses(changed(path, value))
    assert found[rule] == cis.WARN
    assert [r for r, s in found.items() if s == cis.WARN and r != rule] == []


def test_sshd_among_the_processes_warns_and_an_exception_silences_only_that():
    findings = cis.check(GOOD, INFO, ["/usr/sbin/sshd -D -e -f /etc/dlbox/ssh/sshd_config", "jupyter server"])
    assert [f.rule for f in cis.warnings(findings)] == ["5.7"]
    assert cis.warnings(findings, {"5.7": "by design"}) == []


def test_apparmor_and_selinux_are_checked_where_the_engine_has_them():
    info = {**INFO, "SecurityOptions": ["name=apparmor", "name=seccomp,profile=default", "name=selinux"]}
    found = statuses(GOOD, info)
    assert found["5.2"] == found["5.3"] == cis.WARN
    found = statuses({**GOOD, "AppArmorProfile": "docker-default",
                      "HostConfig": {**GOOD["HostConfig"], "SecurityOpt": ["no-new-privileges", "label=type:x"]}}, info)
    assert found["5.2"] == found["5.3"] == cis.PASS
    assert statuses(GOOD, {"SecurityOptions": []})["5.22"] == cis.WARN  # an engine without seccomp


def test_a_restart_policy_of_no_is_acceptable_and_more_than_five_retries_is_not():
    assert statuses(changed("HostConfig.RestartPolicy", {"Name": "no", "MaximumRetryCount": 0}))["5.15"] == cis.PASS
    assert statuses(changed("HostConfig.RestartPolicy", {"Name": "on-failure", "MaximumRetryCount": 10}))["5.15"] \
        == cis.WARN
