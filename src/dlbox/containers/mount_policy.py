"""Host folders in containers: which sources may be mounted, by whom, and the checks that keep a
checked path from being swapped for a symlink before the engine mounts it.

Pure apart from reading the file system: a mount's text in, a `Mount` out, or a one-line refusal.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dlbox.errors import DlboxError, Forbidden, UsageError


class Who(Protocol):  # a server's caller (server.accounts.Caller): whose roots, and whether an admin
    name: str

    @property
    def admin(self) -> bool: ...

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


# Where dlbox puts its own files in a container (tokens, keys, the job's run directory).
RESERVED_TARGETS = ("/etc/dlbox", "/etc/dlbox-ws", "/opt/dlbox", "/dlbox", "/tmp/dlbox")


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


def user_mount_roots(roots: list[Path], who: Who) -> list[Path]:
    """Where `who` may mount from: `<root>/<name>` below each --mount-root; an admin, the roots themselves."""
    return list(roots) if who.admin else [root / who.name for root in roots]


def check_mount_roots(text: str, roots: list[Path], *, who: Who) -> str:
    """A user's SRC:DST[:ro] must lie below one of their roots, after symlinks and '..'; a non-admin's
    must also be a path nobody but root can swap before the engine mounts it.

    Returns the mount with SRC resolved: the caller keeps that, so nothing resolves the user's text
    a second time (a symlink flipped in between would otherwise pass one check and fail the other)."""
    source, _, rest = text.partition(":")
    if not source.startswith("/"):
        raise Forbidden(f"--mount: {source[:200]!r}: the server needs an absolute source path", code="mount_refused")
    if ".." in source.split("/"):
        raise Forbidden(f"--mount: {source[:200]!r}: '..' is not allowed in a mount source", code="mount_refused")
    if "\x00" in source:
        raise Forbidden("--mount: a mount source cannot hold a NUL character", code="mount_refused")
    try:  # strict: a source that is missing now could be a symlink by the time it is mounted
        real = Path(os.path.realpath(source, strict=True))
    except (OSError, RuntimeError):
        raise Forbidden(f"--mount: {source[:200]} does not exist on the server", code="mount_refused") from None
    allowed = user_mount_roots(roots, who)
    if not any(real == root or real.is_relative_to(root) for root in allowed):
        shown = ", ".join(str(r) for r in allowed) or "none (the admin allows no mounts)"
        raise Forbidden(f"--mount: {source[:200]} is outside {'the allowed' if who.admin else 'your'} mount roots: "
                        f"{shown}", code="mount_refused")
    if not who.admin:
        check_unswappable(real)
    return f"{real}:{rest}"


def mount_roots(texts: list[str]) -> list[Path]:
    roots = []
    for text in texts:
        path = Path(text)
        if not path.is_absolute() or not path.is_dir():
            raise UsageError(f"--mount-root: {text!r} must be an existing absolute directory")
        if str(path.resolve()) in ("/", "/etc", "/proc", "/sys", "/dev", "/var/run", "/run"):
            raise UsageError(f"--mount-root: {text} would expose the host system")
        roots.append(path.resolve())
    return roots
