"""Code snapshots: the project's files a job runs, content-addressed and kept read-only.

`take(project)` lists what git would track (tracked plus untracked-not-ignored files:
`git ls-files -co --exclude-standard -z`, which no user setting like status.showUntrackedFiles
changes) or, outside git, every file but what `.dlboxignore` names (gitignore-style, see
`Ignore`). Limits are checked on the listing (sizes from lstat) before a byte is read.

The hash is sha256 over the sorted entries: `path NUL mode NUL sha256(content) LF` for files
(mode 644 or 755, as git keeps it) and `path NUL link NUL target LF` for symlinks (which must stay
inside the project). Content hashes are cached per project (`$DLBOX_HOME/code-cache/`) by
(size, mtime, ctime, inode, mode), so an unchanged tree costs a listing and stats only; a file changed
in the 2 s before the snapshot is never cached (git's racy-clean rule: a rewrite within the file
system's time granularity keeps its stat). A file read to be hashed is kept in memory (up to 64 MB
a snapshot), so storing or sending it reads nothing twice.

The store (`$DLBOX_HOME/code/<hash>/`) holds one folder per snapshot: `tree/` (files 0444 or
0555, folders 0555, owned by the service's user, mounted read-only into jobs) and
`manifest.json`. A snapshot is written to a private temporary folder and renamed into place, so
a half-written one is never seen; `unpack` takes an uploaded tar, refusing anything that is not a
plain file or a link inside the tree, and the hash is computed again from what was written.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import stat
import subprocess
import time
from pathlib import Path
from typing import NamedTuple

from dlbox import config
from dlbox.errors import NotFound, UsageError

HASH = re.compile(r"[0-9a-f]{64}")
DEFAULT_DEST = "/workspace/code"
DEFAULT_BYTES = 200 * 1024**2
DEFAULT_FILES = 20_000
GRACE = 3600  # gc keeps a snapshot this young even unreferenced: its job may be on its way
CHUNK = 1024 * 1024
ALWAYS_SKIP = {".git", ".hg", ".svn"}  # outside git: VCS data is never code


def limits() -> tuple[int, int]:
    """(bytes, files) a snapshot may hold: DLBOX_CODE_LIMIT (a size like 200m), DLBOX_CODE_FILES."""
    from dlbox.sizes import parse_size

    try:
        size = parse_size(os.environ.get("DLBOX_CODE_LIMIT") or DEFAULT_BYTES)
        files = int(os.environ.get("DLBOX_CODE_FILES") or DEFAULT_FILES)
    except ValueError as exc:
        raise UsageError(f"DLBOX_CODE_LIMIT/DLBOX_CODE_FILES: {exc}") from None
    return size, files


def check_hash(value: str) -> str:
    """A snapshot hash, before it names a path: 64 lowercase hex digits, nothing else."""
    if not isinstance(value, str) or not HASH.fullmatch(value):
        raise UsageError(f"code: {str(value)[:80]!r} is not a snapshot hash (64 hex digits)")
    return value


def check_path(path: str) -> str:
    """A path inside a snapshot: relative, no '.', '..' or empty parts, no NUL or line breaks."""
    parts = path.split("/")
    if (not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts)
            or any(c in path for c in "\0\n\r") or len(path.encode()) > 4096):
        raise UsageError(f"code: {path[:200]!r} is not a path inside a project")
    return path


class Entry(NamedTuple):
    path: str  # relative, '/'-separated
    mode: str  # "644", "755" or "link"
    size: int = 0
    sha256: str = ""  # of the content; of the target for a link
    target: str = ""  # a link's

    def line(self) -> str:
        return f"{self.path}\0{self.mode}\0{self.target if self.mode == 'link' else self.sha256}\n"

    def to_json(self) -> dict:
        if self.mode == "link":
            return {"path": self.path, "mode": "link", "target": self.target}
        return {"path": self.path, "mode": self.mode, "size": self.size, "sha256": self.sha256}


def tree_hash(entries) -> str:
    """The snapshot's hash: over its entries sorted by path, whatever order they came in."""
    digest = hashlib.sha256()
    for entry in sorted(entries, key=lambda e: e.path.encode()):
        digest.update(entry.line().encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


class Snapshot:
    """A taken (or unpacked) snapshot: its files below `root`, its hash, what was skipped."""

    def __init__(self, root: Path, entries: list[Entry], hash: str, skipped: list[str] | None = None,
                 held: dict[str, bytes] | None = None):
        self.root, self.entries, self.hash = root, entries, hash
        self.skipped = skipped or []  # special files: FIFOs, sockets, devices, submodules
        self.held = held or {}  # path -> the content hashed when taken (storing and sending reuse it)

    @property
    def files(self) -> int:
        return len(self.entries)

    @property
    def bytes(self) -> int:
        return sum(e.size for e in self.entries)

    def manifest(self) -> dict:
        return {"hash": self.hash, "files": self.files, "bytes": self.bytes,
                "entries": [e.to_json() for e in sorted(self.entries, key=lambda e: e.path.encode())]}


# --- which files -----------------------------------------------------------------------------------


class Ignore:
    """.dlboxignore, a gitignore subset: one pattern a line, `#` comments, `!` re-includes, a
    trailing `/` matches folders only, a pattern with a `/` (not only trailing) is anchored at the
    project's root, otherwise it matches a name at any depth; `*`, `?` and `[...]` within a name and
    `**` across folders."""

    def __init__(self, text: str = ""):
        self.rules: list[tuple[re.Pattern, bool, bool]] = []  # (regex, negated, folders only)
        for raw in text.splitlines():
            line = raw.rstrip()
            if not line or line.startswith("#"):
                continue
            negated = line.startswith("!")
            line = line[1:] if negated else line
            folders = line.endswith("/")
            line = line.strip("/") if folders else line
            anchored = "/" in line.lstrip("/") or line.startswith("/")
            line = line.lstrip("/")
            if not line:
                continue
            regex = re.compile(("" if anchored else "(?:.*/)?") + _glob(line) + r"\Z", re.S)
            self.rules.append((regex, negated, folders))

    def ignored(self, path: str, is_dir: bool) -> bool:
        """Whether `path` (relative, '/'-separated) is ignored; the last matching rule decides."""
        result = False
        for regex, negated, folders in self.rules:
            if folders and not is_dir:
                continue
            if regex.match(path):
                result = not negated
        return result


def _glob(pattern: str) -> str:
    """A gitignore glob as a regex: `*` and `?` stay within a folder, `**` spans folders."""
    out, parts = [], pattern.split("/")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            out.append(".*" if last else "(?:.*/)?")
            continue
        at, piece = 0, []
        while at < len(part):
            c = part[at]
            if c == "*":
                piece.append("[^/]*")
            elif c == "?":
                piece.append("[^/]")
            elif c == "[" and (end := part.find("]", at + (3 if part[at + 1:at + 2] == "!" else 2))) > 0:
                inner = part[at + 1:end]
                inner = "^" + inner[1:] if inner.startswith("!") else inner
                piece.append("[" + inner.replace("\\", "\\\\") + "]")
                at = end
            elif c == "\\" and at + 1 < len(part):
                at += 1
                piece.append(re.escape(part[at]))
            else:
                piece.append(re.escape(c))
            at += 1
        out.append("".join(piece) + ("" if last else "/"))
    return "".join(out)


def _git_files(root: Path) -> list[str] | None:
    """What git would track below `root` (relative to it), or None outside a work tree."""
    try:  # outside a work tree (or in a bare repository's folder) ls-files fails: the walk decides then
        listed = subprocess.run(["git", "-C", str(root), "-c", "core.quotePath=false", "ls-files", "-co",
                                 "--exclude-standard", "-z", "--", "."], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if listed.returncode != 0:
        return None
    return sorted({p for p in os.fsdecode(listed.stdout).split("\0") if p})


def _walk_files(root: Path) -> list[str]:
    ignore_file = root / ".dlboxignore"
    ignore = Ignore(ignore_file.read_text(errors="replace") if ignore_file.is_file() else "")
    found = []
    for folder, dirs, names in os.walk(root):  # never descends into links to folders
        rel = os.path.relpath(folder, root)
        rel = "" if rel == "." else rel + "/"
        keep = []
        for d in dirs:
            path = rel + d
            if d in ALWAYS_SKIP or (os.path.islink(os.path.join(folder, d)) and ignore.ignored(path, False)):
                continue
            if os.path.islink(os.path.join(folder, d)):
                found.append(path)  # a link: listed as one, never followed
            elif not ignore.ignored(path, True):
                keep.append(d)
        dirs[:] = sorted(keep)
        found.extend(rel + n for n in names if not ignore.ignored(rel + n, False))
    return sorted(found)


# --- the stat cache: content hashes of unchanged files, so an unchanged tree costs stats only ---------------

RACY_NS = 2_000_000_000  # a file changed this recently is never cached (git's racy-clean rule)
CACHE_PROJECTS = 64  # cache files kept, one per project; the least recently written go first
HELD_BYTES = 64 * 1024**2  # contents kept from the hashing read, so storing or sending reads nothing again


def _cache_file(root: Path) -> Path:
    return config.home() / "code-cache" / (hashlib.sha256(str(root).encode()).hexdigest()[:24] + ".json")


def _stat_key(info: os.stat_result) -> list[int]:
    """What says a file is unchanged: size, mtime, ctime (a rewrite or chmod moves it), inode, mode."""
    return [info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino, info.st_mode]


def _load_cache(path: Path) -> tuple[dict, int]:
    """(path -> [*stat key, content hash], when it was taken); ({}, 0) for a missing or corrupt file.
    Entries are checked where they are used (`_cached`)."""
    try:
        data = json.loads(path.read_text())
        at, files = data["at"], data["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}, 0
    if type(at) is not int or type(files) is not dict:
        return {}, 0
    return files, at


def _cached(known, key: list[int], trusted_before: int) -> str | None:
    """The cached content hash if the entry matches the file's stat and was not racily new then."""
    if (type(known) is list and len(known) == 6 and known[:5] == key and known[1] < trusted_before
            and known[2] < trusted_before and type(known[5]) is str and HASH.fullmatch(known[5])):
        return known[5]
    return None


def _save_cache(path: Path, files: dict[str, list], at: int) -> None:
    """Write the cache atomically (a private temporary file renamed over it), keeping at most
    CACHE_PROJECTS of them; a failure only costs hashing again next time."""
    import tempfile

    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(prefix=".new-", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as out:
                json.dump({"at": at, "files": files}, out, separators=(",", ":"))
            os.replace(partial, path)
        except BaseException:
            os.unlink(partial)
            raise
        kept = sorted(path.parent.glob("*.json"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
        for old in kept[CACHE_PROJECTS:]:
            old.unlink(missing_ok=True)
    except OSError:
        pass


def take(project: Path) -> Snapshot:
    """The snapshot of `project`'s files, limits checked before any content is read."""
    root = project.resolve()
    if not root.is_dir():
        raise UsageError(f"--code: {project} is not a directory")
    started = time.time_ns()  # before any stat: a file changed after this is racily new
    listed = _git_files(root)
    paths = listed if listed is not None else _walk_files(root)
    home = config.home().resolve()
    if home == root or root in home.parents:  # dlbox's own state (database, vault) is never code
        inner = home.relative_to(root).as_posix() + "/" if home != root else ""
        if not inner:
            raise UsageError(f"code: {root} is the dlbox home; run from a project directory, or use --no-code")
        paths = [p for p in paths if not (p + "/").startswith(inner)]
    max_bytes, max_files = limits()
    stats: list[tuple[str, os.stat_result]] = []
    skipped, outside = [], []
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:  # relative to the root's descriptor: no path object built per file
        listing = []
        for path in paths:
            try:
                listing.append((path, os.lstat(path, dir_fd=root_fd)))
            except FileNotFoundError:  # tracked but deleted: not in the tree
                continue
    finally:
        os.close(root_fd)
    for path, info in listing:
        if stat.S_ISLNK(info.st_mode):
            target = os.readlink(root / path)
            resolved = os.path.realpath(root / path)
            if os.path.isabs(target) or not (resolved == str(root) or resolved.startswith(str(root) + os.sep)):
                outside.append(f"{path} -> {target}")
                continue
        elif stat.S_ISDIR(info.st_mode):  # a submodule (git lists it as one entry)
            skipped.append(path + "/")
            continue
        elif not stat.S_ISREG(info.st_mode):
            skipped.append(path)
            continue
        stats.append((path, info))
    if outside:
        raise UsageError(f"code: symlinks pointing outside the project are refused: {', '.join(outside[:5])}"
                         f"{' ...' if len(outside) > 5 else ''} (remove them or add them to .gitignore/.dlboxignore)")
    total = sum(i.st_size for _, i in stats if stat.S_ISREG(i.st_mode))
    if total > max_bytes or len(stats) > max_files:
        what = (f"{human(total)} is over the limit of {human(max_bytes)}" if total > max_bytes
                else f"{len(stats)} files are over the limit of {max_files}")
        raise UsageError(f"code: {root} holds {what} (DLBOX_CODE_LIMIT/DLBOX_CODE_FILES); the largest folders: "
                         f"{largest_folders(stats)}; ignore them in .gitignore/.dlboxignore, or use --no-code")
    cache_path = _cache_file(root)
    cached, cached_at = _load_cache(cache_path)
    fresh: dict[str, list] = {}
    entries, held, held_bytes, reread = [], {}, 0, 0
    for path, info in stats:
        if stat.S_ISLNK(info.st_mode):
            target = os.readlink(root / path)
            entries.append(Entry(path, "link", 0, hashlib.sha256(target.encode()).hexdigest(), target))
            continue
        key = _stat_key(info)
        digest = _cached(cached.get(path), key, cached_at - RACY_NS)
        if digest is None:
            reread += 1
            try:
                digest, size, content = _read_hashed(root / path, keep=held_bytes + info.st_size <= HELD_BYTES)
            except OSError as exc:  # unreadable, or swapped for a link since it was listed
                raise UsageError(f"code: cannot read {path}: {exc.strerror} (ignore it, or fix its permissions)") from None
            if size != info.st_size:
                raise UsageError(f"code: {path} changed while the snapshot was taken; run again")
            if content is not None:
                held[path], held_bytes = content, held_bytes + len(content)
        if max(info.st_mtime_ns, info.st_ctime_ns) < started - RACY_NS:
            fresh[path] = key + [digest]
        entries.append(Entry(path, "755" if info.st_mode & 0o100 else "644", info.st_size, digest))
    if reread or len(fresh) != len(cached):  # else the same entries: nothing to write
        _save_cache(cache_path, fresh, started)
    return Snapshot(root=root, entries=entries, hash=tree_hash(entries), skipped=skipped, held=held)


def _read_hashed(path: Path, keep: bool) -> tuple[str, int, bytes | None]:
    """A file's content hash (never following a link), its size, and its content when `keep`."""
    digest, parts, size = hashlib.sha256(), [], 0
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK), "rb", buffering=0) as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            if keep:
                parts.append(chunk)
    return digest.hexdigest(), size, b"".join(parts) if keep else None


def largest_folders(stats, most: int = 3) -> str:
    """The biggest top-level folders (or files) of a listing, with their sizes, biggest first."""
    sizes: dict[str, list[int]] = {}
    for path, info in stats:
        top = path.split("/")[0] + ("/" if "/" in path else "")
        counted = sizes.setdefault(top, [0, 0])
        counted[0] += info.st_size if stat.S_ISREG(info.st_mode) else 0
        counted[1] += 1
    ranked = sorted(sizes.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[0]))[:most]
    return ", ".join(f"{name} ({human(n)}, {count} files)" for name, (n, count) in ranked)


def human(size: int) -> str:
    """1536 -> '1.5 KB' (powers of 1024, as the limits are given)."""
    for unit, scale in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


# --- the store ---------------------------------------------------------------------------------------


def store_root() -> Path:
    return config.home() / "code"


def path_of(snapshot_hash: str) -> Path:
    return store_root() / check_hash(snapshot_hash)


def exists(snapshot_hash: str) -> bool:
    return (path_of(snapshot_hash) / "manifest.json").is_file()


def tree(snapshot_hash: str) -> Path:
    """The read-only folder a job gets; NotFound when the snapshot is not kept."""
    if not exists(snapshot_hash):
        raise NotFound(f"no code snapshot {snapshot_hash[:12]} (it was removed, or never stored)")
    return path_of(snapshot_hash) / "tree"


def manifest(snapshot_hash: str) -> dict:
    tree(snapshot_hash)
    return json.loads((path_of(snapshot_hash) / "manifest.json").read_text())


def _new_dir() -> Path:
    import tempfile

    root = store_root()
    root.mkdir(mode=0o755, parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=".new-", dir=root))


def _seal(work: Path, snap: Snapshot) -> bool:
    """Make work/tree's folders read-only (its files are already) and rename work into place;
    False if the hash was there already."""
    (work / "manifest.json").write_text(json.dumps(snap.manifest()))
    (work / "manifest.json").chmod(0o444)
    for folder, _, _ in os.walk(work / "tree", topdown=False):  # files were made 0444/0555
        os.chmod(folder, 0o555)
    os.chmod(work, 0o755)
    final = store_root() / snap.hash
    try:
        os.rename(work, final)
    except OSError:  # stored meanwhile by another request: the same content
        remove(work)
        return False
    return True


def store(snap: Snapshot) -> bool:
    """Copy a taken snapshot into the store; False (nothing written) when its hash is there already."""
    if exists(snap.hash):
        return False
    work = _new_dir()
    try:
        base = work / "tree"
        base.mkdir()
        folders = sorted({os.path.dirname(e.path) for e in snap.entries} - {""})
        for folder in folders:
            (base / folder).mkdir(parents=True, exist_ok=True)
        for entry in snap.entries:  # (threads do not help: making files waits on the file system)
            if entry.mode != "link":
                _copy_in(snap, base, entry)
        for entry in snap.entries:  # links last
            if entry.mode == "link":
                os.symlink(entry.target, base / entry.path)
        return _seal(work, snap)
    except BaseException:
        remove(work)
        raise


def _copy_in(snap: Snapshot, base: Path, entry: Entry) -> None:
    """One file into the store (its content as hashed when taken, or read again without following
    links, its hash checked), read-only from the start."""
    mode = 0o555 if entry.mode == "755" else 0o444
    held = snap.held.get(entry.path)
    if held is not None:
        with os.fdopen(os.open(base / entry.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode),
                       "wb") as out:
            out.write(held)
        return
    try:
        fd = os.open(snap.root / entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise UsageError(f"code: cannot read {entry.path}: {exc.strerror}; run again") from None
    made = os.open(base / entry.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "rb") as src, os.fdopen(made, "wb") as out:
        digest = hashlib.sha256()
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != entry.sha256:
        raise UsageError(f"code: {entry.path} changed while the snapshot was taken; run again")


def remove(path: Path) -> None:
    """Remove a stored snapshot folder (read-only inside), never following a link."""
    def writable(func, target, _exc):
        os.chmod(os.path.dirname(target), 0o755)
        func(target)

    if path.is_symlink():
        path.unlink()
        return
    for folder, dirs, _ in os.walk(path):
        os.chmod(folder, 0o755)
    shutil.rmtree(path, onerror=writable)


def to_tar(snapshot_hash: str | None = None, snap: Snapshot | None = None) -> bytes:
    """A snapshot as an uncompressed tar (fixed owner and times), from the store or a taken one."""
    import tarfile

    held: dict[str, bytes] = {}
    if snap is None:
        base = tree(snapshot_hash)
        entries = [Entry(**e) for e in manifest(snapshot_hash)["entries"]]
    else:
        base, entries, held = snap.root, snap.entries, snap.held
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in sorted(entries, key=lambda e: e.path.encode()):
            info = tarfile.TarInfo(entry.path)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if entry.mode == "link":
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, entry.target, 0o777
                tar.addfile(info)
                continue
            info.size, info.mode = entry.size, int(entry.mode, 8)
            if entry.path in held:
                tar.addfile(info, io.BytesIO(held[entry.path]))
                continue
            fd = os.open(base / entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            with os.fdopen(fd, "rb") as src:
                tar.addfile(info, src)
    return out.getvalue()


def _open_tar(data):
    """A tar read from bytes or a seekable binary file, from its start."""
    import tarfile

    source = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    source.seek(0)
    try:
        return tarfile.open(fileobj=source, mode="r:")
    except tarfile.TarError as exc:
        raise UsageError(f"code: not a tar archive ({exc})") from None


def _members(data, max_bytes: int, max_files: int, write_to: Path | None = None,
             modes: tuple[int, int] = (0o644, 0o755)) -> list[Entry]:
    """The tar's entries, every member checked: plain files and links only, paths inside the tree,
    no repeats, nothing below a file or a link; contents hashed as they are read (never held).

    With `write_to` (a fresh folder made by the caller) each file is also written there as it is read,
    so an upload is read once: folders made here, files with O_EXCL|O_NOFOLLOW, links last (so no file
    is written through one). The caller removes the folder when this raises or the hash is wrong."""
    import tarfile

    found: list[Entry] = []
    seen: set[str] = set()
    below: dict[str, str] = {}  # each folder the names so far imply -> the first name below it
    total = 0
    try:
        with _open_tar(data) as tar:
            for info in tar:
                name = check_path(info.name.removeprefix("./"))
                if name in seen:
                    raise UsageError(f"code: {name!r} is in the archive twice")
                parts = name.split("/")
                folders = ["/".join(parts[:i]) for i in range(1, len(parts))]
                if name in below or any(folder in seen for folder in folders):  # checked before any write
                    raise UsageError(f"code: {below.get(name, name)!r} lies below a file or link of the "
                                     "archive (refused)")
                seen.add(name)
                for folder in folders:
                    below.setdefault(folder, name)
                if info.issym():
                    target = info.linkname
                    if not target or os.path.isabs(target) or "\0" in target or not _inside(name, target):
                        raise UsageError(f"code: the link {name!r} points outside the project ({target!r})")
                    found.append(Entry(name, "link", 0, hashlib.sha256(target.encode()).hexdigest(), target))
                elif info.isreg():
                    total += info.size
                    if total > max_bytes:
                        raise UsageError("code: the archive is over the snapshot size limit")
                    mode = "755" if info.mode & 0o100 else "644"
                    digest, src = hashlib.sha256(), tar.extractfile(info)
                    out = _create(write_to, name, modes[1] if mode == "755" else modes[0]) if write_to else None
                    try:
                        while chunk := src.read(CHUNK):
                            digest.update(chunk)
                            if out is not None:
                                out.write(chunk)
                    finally:
                        if out is not None:
                            out.close()
                    found.append(Entry(name, mode, info.size, digest.hexdigest()))
                else:
                    raise UsageError(f"code: {name!r} is not a plain file or a link (refused)")
                if len(found) > max_files:
                    raise UsageError("code: the archive holds more files than a snapshot may")
    except tarfile.TarError as exc:
        raise UsageError(f"code: a broken tar archive ({exc})") from None
    if write_to is not None:
        _links(write_to, found)
    return found


def _links(base: Path, entries: list[Entry]) -> None:
    """The links of `entries` below `base`, made after every file (so no file is written through one)."""
    for entry in entries:
        if entry.mode == "link":
            _folders(base, entry.path)
            os.symlink(entry.target, base / entry.path)


def _folders(base: Path, path: str) -> Path:
    """The folders above `path` below `base`, made where missing; a file or link there fails."""
    folder = base
    for part in path.split("/")[:-1]:
        folder = folder / part
        if folder.is_symlink() or not folder.is_dir():
            folder.mkdir()  # a file or link there already: mkdir fails, and so does the whole
    return folder


def _create(base: Path, path: str, mode: int):
    _folders(base, path)
    return os.fdopen(os.open(base / path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode), "wb")


def _inside(name: str, target: str) -> bool:
    """Whether a link at `name` with a relative `target` stays inside the tree (lexically)."""
    depth = len(name.split("/")) - 1
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return False
        elif part not in ("", "."):
            depth += 1
    return True


def _write(data, entries: list[Entry], base: Path, modes: tuple[int, int] = (0o644, 0o755)) -> None:
    """Write checked entries of the tar below `base`, a folder made by the caller: folders made
    here, files with O_EXCL|O_NOFOLLOW, links last (so no file is written through one)."""
    wanted = {e.path: e for e in entries}
    with _open_tar(data) as tar:
        for info in tar:
            entry = wanted.get(info.name.removeprefix("./"))
            if entry is None or entry.mode == "link" or not info.isreg():
                continue
            digest, src = hashlib.sha256(), tar.extractfile(info)
            with _create(base, entry.path, modes[1] if entry.mode == "755" else modes[0]) as out:
                while chunk := src.read(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != entry.sha256:
                raise UsageError(f"code: {entry.path} changed between two reads of the archive")
    _links(base, entries)


def unpack(data, expected: str) -> tuple[Snapshot, bool]:
    """Store an uploaded tar (bytes or a seekable file) as snapshot `expected`, refused unless its
    content hashes to that: (the snapshot, whether it was new). Written only below a fresh
    private folder made here, then sealed read-only and renamed into place."""
    check_hash(expected)
    max_bytes, max_files = limits()
    if exists(expected):  # only checked, nothing written
        entries = _members(data, max_bytes, max_files)
        _hashes_to(entries, expected)
        return Snapshot(root=path_of(expected) / "tree", entries=entries, hash=expected), False
    work = _new_dir()
    try:
        base = work / "tree"
        base.mkdir()
        entries = _members(data, max_bytes, max_files, write_to=base, modes=(0o444, 0o555))  # read once
        _hashes_to(entries, expected)
        snap = Snapshot(root=base, entries=entries, hash=expected)
        return snap, _seal(work, snap)
    except BaseException:
        remove(work)
        raise


def _hashes_to(entries: list[Entry], expected: str) -> None:
    got = tree_hash(entries)
    if got != expected:
        raise UsageError(f"code: the archive's content hashes to {got[:12]}, not {expected[:12]}")


def from_archive(data: bytes, dest: Path) -> Snapshot:
    """A snapshot of a `git archive` tar (a commit's tracked files, never the working tree), written out to
    the new folder `dest`: folders and git's global header are dropped, everything else checked as an
    upload is (plain files and links that stay inside only, within the limits)."""
    import tarfile

    plain = io.BytesIO()
    try:
        with _open_tar(data) as src, tarfile.open(fileobj=plain, mode="w:") as out:
            for info in src:
                if info.isdir():
                    continue
                out.addfile(info, src.extractfile(info) if info.isreg() else None)
    except tarfile.TarError as exc:
        raise UsageError(f"code: git archive gave a broken tar ({exc})") from None
    max_bytes, max_files = limits()
    entries = _members(plain, max_bytes, max_files)
    digest = tree_hash(entries)
    export(digest, plain, dest)
    return Snapshot(root=dest, entries=entries, hash=digest)


def export(snapshot_hash: str, data, dest: Path) -> int:
    """Write a snapshot (from the store, or its tar as `data`) out to the new or empty folder `dest`;
    the number of entries. The tar is checked as an upload is, and must hash to `snapshot_hash`."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UsageError(f"{dest}: give a new or empty folder")
    if data is None:
        data = to_tar(snapshot_hash)
    max_bytes, max_files = limits()
    entries = _members(data, max_bytes * 4, max_files * 4)  # written before the limits changed, maybe
    if tree_hash(entries) != snapshot_hash:
        raise UsageError(f"code: what came is not snapshot {snapshot_hash[:12]}")
    dest.mkdir(parents=True, exist_ok=True)
    _write(data, entries, dest)
    return len(entries)


def tar_files(data, most: int = 64 * 1024**2) -> dict[str, bytes]:
    """The plain files of a snapshot's tar (checked as an upload is), each read up to `most` bytes."""
    max_bytes, max_files = limits()
    wanted = {e.path for e in _members(data, max_bytes * 4, max_files * 4) if e.mode != "link"}
    found = {}
    with _open_tar(data) as tar:
        for info in tar:
            name = info.name.removeprefix("./")
            if name in wanted and info.isreg():
                found[name] = tar.extractfile(info).read(most)
    return found


def stored() -> list[tuple[str, int, float]]:
    """(hash, bytes, when stored) of every kept snapshot."""
    root = store_root()
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        if HASH.fullmatch(child.name) and (child / "manifest.json").is_file():
            info = json.loads((child / "manifest.json").read_text())
            found.append((child.name, int(info.get("bytes", 0)), child.stat().st_mtime))
    return found


def collect_garbage(referenced: set[str], *, now: float | None = None) -> dict:
    """Remove kept snapshots no run refers to (and any left-over half-written folder); what was freed."""
    now = time.time() if now is None else now
    removed, freed = [], 0
    for snapshot_hash, size, stored_at in stored():
        if snapshot_hash in referenced or now - stored_at < GRACE:
            continue
        remove(store_root() / snapshot_hash)
        removed.append(snapshot_hash)
        freed += size
    root = store_root()
    if root.is_dir():
        for child in root.iterdir():
            if child.name.startswith(".new-") and now - child.stat().st_mtime > GRACE:
                remove(child)
    return {"removed": sorted(removed), "freed_bytes": freed}


def file_text(snapshot_hash: str, path: str) -> bytes | None:
    """One file's content out of a stored snapshot (never following a link), or None."""
    check_path(path)
    try:
        fd = os.open(tree(snapshot_hash) / path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        return f.read()


def check_dest(dest: str) -> str:
    """Where the snapshot goes in the job: an absolute plain path, not one of dlbox's own."""
    if not re.fullmatch(r"/(?:[A-Za-z0-9._+-]+/?)+", dest) or ".." in dest.split("/"):
        raise UsageError(f"code.dest: {dest!r} must be an absolute path (letters, digits, '.', '_', '+', '-')")
    return dest.rstrip("/")

