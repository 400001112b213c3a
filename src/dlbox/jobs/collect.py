"""Collecting what a finished job leaves behind: its log, metrics and artifacts.

The service runs as root and the job controls everything in its run directory (and a host user
with the job's uid could plant things there too). So nothing here follows a link the job made:
files are opened relative to directory descriptors with O_NOFOLLOW, only regular files are read,
every read is capped, and what a cap cut or a bad entry skipped becomes a note on the run record.
Results go to a root-owned place the job never sees (runs/ID/, beside the job's own runs/ID/job/).
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from dlbox.sizes import format_size, parse_size

MAX_NOTES = 20  # named in the record; the rest are counted
STEP_RANGE = (-(2**63), 2**63 - 1)  # what the store's BIGINT holds
NAME_LENGTH = 128
MAX_DEPTH = 32
MAX_ENTRIES = 100_000
CHUNK = 1 << 20
_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NONBLOCK | _NOFOLLOW  # O_NONBLOCK: a FIFO planted as a file never blocks us


@dataclass(frozen=True)
class Limits:
    log_bytes: int = 1024**3
    metric_lines: int = 1_000_000
    metric_line_bytes: int = 64 * 1024
    artifact_bytes: int = 10 * 1024**3

    @classmethod
    def from_env(cls) -> Limits:
        """DLBOX_LOG_LIMIT, DLBOX_METRIC_LINES, DLBOX_METRIC_LINE_LIMIT, DLBOX_ARTIFACT_LIMIT (the service's)."""
        def size(name: str, default: int) -> int:
            text = os.environ.get(name)
            return parse_size(text) if text else default

        lines = os.environ.get("DLBOX_METRIC_LINES")
        return cls(log_bytes=size("DLBOX_LOG_LIMIT", cls.log_bytes),
                   metric_lines=int(lines) if lines else cls.metric_lines,
                   metric_line_bytes=size("DLBOX_METRIC_LINE_LIMIT", cls.metric_line_bytes),
                   artifact_bytes=size("DLBOX_ARTIFACT_LIMIT", cls.artifact_bytes))


@dataclass
class Notes:
    """What collection cut or skipped, one line each, for the run record (bounded)."""

    lines: list[str] = field(default_factory=list)
    dropped: int = 0

    def add(self, line: str) -> None:
        if len(self.lines) < MAX_NOTES:
            self.lines.append(line)
        else:
            self.dropped += 1

    def as_list(self) -> list[str]:
        return self.lines + ([f"... and {self.dropped} more notes"] if self.dropped else [])


# --- the log ----------------------------------------------------------------------------------


def save_log(chunks: Iterable[bytes], directory: Path, limit: int, notes: Notes) -> int:
    """Write the engine's log stream to directory/output.log, at most `limit` bytes then a marker.

    Stops reading the stream at the cap, so neither memory nor disk follow a job that prints forever.
    """
    written = 0
    with _open_dir(directory) as dir_fd:
        fd = os.open("output.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _NOFOLLOW, 0o600, dir_fd=dir_fd)
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    room = limit - written
                    out.write(chunk[:room])
                    written += min(len(chunk), room)
                    if len(chunk) > room:
                        out.write(f"\n[dlbox: log truncated at {format_size(limit)}]\n".encode())
                        notes.add(f"log: truncated at {format_size(limit)} (the log limit)")
                        break
        except BaseException:
            os.unlink("output.log", dir_fd=dir_fd)  # a half-written copy (disk full) frees its space
            raise
        finally:
            close = getattr(chunks, "close", None)
            if close:
                close()
    return written


# --- metrics ----------------------------------------------------------------------------------


def read_metrics(job_dir: Path, limits: Limits, notes: Notes) -> list[dict]:
    """Rows of job_dir/metrics.jsonl; a bad line is skipped with a note, never fatal."""
    fd = _open_in(job_dir, "metrics.jsonl", notes, "metrics.jsonl")
    if fd is None:
        return []
    rows = []
    with os.fdopen(fd, "rb") as handle:
        number = 0
        while True:
            line = handle.readline(limits.metric_line_bytes + 1)
            if not line:
                break
            number += 1
            if number > limits.metric_lines:
                notes.add(f"metrics: stopped after {limits.metric_lines:,} lines (the metric line limit)")
                break
            if len(line) > limits.metric_line_bytes and not line.endswith(b"\n"):
                _skip_rest_of_line(handle)
                notes.add(f"metrics.jsonl line {number}: longer than {format_size(limits.metric_line_bytes)} "
                          "(skipped)")
                continue
            row, problem = parse_metric_line(line)
            if problem:
                if problem != "blank":
                    notes.add(f"metrics.jsonl line {number}: {problem} (skipped)")
                continue
            rows.append(row)
    return rows


def parse_metric_line(line: bytes) -> tuple[dict | None, str | None]:
    """One JSON line -> ({step, name, value}, None) or (None, what is wrong). Pure."""
    if not line.strip():
        return None, "blank"
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return None, "not UTF-8"
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except ValueError as exc:
        return None, f"not JSON ({str(exc)[:80]})"
    if not isinstance(data, dict):
        return None, "not a JSON object"
    name, value, step = data.get("name"), data.get("value"), data.get("step")
    if not isinstance(name, str) or not name or len(name) > NAME_LENGTH:
        return None, f"name must be a string of 1-{NAME_LENGTH} characters"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None, "value must be a number"
    try:
        value = float(value)
    except OverflowError:
        return None, "value is too large"
    if not math.isfinite(value):
        return None, "value is not finite"
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, int):
            return None, "step must be an integer or null"
        if not STEP_RANGE[0] <= step <= STEP_RANGE[1]:
            return None, "step is outside the 64-bit range"
    return {"step": step, "name": name, "value": value}, None


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number dlbox keeps")


def _skip_rest_of_line(handle) -> None:
    while True:
        piece = handle.readline(CHUNK)
        if not piece or piece.endswith(b"\n"):
            return


# --- artifacts --------------------------------------------------------------------------------


@dataclass
class Manifest:
    files: list[dict] = field(default_factory=list)  # {path, size}
    links: list[dict] = field(default_factory=list)  # {path, target}: recorded, never followed
    bytes: int = 0

    def to_json(self) -> dict:
        return {"files": self.files, "links": self.links, "bytes": self.bytes}


def copy_artifacts(job_dir: Path, dest: Path, budget: int, notes: Notes, *, why: str = "the artifact limit") -> Manifest:
    """Copy job_dir/artifacts to dest as regular files only, at most `budget` bytes in all.

    Links are recorded as links; FIFOs, sockets and devices are skipped and named. `dest` must
    not exist yet: it is made here, owned by the service.
    """
    manifest = Manifest()
    source = _open_in(job_dir, "artifacts", notes, "artifacts", directory=True)
    if source is None:
        return manifest
    os.mkdir(dest, 0o755)
    with _open_dir(dest) as target:
        state = {"entries": 0, "full": False}
        try:
            _copy_tree(source, target, "", 0, budget, manifest, notes, state, why)
        finally:
            os.close(source)
    return manifest


def _copy_tree(src_fd: int, dst_fd: int, prefix: str, depth: int, budget: int, manifest: Manifest, notes: Notes,
               state: dict, why: str) -> None:
    if depth > MAX_DEPTH:
        notes.add(f"artifacts/{prefix}: deeper than {MAX_DEPTH} folders (skipped)")
        return
    for name in sorted(os.listdir(src_fd)):
        if state["full"]:
            return
        state["entries"] += 1
        if state["entries"] > MAX_ENTRIES:
            notes.add(f"artifacts: more than {MAX_ENTRIES:,} entries (the rest skipped)")
            state["full"] = True
            return
        path = prefix + name
        if not _plain_name(name):
            notes.add(f"artifacts: a name with control characters or bad UTF-8 ({name.encode(errors='replace')!r}) "
                      "(skipped)")
            continue
        info = os.stat(name, dir_fd=src_fd, follow_symlinks=False)
        if stat.S_ISLNK(info.st_mode):
            manifest.links.append({"path": path, "target": os.readlink(name, dir_fd=src_fd)})
        elif stat.S_ISDIR(info.st_mode):
            try:
                child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW, dir_fd=src_fd)
            except OSError as exc:  # swapped for a link since the listing: not followed
                notes.add(f"artifacts/{path}: {exc.strerror} (skipped)")
                continue
            try:
                os.mkdir(name, 0o755, dir_fd=dst_fd)
                out = os.open(name, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW, dir_fd=dst_fd)
                try:
                    _copy_tree(child, out, path + "/", depth + 1, budget, manifest, notes, state, why)
                finally:
                    os.close(out)
            finally:
                os.close(child)
        elif stat.S_ISREG(info.st_mode):
            _copy_file(src_fd, dst_fd, name, path, budget, manifest, notes, state, why)
        else:
            notes.add(f"artifacts/{path}: not a regular file, folder or link (skipped)")


