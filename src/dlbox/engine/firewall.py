"""The host firewall rule that keeps dlbox containers off the server's TCP port.

Docker isolates its bridges from each other, but a container can still reach every port the host
listens on through its gateway (the host's INPUT chain). `dlbox server` therefore rejects TCP to
its own port from every dlbox bridge (their interface names share `networks.BRIDGE_PREFIX`) for
as long as it runs, unless the admin allows containers in. The only module that runs iptables.

Each server's rule names its process, and a server removes only its own: a second server that
fails to bind the same port never opens the first one's. Rules of servers that died without
removing theirs are removed by the next server on that port.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import subprocess
from collections.abc import Iterator

from dlbox.errors import DlboxError
from dlbox.containers.networks import BRIDGE_PREFIX

COMMENT = "dlbox server pid {pid}"
_OWNER = re.compile(r'--comment "?dlbox server pid (\d+)"?')


def rule(port: int, pid: int) -> list[str]:
    """The INPUT rule (without the chain): a reset, so a container's connect fails at once."""
    return ["-i", f"{BRIDGE_PREFIX}+", "-p", "tcp", "--dport", str(port), "-m", "comment",
            "--comment", COMMENT.format(pid=pid), "-j", "REJECT", "--reject-with", "tcp-reset"]


def _run(tool: str, *args: str) -> subprocess.CompletedProcess:
    # -w: wait for the xtables lock (dockerd and other dlbox servers change rules too)
    return subprocess.run([tool, "-w", *args], capture_output=True, text=True, stdin=subprocess.DEVNULL)


def _tools(ipv6: bool) -> list[str]:
    return ["iptables", "ip6tables"] if ipv6 else ["iptables"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def stale(listing: str, port: int) -> list[list[str]]:
    """Rules (as `-A INPUT ...` arguments) for `port` of dlbox servers no longer running."""
    found = []
    for line in listing.splitlines():
        owner = _OWNER.search(line)
        if owner and line.startswith("-A INPUT ") and f"--dport {port} " in line and not _alive(int(owner[1])):
            found.append(shlex.split(line))
    return found


def close(port: int, *, ipv6: bool = False, pid: int | None = None) -> None:
    """Add this process's rule (and drop dead servers' rules for the same port)."""
    pid = pid or os.getpid()
    for tool in _tools(ipv6):
        try:
            for old in stale(_run(tool, "-S", "INPUT").stdout, port):
                _run(tool, "-D", *old[1:])
            done = _run(tool, "-I", "INPUT", "1", *rule(port, pid))
        except FileNotFoundError:
            raise DlboxError(f"cannot keep dlbox containers off port {port}: {tool} is not installed (install it, "
                             "or pass --allow-containers to let containers reach the server)",
                             code="firewall") from None
        if done.returncode != 0:
            why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
            raise DlboxError(f"cannot keep dlbox containers off port {port}: {tool}: {why} (run the server as root, "
                             "or pass --allow-containers to let containers reach the server)", code="firewall")


def reopen(port: int, *, ipv6: bool = False, pid: int | None = None) -> None:
    """Remove this process's rule; nothing to remove is fine."""
    pid = pid or os.getpid()
    for tool in _tools(ipv6):
        try:
            for _ in range(10):  # every copy, should one have been added twice
                if _run(tool, "-D", "INPUT", *rule(port, pid)).returncode != 0:
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
