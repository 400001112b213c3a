"""A version's files: copied (never linked) out of a run's artifacts into dlbox's home, made
read-only and root's, and named by a hash of their sorted paths, modes and contents.

    $DLBOX_HOME/models/objects/<sha256>/...   one folder per distinct content, shared by versions
    $DLBOX_HOME/models/staging/<random>/      a copy being checked; gone when registration ends
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from dlbox import config
from dlbox.errors import DlboxError

MAX_DEPTH = 32
MAX_ENTRIES = 100_000
FILE_MODE, EXEC_MODE, DIR_MODE = 0o444, 0o555, 0o555
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class NotAModel(DlboxError):
    def __init__(self, message: str):
        super().__init__(message, code="not_a_model")


def root() -> Path:
    path = config.home() / "models"
    for folder in (path, path / "objects", path / "staging"):
        folder.mkdir(mode=0o700 if folder == path else 0o755, exist_ok=True)
    return path


def object_dir(files_hash: str) -> Path:
    return root() / "objects" / files_hash


def staging_dir() -> Path:
    return root() / "staging" / secrets.token_hex(8)


@dataclass(frozen=True)
class Kept:
    files_hash: str
    bytes: int
    files: int


def copy_tree(source: Path, dest: Path, *, what: str) -> None:
    """Copy folder `source` to `dest` (which must not exist): folders and regular files only. A link,
    FIFO, socket or device anywhere is refused (NotAModel), nothing followed. `what` names it in errors."""
    info = os.lstat(source)
    if not stat.S_ISDIR(info.st_mode):
        raise NotAModel(f"{what} is {'a link' if stat.S_ISLNK(info.st_mode) else 'not a folder'}")
    os.mkdir(dest, 0o700)
    count = [0]
    _copy(source, dest, what, 0, count)


def _copy(source: Path, dest: Path, what: str, depth: int, count: list[int]) -> None:
    if depth > MAX_DEPTH:
        raise NotAModel(f"{what}: deeper than {MAX_DEPTH} folders")
    for entry in sorted(os.scandir(source), key=lambda e: e.name):
        count[0] += 1
        if count[0] > MAX_ENTRIES:
            raise NotAModel(f"{what}: more than {MAX_ENTRIES:,} files and folders")
        if not entry.name.isprintable():
            raise NotAModel(f"{what}: a file name with control characters ({entry.name!r})")
        info = entry.stat(follow_symlinks=False)
        rel = f"{what}/{Path(entry.path).relative_to(source)}"
        if stat.S_ISLNK(info.st_mode):
            raise NotAModel(f"{rel} is a link: a model version holds regular files only")
        if stat.S_ISDIR(info.st_mode):
            os.mkdir(dest / entry.name, 0o700)
            _copy(Path(entry.path), dest / entry.name, rel, depth + 1, count)
        elif stat.S_ISREG(info.st_mode):
            _copy_file(Path(entry.path), dest / entry.name, rel)
        else:
            raise NotAModel(f"{rel} is not a regular file or folder (a FIFO, socket or device)")


def _copy_file(source: Path, dest: Path, rel: str) -> None:
    try:
        fd = os.open(source, os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:  # swapped for a link since the listing
        raise NotAModel(f"{rel}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as src:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotAModel(f"{rel} is not a regular file")
        with open(dest, "xb") as out:
            shutil.copyfileobj(src, out, 1024 * 1024)
    os.chmod(dest, EXEC_MODE if info.st_mode & 0o111 else FILE_MODE)


def freeze(path: Path) -> None:
    """Read-only for everyone, owned by root when dlbox runs as root (the service does)."""
    as_root = os.geteuid() == 0
    for folder, dirs, names in os.walk(path, topdown=False):
        for name in names:
            target = Path(folder) / name
            os.chmod(target, EXEC_MODE if os.lstat(target).st_mode & 0o111 else FILE_MODE)
            if as_root:
                os.lchown(target, 0, 0)
        os.chmod(folder, DIR_MODE)
        if as_root:
            os.lchown(folder, 0, 0)


def tree_hash(path: Path) -> Kept:
    """sha256 over every entry, sorted by path: 'd MODE PATH' for folders, 'f MODE SHA256 SIZE PATH' for files."""
    lines, total, files = [], 0, 0
    for folder, dirs, names in os.walk(path):
        dirs.sort()
        base = Path(folder)
        for name in dirs:
            rel = (base / name).relative_to(path).as_posix()
            lines.append((rel, f"d {stat.S_IMODE(os.lstat(base / name).st_mode):o} {rel}\n"))
        for name in names:
            target = base / name
            info = os.lstat(target)
            if not stat.S_ISREG(info.st_mode):
                raise NotAModel(f"{target.relative_to(path)} is not a regular file")
            digest = hashlib.sha256()
            with open(target, "rb") as f:
                while chunk := f.read(1024 * 1024):
                    digest.update(chunk)
            rel = target.relative_to(path).as_posix()
            lines.append((rel, f"f {stat.S_IMODE(info.st_mode):o} {digest.hexdigest()} {info.st_size} {rel}\n"))
            total += info.st_size
            files += 1
    whole = hashlib.sha256()
    for _, line in sorted(lines):
        whole.update(line.encode("utf-8", "surrogateescape"))
    return Kept(files_hash=whole.hexdigest(), bytes=total, files=files)


def remove_tree(path: Path) -> None:
    """Remove a kept or staged tree: its read-only folders are opened up first (links not followed)."""
    if not os.path.lexists(path):
        return
    if os.path.islink(path) or not os.path.isdir(path):
        os.unlink(path)
        return
    for folder, dirs, _ in os.walk(path):
        os.chmod(folder, 0o700)
    shutil.rmtree(path, ignore_errors=True)
