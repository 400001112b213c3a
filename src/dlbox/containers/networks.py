"""Which Docker network a user's containers join: one bridge per owner and dlbox home.

Pure: names, labels and options only; `engine.ensure_network` makes the network. A user's
workspaces and jobs share their network and can talk; Docker isolates bridges from each other,
so containers of different users cannot. No dlbox container joins the default bridge (docker0).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from dlbox import config

# Every dlbox bridge's interface name starts with this, so one host firewall rule (`-i dlbox-+`)
# matches them all. Linux allows 15 characters in an interface name: the prefix and 9 hex digits.
BRIDGE_PREFIX = "dlbox-"
_IFNAME_MAX = 15
# The names users may have on a server; anything else (a local login like "J.Doe") is hashed.
_PLAIN_OWNER = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


@dataclass(frozen=True)
class Network:
    name: str
    bridge: str  # the host's interface name for it
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def options(self) -> dict[str, str]:
        return {"com.docker.network.bridge.name": self.bridge}


def local_owner() -> str:
    """Who owns what local mode makes: the login the CLI runs as (what it sends as X-Dlbox-User)."""
    import getpass

    return getpass.getuser()


def owner_part(owner: str) -> str:
    """The owner as it appears in a network name: a server user name as is; anything else as
    "x." and a hash ('.' is in no user name, so the two never meet)."""
    if _PLAIN_OWNER.match(owner):
        return owner
    return "x." + hashlib.sha256(owner.encode()).hexdigest()[:16]


def for_owner(owner: str | None, home_id: str | None = None) -> Network:
    """The network of `owner`'s containers in this dlbox home (None: the local user).

    The home is part of the name, so a test suite's networks (own DLBOX_HOME) never are a
    developer's, and two homes on one engine never share one."""
    owner = owner or local_owner()
    home_id = home_id or config.home_id()
    name = f"dlbox-{home_id}-{owner_part(owner)}"
    digest = hashlib.sha256(name.encode()).hexdigest()
    bridge = BRIDGE_PREFIX + digest[:_IFNAME_MAX - len(BRIDGE_PREFIX)]
    return Network(name=name, bridge=bridge,
                   labels={"dlbox.kind": "network", "dlbox.owner": owner, "dlbox.home": home_id})
