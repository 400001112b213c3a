"""Network names per owner and home: safe for every user name, unambiguous, short bridge names."""

from __future__ import annotations

import re

import pytest

from dlbox.engine import firewall
from dlbox.containers import networks

DOCKER_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")  # what the engine accepts as a network name
HOME = "0123456789ab"


@pytest.mark.parametrize("owner", ["a", "alice", "bob_2", "x-y", "z" * 32, "J.Doe", "root", "ünï", "a b", "../x",
                                   "x.0123456789abcdef", ""])
def test_every_owner_gets_a_name_the_engine_accepts_and_a_short_bridge(owner, monkeypatch):
    monkeypatch.setattr(networks, "local_owner", lambda: "localuser")
    net = networks.for_owner(owner, HOME)
    assert DOCKER_NAME.match(net.name), net.name
    assert net.name.startswith(f"dlbox-{HOME}-")
    assert len(net.bridge) <= 15 and net.bridge.startswith(networks.BRIDGE_PREFIX)
    assert net.options == {"com.docker.network.bridge.name": net.bridge}
    assert net.labels["dlbox.home"] == HOME


def test_server_user_names_appear_as_they_are_and_others_are_hashed():
    assert networks.for_owner("alice", HOME).name == f"dlbox-{HOME}-alice"
    odd = networks.for_owner("J.Doe", HOME)
    assert "J.Doe" not in odd.name and odd.name.startswith(f"dlbox-{HOME}-x.")
    assert odd.labels["dlbox.owner"] == "J.Doe"


def test_no_two_owners_or_homes_share_a_network():
    owners = ["alice", "bob", "J.Doe", "j.doe", "x.deadbeef", "alice ", "Alice"]
    names = {networks.for_owner(o, HOME).name for o in owners}
    bridges = {networks.for_owner(o, HOME).bridge for o in owners}
    assert len(names) == len(bridges) == len(owners)
    assert networks.for_owner("alice", HOME).name != networks.for_owner("alice", "ba9876543210").name
    # a hashed name can never be a real user's: '.' is in no user name
    hashed = networks.owner_part("J.Doe")
    assert not re.match(r"^[a-z][a-z0-9_-]{0,31}$", hashed)


def test_no_owner_means_the_local_user(monkeypatch):
    monkeypatch.setattr(networks, "local_owner", lambda: "carol")
    assert networks.for_owner(None, HOME) == networks.for_owner("carol", HOME)


def test_the_home_comes_from_the_dlbox_home(tmp_path, monkeypatch):
    monkeypatch.setenv("DLBOX_HOME", str(tmp_path / "a"))
    first = networks.for_owner("alice")
    monkeypatch.setenv("DLBOX_HOME", str(tmp_path / "b"))
    assert networks.for_owner("alice").name != first.name


def test_the_firewall_rule_matches_every_dlbox_bridge_resets_and_names_its_server():
    rule = firewall.rule(8700, 42)
    assert rule[:2] == ["-i", networks.BRIDGE_PREFIX + "+"]
    assert ["--dport", "8700"] == rule[rule.index("--dport"):rule.index("--dport") + 2]
    assert rule[-4:] == ["-j", "REJECT", "--reject-with", "tcp-reset"]
    assert "dlbox server pid 42" in rule


def test_only_dead_servers_rules_for_the_port_are_stale():
    import os

    dead = 99_999_999  # above any pid_max
    listing = "\n".join([
        "-P INPUT ACCEPT",
        f'-A INPUT -i dlbox-+ -p tcp -m tcp --dport 8700 -m comment --comment "dlbox server pid {dead}" -j REJECT '
        "--reject-with tcp-reset",
        f'-A INPUT -i dlbox-+ -p tcp -m tcp --dport 8700 -m comment --comment "dlbox server pid {os.getpid()}" '
        "-j REJECT --reject-with tcp-reset",  # a live server's: kept
        f'-A INPUT -i dlbox-+ -p tcp -m tcp --dport 87001 -m comment --comment "dlbox server pid {dead}" -j REJECT',
        "-A INPUT -p tcp -m tcp --dport 8700 -j ACCEPT",  # not dlbox's
    ])
    found = firewall.stale(listing, 8700)
    assert len(found) == 1
    assert found[0][:2] == ["-A", "INPUT"] and f"dlbox server pid {dead}" in found[0]
