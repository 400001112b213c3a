"""What a dlbox container is, before the engine sees it: mounts, limits, GPUs, ports, hardening.

Pure: flags and spec defaults in, a `ContainerSpec` out. Workspaces (and jobs) share it; the
engine module turns it into API calls.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from dlbox.errors import DlboxError, UsageError
from dlbox.sizes import format_size, parse_size

if TYPE_CHECKING:
    from dlbox.networks import Network
    from dlbox.spec import Resources

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
# Host paths a container may never see: the engine itself, or the host's own system.
FORBIDDEN_SOURCES = ("/var/run/docker.sock", "/run/docker.sock", "/", "/etc", "/proc", "/sys", "/dev", "/boot")


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool = False
    guarded: bool = False  # a server user's: its path must stay one that only root can change

    def to_json(self) -> dict:
        data = {"source": self.source, "target": self.target, "read_only": self.read_only}
        return data | {"guarded": True} if self.guarded else data


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


# Where dlbox puts its own files in a container (tokens, keys, the job's run directory).
RESERVED_TARGETS = ("/etc/dlbox", "/opt/dlbox", "/dlbox", "/tmp/dlbox")


def _sensitive() -> list[Path]:
    """Host paths no mount may expose, nor any folder that contains them."""
    import os

    from dlbox import config

    paths = [Path("/var/run/docker.sock"), Path("/run/docker.sock"), Path("/var/lib/docker"),
             Path("/var/lib/containerd"), config.home()]
    host = os.environ.get("DOCKER_HOST", "")
    if host.startswith("unix://"):
        paths.append(Path(host.removeprefix("unix://")))
    return [p.resolve() for p in paths]


def _forbidden(source: Path) -> bool:
    if str(source) in FORBIDDEN_SOURCES or source.name == "docker.sock":
        return True
    if any(str(source).startswith(f"{p}/") for p in FORBIDDEN_SOURCES[3:]):
        return True
    return any(source == p or p.is_relative_to(source) or source.is_relative_to(p) for p in _sensitive())


def check_name(name: str, what: str = "NAME") -> str:
    if not NAME.fullmatch(name):
        raise UsageError(f"{what}: {name!r} must be lowercase letters, digits, '-' or '_' (at most 41)")
    return name


def check_unswappable(source: Path) -> None:
    """Refuse a source whose path anyone but root could change between this check and the mount.

    The engine resolves the path again when it mounts. If no part of it is a symlink and no folder
    on the way could be written by anyone but root, nobody else can swap a part for a symlink (to
    `/`, `/run`...) in between. A world-writable sticky folder (/tmp) is fine where root owns both
    it and the entry below it: then only root may rename or remove that entry. The source itself
    may be the user's to write in; what is in it is what gets mounted.
    """
    import stat

    path = Path("/")
    above = os.lstat(path)
    for part in source.parts[1:]:
        below_path = path / part
        try:
            below = os.lstat(below_path)
        except OSError:
            raise _refused(source, f"{below_path} is gone") from None
        if stat.S_ISLNK(below.st_mode):
            raise _refused(source, f"{below_path} is a symlink")
        writer = _writer_other_than_root(path, above)
        sticky_safe = above.st_mode & stat.S_ISVTX and above.st_uid == 0 and below.st_uid == 0
        if writer and not sticky_safe:
            raise _refused(source, f"{path} can be written by {writer}")
        path, above = below_path, below


def _writer_other_than_root(path: Path, info: os.stat_result) -> str | None:
    if info.st_uid != 0:
        return f"its owner (uid {info.st_uid})"
    if info.st_mode & 0o002:
        return "everyone"
    if info.st_mode & 0o020 and info.st_gid != 0:
        return f"its group (gid {info.st_gid})"
    try:
        if os.getxattr(path, "system.posix_acl_access", follow_symlinks=False):
            return "the users its ACL names"
    except OSError:  # no ACL, or ACLs not supported here
        pass
    return None


def _refused(source: Path, why: str) -> DlboxError:
    return DlboxError(f"--mount: {source} could be swapped for a symlink before it is mounted ({why}); mount a "
                      "folder whose parent folders only root can change", code="mount_refused")


def parse_mount(text: str, *, base: Path | None = None, guarded: bool = False) -> Mount:
    """SRC:DST[:ro|rw]; SRC must exist on the host and may not expose the engine or the host system.

    guarded (a server user's mount): SRC must also be a path only root can change (check_unswappable)."""
    shown = _shown(text)
    parts = text.split(":")
    if len(parts) not in (2, 3) or not all(parts[:2]):
        raise UsageError(f"--mount: {shown} is not SRC:DST[:ro]")
    mode = parts[2] if len(parts) == 3 else "rw"
    if mode not in ("ro", "rw"):
        raise UsageError(f"--mount: {shown}: mode must be ro or rw, not {_shown(mode)}")
    if "\x00" in text:
        raise UsageError(f"--mount: {shown}: a path cannot hold a NUL character")
    try:
        source = Path(parts[0]).expanduser()
        if not source.is_absolute():
            source = (base or Path.cwd()) / source
        source = source.resolve()  # symlinks resolved: the policy applies to where the data really is
        exists = source.exists()
    except (OSError, RuntimeError) as exc:  # a name too long, a symlink loop, ~nobody
        raise UsageError(f"--mount: source {_shown(parts[0])} cannot be read ({exc.__class__.__name__})") from None
    if not exists:
        raise UsageError(f"--mount: source {_shown(parts[0])} does not exist")
    if _forbidden(source):
        raise UsageError(f"--mount: {_shown(str(source))} may not be mounted into a workspace")
    if guarded:
        check_unswappable(source)
    target = parts[1]
    if not target.startswith("/") or ".." in target.split("/") or not target.isprintable():
        raise UsageError(f"--mount: target {_shown(target)} must be an absolute path inside the container")
    if any(target.rstrip("/") == r or target.startswith(r + "/") for r in RESERVED_TARGETS):
        raise UsageError(f"--mount: target {target} is dlbox's own ({', '.join(RESERVED_TARGETS)} are reserved)")
    return Mount(source=str(source), target=target.rstrip("/") or "/", read_only=mode == "ro", guarded=guarded)


def _shown(text: str) -> str:
    """A user's text in a one-line error: as given when printable and short, else quoted with escapes."""
    return text if text.isprintable() and len(text) <= 200 else repr(text[:200])


def recheck(mounts: list[Mount]) -> None:
    """Right before a container is made or started again: each source must still be the real path
    that was checked. A symlink swapped in since (by someone who can write there) is refused, and so
    is a source that is gone: the engine would make an empty root-owned folder there and mount that."""
    for mount in mounts:
        source = Path(mount.source)
        if not source.exists():
            raise DlboxError(f"--mount: {mount.source} no longer exists; refusing to mount an empty folder in its "
                             "place (recreate it, or remove and re-create what mounts it)", code="mount_missing")
        if source.resolve() != source or _forbidden(source):
            raise UsageError(f"--mount: {mount.source} changed since it was checked (now {source.resolve()}); "
                             "refusing to mount it")
        if mount.guarded:  # still only root's to change (a folder above may have been opened since)
            check_unswappable(source)


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
        mem = None
    if capacity.get("cpus") and cpu and cpu > capacity["cpus"]:
        if cpus is not None:
            raise UsageError(f"--cpus: {cpu:g} is more than this machine has ({capacity['cpus']})")
        cpu = float(capacity["cpus"])
    pid_limit = pids if pids is not None else (defaults.pids or DEFAULT_PIDS)
    if pid_limit < 16:
        raise UsageError("--pids: at least 16")
    return Limits(memory=mem, cpus=cpu, shm_size=shm, pids=pid_limit)
