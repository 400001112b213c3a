"""What a dlbox container is, before the engine sees it: mounts, limits, GPUs, ports, hardening.

Pure: flags and spec defaults in, a `ContainerSpec` out. Workspaces (and jobs) share it; the
engine module turns it into API calls.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dlbox.errors import DlboxError, UsageError
from dlbox.sizes import format_size, parse_size

if TYPE_CHECKING:
    from dlbox.containers.mount_policy import Mount
    from dlbox.containers.networks import Network
    from dlbox.spec.model import Resources

DEFAULT_SHM = 1024**3  # Docker's 64 MB /dev/shm kills TF/PyTorch data loaders
DEFAULT_PIDS = 4096
# A container given no memory limit still gets one: 4 GiB, or half the machine where that is less.
DEFAULT_MEMORY = 4 * 1024**3
# Helper containers (image probes, the lock's package listing, relabelling) get small fixed limits.
HELPER_MEMORY = 512 * 1024**2
HELPER_PIDS = 128
# The uid a container runs as when its image has no dlbox.uid label (an admin-allowed foreign image).
DEFAULT_UID = 1000
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,40}")


@dataclass(frozen=True)
class Limits:
    memory: int | None = None
    cpus: float | None = None
    shm_size: int = DEFAULT_SHM
    pids: int = DEFAULT_PIDS

    def to_json(self) -> dict:
        return {"memory": format_size(self.memory) if self.memory else None, "memory_bytes": self.memory,
                "cpus": self.cpus, "shm_size": format_size(self.shm_size), "pids": self.pids}


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    image: str
    command: list[str]
    user: str
    labels: dict[str, str]
    mounts: list[Mount] = field(default_factory=list)
    volumes: dict[str, str] = field(default_factory=dict)  # volume name -> target
    own_volumes: tuple[str, ...] = ()  # targets of anonymous volumes, removed with the container
    limits: Limits = Limits()
    gpu_ids: list[str] | None = None  # None: no GPU; ["all"] for every GPU
    ports: dict[int, tuple[str, int]] = field(default_factory=dict)  # container port -> (host ip, host port)
    env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None
    network: Network | None = None  # the owner's network; None: no network at all
    read_only: bool = False  # the image's root filesystem, literally immutable (CIS 5.13)
    tmpfs: dict[str, str] = field(default_factory=dict)  # path -> mount options
    healthcheck: dict | None = None  # the engine's Healthcheck (test, interval, ...); None: the image's
    restart: dict | None = None  # the engine's RestartPolicy ({"Name": "on-failure", "MaximumRetryCount": 5})


def default_memory(machine: int | None) -> int:
    """The memory limit of a container given none (there is always one): DLBOX_DEFAULT_MEMORY in the
    service's environment, else DEFAULT_MEMORY; never more than half the machine."""
    import os

    text = os.environ.get("DLBOX_DEFAULT_MEMORY", "").strip()
    try:
        wanted = parse_size(text) if text else DEFAULT_MEMORY
    except ValueError:
        raise DlboxError(f"DLBOX_DEFAULT_MEMORY: {text!r} is not a size (e.g. 4g)") from None
    wanted = max(wanted, 6 * 1024**2)  # the engine's own floor
    return min(wanted, machine // 2) if machine else wanted


def run_as(image_labels: dict[str, str] | None) -> str:
    """`uid:gid` for a container of this image: its dlbox.uid label, and dlbox.gid (else the same).

    Numeric on purpose: a user *name* without a group lets the image's /etc/passwd and /etc/group
    decide the group, and a missing or root uid falls back to a non-root one, never to 0."""
    image_labels = image_labels or {}

    def number(key: str, default: int) -> int:
        text = str(image_labels.get(key) or "").strip()
        return int(text) if text.isdigit() and int(text) > 0 else default

    uid = number("dlbox.uid", DEFAULT_UID)
    return f"{uid}:{number('dlbox.gid', uid)}"


def uid_gid(user: str) -> tuple[int, int]:
    """The numbers of a `run_as` string, for chown."""
    uid, _, gid = user.partition(":")
    return int(uid), int(gid or uid)


def non_root(user: str | None) -> bool:
    """Is `user` a numeric uid:gid with neither of them 0 (what every dlbox container runs as)?"""
    uid, sep, gid = (user or "").partition(":")
    return bool(sep) and uid.isdigit() and gid.isdigit() and int(uid) > 0 and int(gid) > 0


def scratch(user: str, home: str | None) -> dict[str, str]:
    """The tmpfs mounts that make a read-only root filesystem livable: /tmp, and the user's HOME
    (caches, downloads, Jupyter's runtime files). In memory, so charged to the memory limit; exec
    allowed, since builds and JIT compilers run what they write there."""
    uid, gid = uid_gid(user)
    out = {"/tmp": "rw,exec,nosuid,nodev,mode=1777"}
    if home and home.startswith("/") and home.rstrip("/") not in ("", "/tmp"):
        out[home] = f"rw,exec,nosuid,nodev,mode=0700,uid={uid},gid={gid}"
    return out


def image_home(image_labels: dict[str, str] | None) -> str | None:
    """The HOME of a dlbox image's user (render.py makes /home/NAME); None for an image dlbox did not build."""
    name = (image_labels or {}).get("dlbox.user")
    return f"/home/{name}" if name and re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", name) else None


def foreign_images_allowed() -> bool:
    """May a job run an image dlbox did not build? Only where the service's admin said so:
    `dlbox server --allow-foreign-images`, or DLBOX_ALLOW_FOREIGN_IMAGES=1 in the service's environment."""
    import os

    return os.environ.get("DLBOX_ALLOW_FOREIGN_IMAGES", "").strip().lower() in ("1", "true", "yes")


def seconds(value: float) -> int:
    """The engine counts healthcheck times in nanoseconds."""
    return int(value * 1e9)


@dataclass(frozen=True)
class _Unset:
    memory: int | None = None
    cpus: float | None = None
    shm_size: int | None = None
    pids: int | None = None
    gpus: None = None


_NO_DEFAULTS = _Unset()


def check_name(name: str, what: str = "NAME") -> str:
    if not NAME.fullmatch(name):
        raise UsageError(f"{what}: {name!r} must be lowercase letters, digits, '-' or '_' (at most 41)")
    return name


def limits(defaults: Resources | None, *, memory: str | None, cpus: float | None, shm_size: str | None,
           pids: int | None, capacity: dict) -> Limits:
    """Flags over spec defaults, checked against the machine (`capacity`: cpus, memory in bytes)."""
    defaults = defaults or _NO_DEFAULTS
    try:
        mem = parse_size(memory) if memory else defaults.memory
    except ValueError as exc:
        raise UsageError(f"--memory: {exc}") from None
    try:
        shm = parse_size(shm_size) if shm_size else (defaults.shm_size or DEFAULT_SHM)
    except ValueError as exc:
        raise UsageError(f"--shm-size: {exc}") from None
    cpu = cpus if cpus is not None else defaults.cpus
    if cpu is not None and cpu <= 0:
        raise UsageError("--cpus: must be more than 0")
    if mem is not None and mem < 6 * 1024**2:
        raise UsageError("--memory: at least 6m")
    # a flag beyond the machine is an error; a spec default is a ceiling, so it shrinks to fit
    if capacity.get("memory") and mem and mem > capacity["memory"]:
        if memory:
            raise UsageError(f"--memory: {format_size(mem)} is more than this machine has "
                             f"({capacity['memory'] / 1024**3:.1f}g)")
        mem = capacity["memory"]
    if capacity.get("cpus") and cpu and cpu > capacity["cpus"]:
        if cpus is not None:
            raise UsageError(f"--cpus: {cpu:g} is more than this machine has ({capacity['cpus']})")
        cpu = float(capacity["cpus"])
    pid_limit = pids if pids is not None else (defaults.pids or DEFAULT_PIDS)
    if pid_limit < 16:
        raise UsageError("--pids: at least 16")
    return Limits(memory=mem, cpus=cpu, shm_size=shm, pids=pid_limit)
