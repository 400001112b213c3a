"""The build context as a deterministic tar: sorted entries, fixed owner and mtime.

Same inputs give the same bytes, so the engine's layer cache hits for unchanged steps.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

from dlbox.build.render import BuildPlan

# Never sent to the engine with the user's code: VCS data, environments, caches.
SKIP = {".git", ".hg", ".svn", ".venv", "venv", "__pycache__", ".pytest_cache", ".mypy_cache", ".ipynb_checkpoints"}


def _info(name: str, *, size: int = 0, mode: int = 0o644, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.type = size, mode, kind
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    return info


def code_files(root: Path) -> list[Path]:
    """The user's code, sorted, without VCS data, caches or what .dlboxignore names."""
    ignore = set(SKIP)
    ignore_file = root / ".dlboxignore"
    if ignore_file.is_file():
        ignore |= {line.strip().strip("/") for line in ignore_file.read_text().splitlines()
                   if line.strip() and not line.startswith("#")}
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ignore)
        for name in sorted(filenames):
            if name not in ignore and not name.endswith(".pyc"):
                found.append(Path(dirpath, name))
    return found


def make(plan: BuildPlan, *, ca_bundle: bytes | None = None, code_dir: Path | None = None) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        entries = {"Dockerfile": plan.dockerfile.encode(), **plan.files}
        if "dlbox/ca-bundle.crt" in entries:
            entries["dlbox/ca-bundle.crt"] = ca_bundle or b""
        for name in sorted(entries):
            data = entries[name]
            mode = 0o755 if name.startswith("dlbox/bin/") else 0o644
            tar.addfile(_info(name, size=len(data), mode=mode), io.BytesIO(data))
        tar.addfile(_info("code", mode=0o755, kind=tarfile.DIRTYPE))
        if code_dir is not None:
            for path in code_files(code_dir):
                rel = path.relative_to(code_dir).as_posix()
                if path.is_symlink() or not path.is_file():
                    continue
                mode = 0o755 if os.access(path, os.X_OK) else 0o644
                with path.open("rb") as handle:
                    tar.addfile(_info(f"code/{rel}", size=path.stat().st_size, mode=mode), handle)
    buf.seek(0)
    return buf
