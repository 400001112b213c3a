"""The host firewall rule that keeps dlbox containers off the server's TCP port.

Docker isolates its bridges from each other, but a container can still reach every port the host
listens on through its gateway (the host's INPUT chain). `dlbox server` therefore rejects TCP to
its own port from every dlbox bridge (their interface names share `networks.BRIDGE_PREFIX`) for
as long as it runs, unless the admin allows containers in. The only module that runs iptables.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator

from dlbox.errors import DlboxError
from dlbox.networks import BRIDGE_PREFIX

COMMENT = "dlbox server: no containers"


def rule(port: int) -> list[str]:
    """The INPUT rule (without the chain): a reset, so a container's connect fails at once."""
    return ["-i", f"{BRIDGE_PREFIX}+", "-p", "tcp", "--dport", str(port), "-m", "comment", "--comment", COMMENT,
            "-j", "REJECT", "--reject-with", "tcp-reset"]


def _run(tool: str, *args: str) -> subprocess.CompletedProcess:
    # -w: wait for the xtables lock (dockerd and other dlbox servers change rules too)
    return subprocess.run([tool, "-w", *args], capture_output=True, text=True, stdin=subprocess.DEVNULL)


def _tools(ipv6: bool) -> list[str]:
    return ["iptables", "ip6tables"] if ipv6 else ["iptables"]


def close(port: int, *, ipv6: bool = False) -> None:
    """Add the rule once (a rule left by a server that was killed is reused, not doubled)."""
    for tool in _tools(ipv6):
        try:
            if _run(tool, "-C", "INPUT", *rule(port)).returncode == 0:
                continue
            done = _run(tool, "-I", "INPUT", "1", *rule(port))
        except FileNotFoundError:
            raise DlboxError(f"cannot keep dlbox containers off port {port}: {tool} is not installed (install it, "
                             "or pass --allow-containers to let containers reach the server)",
                             code="firewall") from None
        if done.returncode != 0:
            why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
            raise DlboxError(f"cannot keep dlbox containers off port {port}: {tool}: {why} (run the server as root, "
                             "or pass --allow-containers to let containers reach the server)", code="firewall")


def reopen(port: int, *, ipv6: bool = False) -> None:
    """Remove the rule, every copy of it; nothing to remove is fine."""
    for tool in _tools(ipv6):
        try:
            for _ in range(10):
                if _run(tool, "-D", "INPUT", *rule(port)).returncode != 0:
                    break
        except FileNotFoundError:
            pass


@contextlib.contextmanager
def closed_to_containers(port: int, *, ipv6: bool = False) -> Iterator[None]:
    try:
        close(port, ipv6=ipv6)
    except DlboxError:
        reopen(port, ipv6=ipv6)  # nothing half-made: an IPv4 rule when the IPv6 one failed
        raise
    try:
        yield
    finally:
        reopen(port, ipv6=ipv6)