def _copy_file(src_fd: int, dst_fd: int, name: str, path: str, budget: int, manifest: Manifest, notes: Notes,
               state: dict, why: str) -> None:
    try:
        fd = os.open(name, _READ, dir_fd=src_fd)
    except OSError as exc:  # swapped for a link or removed since the listing: not followed
        notes.add(f"artifacts/{path}: {exc.strerror} (skipped)")
        return
    with os.fdopen(fd, "rb") as source:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            notes.add(f"artifacts/{path}: not a regular file (skipped)")
            return
        out_fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o644, dir_fd=dst_fd)
        size = 0
        with os.fdopen(out_fd, "wb") as out:
            while chunk := source.read(CHUNK):
                room = budget - manifest.bytes
                out.write(chunk[:room])
                size += min(len(chunk), room)
                manifest.bytes += min(len(chunk), room)
                if len(chunk) > room:
                    notes.add(f"artifacts: stopped at {format_size(budget)} ({why}); "
                              f"artifacts/{path} is cut short and the rest is not kept")
                    state["full"] = True
                    break
        manifest.files.append({"path": path, "size": size})


def _plain_name(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # bytes that were not UTF-8 come back as surrogates
        return False
    return not any(ord(c) < 32 or ord(c) == 127 for c in name)


# --- descriptors ------------------------------------------------------------------------------


class _open_dir:
    """A directory the service made itself (no link is followed even so)."""

    def __init__(self, path: Path):
        self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW)

    def __enter__(self) -> int:
        return self.fd

    def __exit__(self, *exc) -> None:
        os.close(self.fd)


def _open_in(job_dir: Path, name: str, notes: Notes, what: str, *, directory: bool = False) -> int | None:
    """Open a job-controlled entry of job_dir without following links; None (and a note) if it
    is missing, a link or of the wrong kind."""
    try:
        with _open_dir(job_dir) as dir_fd:
            fd = os.open(name, (os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW) if directory else _READ, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            notes.add(f"{what}: is a link or not a {'folder' if directory else 'file'} (not followed)")
            return None
        raise
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISDIR(mode) if directory else stat.S_ISREG(mode)):
        os.close(fd)
        notes.add(f"{what}: not a regular {'folder' if directory else 'file'} (skipped)")
        return None
    return fd


def remove_tree(path: Path) -> None:
    """Remove a job-controlled folder. shutil.rmtree works on descriptors here (avoids_symlink_attacks)."""
    import shutil

    assert shutil.rmtree.avoids_symlink_attacks
    shutil.rmtree(path, ignore_errors=True)
